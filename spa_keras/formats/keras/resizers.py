"""The Keras surgery's table of resizers, one entry per layer class name.

A layer whose widths live in its config gets a `resize(config, layer, weights, out_shape)`: given the layer's
config, the layer, its sliced weights (in `layer.weights` order) and its new output shape, it returns the config
of the slim layer (filters, units, heads, groups, target shapes). A model class rebuilt from its own config
(keras-hub backbones, which keep their class) has an entry too. Layers without an entry keep their config.

Example:

>>> @resizes("MyDense")
... def my_dense(config, layer, weights, out_shape):
...     return {**config, "units": int(weights[0].shape[-1])}
>>> RESIZERS["MyDense"] is my_dense
True
>>> del RESIZERS["MyDense"]
"""

from __future__ import annotations

from typing import Callable

from spa_keras.formats.keras.layers.keras_hub import ENCODER_BACKBONES

RESIZERS: dict[str, Callable] = {}


def resizes(*class_names: str):
    def wrap(fn):
        for name in class_names:
            RESIZERS[name] = fn
        return fn

    return wrap


def resizer_for(layer) -> Callable | None:
    return RESIZERS.get(type(layer).__name__)


def _by_path(layer, weights):
    return dict(zip((v.path for v in layer.weights), weights))


# ---- convolutions -----------------------------------------------------------------------------------------------

@resizes("Conv1D", "Conv2D", "Conv3D")
def conv_widths(config, layer, weights, out_shape):
    kernel = weights[0]
    groups = config.get("groups", 1)
    if groups > 1 and layer.kernel.shape[-2] == 1:  # depthwise written as a grouped conv (ConvNeXt)
        config["groups"] = int(kernel.shape[-1] // (layer.filters // groups))
    config["filters"] = int(kernel.shape[-1])
    return config


@resizes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose_widths(config, layer, weights, out_shape):
    config["filters"] = int(weights[0].shape[-2])  # kernel [*k, filters, in]
    return config


@resizes("SeparableConv1D", "SeparableConv2D")
def separable_widths(config, layer, weights, out_shape):
    config["filters"] = int(weights[1].shape[-1])
    return config


# ---- dense, embeddings, attention ---------------------------------------------------------------------------------

@resizes("Dense")
def dense_widths(config, layer, weights, out_shape):
    config["units"] = int(weights[0].shape[-1])
    return config


@resizes("EinsumDense")
def einsum_widths(config, layer, weights, out_shape):
    from spa_keras.formats.keras.layers.dense import einsum_parts

    xl, kl, out = einsum_parts(layer.equation, layer.input_spec.ndim)  # the rank it was built for (any call)
    n = len([c for c in xl if c not in out])
    new = dict(zip(kl[n:], weights[0].shape[n:]))
    partial = config["output_shape"]
    scalar = not isinstance(partial, (list, tuple))
    partial = [partial] if scalar else list(partial)
    letters = out[1:]  # output_shape leaves out the first (batch) axis
    partial = [int(new[c]) if c in new and d is not None else d for c, d in zip(letters[-len(partial):], partial)]
    config["output_shape"] = partial[0] if scalar else partial
    return config


@resizes("Embedding", "ReversibleEmbedding")
def embedding_width(config, layer, weights, out_shape):
    config["output_dim"] = int(weights[0].shape[-1])
    return config


@resizes("MultiHeadAttention", "CachedMultiHeadAttention")
def attention_widths(config, layer, weights, out_shape):
    by_path = _by_path(layer, weights)
    query, value = by_path[layer._query_dense.kernel.path], by_path[layer._value_dense.kernel.path]
    output = by_path[layer._output_dense.kernel.path]
    config["num_heads"], config["key_dim"] = int(query.shape[1]), int(query.shape[2])
    if config.get("value_dim") is not None or value.shape[2] != query.shape[2]:
        config["value_dim"] = int(value.shape[2])
    # without output_shape the output width follows the query's; say it when the two groups differ now
    if config.get("output_shape") is not None or output.shape[-1] != query.shape[0]:
        partial = config.get("output_shape")
        config["output_shape"] = [int(output.shape[-1])] if isinstance(partial, (list, tuple)) else int(
            output.shape[-1])
    return config


# ---- normalisation and shapes -------------------------------------------------------------------------------------

@resizes("GroupNormalization")
def group_norm_widths(config, layer, weights, out_shape):
    old = layer.gamma.shape[0] if layer.scale else layer.beta.shape[0] if layer.center else layer.input.shape[-1]
    config["groups"] = int(layer.groups * out_shape[-1] // old)
    return config


@resizes("Reshape")
def reshape_target(config, layer, weights, out_shape):
    # only sizes that pruning changed are rewritten: -1 stays inferred (a free length the analysis took as 1)
    config["target_shape"] = tuple(d if d == -1 else int(n) for d, n in zip(layer.target_shape, out_shape[1:]))
    return config


@resizes("LayerScale")
def layer_scale_width(config, layer, weights, out_shape):
    config["projection_dim"] = int(weights[0].shape[0])
    return config


# ---- keras-hub ----------------------------------------------------------------------------------------------------

@resizes("TransformerEncoder")
def transformer_encoder_width(config, layer, weights, out_shape):
    config["intermediate_dim"] = int(_by_path(layer, weights)[layer._feedforward_intermediate_dense.kernel.path]
                                     .shape[-1])
    return config


@resizes("ViTEncoder")
def vit_encoder_width(config, layer, weights, out_shape):
    config["mlp_dim"] = int(_by_path(layer, weights)[layer.encoder_layers[0].mlp.dense_1.kernel.path].shape[-1])
    return config


@resizes(*ENCODER_BACKBONES)
def encoder_backbone_width(config, model, weights, out_shape):
    encoder = next(layer for layer in model.layers if type(layer).__name__ == "TransformerEncoder")
    return transformer_encoder_width(config, encoder, _weights_of(encoder, model, weights), out_shape)


@resizes("ViTBackbone")
def vit_backbone_width(config, model, weights, out_shape):
    encoder = next(layer for layer in model.layers if type(layer).__name__ == "ViTEncoder")
    return vit_encoder_width(config, encoder, _weights_of(encoder, model, weights), out_shape)


def _weights_of(layer, model, weights):
    """The sliced weights of `layer` out of its model's sliced weights (matched by variable path)."""
    by_path = _by_path(model, weights)
    return [by_path[v.path] for v in layer.weights]
