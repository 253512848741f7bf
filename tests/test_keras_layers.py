"""Keras layers beyond the basics: per-channel preprocessing, GroupNorm, transposed and 1-D convolutions,
EinsumDense, MultiHeadAttention (whole heads), models used as layers. Oracles: ratio 0 is the identity, the slim
model's count_params equals the plan's count, removal equals masking where no statistic sees every channel,
and `.keras` save/load round-trips."""

import numpy as np
import pytest

import spa_keras as spa
from spa_keras.common.verify import compare
from tests import models
from tests.oracles import masked_keras, run

# removal = masking on the whole model, except where a LayerNorm sees every channel (sequence_layers: checked group by
# group below)
MASKING = {"image_layers": True, "sequence_layers": False, "nested_models": True, "more_layers": True}


@pytest.mark.parametrize("name", sorted(MASKING))
def test_layers_prune_like_masking(name, tmp_path):
    import keras

    model = getattr(models, name)()
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    analysis = spa.analyze(model)
    barriers = [(b.node, b.op_type, b.reason) for b in analysis.barriers]
    if name == "more_layers":  # the built-in softmax of `probs` mixes its units: they stay, the rest prunes
        assert [(node.split("/")[0], op) for node, op, _ in barriers] == [("probs", "Softmax")], barriers
    else:
        assert not barriers, barriers
    same = spa.prune(model, ratio=0.0, analysis=analysis, criterion="l1")
    assert compare(run(model, x), run(same.model, x), source="keras", target="identity", tolerance=1e-6).ok
    result = spa.prune(model, ratio=0.4, analysis=analysis, criterion="l1")
    slim = result.model
    assert slim.count_params() == result.after.params < result.before.params == model.count_params()
    assert spa.count(slim).flops == result.after.flops
    assert run(slim, x)["y"].shape == run(model, x)["y"].shape
    if MASKING[name]:
        removed = result.plan.mask(analysis)
        check = compare(run(masked_keras(analysis, removed), x), run(slim, x), source="masked", target="slim",
                        tolerance=1e-5)
        assert check.ok, check
    slim.save(tmp_path / "slim.keras")
    again = keras.models.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(run(again, x)["y"], run(slim, x)["y"], rtol=1e-6, atol=1e-6)


def test_sequence_layers_prune_like_masking_group_by_group():
    """Groups whose channels never reach the LayerNorm (the Conv1D family, the attention heads, the split heads)
    each prune half their channels, and the slim model equals the masked original."""
    model = models.sequence_layers()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 10, 6)).astype("float32")
    analysis = spa.analyze(model)
    params = analysis.graph.params
    checked = 0
    for group in analysis.groups:
        if not group.prunable or any(m.param.startswith("ln/") for m in group.members):
            continue
        plan = spa.PruningPlan({group.key: list(range(0, group.channels, 2))},
                               {g.key: g.channels for g in analysis.groups})
        slim = spa.prune(model, plan=plan, analysis=analysis).model
        masked = masked_keras(analysis, plan.mask(analysis))
        check = compare(run(masked, x), run(slim, x), source="masked", target=f"slim without half of {group.key}",
                        tolerance=1e-5)
        assert check.ok, check
        checked += 1
    assert checked >= 5 and params  # conv, dw/sep, convt, heads, split heads


def test_attention_loses_whole_heads():
    model = models.sequence_layers()
    analysis = spa.analyze(model)
    heads = [g for g in analysis.groups if any(m.param == "mha/value/kernel" and m.axis == 1 for m in g.members)]
    assert len(heads) == 1 and heads[0].channels == 4  # one channel per head: Q, K, V and the output rows of it
    result = spa.prune(model, plan=spa.PruningPlan({heads[0].key: [1, 3]}, {g.key: g.channels for g in
                                                                           analysis.groups}), analysis=analysis)
    mha = result.model.get_layer("mha")
    assert (mha.num_heads, mha.key_dim, mha.value_dim) == (2, 6, 5)
    old = model.get_layer("mha")
    kept = [0, 2]
    np.testing.assert_array_equal(mha._query_dense.kernel.numpy(), old._query_dense.kernel.numpy()[:, kept])
    np.testing.assert_array_equal(mha._output_dense.kernel.numpy(), old._output_dense.kernel.numpy()[kept])
    # the slim attention equals the original with heads 1 and 3 silenced at the output projection
    import keras

    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    out = masked.get_layer("mha")._output_dense.kernel
    value = out.numpy().copy()
    value[[1, 3]] = 0
    out.assign(value)
    x = np.random.default_rng(1).normal(0, 1, (2, 10, 6)).astype("float32")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(masked(x)), rtol=1e-5, atol=1e-5)


def test_nested_model_keeps_its_structure():
    import keras

    model = models.nested_models()
    model.get_layer("stem").trainable = False
    model.get_layer("backbone").get_layer("conv_a").trainable = False
    result = spa.prune(model, ratio=0.5, criterion="l1")
    slim = result.model
    assert not slim.get_layer("stem").trainable and not slim.get_layer("backbone").get_layer("conv_a").trainable
    assert slim.get_layer("head").trainable
    assert isinstance(slim.get_layer("block"), keras.Sequential)
    assert isinstance(slim.get_layer("backbone"), keras.Model)
    assert slim.get_layer("block").get_layer("conv").filters < 8
    assert [type(layer) for layer in slim.get_layer("backbone").layers] == [
        type(layer) for layer in model.get_layer("backbone").layers]


