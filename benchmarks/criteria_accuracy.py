"""Accuracy of every importance criterion at -30/-50/-70% FLOPs on Fashion-MNIST, before and after fine-tuning.

    python benchmarks/criteria_accuracy.py [--seeds 0,1] [--quick]

For each seed: train the demo's small ResNet (`spa_keras.ui.demo.build_demo_model`, Adam 1e-3, batch 128, 3 epochs) on
Fashion-MNIST (`spa_keras.ui.demo.fashion_mnist`: /usr/share/datasets/fashion-mnist) with the seed fixed; then for each
criterion and FLOPs reduction prune the trained model (global ranking, defaults otherwise; data-driven criteria get
a seeded calibration subset of the training set and the training loss), measure test accuracy without
fine-tuning, fine-tune one epoch (Adam 5e-4, batch 128) and measure again. The unpruned model gets the same extra
epoch: its accuracy after it is the reference for the fine-tuned columns. Prints a table (mean ± std over seeds)
and writes benchmarks/results/criteria_accuracy.json after every cell (`--table FILE` prints the table of a run
still going, `--table FILE --markdown` the README's table). Each seed's trained model is kept next to the JSON;
`--resume` reloads it and skips the cells already measured, so a long run that stopped goes on where it was.
`--quick`: one seed, small subsets, -50% only, written to criteria_accuracy_quick.json: a smoke run.
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import spa_keras as spa  # noqa: E402
from spa_keras.ui.demo import FASHION_DIR, accuracy, build_demo_model, fashion_mnist  # noqa: E402

FULL = dict(train=None, test=None, finetune=None, epochs=3, batch=128, reductions=(0.3, 0.5, 0.7), seeds=(0, 1))
# quick: small batches, so that BatchNorm's moving statistics (momentum 0.99) settle within one short epoch
QUICK = dict(train=16000, test=2000, finetune=2048, epochs=1, batch=16, reductions=(0.5,), seeds=(0,))


def loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train(seed, x, y, epochs, batch):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_demo_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss())
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    return model


def finetune(model, seed, x, y):
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(5e-4), loss=loss())
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    return model


def test_accuracy(model, x, y):
    return accuracy(lambda xb: np.asarray(model(xb, training=False)), x, y)


def criterion_for(name, seed):
    return spa.importance.Random(seed=seed) if name == "random" else name


def summary(values):
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def print_table(result, console):
    table = Table(title=f"Fashion-MNIST test accuracy (%) of the demo ResNet pruned by FLOPs, mean ± std over seeds "
                        f"{','.join(map(str, result['settings']['seeds']))}; no fine-tuning / one epoch")
    for col in ("criterion", "FLOPs removed", "MFLOPs", "params", "pruned", "+1 epoch", "s / cell"):
        table.add_column(col, justify="left" if col == "criterion" else "right")
    base = [s["accuracy"] for s in result["baseline"].values()]
    tuned = [s["finetuned"] for s in result["baseline"].values() if "finetuned" in s]
    first = next(iter(result["baseline"].values()), None)
    if first:
        table.add_row("unpruned", "0%", f"{first['flops'] / 1e6:.1f}", f"{first['params']:,}", summary(base),
                      summary(tuned), "")
    for cell in result["cells"]:
        runs = cell["runs"].values()
        if not runs:  # a run still going (or stopped): cells not measured yet
            continue
        table.add_row(cell["criterion"], f"{100 * cell['flops']:.0f}%",
                      f"{statistics.mean(r['flops_after'] for r in runs) / 1e6:.1f}",
                      f"{round(statistics.mean(r['params_after'] for r in runs)):,}",
                      summary([r["pruned"] for r in runs]), summary([r["finetuned"] for r in runs]),
                      f"{statistics.mean(r['seconds'] for r in runs):.0f}")
    console.print(table)


def markdown_table(result):
    """The README's table: criterion rows, one column pair (no fine-tuning / one epoch) per FLOPs reduction."""
    reductions = sorted({cell["flops"] for cell in result["cells"]})
    head = "| criterion | " + " | ".join(f"−{100 * r:.0f}% FLOPs: pruned | +1 epoch" for r in reductions) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(reductions)]
    base = [s["accuracy"] for s in result["baseline"].values()]
    tuned = [s["finetuned"] for s in result["baseline"].values() if "finetuned" in s]
    lines.append("| unpruned | " + " | ".join(f"{summary(base)} | {summary(tuned)}" for _ in reductions) + " |")
    by = {(c["criterion"], c["flops"]): list(c["runs"].values()) for c in result["cells"]}
    for name in sorted({c["criterion"] for c in result["cells"]}):
        row = [f"{summary([r['pruned'] for r in by[name, x]])} | {summary([r['finetuned'] for r in by[name, x]])}"
               for x in reductions]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _obspa_series(path):
    """{method: {reduction: [accuracy per seed]}} of the ResNet rows of obspa_accuracy.py's JSON (no fine-tuning)."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        cells = json.load(f)["cells"]
    series = {}
    for c in cells:
        if c["model"] == "resnet" and c["method"] == "obspa:batchnorm":
            series.setdefault("obspa (data-free)", {}).setdefault(c["reduction"], []).append(c["accuracy"])
    return series


def plot(result, path, obspa_path=None):
    """Test accuracy against FLOPs removed, one line per criterion (mean over seeds): pruned alone, and after one
    epoch of fine-tuning; the unpruned model as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "pruned", "pruned, no fine-tuning"), (axes[1], "finetuned", "+ 1 epoch of "
                                                                                               "fine-tuning")):
        base = [b["accuracy" if key == "pruned" else "finetuned"] for b in result["baseline"].values()]
        ax.axhline(100 * np.mean(base), color="k", ls="--", lw=1, label="unpruned")
        for i, criterion in enumerate(sorted({c["criterion"] for c in result["cells"]})):
            cells = sorted((c for c in result["cells"] if c["criterion"] == criterion), key=lambda c: c["flops"])
            xs = [100 * c["flops"] for c in cells]
            ys = [100 * np.mean([r[key] for r in c["runs"].values()]) for c in cells]
            ax.plot(xs, ys, marker="os^vD"[i % 5], lw=1.2, color=plt.cm.tab20(i), label=criterion)
        if key == "pruned":
            for name, points in _obspa_series(obspa_path).items():
                xs = sorted(points)
                ax.plot([100 * x for x in xs], [100 * np.mean(points[x]) for x in xs], marker="s", lw=2.5, color="k",
                        label=name)
        ax.set_title(title)
        ax.set_xlabel("FLOPs removed (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Fashion-MNIST test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=7, loc="lower center")
    fig.suptitle("The demo ResNet: accuracy against FLOPs removed, per criterion (mean of 2 seeds)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, small subsets, -50%% only")
    parser.add_argument("--seeds", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--criteria", default=",".join(sorted(spa.importance.CRITERIA)))
    parser.add_argument("--calibration", type=int, default=1024, help="training images data-driven criteria see")
    parser.add_argument("--output", help="JSON path (default benchmarks/results/criteria_accuracy[_quick].json)")
    parser.add_argument("--table", metavar="JSON", help="only print the table of a (possibly partial) result file")
    parser.add_argument("--markdown", action="store_true", help="with --table: print it as Markdown (the README's)")
    parser.add_argument("--resume", action="store_true", help="go on with the result file of a run that stopped")
    parser.add_argument("--plot", metavar="PNG", help="with --table: draw accuracy against FLOPs removed per "
                        "criterion (OBSPA's ResNet rows too, from --obspa)")
    parser.add_argument("--obspa", default=os.path.join(HERE, "reference", "obspa_accuracy.json"),
                        help="obspa_accuracy.py's JSON for --plot")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            result = json.load(f)
        if args.plot:
            print(f"wrote {plot(result, args.plot, args.obspa)}")
        elif args.markdown:
            print(markdown_table(result))
        else:
            print_table(result, Console(width=200))
        return
    settings = dict(QUICK if args.quick else FULL)
    if args.seeds:
        settings["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    criteria = args.criteria.split(",")
    output = args.output or os.path.join(HERE, "results", f"criteria_accuracy{'_quick' if args.quick else ''}.json")
    console = Console(width=200)
    data = fashion_mnist()
    if data is None:
        raise SystemExit(f"Fashion-MNIST is not installed in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = x_train[:settings["train"]], y_train[:settings["train"]]
    x_test, y_test = x_test[:settings["test"]], y_test[:settings["test"]]
    x_tune, y_tune = x_train[:settings["finetune"]], y_train[:settings["finetune"]]

    import keras
    import tensorflow as tf

    result = {"settings": {**settings, "criteria": criteria, "calibration": args.calibration,
                           "train_images": len(x_train), "test_images": len(x_test), "finetune_images": len(x_tune)},
              "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "tensorflow": tf.__version__, "keras": keras.__version__},
              "baseline": {}, "cells": []}
    cells = {(c, r): {"criterion": c, "flops": r, "runs": {}} for c in criteria for r in settings["reductions"]}
    if args.resume and os.path.exists(output):
        with open(output) as f:
            previous = json.load(f)
        same = {k: v for k, v in json.loads(json.dumps(result["settings"])).items() if k != "criteria"}
        if {k: v for k, v in previous["settings"].items() if k != "criteria"} != same:
            raise SystemExit(f"--resume: {output} was written with other settings; remove it or change --output")
        result["baseline"] = previous["baseline"]
        for cell in previous["cells"]:
            if (cell["criterion"], cell["flops"]) in cells:
                cells[cell["criterion"], cell["flops"]]["runs"] = cell["runs"]
    result["cells"] = list(cells.values())

    def save():
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(output + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(output + ".tmp", output)

    for seed in settings["seeds"]:
        if all(str(seed) in cell["runs"] for cell in cells.values()) and "finetuned" in result["baseline"].get(
                str(seed), {}):
            continue
        start = time.perf_counter()
        trained = output[:-len(".json")] + f"_seed{seed}.keras"
        if args.resume and str(seed) in result["baseline"] and os.path.exists(trained):
            model = keras.models.load_model(trained, compile=False)
        else:
            with console.status(f"seed {seed}: training {settings['epochs']} epochs on {len(x_train):,} images"):
                model = train(seed, x_train, y_train, settings["epochs"], settings["batch"])
            os.makedirs(os.path.dirname(output), exist_ok=True)
            model.save(trained)
            counts = spa.count(model)
            result["baseline"][str(seed)] = {"accuracy": test_accuracy(model, x_test, y_test),
                                             "params": counts.params, "flops": counts.flops,
                                             "train_seconds": time.perf_counter() - start}
            save()
        analysis = spa.analyze(model)
        console.print(f"seed {seed}: trained in {result['baseline'][str(seed)]['train_seconds']:.0f} s, test "
                      f"accuracy {100 * result['baseline'][str(seed)]['accuracy']:.2f}%")
        pick = np.random.default_rng(seed).permutation(len(x_train))[:args.calibration]
        calibration = (x_train[pick], y_train[pick])
        for (name, reduction), cell in cells.items():
            if str(seed) in cell["runs"]:
                continue
            start = time.perf_counter()
            with console.status(f"seed {seed}: {name} -{100 * reduction:.0f}% FLOPs"):
                pruned = spa.prune(model, flops=reduction, criterion=criterion_for(name, seed), data=calibration,
                                   loss=loss(), analysis=analysis, round_to=1)  # criteria alone, any count
                prune_seconds = time.perf_counter() - start
                run = {"prune_seconds": prune_seconds, "params_after": pruned.after.params,
                       "flops_after": pruned.after.flops, "pruned": test_accuracy(pruned.model, x_test, y_test)}
                run["finetuned"] = test_accuracy(finetune(pruned.model, seed, x_tune, y_tune), x_test, y_test)
            run["seconds"] = time.perf_counter() - start
            cell["runs"][str(seed)] = run
            console.print(f"seed {seed}: {name:8s} -{100 * reduction:.0f}% FLOPs: {100 * run['pruned']:.2f}% -> "
                          f"{100 * run['finetuned']:.2f}% after one epoch ({run['seconds']:.0f} s, pruning "
                          f"{prune_seconds:.1f} s)")
            save()
        baseline = result["baseline"][str(seed)]
        if "finetuned" not in baseline:  # the fair reference: the unpruned model fine-tuned the same extra epoch
            with console.status(f"seed {seed}: unpruned model, one more epoch"):
                again = finetune(keras.models.load_model(trained, compile=False), seed, x_tune, y_tune)
                baseline["finetuned"] = test_accuracy(again, x_test, y_test)
            console.print(f"seed {seed}: unpruned + one epoch: {100 * baseline['finetuned']:.2f}%")
            save()
    print_table(result, console)
    console.print(f"wrote {output}")


if __name__ == "__main__":
    main()
