"""ONNX surgery: `prune_onnx(analysis, removed, updates)` (the slim model), `mask_onnx` (a masked copy) and its
table of op rewriters (`rewriters.py`)."""

from spa_keras.formats.onnx.surgery.surgery import OnnxSurgery, mask_onnx, prune_onnx  # noqa: F401

__all__ = ["OnnxSurgery", "mask_onnx", "prune_onnx"]
