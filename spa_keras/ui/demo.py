"""`spa demo`: the built-in default, no arguments and no network.

A small ResNet trained on Fashion-MNIST ships with the package (`assets/fashion_resnet.keras`, made by
`train_demo_model`). The demo counts it, converts it to ONNX and TFLite with verification, and measures test
accuracy in every format when Fashion-MNIST is installed (Debian package `dataset-fashion-mnist`; `make demo`
installs it). It then prunes half the FLOPs and compares, without fine-tuning, L1 with data-free OBSPA (which
refits the kept weights), and L1 after one short epoch of fine-tuning.
"""

import gzip
import os
import shutil
import tempfile
import time

import numpy as np

ASSET = os.path.join(os.path.dirname(__file__), "assets", "fashion_resnet.keras")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# the demo's data-free OBSPA: 32 synthetic inputs x 200 steps (half the defaults' 64 x 200, to keep the demo short;
# this ResNet needs the steps: 67% at -50% FLOPs with 64 x 100), fixed, so the row is the same everywhere
DEMO_OBSPA = dict(samples=32, steps=200)


def fashion_mnist(directory=FASHION_DIR):
    """`((x_train, y_train), (x_test, y_test))` as float32 NHWC in [0, 1], or None when not installed."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    paths = [os.path.join(directory, n) for n in names]
    if not all(os.path.exists(p) for p in paths):
        return None

    def idx(path, offset):
        with gzip.open(path) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    x_train = idx(paths[0], 16).reshape(-1, 28, 28, 1).astype("float32") / 255.0
    x_test = idx(paths[2], 16).reshape(-1, 28, 28, 1).astype("float32") / 255.0
    return (x_train, idx(paths[1], 8).astype("int64")), (x_test, idx(paths[3], 8).astype("int64"))


def build_demo_model():
    """A small ResNet for 28×28×1 inputs: residual adds, a strided projection shortcut, BatchNorm, GAP, Dense."""
    import keras
    from keras import layers

    def block(x, filters, stride, name):
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return layers.ReLU(name=f"{name}_out")(y)

    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = block(x, 32, 1, "block1")
    x = block(x, 64, 2, "block2")
    x = block(x, 128, 2, "block3")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_resnet")


def train_demo_model(path=ASSET, epochs=3, seed=0):
    """Train the demo ResNet on Fashion-MNIST with fixed seeds and save it to `path`; return test accuracy."""
    import keras

    data = fashion_mnist()
    if data is None:
        from spa_keras.common.errors import InputError

        raise InputError(f"Fashion-MNIST is not installed in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build_demo_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=epochs, validation_split=0.0, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    model.compile()  # ship without optimizer state
    model.save(path)
    return accuracy


def load_demo_model():
    """The shipped demo model; trained here (≈ 3 minutes) when the asset is missing."""
    from spa_keras.bridges import keras_io

    if not os.path.exists(ASSET):
        cache = os.path.join(os.path.expanduser("~"), ".cache", "spa-keras", "fashion_resnet.keras")
        if not os.path.exists(cache):
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            train_demo_model(cache)
        return keras_io.load(cache)
    return keras_io.load(ASSET)


def accuracy(predict, x, y, batch=1000):
    """Top-1 accuracy of `predict(x_batch) -> logits` on (x, y)."""
    hits = 0
    for i in range(0, len(x), batch):
        hits += int(np.sum(np.argmax(predict(x[i:i + batch]), axis=-1) == y[i:i + batch]))
    return hits / len(x)


def _prune_demo(model, data, workdir, console, flops=0.5, finetune_images=20000):
    """Prune the demo model to -50% FLOPs with L1, measure accuracy before and after one short fine-tuning pass, and
    without fine-tuning beside data-free OBSPA at the same target."""
    import keras
    from rich.table import Table

    import spa_keras as spa
    from spa_keras.bridges import keras_io
    from spa_keras.pipeline.convert import convert

    console.rule(f"pruning: remove {100 * flops:.0f}% of FLOPs (L1 group importance, global ranking)")
    start = time.perf_counter()
    result = spa.prune(model, flops=flops, criterion="l1")
    seconds = time.perf_counter() - start
    slim = result.model
    groups = result.analysis.groups
    console.print(f"{len(groups)} channel groups; pruned in {seconds:.2f} s: {result.before} -> {result.after}")
    table = Table(title="channels per group")
    for col in ("group", "before", "after"):
        table.add_column(col, justify="right" if col != "group" else "left")
    for g in groups:
        gone = len(result.plan.removed.get(g.key, []))
        table.add_row(g.key.param.split("/")[0], str(g.channels), str(g.channels - gone))
    console.print(table)
    out = {"seconds": seconds, "params": [result.before.params, result.after.params],
           "flops": [result.before.flops, result.after.flops]}
    from spa_keras.common.console import print_check

    path = os.path.join(workdir, "fashion_resnet_slim.tflite")
    for check in convert(slim, path).checks:
        print_check(check, "slim ")
    if data is None:
        return out
    (x_train, y_train), (x_test, y_test) = data
    predict = lambda m: lambda x: keras_io.run(m, {"image": x})["logits"]  # noqa: E731
    out["accuracy_before"] = accuracy(predict(model), x_test, y_test)
    out["accuracy_pruned"] = accuracy(predict(slim), x_test, y_test)
    console.rule("the same target with OBSPA: no data, no fine-tuning, kept weights refit")
    start = time.perf_counter()
    obspa = spa.prune(model, flops=flops, criterion=spa.importance.OBSPA(**DEMO_OBSPA))
    out["obspa"] = {"seconds": time.perf_counter() - start, "params": obspa.after.params, "flops": obspa.after.flops,
                    "accuracy": accuracy(predict(obspa.model), x_test, y_test)}
    console.print(f"pruned with OBSPA in {out['obspa']['seconds']:.1f} s (synthetic inputs that reproduce the "
                  f"BatchNorm statistics, made from the model alone): {obspa.after}")
    with console.status(f"fine-tuning the slim model: 1 epoch on {finetune_images:,} training images"):
        keras.utils.set_random_seed(0)
        slim.compile(optimizer=keras.optimizers.Adam(5e-4),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        slim.fit(x_train[:finetune_images], y_train[:finetune_images], batch_size=128, epochs=1, verbose=0)
    out["accuracy_finetuned"] = accuracy(predict(slim), x_test, y_test)
    table = Table(title="Fashion-MNIST test accuracy")
    for col in ("model", "params", "MFLOPs", "accuracy"):
        table.add_column(col, justify="right" if col != "model" else "left")
    table.add_row("original", f"{result.before.params:,}", f"{result.before.flops / 1e6:.1f}",
                  f"{100 * out['accuracy_before']:.2f}%")
    table.add_row("pruned, no fine-tuning: L1", f"{result.after.params:,}", f"{result.after.flops / 1e6:.1f}",
                  f"{100 * out['accuracy_pruned']:.2f}%")
    table.add_row("pruned, no fine-tuning: OBSPA (data-free)", f"{out['obspa']['params']:,}",
                  f"{out['obspa']['flops'] / 1e6:.1f}", f"{100 * out['obspa']['accuracy']:.2f}%")
    table.add_row("pruned (L1) + 1 short epoch", f"{result.after.params:,}", f"{result.after.flops / 1e6:.1f}",
                  f"{100 * out['accuracy_finetuned']:.2f}%")
    console.print(table)
    return out


def run_demo(workdir=None):
    """Print the demo report; return a dict of what it measured (for tests)."""
    from rich.table import Table

    from spa_keras import count
    from spa_keras.bridges import keras_io, onnx_io, tflite_io
    from spa_keras.common.console import console, print_check
    from spa_keras.pipeline.convert import convert

    own_dir = workdir is None
    workdir = tempfile.mkdtemp(prefix="spa-demo-") if own_dir else workdir
    os.makedirs(workdir, exist_ok=True)
    try:
        console.rule("spa-keras demo: Fashion-MNIST ResNet")
        with console.status("loading the demo model"):
            model = load_demo_model()
        counts = count(model)
        console.print(f"model [bold]{model.name}[/bold]: {counts.params:,} parameters, "
                      f"{counts.flops / 1e6:.2f} MFLOPs per image (FLOPs = 2 x MACs of Conv/Dense)")
        paths = {"onnx": os.path.join(workdir, "fashion_resnet.onnx"),
                 "tflite": os.path.join(workdir, "fashion_resnet.tflite")}
        result = {"params": counts.params, "flops": counts.flops, "checks": {}, "accuracy": {}}
        for kind, path in paths.items():
            start = time.perf_counter()
            with console.status(f"converting to {kind}") as status:
                report = convert(model, path, progress=status.update)
            for check in report.checks:
                print_check(check)
                result["checks"][kind] = check.rel
            console.print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, "
                          f"{time.perf_counter() - start:.1f} s)")
        onnx_counts = count(paths["onnx"])
        console.print(f"ONNX count: {onnx_counts} (BatchNorm folded into Conv by tf2onnx)")
        data = fashion_mnist()
        table = Table(title="Fashion-MNIST test set (10,000 images)")
        table.add_column("format")
        table.add_column("runtime")
        table.add_column("accuracy", justify="right")
        if data is None:
            console.print(f"[yellow]Fashion-MNIST not found in {FASHION_DIR}; skipping accuracy "
                          "(apt-get install dataset-fashion-mnist)[/yellow]")
        else:
            _, (x_test, y_test) = data
            session = onnx_io.session(paths["onnx"])
            with open(paths["tflite"], "rb") as f:
                flatbuffer = f.read()
            runners = {
                ("Keras 3", "keras"): lambda x: keras_io.run(model, {"image": x})["logits"],
                ("ONNX", "onnxruntime"): lambda x: onnx_io.run(session, {"image": x})["logits"],
                ("TFLite", "LiteRT"): lambda x: next(iter(tflite_io.run(flatbuffer, {"image": x}).values())),
            }
            with console.status("measuring accuracy"):
                for (fmt, runtime), predict in runners.items():
                    acc = accuracy(predict, x_test, y_test)
                    result["accuracy"][fmt] = acc
                    table.add_row(fmt, runtime, f"{100 * acc:.2f}%")
            console.print(table)
        result["pruning"] = _prune_demo(model, data, workdir, console)
        console.print("next: spa prune MODEL -o OUT --flops 0.5   |   spa convert MODEL OUT")
        return result
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
