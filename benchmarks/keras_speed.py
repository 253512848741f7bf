"""Keras front-end speed: ResNet50 (and friends) analysed and pruned natively, against the via-ONNX path.

    python benchmarks/keras_speed.py [--repeat 3]

Each measurement runs in a fresh process (peak RSS is per process). Columns: analyse (graph + groups), analyse +
plan + rebuild at -50% FLOPs (slim keras.Model), and the via-ONNX path on the same model (tf2onnx export + ONNX
prune). Prints a table and writes benchmarks/results/keras_speed.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = r"""
import json, os, sys, time, resource
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, sys.argv[1])
import keras, spa_keras as spa
from tests.models import randomize_keras
name, mode = sys.argv[2], sys.argv[3]
model = randomize_keras(getattr(keras.applications, name)(weights=None))
start = time.perf_counter()
if mode == "analyse":
    spa.analyze(model)
elif mode == "prune":
    spa.prune(model, flops=0.5, criterion="l1")
else:
    spa.prune(model, flops=0.5, via="onnx", criterion="l1")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(name, mode, repeat):
    runs = []
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", WORKER, os.path.dirname(HERE), name, mode], capture_output=True,
                              text=True, timeout=1800)
        if proc.returncode:
            raise SystemExit(f"{name} {mode} failed: {proc.stderr[-2000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", default="ResNet50,MobileNetV2,EfficientNetB0")
    parser.add_argument("--no-onnx", action="store_true", help="skip the via-ONNX column (tf2onnx: ~12 s, ~8 GB)")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        row = {"model": name, "analyse": measure(name, "analyse", args.repeat),
               "prune": measure(name, "prune", args.repeat)}
        if not args.no_onnx:
            row["via_onnx"] = measure(name, "onnx", 1)
        rows.append(row)
    table = Table(title=f"Keras front-end, fresh process per run, median of {args.repeat} ({os.cpu_count()} CPUs); "
                        "peak RSS includes TensorFlow and the model")
    for col in ("model", "analyse s", "analyse+plan+rebuild s", "peak RSS MB", "via ONNX s", "via ONNX RSS MB",
                "ONNX / Keras time"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        onnx = r.get("via_onnx")
        table.add_row(r["model"], f"{r['analyse']['seconds']:.3f}", f"{r['prune']['seconds']:.2f}",
                      f"{r['prune']['peak_rss_mb']:.0f}", f"{onnx['seconds']:.1f}" if onnx else "-",
                      f"{onnx['peak_rss_mb']:.0f}" if onnx else "-",
                      f"{onnx['seconds'] / r['prune']['seconds']:.0f}x" if onnx else "-")
    Console(width=200).print(table)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "keras_speed.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
