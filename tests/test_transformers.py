"""keras-hub transformers (built from config, random weights, no download) through tf2onnx into the ONNX engine:
heads, the feed-forward width and the hidden size all prune, and the slim model runs with unchanged outputs shapes."""

import numpy as np
import onnx
import pytest

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.common.tensors import random_batch

keras_hub = pytest.importorskip("keras_hub")


def bert_classifier(hidden=64, heads=4, seq=16):
    import keras

    backbone = keras_hub.models.BertBackbone(vocabulary_size=1000, num_layers=2, num_heads=heads, hidden_dim=hidden,
                                             intermediate_dim=2 * hidden, max_sequence_length=seq,
                                             name="bert_backbone")  # fixed: the tests look the backbone up by name
    inputs = {name: keras.Input((seq,), dtype="int32", name=name) for name in ("token_ids", "segment_ids",
                                                                             "padding_mask")}
    pooled = backbone(inputs)["pooled_output"]
    return keras.Model(list(inputs.values()), keras.layers.Dense(3, name="head")(pooled))


def vit_classifier():
    import keras

    backbone = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                                            hidden_dim=32, mlp_dim=64, name="vi_t_backbone")
    inputs = keras.Input((32, 32, 3), name="image")
    features = backbone(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(features[:, 0]))


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    spa.convert(bert_classifier(), path)
    return str(path)


def test_bert_prunes_heads_ffn_and_hidden(bert_onnx):
    analysis = spa.analyze(bert_onnx)
    free = [g for g in analysis.groups if not g.blocked.any()]
    assert sorted(g.channels for g in free).count(4) == 2          # the 4 heads of each of the 2 layers
    assert sorted(g.channels for g in free).count(128) == 2        # the feed-forward width of each layer
    hidden = [g for g in free if g.channels == 64 and len(g.members) > 10]
    assert hidden, "the residual stream (hidden size) should be one prunable group"
    model = onnx.load(bert_onnx)
    result = spa.prune(model, ratio=0.3, criterion="l1")
    feeds = random_batch(onnx_io.input_specs(model))
    ref, out = onnx_io.run(model, feeds), onnx_io.run(result.model, feeds)
    assert [v.shape for v in ref.values()] == [v.shape for v in out.values()]
    assert all(np.isfinite(v).all() for v in out.values())
    assert spa.count(result.model).params == result.after.params < result.before.params


def test_vit_prunes(tmp_path):
    path = tmp_path / "vit.onnx"
    spa.convert(vit_classifier(), path)
    model = onnx.load(path)
    result = spa.prune(model, ratio=0.3, criterion="l1")
    feeds = random_batch(onnx_io.input_specs(model))
    out = onnx_io.run(result.model, feeds)
    assert [v.shape for v in out.values()] == [(2, 3)]
    assert spa.count(result.model).params == result.after.params < result.before.params


def test_bert_through_the_keras_front_end(tmp_path):
    """keras-hub's TransformerEncoder fixes key_dim = hidden / heads at build time: through the Keras front-end the
    feed-forward width prunes (removal = masking), heads and hidden size are a named barrier. BertBackbone holds one
    intermediate_dim, so its layers' feed-forward channels are one group and the slim backbone is a BertBackbone."""
    import keras

    from tests.oracles import masked_keras

    model = bert_classifier()
    analysis = spa.analyze(model)
    free = sorted(g.channels for g in analysis.groups if g.prunable)
    assert free.count(128) == 1, free  # the feed-forward width, the same channels in both layers
    assert any("key_dim" in b.reason for b in analysis.barriers)
    result = spa.prune(model, ratio=0.3, analysis=analysis, criterion="l1")
    slim = result.model
    widths = [layer.intermediate_dim for layer in slim.get_layer("bert_backbone").layers
              if type(layer).__name__ == "TransformerEncoder"]
    assert len(widths) == 2 and widths[0] == widths[1] < 128
    assert type(slim.get_layer("bert_backbone")) is type(model.get_layer("bert_backbone"))
    assert slim.get_layer("bert_backbone").get_config()["intermediate_dim"] == widths[0]
    assert slim.count_params() == result.after.params < result.before.params
    rng = np.random.default_rng(0)
    feeds = {"token_ids": rng.integers(0, 1000, (2, 16)).astype("int32"),
             "segment_ids": rng.integers(0, 2, (2, 16)).astype("int32"), "padding_mask": np.ones((2, 16), "int32")}
    masked = masked_keras(analysis, result.plan.mask(analysis))
    np.testing.assert_allclose(np.asarray(slim(feeds)), np.asarray(masked(feeds)), rtol=1e-4, atol=1e-5)
    slim.save(tmp_path / "bert.keras")
    again = keras.models.load_model(tmp_path / "bert.keras")
    np.testing.assert_allclose(np.asarray(again(feeds)), np.asarray(slim(feeds)), rtol=1e-6, atol=1e-6)


def test_vit_through_the_keras_front_end(tmp_path):
    """ViTEncoder has one mlp_dim for all blocks: the blocks' feed-forward channels form one tied group that prunes
    (removal = masking); heads and hidden size are the same named barrier as in BERT."""
    from tests.oracles import masked_keras

    model = vit_classifier()
    analysis = spa.analyze(model)
    free = [g for g in analysis.groups if g.prunable]
    assert [g.channels for g in free] == [64]  # mlp_dim 64, the same channels in both blocks
    result = spa.prune(model, ratio=0.3, analysis=analysis, criterion="l1")
    slim = result.model
    encoder = slim.get_layer("vi_t_backbone").get_layer("vit_encoder")
    assert encoder.mlp_dim == 64 - len(result.plan.removed[free[0].key])
    assert type(slim.get_layer("vi_t_backbone")) is type(model.get_layer("vi_t_backbone"))
    assert slim.count_params() == result.after.params < result.before.params
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    masked = masked_keras(analysis, result.plan.mask(analysis))
    np.testing.assert_allclose(np.asarray(slim(x)), np.asarray(masked(x)), rtol=1e-4, atol=1e-5)
    import keras

    slim.save(tmp_path / "vit.keras")
    again = keras.models.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(slim(x)), rtol=1e-6, atol=1e-6)
