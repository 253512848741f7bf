"""OBSPA without fine-tuning: test accuracy and onnxruntime speed-up of slim models at -30/-50/-70% FLOPs.

    python benchmarks/obspa_accuracy.py [--seeds 0,1] [--models resnet,mobilenet] [--quick] [--resume]
    python benchmarks/obspa_accuracy.py --table benchmarks/reference/obspa_accuracy.json [--markdown]

Two architectures trained here on Fashion-MNIST (/usr/share/datasets/fashion-mnist) for each seed: the demo's small
ResNet (`spa_keras.ui.demo.build_demo_model`) and a small MobileNetV2-style network (inverted residuals: 1x1 expand,
3x3 depthwise, 1x1 project, residual adds). Adam 1e-3, batch 128, 3 epochs. Each trained model is pruned, with no
fine-tuning, by:

- `l1`: L1 group magnitude (the library's default criterion);
- `l1+bn`: L1, then BatchNorm statistics re-estimated on the data-free synthetic inputs OBSPA makes;
- `obspa:<provider>`: OBSPA with its data-free Hessian providers (`batchnorm`, `gaussian`, `identity`); the
  `batchnorm` inputs get all their 200 optimisation steps (`budget=None`: the default 30 s budget cuts them short
  on a loaded machine, which would make the table depend on what else ran);
- `obspa:calibration`: OBSPA on 1,024 training images;
- `obspa:batchnorm round_to=16`: data-free OBSPA keeping channel counts multiples of 16, the block onnxruntime's
  CPU convolutions work in (other counts are padded and re-laid out, and run slower).

The reference rows are the unpruned model and the unpruned model with its BatchNorm statistics re-estimated on the
same 1,024 training images (the trained model's running statistics are not those of the final weights). For every
slim model the script measures test accuracy (10,000 images) and its speed-up in onnxruntime (tf2onnx export,
batch 32, CPU, original and slim runs interleaved, median of 30) beside the FLOPs actually removed, so that accuracy
drop and speed-up stand next to DFPC's 1.66x at -5 points. Results go to benchmarks/results/obspa_accuracy.json
after every cell (`--resume` skips measured cells and reuses the trained models kept beside the JSON); `--table`
prints a table of a JSON (mean ± std over seeds), `--markdown` the README's.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402

import spa_keras as spa  # noqa: E402
from spa_keras.ui.demo import accuracy, build_demo_model  # noqa: E402
from tables import fashion_mnist_or_exit, print_rows, summary, table_options  # noqa: E402

FULL = dict(train=None, test=None, calibration=1024, epochs=3, batch=128, reductions=(0.3, 0.5, 0.7), seeds=(0, 1),
            models=("resnet", "mobilenet"), runs=30)
# quick: small batches, so that BatchNorm's moving statistics (momentum 0.99) settle within one short epoch
QUICK = dict(train=8000, test=2000, calibration=256, epochs=1, batch=16, reductions=(0.5,), seeds=(0,),
             models=("resnet",), runs=5)
METHODS = ("l1", "l1+bn", "obspa:batchnorm", "obspa:gaussian", "obspa:identity", "obspa:calibration",
           "obspa:batchnorm round_to=16")


def build_mobilenet():
    """A small MobileNetV2-style network for 28x28x1 inputs: depthwise convolutions and residual adds."""
    import keras
    from keras import layers

    def inverted(x, expand, out, stride, name):
        y = layers.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu")(layers.BatchNormalization(name=f"{name}_expand_bn")(y))
        y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
        y = layers.ReLU(6.0, name=f"{name}_dw_relu")(layers.BatchNormalization(name=f"{name}_dw_bn")(y))
        y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(y)
        y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
        return layers.Add(name=f"{name}_add")([x, y]) if stride == 1 and x.shape[-1] == out else y

    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    x = inverted(x, 48, 16, 1, "b1")
    x = inverted(x, 64, 24, 2, "b2")
    x = inverted(x, 96, 24, 1, "b3")
    x = inverted(x, 96, 32, 2, "b4")
    x = inverted(x, 128, 32, 1, "b5")
    x = layers.Conv2D(128, 1, use_bias=False, name="head")(x)
    x = layers.ReLU(6.0, name="head_relu")(layers.BatchNormalization(name="head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="fashion_mobilenet")


BUILDERS = {"resnet": build_demo_model, "mobilenet": build_mobilenet}


def train(name, seed, x, y, epochs, batch):
    import keras

    keras.utils.set_random_seed(seed)
    model = BUILDERS[name]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    return model


def recalibrate(model, x):
    """BatchNorm statistics re-estimated on `x` (one pass in training mode with momentum 0); returns the model."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum
    return model


def copy(model):
    import keras

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def speedup(original, slim, runs):
    """Median onnxruntime latency ratio original / slim (batch 32, interleaved runs) of the tf2onnx exports."""
    from spa_keras.bridges import onnx_io
    from spa_keras.bridges.keras_to_onnx import keras_to_onnx

    sessions = [onnx_io.session(keras_to_onnx(m)) for m in (original, slim)]
    feed = {sessions[0].get_inputs()[0].name: np.random.default_rng(0).uniform(0, 1, (32, 28, 28, 1))
            .astype("float32")}
    times = [[], []]
    for _ in range(3):
        for s in sessions:
            s.run(None, {s.get_inputs()[0].name: next(iter(feed.values()))})
    for _ in range(runs):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: next(iter(feed.values()))})
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])


