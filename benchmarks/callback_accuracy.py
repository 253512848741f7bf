"""Pruning inside `model.fit` with `spa.SPACallback`: test accuracy and training time on Fashion-MNIST.

    python benchmarks/callback_accuracy.py [--seeds 0,1] [--epochs 3] [--quick] [--resume]
    python benchmarks/callback_accuracy.py --table benchmarks/reference/callback_accuracy.json [--markdown]

The demo's small ResNet (`spa_keras.ui.demo.build_demo_model`) is trained from scratch on Fashion-MNIST with the same
epochs, optimizer (Adam 1e-3, batch 128) and seeds in every row:

- `dense`: no pruning;
- `during`: `SPACallback(flops=0.5)`, gradual pruning over the first half of training (the default schedule);
- `before`: `SPACallback(flops=0.5, when="before", criterion="snip")`, scored on the first batches fit reads;
- `after + 1 epoch`: `SPACallback(flops=0.5, when="after")`, then one epoch of fine-tuning of the slim model
  (Adam 5e-4), counted in the training time.

Each row reports test accuracy (10,000 images), the slim model's FLOPs and the wall time of training. Results go to
benchmarks/results/callback_accuracy.json after every run; `--table` prints a table of a JSON (mean ± std over
seeds), `--markdown` the README's.
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

ROWS = ("dense", "during", "before", "after + 1 epoch")


def compiled(model, learning_rate=1e-3):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def run(row, seed, x, y, epochs, batch):
    import keras

    keras.utils.set_random_seed(seed)
    model = compiled(build_demo_model())
    callbacks = {"during": lambda: spa.SPACallback(flops=0.5),
                 "before": lambda: spa.SPACallback(flops=0.5, when="before", criterion="snip"),
                 "after + 1 epoch": lambda: spa.SPACallback(flops=0.5, when="after")}
    callback = callbacks[row]() if row in callbacks else None
    start = time.time()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[callback] if callback else [])
    if callback is None:
        return model, time.time() - start, None
    slim = callback.result.model
    if row == "after + 1 epoch":
        compiled(slim, 5e-4).fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return slim, time.time() - start, callback.result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8,000 training images, 1 epoch, one seed")
    table_options(parser)
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the results JSON when its configuration matches")
    args = parser.parse_args()
    if args.table:
        print_table(json.load(open(args.table)), args.markdown)
        return
    (x_train, y_train), (x_test, y_test) = fashion_mnist_or_exit()
    seeds, epochs, batch = [int(s) for s in args.seeds.split(",")], args.epochs, 128
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:8000], y_train[:8000], x_test[:2000], y_test[:2000]
        seeds, epochs, batch = seeds[:1], 1, 16
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "callback_accuracy_quick.json" if args.quick else "callback_accuracy.json")
    report = {"config": {"seeds": seeds, "epochs": epochs, "batch": batch, "flops": 0.5},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "runs": []}
    if args.resume and os.path.exists(path):
        previous = json.load(open(path))
        if previous["config"] == report["config"]:
            report["runs"] = previous["runs"]
    done = {(r["row"], r["seed"]) for r in report["runs"]}
    console = Console()
    for seed in seeds:
        for row in ROWS:
            if (row, seed) in done:
                continue
            model, seconds, result = run(row, seed, x_train, y_train, epochs, batch)
            acc = accuracy(lambda xb: np.asarray(model(xb, training=False)), x_test, y_test)
            flops = spa.count(model).flops
            report["runs"].append(dict(row=row, seed=seed, accuracy=acc, seconds=seconds, flops=flops))
            with open(path + ".tmp", "w") as f:
                json.dump(report, f, indent=1)
            os.replace(path + ".tmp", path)
            console.print(report["runs"][-1])
    print_table(report, args.markdown)


def print_table(report, markdown=False):
    header = ["run", "test accuracy %", "MFLOPs", "training time (s)"]
    rows = []
    for row in ROWS:
        runs = [r for r in report["runs"] if r["row"] == row]
        if runs:
            rows.append([row, summary([r["accuracy"] for r in runs]),
                         f"{statistics.mean(r['flops'] for r in runs) / 1e6:.1f}",
                         summary([r["seconds"] for r in runs], 1.0, 0)])
    print_rows("SPACallback on Fashion-MNIST (demo ResNet from scratch, -50% FLOPs)", header, rows, markdown)


if __name__ == "__main__":
    main()
