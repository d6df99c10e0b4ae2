"""Object detection: box formats and IoU variants (C++ kernels), non-max suppression
(CS-230 rule, per class, soft-NMS), k-means anchors, YOLO encoding/decoding/loss with
a landmark head, mAP, and a generated shapes data set for the ``cnnfast detect`` demo.

Boxes are corners (x1, y1, x2, y2) in continuous coordinates; see
:mod:`cnnfast.detection.boxes` for the full convention."""
from .anchors import kmeans_anchors, wh_iou
from .boxes import (box_area, box_convert, box_iou, box_iou_pairs, complete_box_iou, complete_box_iou_loss,
                    distance_box_iou, distance_box_iou_loss, generalized_box_iou, generalized_box_iou_loss,
                    iou_loss)
from .metrics import average_precision, landmark_error, match_detections, mean_average_precision
from .nms import batched_nms, nms, score_filter, soft_nms
from .yolo import YoloGrid, activate, decode, encode, to_grid, yolo_loss

__all__ = ["box_convert", "box_area", "box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou",
           "box_iou_pairs", "iou_loss", "generalized_box_iou_loss", "distance_box_iou_loss",
           "complete_box_iou_loss", "nms", "batched_nms", "soft_nms", "score_filter", "wh_iou", "kmeans_anchors", "YoloGrid",
           "encode", "decode", "to_grid", "activate", "yolo_loss", "match_detections", "average_precision",
           "mean_average_precision", "landmark_error"]
