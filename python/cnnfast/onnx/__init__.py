"""ONNX interoperability: ``load`` an ONNX CNN as a cnnfast module, ``export`` a cnnfast
model to an ONNX file that onnxruntime runs with the same outputs.

    model = cnnfast.onnx.load("resnet18.onnx")      # an nn.Module (OnnxModule), eval mode
    y = model(x)                                     # x: NumPy array or Tensor (N, C, H, W)
    cnnfast.onnx.export(cnnfast.models.lenet5(), np.zeros((1, 1, 32, 32), np.float32), "lenet.onnx")

Opsets 13 to 20 are read; ``export`` writes opset 17 by default. Needs the ``onnx``
package (``pip install 'cnnfast[onnx]'``); onnxruntime only to run exported files.
"""
from ._importer import MAX_OPSET, MIN_OPSET, OnnxModule, load  # noqa: F401
from ._ops import UnsupportedOnnxError, supported_ops  # noqa: F401
from ._exporter import ExportError, export  # noqa: F401

__all__ = ["load", "export", "OnnxModule", "UnsupportedOnnxError", "ExportError", "supported_ops", "MIN_OPSET",
           "MAX_OPSET"]
