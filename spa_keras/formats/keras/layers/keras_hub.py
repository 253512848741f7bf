"""keras-hub layers: TransformerEncoder (BERT and friends), ViTEncoder and ReversibleEmbedding.

keras-hub's encoders derive their attention `key_dim` from `hidden_dim / num_heads` when they build, so a rebuilt
encoder cannot have fewer heads or a narrower residual stream with the same per-head width: their attention is
described as a barrier that says so, and the feed-forward width (`intermediate_dim`, `mlp_dim`) prunes. Prune heads
and the hidden size of such models with `via="onnx"`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spa_keras.formats.keras.layers.dense import dense, embedding
from spa_keras.formats.keras.layers.normalization import layer_norm
from spa_keras.formats.keras.registry import after_model, describes, resizes

if TYPE_CHECKING:
    import numpy as np

    from spa_keras.formats.keras.builder import Call, GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, Weights


@describes("ReversibleEmbedding", single=False)
def reversible_embedding(b: GraphBuilder, layer: Any, call: Call) -> bool:
    """The forward call is an Embedding; the reverse call (`reverse=True`: logits against the embedding matrix) is
    not described, so the embedding width it reads is a barrier."""
    reverse = call.kwargs.get("reverse", call.args[1] if len(call.args) > 1 else False)
    if reverse or not getattr(layer, "tie_weights", True) or len(call.inputs) != 1 or len(call.outputs) != 1:
        return False  # untied: a separate reverse matrix [width, vocabulary] that no node reads would not shrink
    x, y = call.inputs[0], call.outputs[0]
    xs, ys = b.shape(x), b.shape(y)
    return xs is not None and ys is not None and embedding(b, layer, x, y, xs, ys)


ATTENTION_REASON = ("keras-hub computes key_dim = hidden_dim / num_heads when it builds: heads and the hidden size "
                    "stay (via='onnx' prunes them)")


def _norm(b: GraphBuilder, layer: Any, sub: Any, t: str, shape: Dims) -> str:
    out = b.fresh(layer, sub.name, shape)
    layer_norm(b, sub, t, out, shape, shape)
    return out


def _attention(b: GraphBuilder, layer: Any, attention: Any, t: str, shape: Dims) -> str:
    """keras-hub attention whose key_dim is derived from the hidden size: a barrier that says so."""
    out = b.fresh(layer, "attention", shape)
    b.node(layer, "KerasHubAttention", [t] + [b.param(attention, v) for v in attention.weights], [out],
           domain="keras", reason=ATTENTION_REASON)
    return out


def _add(b: GraphBuilder, layer: Any, x: str, y: str, shape: Dims, out: str | None = None) -> str:
    out = out or b.fresh(layer, "residual", shape)
    b.node(layer, "Add", [x, y], [out])
    return out


def _feedforward(b: GraphBuilder, layer: Any, inner_dense: Any, output_dense: Any, t: str,
                 shape: Dims) -> tuple[str, str]:
    """Dense → Dense; returns (output, the intermediate tensor)."""
    inner_shape = list(shape[:-1]) + [inner_dense.kernel.shape[-1]]
    inner = b.fresh(layer, "intermediate", inner_shape)
    dense(b, inner_dense, t, inner, shape, inner_shape)
    out = b.fresh(layer, "feedforward", shape)
    dense(b, output_dense, inner, out, inner_shape, shape)
    return out, inner


@describes("TransformerEncoder", single=False)
def transformer_encoder(b: GraphBuilder, layer: Any, call: Call) -> bool:
    x = call.args[0] if call.args else call.kwargs.get("inputs")
    shape = b.shape(x) if isinstance(x, str) else None
    if shape is None or len(call.outputs) != 1:
        return False
    assert isinstance(x, str)  # its shape is known: a graph tensor
    first = layer.normalize_first
    t = _norm(b, layer, layer._self_attention_layer_norm, x, shape) if first else x
    h = _add(b, layer, x, _attention(b, layer, layer._self_attention_layer, t, shape), shape)
    if not first:
        h = _norm(b, layer, layer._self_attention_layer_norm, h, shape)
    t = _norm(b, layer, layer._feedforward_layer_norm, h, shape) if first else h
    f, inner = _feedforward(b, layer, layer._feedforward_intermediate_dense, layer._feedforward_output_dense, t,
                            shape)
    b.notes[id(layer)] = inner
    if first:
        _add(b, layer, h, f, shape, call.outputs[0])
    else:
        layer_norm(b, layer._feedforward_layer_norm, _add(b, layer, h, f, shape), call.outputs[0], shape, shape)
    return True


@describes("ViTEncoder")
def vit_encoder(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    """Pre-norm blocks; one `mlp_dim` for all blocks, so their feed-forward channels are tied."""
    t, inners = x, []
    for block in layer.encoder_layers:
        h = _add(b, layer, t, _attention(b, layer, block.mha, _norm(b, layer, block.layer_norm_1, t, xs), xs), xs)
        f, inner = _feedforward(b, layer, block.mlp.dense_1, block.mlp.dense_2,
                                _norm(b, layer, block.layer_norm_2, h, xs), xs)
        t = _add(b, layer, h, f, xs)
        inners.append(inner)
    if len(inners) > 1:
        b.node(layer, "Tie", inners, [], domain="spa", axis=-1)
    layer_norm(b, layer.layer_norm, t, y, xs, ys)
    return True


# Backbones rebuilt from their own config (so that they keep their class) hold one feed-forward width for all
# their encoder layers: the encoders' feed-forward channels are tied inside them.
ENCODER_BACKBONES = ("BertBackbone", "RobertaBackbone", "DistilBertBackbone", "XLMRobertaBackbone")


@after_model(*ENCODER_BACKBONES)
def tie_encoder_widths(b: GraphBuilder, model: Any) -> None:
    inners = [b.notes[id(layer)] for layer in model.layers if id(layer) in b.notes]
    if len(inners) > 1:
        b.node(model, "Tie", inners, [], domain="spa", axis=-1)
    for layer in model.layers:  # other widths (the pooler's) follow hidden_dim in the config: they stay
        if type(layer).__name__ == "Dense" and id(layer) in b.layer_outputs:
            b.node(layer, "FixedWidth", [b.layer_outputs[id(layer)]], [], domain="keras",
                   reason=f"{type(model).__name__} sets this width from hidden_dim in its config")


# ---- surgery: the slim layer's (or backbone's) config ----------------------------------------------------------

def _by_path(layer: Any, weights: Weights) -> dict[str, np.ndarray]:
    return dict(zip((v.path for v in layer.weights), weights))


@resizes("TransformerEncoder")
def transformer_encoder_width(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["intermediate_dim"] = int(_by_path(layer, weights)[layer._feedforward_intermediate_dense.kernel.path]
                                     .shape[-1])
    return config


@resizes("ViTEncoder")
def vit_encoder_width(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["mlp_dim"] = int(_by_path(layer, weights)[layer.encoder_layers[0].mlp.dense_1.kernel.path].shape[-1])
    return config


@resizes(*ENCODER_BACKBONES)
def encoder_backbone_width(config: Config, model: Any, weights: Weights, out_shape: Dims | None) -> Config:
    encoder = next(layer for layer in model.layers if type(layer).__name__ == "TransformerEncoder")
    return transformer_encoder_width(config, encoder, _weights_of(encoder, model, weights), out_shape)


@resizes("ViTBackbone")
def vit_backbone_width(config: Config, model: Any, weights: Weights, out_shape: Dims | None) -> Config:
    encoder = next(layer for layer in model.layers if type(layer).__name__ == "ViTEncoder")
    return vit_encoder_width(config, encoder, _weights_of(encoder, model, weights), out_shape)


def _weights_of(layer: Any, model: Any, weights: Weights) -> Weights:
    """The sliced weights of `layer` out of its model's sliced weights (matched by variable path)."""
    by_path = _by_path(model, weights)
    return [by_path[v.path] for v in layer.weights]
