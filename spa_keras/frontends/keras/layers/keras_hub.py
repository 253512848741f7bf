"""keras-hub layers: TransformerEncoder (BERT and friends) and ReversibleEmbedding.

keras-hub's TransformerEncoder derives its attention `key_dim` from `hidden_dim / num_heads` when it builds, so a
rebuilt encoder cannot have fewer heads or a narrower residual stream with the same per-head width: its attention
is described as a barrier that says so, and the feed-forward width (`intermediate_dim`) prunes. Prune heads and
the hidden size of such models with `via="onnx"`.
"""

from spa_keras.frontends.keras.layers.dense import dense, embedding
from spa_keras.frontends.keras.layers.normalization import layer_norm
from spa_keras.frontends.keras.registry import describes, resizes

describes("ReversibleEmbedding")(embedding)

ATTENTION_REASON = ("keras-hub TransformerEncoder computes key_dim = hidden_dim / num_heads: heads and the hidden "
                    "size stay (via='onnx' prunes them)")


@describes("TransformerEncoder", single=False)
def transformer_encoder(b, layer, call):
    x = call.args[0] if call.args else call.kwargs.get("inputs")
    shape = b.shape(x) if isinstance(x, str) else None
    if shape is None or len(call.outputs) != 1:
        return False
    width = layer._feedforward_intermediate_dense.kernel.shape[-1]
    ffn = list(shape[:-1]) + [width]

    def norm(sub, t):
        out = b.fresh(layer, sub.name, shape)
        layer_norm(b, sub, t, out, shape, shape)
        return out

    first = layer.normalize_first
    t = norm(layer._self_attention_layer_norm, x) if first else x
    attended = b.fresh(layer, "attention", shape)
    attention = layer._self_attention_layer
    b.node(layer, "TransformerEncoderAttention", [t] + [b.param(attention, v) for v in attention.weights],
           [attended], domain="keras", reason=ATTENTION_REASON)
    h = b.fresh(layer, "residual_1", shape)
    b.node(layer, "Add", [x, attended], [h])
    if not first:
        h = norm(layer._self_attention_layer_norm, h)
    t = norm(layer._feedforward_layer_norm, h) if first else h
    inner = b.fresh(layer, "intermediate", ffn)
    dense(b, layer._feedforward_intermediate_dense, t, inner, shape, ffn)
    f = b.fresh(layer, "feedforward", shape)
    dense(b, layer._feedforward_output_dense, inner, f, ffn, shape)
    if first:
        b.node(layer, "Add", [h, f], call.outputs)
    else:
        y = b.fresh(layer, "residual_2", shape)
        b.node(layer, "Add", [h, f], [y])
        layer_norm(b, layer._feedforward_layer_norm, y, call.outputs[0], shape, shape)
    return True


@resizes("TransformerEncoder")
def transformer_encoder_width(config, layer, weights, out_shape):
    by_path = dict(zip((v.path for v in layer.weights), weights))
    config["intermediate_dim"] = int(by_path[layer._feedforward_intermediate_dense.kernel.path].shape[-1])
    return config
