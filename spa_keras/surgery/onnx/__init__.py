"""ONNX surgery: `prune_onnx(analysis, removed, updates)` and its table of op rewriters (`rewriters.py`)."""

from spa_keras.surgery.onnx.surgery import OnnxSurgery, prune_onnx  # noqa: F401

__all__ = ["OnnxSurgery", "prune_onnx"]
