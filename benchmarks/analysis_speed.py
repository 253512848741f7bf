"""Engine speed: analysis (graph + groups) and analysis + plan + surgery, in memory, median of --repeat runs.

    python benchmarks/analysis_speed.py [--repeat 5]

Models: the onnx package's light zoo (real architectures, constant weights) and Gluon model-zoo networks exported
here. Prints a table (time against node count) and writes benchmarks/results/analysis_speed.json.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

import onnx
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    import spa_keras as spa
    from spa_keras.frontends.onnx import from_onnx
    from spa_keras.groups import analyze_graph
    from tests import models as test_models

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    paths = {os.path.basename(p)[6:-5]: p for p in sorted(glob.glob(os.path.join(light, "light_*.onnx")))}
    tmp = tempfile.mkdtemp(prefix="spa-bench-")
    for name in ("resnet50_v1", "mobilenetv2_1.0", "densenet121"):
        prefix = test_models.gluon_checkpoint(name, os.path.join(tmp, name), size=224)
        paths[f"gluon {name}"] = os.path.join(tmp, name + ".onnx")
        spa.convert(prefix, paths[f"gluon {name}"], input_shape="1,3,224,224")
    rows = []
    for name, path in paths.items():
        model = onnx.load(path)
        analysis_s = timed(lambda: analyze_graph(from_onnx(model)), args.repeat)
        analysis = spa.analyze(model)
        prunable = sum(g.prunable for g in analysis.groups)
        total_s = timed(lambda: spa.prune(model, ratio=0.5), args.repeat) if prunable else float("nan")
        rows.append({"model": name, "nodes": len(model.graph.node), "groups": len(analysis.groups),
                     "channels": sum(g.channels for g in analysis.groups), "prunable": prunable,
                     "analysis_s": analysis_s, "analysis_plan_surgery_s": total_s, "repeat": args.repeat})
    rows.sort(key=lambda r: r["nodes"])
    table = Table(title=f"spa engine, median of {args.repeat}, {os.cpu_count()} CPUs (prune = ratio 0.5, "
                        "incl. onnx.checker + onnxruntime load)")
    for col in ("model", "nodes", "groups", "prunable channels", "analysis s", "analyse+plan+surgery s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], str(r["nodes"]), str(r["groups"]), f"{r['prunable']}/{r['channels']}",
                      f"{r['analysis_s']:.3f}", f"{r['analysis_plan_surgery_s']:.3f}")
    Console().print(table)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "analysis_speed.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
