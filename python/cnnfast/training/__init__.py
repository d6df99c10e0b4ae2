"""Training toolkit behind the ``cnnfast`` command: the trainer, progress bar, plots,
checkpoints, learning-rate finder, hyper-parameter search and transfer learning."""
from .progress import ProgressBar, format_time
from .trainer import (DEFAULT_LR, OPTIMIZERS, SCHEDULES, TrainConfig, build_model, build_optimizer, build_scheduler,
                      evaluate, evaluate_checkpoint, load_trained, predict_images, run_find_lr, train)
from .checkpoint import load_checkpoint, save_checkpoint
from .lr_finder import find_lr, suggest_lr
from .search import SearchSpace, format_table, search
from .transfer import find_head, freeze_backbone, load_pretrained, reinit_head

__all__ = ["ProgressBar", "format_time", "DEFAULT_LR", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "build_model",
           "build_optimizer", "build_scheduler", "evaluate", "evaluate_checkpoint", "load_trained", "predict_images",
           "run_find_lr", "train", "load_checkpoint", "save_checkpoint", "find_lr", "suggest_lr", "SearchSpace",
           "format_table", "search", "find_head", "freeze_backbone", "load_pretrained", "reinit_head"]
