"""The MXNet format adapter: checkpoints (PREFIX-symbol.json + PREFIX-EPOCH.params) and Gluon blocks.

    source.py       MXNetSource: analysed as its mxnet.onnx export, cut there and again on the symbol
    surgery.py      the plan applied to the symbol and parameters by name
"""

from spa_keras.formats.mxnet.source import MXNetSource  # noqa: F401

__all__ = ["MXNetSource"]
