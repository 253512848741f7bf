"""Attribute defaults of the ONNX ops the Keras front-end writes, at its opset (17), so every node it builds is
complete and rules never guess a default. A copy of what `onnx.defs` says, kept here so that analysing a Keras model
does not import onnx (0.2 s); `tests/test_engine_invariants.py` checks it against `onnx.defs` on every run.

Example:

>>> with_defaults("Conv", {"group": 4})["auto_pad"], with_defaults("Conv", {"group": 4})["group"]
('NOTSET', 4)
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "AveragePool": {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0},
    "BatchNormalization": {"epsilon": 1e-05, "momentum": 0.9, "training_mode": 0},
    "Conv": {"auto_pad": "NOTSET", "group": 1},
    "ConvTranspose": {"auto_pad": "NOTSET", "group": 1},
    "Elu": {"alpha": 1.0},
    "Flatten": {"axis": 1},
    "Gather": {"axis": 0},
    "LayerNormalization": {"axis": -1, "epsilon": 1e-05, "stash_type": 1},
    "LeakyRelu": {"alpha": 0.01},
    "MaxPool": {"auto_pad": "NOTSET", "ceil_mode": 0, "storage_order": 0},
    "Pad": {"mode": "constant"},
    "ReduceMax": {"keepdims": 1},
    "ReduceMean": {"keepdims": 1},
    "Reshape": {"allowzero": 0},
    "Softmax": {"axis": -1},
}


def with_defaults(op_type: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """`attrs` completed with the schema's defaults for `op_type` (given values win)."""
    return {**DEFAULTS.get(op_type, {}), **attrs}
