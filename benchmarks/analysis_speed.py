"""Engine speed by phase: analysis (graph + groups), plan (L1, flops=0.5), surgery, validation (onnx.checker +
onnxruntime load), in memory with the model already loaded, median of --repeat runs.

    python benchmarks/analysis_speed.py [--repeat 5] [--quick]

Models: keras.applications exported here through tf2onnx (random weights, randomised BN; cached in
benchmarks/results/onnx/), the onnx package's light zoo and Gluon model-zoo networks. Prints a table (time against
node count) and writes benchmarks/results/analysis_speed.json. Reference on this machine (2 threads), from the
issue: Torch-Pruning builds ResNet-50's dependency graph and groups in 0.11 s and prunes 50% in 0.35 s in total.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time

import onnx
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS_APPS = [("MobileNetV2", 224), ("ResNet50", 224), ("DenseNet121", 224), ("EfficientNetB0", 224),
              ("EfficientNetB7", 224)]


def phases(model, repeat):
    import spa_keras as spa
    from spa_keras.bridges import onnx_io
    from spa_keras.planning.selection import make_plan
    from spa_keras.formats.onnx.surgery import OnnxSurgery

    times = {k: [] for k in ("analysis", "plan", "surgery", "validate")}
    for _ in range(repeat):
        t0 = time.perf_counter()
        analysis = spa.analyze(model)
        t1 = time.perf_counter()
        plan = make_plan(analysis, flops=0.5)
        t2 = time.perf_counter()
        slim = OnnxSurgery(analysis, plan.mask(analysis)).apply()
        t3 = time.perf_counter()
        onnx_io.check(slim)
        t4 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(value)
    return {k: statistics.median(v) for k, v in times.items()}, analysis


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip EfficientNetB7 (a 60 s, 11 GB tf2onnx export)")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    import spa_keras as spa
    from tests import models as test_models

    cache = os.path.join(HERE, "results", "onnx")
    os.makedirs(cache, exist_ok=True)
    paths = {}
    for name, size in KERAS_APPS:
        if args.quick and name == "EfficientNetB7":
            continue
        paths[f"keras {name}"] = test_models.keras_app_onnx(name, size, os.path.join(cache, f"{name}_{size}.onnx"))
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for p in sorted(glob.glob(os.path.join(light, "light_*.onnx"))):
        paths[f"light {os.path.basename(p)[6:-5]}"] = p
    for name in ("resnet50_v1", "mobilenetv2_1.0", "densenet121"):
        path = os.path.join(cache, f"gluon_{name}.onnx")
        if not os.path.exists(path):
            prefix = test_models.gluon_checkpoint(name, os.path.join(cache, name), size=224)
            spa.convert(prefix, path, input_shape="1,3,224,224")
        paths[f"gluon {name}"] = path
    rows = []
    for name, path in paths.items():
        model = onnx.load(path)
        t, analysis = phases(model, args.repeat)
        rows.append({"model": name, "nodes": len(model.graph.node), "groups": len(analysis.groups),
                     "channels": sum(g.channels for g in analysis.groups),
                     "prunable": sum(g.prunable for g in analysis.groups), **{f"{k}_s": v for k, v in t.items()},
                     "engine_s": t["analysis"] + t["plan"] + t["surgery"], "repeat": args.repeat})
    rows.sort(key=lambda r: r["nodes"])
    table = Table(title=f"spa engine on ONNX, flops=0.5, median of {args.repeat}, {os.cpu_count()} CPUs")
    for col in ("model", "nodes", "prunable/channels", "analysis", "plan", "surgery", "engine total", "validate"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], str(r["nodes"]), f"{r['prunable']}/{r['channels']}", f"{r['analysis_s']:.3f}",
                      f"{r['plan_s']:.3f}", f"{r['surgery_s']:.3f}", f"{r['engine_s']:.3f}", f"{r['validate_s']:.3f}")
    Console(width=200).print(table)
    with open(os.path.join(HERE, "results", "analysis_speed.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
