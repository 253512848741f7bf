"""How well per-layer latency tables predict, and what ranking by importance per second buys.

    python benchmarks/latency_table.py [--models MobileNetV2,ResNet50] [--runtimes onnxruntime,tflite]
                                       [--batches 1,16] [--targets 0.3,0.5,0.7] [--runs 20]
    python benchmarks/latency_table.py --table benchmarks/reference/latency_table.json [--markdown]

For each model (random weights, as in `benchmarks/latency.py`), runtime and batch: the runtime's per-layer latency
table (`spa_keras.latency.table`; the seconds it took to measure what the cache did not hold yet are reported), then
plans at each FLOPs target with the default ranking (importance) and with ranking by importance per predicted second
saved (`make_plan(..., latency_model=..., rank_by_latency=True)`, HALP-style), both `round_to="auto"`. Each slim model is
timed against the original (interleaved, lower quartiles): predicted and measured speed-up, FLOPs ratio and
efficiency (measured speed-up / FLOPs ratio). Results go to benchmarks/results/latency_table.json after every cell.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from latency import build, runner, save, timed  # noqa: E402
from tables import print_rows, table_options  # noqa: E402

OUT = os.path.join(HERE, "results", "latency_table.json")
RANKINGS = ("importance", "per second")


def cells(name, runtime, batch, args):
    import warnings

    import spa_keras as spa
    from spa_keras.latency.timing import interleaved, lower_quartile
    from spa_keras.latency.table import LatencyModel

    model = build(name)
    ga = spa.analyze(model)  # layer shapes at batch 1; the latency model times them at `batch`
    original = runner(model, runtime, batch)
    whole = lower_quartile(interleaved((original.run,), args.runs, warmup=3)[0])
    start = time.time()
    latency_model = LatencyModel(ga, runtime, batch=batch, whole_seconds=whole)
    table_seconds = time.time() - start
    for target in args.targets:
        for ranking in RANKINGS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                plan = spa.planning.selection.make_plan(ga, flops=target, runtime=runtime, reconstruct=False,
                                          latency_model=latency_model, rank_by_latency=ranking == "per second")
            mask = plan.mask(ga)
            slim = ga.source.slim(ga, mask)
            a, b, measured = timed(original, runner(slim, runtime, batch), args.runs)
            flops_ratio = 1 / (1 - plan.target.reached)
            predicted = 1 / (1 - latency_model.removed_fraction(mask))
            cell = {"model": name, "runtime": runtime, "batch": batch, "flops": target, "ranking": ranking,
                    "original": a, "slim": b, "flops_ratio": flops_ratio, "predicted_speedup": predicted,
                    "speedup": measured, "table_seconds": table_seconds,
                    "layers": len(latency_model.layers), "layer_shapes": len(latency_model.table.seconds),
                    "rest_ms": 1e3 * latency_model.rest, "layers_ms": 1e3 * latency_model.full}
            cell["efficiency"] = cell["speedup"] / flops_ratio
            print(f"{name} {runtime} b{batch} -{target:.0%} FLOPs, {ranking}: predicted {predicted:.2f}x, measured "
                  f"{cell['speedup']:.2f}x of {flops_ratio:.2f}x ({cell['efficiency']:.2f}); table "
                  f"{table_seconds:.0f} s", flush=True)
            yield cell


def print_table(report, markdown=False):
    header = ["model", "runtime", "batch", "FLOPs removed", "ranking", "predicted", "measured", "FLOPs ratio",
              "efficiency", "table s"]
    rows = [[c["model"], c["runtime"], str(c["batch"]), f"{c['flops']:.0%}", c["ranking"],
             f"{c['predicted_speedup']:.2f}x", f"{c['speedup']:.2f}x", f"{c['flops_ratio']:.2f}x",
             f"{c['efficiency']:.2f}", f"{c['table_seconds']:.0f}"] for c in report["cells"]]
    print_rows(f"Per-layer latency tables: predicted and measured speed-ups ({report['machine']})", header, rows,
               markdown)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="MobileNetV2,ResNet50")
    parser.add_argument("--runtimes", default="onnxruntime")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--targets", default="0.3,0.5,0.7")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=OUT)
    table_options(parser)
    args = parser.parse_args()
    if args.table:
        print_table(json.load(open(args.table)), args.markdown)
        return
    import platform

    from spa_keras.latency.timing import THREADS

    args.targets = [float(t) for t in args.targets.split(",")]
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {THREADS} threads", "runs": args.runs,
              "cells": []}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for name in args.models.split(","):
        for runtime in args.runtimes.split(","):
            for batch in [int(b) for b in args.batches.split(",")]:
                for cell in cells(name, runtime, batch, args):
                    report["cells"].append(cell)
                    save(report, args.out)
    print_table(report)


if __name__ == "__main__":
    main()