def test_free_sequence_length_takes_the_given_input_shape():
    import keras

    inputs = keras.Input((None, 8), name="tokens")
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 16), bias_axes="d", name="up")(inputs)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.Dense(8, name="down")(x)
    model = keras.Model(inputs, x)
    assert not spa.analyze(model).barriers
    seven = spa.analyze(model, input_shape={None: (1, 7, 8)})
    one = spa.analyze(model)
    assert seven.counts.flops > one.counts.flops  # FLOPs are counted at the given length
    slim = spa.prune(model, ratio=0.3, analysis=seven, criterion="l1").model
    assert slim(np.zeros((1, 5, 8), np.float32)).shape == (1, 5, 8)


def test_config_constants_and_group_norm_follow_their_channels():
    model = models.image_layers()
    analysis = spa.analyze(model)
    group = next(g for g in analysis.groups if any(m.param == "conv/kernel" for m in g.members))
    assert group.channels == 4  # GroupNormalization(groups=4) on 16 channels: whole groups of 4 go
    plan = spa.PruningPlan({group.key: [1, 2]}, {g.key: g.channels for g in analysis.groups})
    slim = spa.prune(model, plan=plan, analysis=analysis).model
    assert slim.get_layer("conv").filters == 8 and slim.get_layer("gn").groups == 2
    mean = np.linspace(-1, 1, 16).reshape(4, 4)[[0, 3]].ravel()
    np.testing.assert_allclose(slim.get_layer("fixed_norm").get_config()["mean"], mean, rtol=1e-6)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 12, 12, 3)).astype("float32")
    assert slim(x).shape == model(x).shape


def test_recurrent_and_custom_layers_are_named_barriers():
    import keras

    @keras.saving.register_keras_serializable(package="tests")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((10, 3), name="sequence")
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv_b")(x)
    x = Scale(name="scale")(x)
    x = keras.layers.LSTM(4, name="lstm")(x)
    model = models.randomize_keras(keras.Model(inputs, keras.layers.Dense(2, name="head")(x)))
    analysis = spa.analyze(model)
    assert {(b.node, b.op_type) for b in analysis.barriers} >= {("scale", "Scale"), ("lstm", "LSTM")}
    assert [g.channels for g in analysis.groups if g.prunable] == [8]  # conv_a's outputs still prune
    result = spa.prune(model, ratio=0.5, analysis=analysis, criterion="l1")
    assert result.model.get_layer("conv_a").filters == 4 and result.model.get_layer("conv_b").filters == 8
    assert result.model.count_params() == result.after.params


def test_reshape_keeps_inferred_and_free_dimensions():
    """Reshape((-1, 4, 4)) on a free sequence length: surgery writes only the sizes pruning changed, so the slim
    model still takes any length (ratio 0 and 0.5), and equals the masked original."""
    import keras

    inputs = keras.Input((None, 16), name="tokens")
    x = keras.layers.Dense(16, name="proj")(inputs)
    x = keras.layers.Reshape((-1, 4, 4), name="split")(x)
    x = keras.layers.Reshape((-1, 16), name="merge")(x)
    model = models.randomize_keras(keras.Model(inputs, keras.layers.Dense(3, name="head")(x)))
    x5 = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    analysis = spa.analyze(model)
    same = spa.prune(model, ratio=0.0, analysis=analysis, criterion="l1").model
    assert same.get_layer("split").target_shape == (-1, 4, 4)
    np.testing.assert_allclose(np.asarray(same(x5)), np.asarray(model(x5)), rtol=1e-6, atol=1e-6)
    result = spa.prune(model, ratio=0.5, analysis=analysis, criterion="l1")
    assert result.model.get_layer("split").target_shape[0] == -1
    masked = masked_keras(analysis, result.plan.mask(analysis))
    np.testing.assert_allclose(np.asarray(result.model(x5)), np.asarray(masked(x5)), rtol=1e-5, atol=1e-5)


def test_reversible_embedding():
    """Forward only: the embedding width prunes (output_dim shrinks, removal = masking). Called in reverse too
    (tied logits): the width is read by an undescribed call, a barrier, and nothing half-described stays behind."""
    import keras

    def text_model(reverse):
        tokens = keras.Input((6,), dtype="int32", name="tokens")
        embed = keras.layers.ReversibleEmbedding(50, 16, name="embed")
        x = keras.layers.Dense(16, name="mix")(embed(tokens))
        out = embed(x, reverse=True) if reverse else keras.layers.Dense(3, name="head")(x)
        return keras.Model(tokens, out)

    tokens = np.random.default_rng(0).integers(0, 50, (2, 6)).astype("int32")
    model = text_model(reverse=False)
    analysis = spa.analyze(model)
    assert not analysis.barriers
    result = spa.prune(model, ratio=0.5, analysis=analysis, criterion="l1")
    assert result.model.get_layer("embed").output_dim < 16
    assert result.model.count_params() == result.after.params
    masked = masked_keras(analysis, result.plan.mask(analysis))
    np.testing.assert_allclose(np.asarray(result.model(tokens)), np.asarray(masked(tokens)), rtol=1e-5, atol=1e-5)

    tied = spa.analyze(text_model(reverse=True))
    assert [b.op_type for b in tied.barriers] == ["ReversibleEmbedding"]
    width = [g for g in tied.groups if any(m.param.endswith("embed/embeddings") and m.axis == 1 for m in g.members)]
    assert len(width) == 1 and not width[0].prunable


def test_surgery_keeps_a_nested_models_own_trainable_flag():
    model = models.nested_models()
    model.get_layer("backbone").trainable = False
    slim = spa.prune(model, ratio=0.5, criterion="l1").model
    assert not slim.get_layer("backbone").trainable
    assert not any(layer.trainable for layer in slim.get_layer("backbone").layers)
    assert slim.get_layer("block").trainable and slim.get_layer("head").trainable
