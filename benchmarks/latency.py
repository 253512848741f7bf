"""Do slim models run faster? Latency of original and pruned models on onnxruntime, TFLite (XNNPACK) and TensorFlow.

    python benchmarks/latency.py [--models ResNet50,MobileNetV2] [--targets 0.3,0.5,0.7] [--round-to 1,8,16,auto]
                                 [--runtimes onnxruntime,tflite,tensorflow] [--batches 1,16] [--runs 20]
    python benchmarks/latency.py --table benchmarks/reference/latency.json [--markdown] [--plot latency.png]

Models: Keras applications with random weights (`tests.models.randomize_keras`: random BatchNorm statistics, so
channels differ), at 224x224 (`ResNet50`, `MobileNetV2`, `EfficientNetB0`), a small ViT built here (`ViT`: 16x16
patches, 4 blocks of keras.layers.MultiHeadAttention) and the demo's Fashion-MNIST ResNet (`demo`). Each is pruned
with `spa.prune(model, flops=target, round_to=..., criterion="l1")`, `round_to="auto"` with `runtime=` the runtime
measured.
Each model is converted the way `spa convert` does (tf2onnx for onnxruntime, the TFLite converter for TFLite; a
`tf.function` for TensorFlow, which uses every core) and timed with 2 threads (`spa_keras.latency.timing.Timer`, as
latency targets time them), original and slim interleaved, after 3 warm-up runs; the table shows lower
quartiles of each model's times (the JSON has medians and spreads too), the speed-up (original / slim: the median
of the per-turn ratios, `spa_keras.latency.timing.paired_ratio`, which cancels the machine's load drifting between turns),
the FLOPs ratio (original / slim, the limit a speed-up could reach) and the efficiency (speed-up / FLOPs ratio).
Results go to benchmarks/results/latency.json after every cell.
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tables import print_rows, report_or_measure  # noqa: E402

OUT = os.path.join(HERE, "results", "latency.json")


def build(name):
    """A model with random weights (and random BatchNorm statistics)."""
    import keras

    from tests.models import randomize_keras

    keras.utils.set_random_seed(0)
    if name == "demo":
        from spa_keras.ui.demo import build_demo_model

        return build_demo_model()
    if name == "ViT":
        return randomize_keras(vit())
    return randomize_keras(getattr(keras.applications, name)(weights=None))


def vit(size=224, patch=16, width=192, heads=3, blocks=4, mlp=768, classes=1000):
    """A small ViT (DeiT-Tiny widths, 4 blocks): patch embedding, pre-norm MultiHeadAttention and MLP blocks."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(width, patch, strides=patch, name="patches")(inputs)
    x = layers.Reshape(((size // patch) ** 2, width))(x)
    for i in range(blocks):
        y = layers.LayerNormalization(name=f"ln{i}a")(x)
        y = layers.MultiHeadAttention(heads, width // heads, name=f"attention{i}")(y, y)
        x = layers.Add()([x, y])
        y = layers.LayerNormalization(name=f"ln{i}b")(x)
        y = layers.Dense(mlp, activation="gelu", name=f"mlp{i}a")(y)
        x = layers.Add()([x, layers.Dense(width, name=f"mlp{i}b")(y)])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(name="ln")(x))
    return keras.Model(inputs, layers.Dense(classes, name="head")(x), name="vit")


def runner(model, runtime, batch, threads=None):
    """The model compiled for the runtime at this batch size, as latency targets time it (`spa_keras.latency.timing`)."""
    from spa_keras.latency.timing import THREADS, Timer

    return Timer(model, runtime, {None: (batch, *model.inputs[0].shape[1:])}, threads=threads or THREADS)


def timed(original, slim, runs):
    """(original, slim, speed-up): lower quartile, median and spread (interquartile range) of each in ms, timed in
    turns, and the speed-up as latency targets measure it (the median of the per-turn ratios)."""
    from spa_keras.latency.timing import interleaved, paired_ratio

    times = interleaved((original.run, slim.run), runs, warmup=3)
    out = []
    for t in times:
        q1, median, q3 = statistics.quantiles(t, n=4)
        out.append({"q1_ms": 1e3 * q1, "median_ms": 1e3 * median, "iqr_ms": 1e3 * (q3 - q1)})
    return out[0], out[1], paired_ratio(*times)


def slim_models(model, targets, roundings, runtimes):
    """{(target, round_to, runtime): (slim model, FLOPs ratio, channel multiple used)}; "auto" is pruned for each
    runtime, the fixed multiples once for all."""
    import warnings

    import spa_keras as spa

    analysis = spa.analyze(model)
    out = {}
    for target in targets:
        for rounding in roundings:
            for runtime in runtimes:
                fixed = rounding != "auto"
                if fixed and (target, rounding, runtimes[0]) in out:
                    out[(target, rounding, runtime)] = out[(target, rounding, runtimes[0])]
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = spa.prune(model, flops=target, round_to=int(rounding) if fixed else "auto",
                                       runtime=None if fixed else runtime, analysis=analysis, criterion="l1")
                out[(target, rounding, runtime)] = (result.model, result.before.flops / result.after.flops,
                                                    result.plan.target.channel_multiple or rounding)
    return out


def measure(args):
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads", "runs": args.runs,
              "cells": []}
    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            report["cells"] = json.load(f)["cells"]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for name in args.models:
        model = build(name)
        slims = {} if args.latency_only else slim_models(model, args.targets, args.round_to, args.runtimes)
        for runtime in args.runtimes:
            for batch in args.batches:
                original = runner(model, runtime, batch, args.threads)
                if args.latency:
                    report["cells"].append(latency_cell(name, model, original, runtime, batch, args))
                    save(report, args.out)
                for (target, rounding, rt), (slim, ratio, multiple) in slims.items():
                    if rt != runtime:
                        continue
                    a, b, ratio_measured = timed(original, runner(slim, runtime, batch, args.threads), args.runs)
                    cell = {"model": name, "runtime": runtime, "batch": batch, "flops": target,
                            "round_to": rounding, "multiple": multiple, "original": a, "slim": b,
                            "flops_ratio": ratio, "speedup": ratio_measured}
                    cell["efficiency"] = cell["speedup"] / ratio
                    report["cells"].append(cell)
                    print(f"{name} {runtime} b{batch} -{target:.0%} round_to={rounding}: "
                          f"{a['q1_ms']:.2f} -> {b['q1_ms']:.2f} ms, {cell['speedup']:.2f}x of "
                          f"{ratio:.2f}x ({cell['efficiency']:.2f})", flush=True)
                    save(report, args.out)
    return report


def save(report, path):
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)


def latency_cell(name, model, original, runtime, batch, args):
    """`spa.prune(model, latency=..., runtime=...)` at this batch, then its speed-up measured again, apart from the
    search (fresh compilations, fresh interleaved runs): does the plan land where it says?"""
    import warnings

    import spa_keras as spa

    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = spa.prune(model, latency=args.latency, runtime=runtime, criterion="l1",
                           input_shape=(batch, *model.inputs[0].shape[1:]))
    search_seconds = time.time() - start
    a, b, measured = timed(original, runner(result.model, runtime, batch), args.runs)
    ratio = result.before.flops / result.after.flops
    cell = {"model": name, "runtime": runtime, "batch": batch, "flops": 1 - 1 / ratio,
            "round_to": f"latency={args.latency:g}", "multiple": result.plan.target.channel_multiple,
            "original": a, "slim": b, "flops_ratio": ratio, "speedup": measured,
            "planned_speedup": result.plan.target.measured_speedup, "rounds": result.plan.target.rounds,
            "search_seconds": search_seconds}
    cell["efficiency"] = cell["speedup"] / ratio
    print(f"{name} {runtime} b{batch} latency={args.latency:g}: FLOPs -{cell['flops']:.0%}, planned "
          f"{cell['planned_speedup']:.2f}x, measured again {cell['speedup']:.2f}x (aim {1 / (1 - args.latency):.2f}x); "
          f"{len(cell['rounds'])} round(s), {search_seconds:.0f} s",
          flush=True)
    return cell


def print_table(report, markdown=False):
    header = ["model", "FLOPs removed", "round_to", "runtime", "batch", "original ms", "slim ms", "speed-up",
              "FLOPs ratio", "efficiency"]
    rows = []
    for c in report["cells"]:
        rounding = f"auto ({c['multiple']})" if c["round_to"] == "auto" else str(c["round_to"])
        rows.append([c["model"], f"{c['flops']:.0%}", rounding, c["runtime"], str(c["batch"]),
                     f"{c['original']['q1_ms']:.1f}", f"{c['slim']['q1_ms']:.1f}",
                     f"{c['speedup']:.2f}x", f"{c['flops_ratio']:.2f}x", f"{c['efficiency']:.2f}"])
    print_rows(f"Latency, lower quartiles of {report['runs']} interleaved runs; speed-up: median of per-turn ratios "
               f"({report['machine']})", header, rows, markdown)


def print_pivot(report, markdown=False, round_to=None):
    """One row per model, FLOPs target and round_to; one column per runtime and batch: 'speed-up (efficiency)'.
    The last measurement of a cell wins."""
    columns = sorted({(c["runtime"], c["batch"]) for c in report["cells"]},
                     key=lambda rb: (["onnxruntime", "tflite", "tensorflow"].index(rb[0]), rb[1]))
    table = {}
    for c in report["cells"]:
        if round_to is not None and str(c["round_to"]) != round_to and "planned_speedup" not in c:
            continue
        rounding = f"auto ({c['multiple']})" if c["round_to"] == "auto" else str(c["round_to"])
        if "planned_speedup" in c:  # a latency target: FLOPs differ per cell; say what it removed and measured
            key = (c["model"], None, rounding)
            text = f"{c['speedup']:.2f}x (−{c['flops']:.0%} FLOPs)"
        else:
            key = (c["model"], c["flops"], rounding if round_to is None else str(c["round_to"]))
            text = f"{c['speedup']:.2f}x ({c['efficiency']:.2f})"
        table.setdefault(key, {})[(c["runtime"], c["batch"])] = text
    header = ["model", "FLOPs removed", "round_to"] + [f"{r} b{b}" for r, b in columns]
    rows = [[m, "-" if f is None else f"{f:.0%}", r] + [cells.get(col, "-") for col in columns]
            for (m, f, r), cells in table.items()]
    print_rows(f"Speed-up (efficiency = speed-up / FLOPs ratio), median of per-turn ratios over {report['runs']} "
               f"interleaved runs ({report['machine']})", header, rows, markdown)


def plot(report, path):
    """Speed-up against the FLOPs ratio per runtime, with the limit line (speed-up = FLOPs ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    top = max([c["flops_ratio"] for c in report["cells"]] + [2.0])
    ax.plot([1, top], [1, top], "k--", lw=1, label="limit (speed-up = FLOPs ratio)")
    ax.axhline(1, color="grey", lw=0.5)
    markers = {"onnxruntime": "o", "tflite": "s", "tensorflow": "^"}
    for runtime, marker in markers.items():
        for auto in (True, False):
            cells = [c for c in report["cells"] if c["runtime"] == runtime and (c["round_to"] == "auto") == auto
                     and "planned_speedup" not in c]
            if cells:
                ax.scatter([c["flops_ratio"] for c in cells], [c["speedup"] for c in cells], marker=marker,
                           facecolors=None if auto else "none", edgecolors="C0" if auto else "C3",
                           label=f"{runtime}, {'round_to=auto' if auto else 'fixed round_to'}")
    targets = [c for c in report["cells"] if "planned_speedup" in c]
    if targets:
        ax.scatter([c["flops_ratio"] for c in targets], [c["speedup"] for c in targets], marker="x", color="k",
                   label="latency target, measured again")
    ax.set_xlabel("FLOPs ratio (original / slim)")
    ax.set_ylabel("measured speed-up (original / slim)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    split = lambda cast: lambda s: [cast(v) for v in s.split(",")]  # noqa: E731
    parser.add_argument("--models", type=split(str), default=["ResNet50", "MobileNetV2", "EfficientNetB0", "ViT",
                                                               "demo"])
    parser.add_argument("--targets", type=split(float), default=[0.3, 0.5, 0.7])
    parser.add_argument("--round-to", type=split(str), default=["1", "8", "16", "auto"])
    parser.add_argument("--runtimes", type=split(str), default=["onnxruntime", "tflite", "tensorflow"])
    parser.add_argument("--batches", type=split(int), default=[1, 16])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of onnxruntime and TFLite "
                        "(default 2, as latency targets time them; TensorFlow uses every core)")
    parser.add_argument("--latency", type=float, help="also prune to this latency target on each runtime and batch "
                        "and measure the speed-up again")
    parser.add_argument("--latency-only", action="store_true", help="only the --latency cells")
    parser.add_argument("--out", default=OUT, help="results JSON (default: benchmarks/results/latency.json)")
    parser.add_argument("--append", action="store_true", help="add to the cells already in --out")
    parser.add_argument("--table", help="print the table of a results JSON instead of measuring")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--pivot", help="one row per model and target, one column per runtime and batch: 'all', or "
                        "only one round_to ('auto', '1', ...)")
    parser.add_argument("--plot", help="write a speed-up vs FLOPs ratio plot (PNG)")
    args = parser.parse_args()
    if args.latency_only and not args.latency:
        parser.error("--latency-only needs --latency")
    if args.latency and args.threads != 2:
        parser.error("--latency cells time with 2 threads, as spa.prune(latency=...) does: leave --threads out")
    report = report_or_measure(args, measure)
    if args.pivot:
        print_pivot(report, args.markdown, None if args.pivot == "all" else args.pivot)
    else:
        print_table(report, args.markdown)
    if args.plot:
        plot(report, args.plot)


if __name__ == "__main__":
    main()