def prune(model, method, reduction, calibration, synthetic):
    name, _, option = method.partition(" round_to=")
    criterion = {"l1": "l1", "l1+bn": "l1",
                 "obspa:calibration": spa.importance.OBSPA(calibration=calibration, samples=len(calibration))}.get(
        name) or spa.importance.OBSPA(hessian=name.split(":")[1], budget=None)
    result = spa.prune(model, flops=reduction, criterion=criterion, round_to=int(option or 1))
    slim = result.model
    if method == "l1+bn":
        recalibrate(slim, synthetic)
    return result, slim


def synthetic_inputs(model):
    from spa_keras.obspa.hessians import BatchNormInputs

    return np.concatenate(BatchNormInputs(budget=None).batches(spa.analyze(model)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", help="comma-separated seeds")
    parser.add_argument("--models", help="comma-separated: resnet, mobilenet")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true")
    table_options(parser)
    args = parser.parse_args()
    if args.table:
        print_table(json.load(open(args.table)), args.markdown)
        return
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds:
        cfg["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.models:
        cfg["models"] = tuple(args.models.split(","))
    (x_train, y_train), (x_test, y_test) = fashion_mnist_or_exit()
    x_train, y_train = x_train[:cfg["train"]], y_train[:cfg["train"]]
    x_test, y_test = x_test[:cfg["test"]], y_test[:cfg["test"]]
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "obspa_accuracy_quick.json" if args.quick else "obspa_accuracy.json")
    report = json.load(open(path)) if args.resume and os.path.exists(path) else {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "cells": []}
    done = {(c["model"], c["seed"], c["method"], c["reduction"]) for c in report["cells"]}
    console = Console()

    def record(cell):
        report["cells"].append(cell)
        with open(path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(path + ".tmp", path)
        console.print(cell)

    def score(model):
        return accuracy(lambda xb: np.asarray(model(xb, training=False)), x_test, y_test)

    for name in cfg["models"]:
        for seed in cfg["seeds"]:
            import keras

            saved = os.path.join(out_dir, f"obspa_{name}_seed{seed}{'_quick' if args.quick else ''}.keras")
            if args.resume and os.path.exists(saved):
                model = keras.models.load_model(saved)
            else:
                start = time.time()
                model = train(name, seed, x_train, y_train, cfg["epochs"], cfg["batch"])
                model.save(saved)
                console.print(f"trained {name} seed {seed} in {time.time() - start:.0f} s")
            rng = np.random.default_rng(seed)
            calibration = x_train[rng.choice(len(x_train), cfg["calibration"], replace=False)]
            for method, reduction in (("unpruned", 0.0), ("unpruned+bn(real)", 0.0)):
                if (name, seed, method, reduction) not in done:
                    twin = copy(model) if method != "unpruned" else model
                    if method != "unpruned":
                        recalibrate(twin, calibration)
                    record(dict(model=name, seed=seed, method=method, reduction=reduction, accuracy=score(twin),
                                flops_removed=0.0, speedup=1.0, seconds=0.0))
            synthetic = None
            for reduction in cfg["reductions"]:
                for method in METHODS:
                    if (name, seed, method, reduction) in done:
                        continue
                    if method == "l1+bn" and synthetic is None:
                        synthetic = synthetic_inputs(model)
                    start = time.time()
                    result, slim = prune(model, method, reduction, calibration, synthetic)
                    seconds = time.time() - start
                    record(dict(model=name, seed=seed, method=method, reduction=reduction, accuracy=score(slim),
                                flops_removed=1 - result.after.flops / result.before.flops,
                                speedup=speedup(model, slim, cfg["runs"]), seconds=seconds))
    print_table(report, args.markdown)


def print_table(report, markdown=False):
    cells = report["cells"]
    models = sorted({c["model"] for c in cells}, key=lambda m: list(BUILDERS).index(m))
    reductions = sorted({c["reduction"] for c in cells if c["reduction"] > 0})
    methods = ["unpruned", "unpruned+bn(real)"] + list(METHODS)
    for name in models:
        header = ["method"]
        for r in reductions:
            header += [f"-{int(round(100 * r))}% FLOPs: accuracy %", "speed-up"]
        rows = []
        for method in methods:
            row = [method]
            for r in reductions:
                sel = [c for c in cells if c["model"] == name and c["method"] == method and
                       (c["reduction"] == r or method.startswith("unpruned"))]
                row += [summary([c["accuracy"] for c in sel]), summary([c["speedup"] for c in sel], 1.0) + "x"
                        if sel else "-"]
            rows.append(row)
        print_rows(f"{name}: test accuracy % (mean ± std over seeds), onnxruntime speed-up", header, rows, markdown)


if __name__ == "__main__":
    main()
