"""Keras layers, one module per layer family: how a call is described in ONNX ops (`@describes`), how the
config takes new widths (`@resizes`) and how many MACs a call costs (`@counts`); importing the package fills the
registry (`spa_keras.formats.keras.registry`).

    activation      Activation, ReLU, Softmax, PReLU, ... and built-in `activation=` arguments
    applications    keras.applications' own layers (LayerScale, CustomScaleLayer)
    attention       MultiHeadAttention
    conv            Conv*, Conv*Transpose, DepthwiseConv*, SeparableConv*
    dense           Dense, EinsumDense, Embedding
    keras_hub       keras-hub encoders, embeddings and backbones
    merging         Add, Concatenate, Multiply, ...
    normalization   BatchNormalization, LayerNormalization, GroupNormalization, Normalization, Rescaling
    pooling         pooling layers
    reshaping       Flatten, Reshape, Permute, padding and cropping
"""

from spa_keras.formats.keras.layers import (  # noqa: F401
    activation, applications, attention, conv, dense, keras_hub, merging, normalization, pooling, reshaping)
from spa_keras.formats.keras.registry import spec_of  # noqa: F401

__all__ = ["spec_of"]
