"""Would another allocation of the same FLOPs run faster? Plans of one model at one FLOPs target, timed alike.

    python benchmarks/allocations.py [--model MobileNetV2] [--flops 0.5] [--batch 1] [--runtime onnxruntime]
                                     [--threads 2] [--runs 30] [--repeats 2] [--out FILE]
    python benchmarks/allocations.py --table benchmarks/reference/allocations.json [--markdown]

The model (random weights, as in `latency.py`) is pruned to the same FLOPs by plans that spread the removal
differently over the layers:

- `default`: `round_to="auto"` for the runtime, channels ranked by importance (L1), globally;
- `round_to=8/16/32`: the same ranking, other channel multiples;
- `uniform`: the same fraction from every group (`global_ranking=False`);
- `per second: <model>`: importance divided by the seconds a channel's group is predicted to save
  (`make_plan(..., latency_model=..., rank_by_latency=True)`, HALP-style) under a latency model of the layers:
  `table` is the runtime's per-layer latency table (`spa_keras.latency.table`), `bytes` counts the floats each
  convolution and matrix product reads and writes (activations in and out, weights), `flops+bytes` adds its
  multiply-adds at the cost ratio measured for 1x1 and depthwise convolutions on this CPU (one multiply-add costs
  about a hundredth of a float moved), `roofline` takes the larger of the two.

Each slim model is timed against the original `--repeats` times (fresh interleaved runs; speed-up = median of the
per-turn ratios, as latency targets measure it). Results go to benchmarks/results/allocations.json.
"""

import argparse
import json
import math
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from latency import build, runner, timed  # noqa: E402
from tables import print_rows, report_or_measure, table_options  # noqa: E402

OUT = os.path.join(HERE, "results", "allocations.json")
SECONDS_PER_MAC, SECONDS_PER_FLOAT = 5e-12, 4.7e-10  # fitted to onnxruntime's 1x1 and depthwise kernels at batch 1


def analytic_model(analysis, batch, kind):
    """A latency model whose layer times are counted, not measured (`kind`: bytes, flops+bytes, roofline)."""
    from spa_keras.latency.table import LayerWidths

    class Counted(LayerWidths):
        def layer_seconds(self, index, cin, cout):
            return layer_seconds(self.layers[index][0], cin, cout, kind)

    return Counted(analysis, batch)


def layer_seconds(shape, cin, cout, kind):
    """Counted seconds of one Conv/Gemm/MatMul at `cin` inputs and `cout` outputs."""
    if shape.op == "Conv":
        pixels_in = shape.x[0] * math.prod(shape.x[2:])
        pixels_out = pixels_in // math.prod(shape.strides or (1,))
        kernel = math.prod(shape.w[2:])
        macs = pixels_out * cout * kernel * (1 if shape.depthwise else cin)
        floats = pixels_in * cin + pixels_out * cout + (cout if shape.depthwise else cin * cout) * kernel
    else:
        rows = math.prod(shape.x[:-1])
        macs, floats = rows * cin * cout, rows * (cin + cout) + cin * cout
    compute, memory = SECONDS_PER_MAC * macs, SECONDS_PER_FLOAT * floats
    return {"bytes": memory, "flops+bytes": compute + memory, "roofline": max(compute, memory)}[kind]


def plans(analysis, args):
    """{variant: make_plan options}."""
    from spa_keras.latency.table import LatencyModel

    out = {"default": {}, "round_to=8": {"round_to": 8}, "round_to=16": {"round_to": 16},
           "round_to=32": {"round_to": 32}, "uniform": {"global_ranking": False}}
    table = LatencyModel(analysis, args.runtime, batch=args.batch)
    out["per second: table"] = {"latency_model": table, "rank_by_latency": True}
    for kind in ("bytes", "flops+bytes", "roofline"):
        out[f"per second: {kind}"] = {"latency_model": analytic_model(analysis, args.batch, kind),
                                      "rank_by_latency": True}
    return out


def measure(args):
    import spa_keras as spa

    model = build(args.model)
    analysis = spa.analyze(model)
    original = runner(model, args.runtime, args.batch, args.threads)
    report = {"model": args.model, "flops": args.flops, "batch": args.batch, "runtime": args.runtime,
              "threads": args.threads, "runs": args.runs, "rows": []}
    for name, options in plans(analysis, args).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = spa.planning.selection.make_plan(analysis, flops=args.flops, runtime=args.runtime, reconstruct=False, **options)
        slim = runner(analysis.source.slim(analysis, plan.mask(analysis)), args.runtime, args.batch, args.threads)
        speedups = [timed(original, slim, args.runs)[2] for _ in range(args.repeats)]
        ratio = 1 / (1 - plan.target.reached)
        kept = {g.key: g.channels - len(plan.removed.get(g.key, [])) for g in analysis.groups}
        report["rows"].append({"plan": name, "flops_ratio": ratio, "speedups": speedups,
                               "efficiency": float(np.mean(speedups)) / ratio, "kept": kept})
        print(f"{args.model} b{args.batch} {args.runtime} -{args.flops:.0%} FLOPs, {name}: "
              f"{', '.join(f'{s:.2f}x' for s in speedups)} of {ratio:.2f}x", flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


def print_table(report, markdown=False):
    header = ["plan", "FLOPs ratio", "speed-ups", "efficiency"]
    rows = [[r["plan"], f"{r['flops_ratio']:.2f}x", " / ".join(f"{s:.2f}x" for s in r["speedups"]),
             f"{r['efficiency']:.2f}"] for r in report["rows"]]
    print_rows(f"{report['model']}, -{report['flops']:.0%} FLOPs, {report['runtime']}, batch {report['batch']}, "
               f"{report['threads']} threads: speed-up of each allocation (median of per-turn ratios, "
               f"{report['runs']} runs)", header, rows, markdown)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="MobileNetV2")
    parser.add_argument("--flops", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "tflite"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=OUT, help="results JSON (default: benchmarks/results/allocations.json)")
    table_options(parser)
    args = parser.parse_args()
    print_table(report_or_measure(args, measure), args.markdown)


if __name__ == "__main__":
    main()
