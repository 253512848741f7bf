"""Descriptions of Keras layers in ONNX ops, one module per layer family (imported to fill the registry)."""

from spa_keras.formats.keras.layers import (  # noqa: F401
    activation, applications, attention, conv, dense, keras_hub, merging, normalization, pooling, reshaping)
