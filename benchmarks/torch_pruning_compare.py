"""spa-keras beside Torch-Pruning: ResNet-50 pruned to the same FLOPs, timed in the same process.

    pip install -c constraints.txt '.[bench]'      # the CPU torch wheel and torch-pruning (benchmarks only)
    python benchmarks/torch_pruning_compare.py [--flops 0.5] [--batches 1,16] [--runs 20]

Torch-Pruning works on PyTorch models only, and no torchvision exists here, so the script builds torchvision's
ResNet-50 in torch (bottlenecks with the stride on the 3x3 conv) and prunes it with Torch-Pruning's
`MagnitudePruner` (L1, global ranking off, as in its ResNet-50 benchmark), searching the channel ratio that removes
the asked FLOPs (Torch-Pruning's own `count_ops_and_params`). Ours: Keras ResNet50 pruned by `spa.prune(model,
flops=..., criterion="l1")` with the other defaults. Both have random weights (random BatchNorm statistics on ours). Timed: Torch-Pruning's
slim model in torch and, after `torch.onnx.export`, in onnxruntime; ours in onnxruntime (tf2onnx), each against its
own original, interleaved, lower quartile of `--runs` runs, 2 threads. Prints a table, writes
benchmarks/results/torch_pruning_compare.json.
"""

import argparse
import json
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tables import print_rows  # noqa: E402

THREADS = 2
OUT = os.path.join(HERE, "results", "torch_pruning_compare.json")


def torch_resnet50(classes=1000):
    """torchvision's resnet50 (v1.5), written out: no torchvision is installable beside this torch."""
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                   nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    model = nn.Sequential(*layers).eval()
    for m in model.modules():  # random statistics, as on the Keras side, so channels differ
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.2, 1.0)
    return model


def torch_pruning_slim(flops):
    """(original, slim, FLOPs ratio): Torch-Pruning's MagnitudePruner at the channel ratio (bisection) that removes
    `flops` of the MACs it counts itself."""
    import copy

    import torch
    import torch_pruning as tp

    torch.manual_seed(0)
    original = torch_resnet50()
    example = torch.randn(1, 3, 224, 224)
    base, _ = tp.utils.count_ops_and_params(original, example)

    def pruned(ratio):
        model = copy.deepcopy(original)
        pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=ratio, ignored_layers=[model[-1]])
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, example)
        return model, macs

    lo, hi = 0.0, 0.9
    for _ in range(14):
        mid = (lo + hi) / 2
        model, macs = pruned(mid)
        if 1 - macs / base < flops:
            lo = mid
        else:
            hi = mid
    model, macs = pruned(hi)
    return original, model.eval(), base / macs, hi


def ours_slim(flops):
    import keras

    import spa_keras as spa
    from tests.models import randomize_keras

    keras.utils.set_random_seed(0)
    original = randomize_keras(keras.applications.ResNet50(weights=None))
    result = spa.prune(original, flops=flops, runtime="onnxruntime", criterion="l1")
    return original, result.model, result.before.flops / result.after.flops, result.plan.target.to_json()


def ort_session(proto_bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    return ort.InferenceSession(proto_bytes, opts, providers=["CPUExecutionProvider"])


def torch_onnx(model, batch):
    import io

    import torch

    buffer = io.BytesIO()
    torch.onnx.export(model, torch.randn(batch, 3, 224, 224), buffer, input_names=["x"], dynamo=False)
    return buffer.getvalue()


def timed_pair(run_a, run_b, runs):
    """Lower quartiles (ms) of interleaved runs, as spa's latency targets measure."""
    from spa_keras.latency.timing import interleaved, lower_quartile

    return tuple(1e3 * lower_quartile(t) for t in interleaved((run_a, run_b), runs, warmup=3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flops", type=float, default=0.5)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--table", help="print the table of this JSON and exit")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            print_table(json.load(f), args.markdown)
        return
    import torch

    from spa_keras.bridges.keras_to_onnx import keras_to_onnx

    torch.set_num_threads(THREADS)
    t_orig, t_slim, t_ratio, t_channel_ratio = torch_pruning_slim(args.flops)
    k_orig, k_slim, k_ratio, k_target = ours_slim(args.flops)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {THREADS} threads", "runs": args.runs,
              "flops": args.flops, "torch_pruning_channel_ratio": t_channel_ratio, "ours_plan": k_target,
              "rows": []}
    ours_onnx = [ort_session(keras_to_onnx(m).SerializeToString()) for m in (k_orig, k_slim)]
    for batch in [int(b) for b in args.batches.split(",")]:
        x = np.random.default_rng(0).uniform(0, 1, (batch, 3, 224, 224)).astype("float32")
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            cells = {"Torch-Pruning, torch": timed_pair(lambda: t_orig(xt), lambda: t_slim(xt), args.runs)}
        sessions = [ort_session(torch_onnx(m, batch)) for m in (t_orig, t_slim)]
        cells["Torch-Pruning, onnxruntime"] = timed_pair(lambda: sessions[0].run(None, {"x": x}),
                                                         lambda: sessions[1].run(None, {"x": x}), args.runs)
        xk = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        feeds = [{s.get_inputs()[0].name: xk} for s in ours_onnx]
        cells["spa-keras, onnxruntime"] = timed_pair(lambda: ours_onnx[0].run(None, feeds[0]),
                                                     lambda: ours_onnx[1].run(None, feeds[1]), args.runs)
        for name, (a, b) in cells.items():
            ratio = k_ratio if name.startswith("spa") else t_ratio
            row = {"pruner, runtime": name, "batch": batch, "original_ms": a, "slim_ms": b, "speedup": a / b,
                   "flops_ratio": ratio, "efficiency": a / b / ratio}
            report["rows"].append(row)
            print(row, flush=True)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(report, f, indent=1)
    print_table(report, args.markdown)


def print_table(report, markdown=False):
    header = ["pruner, runtime", "batch", "original ms", "slim ms", "speed-up", "FLOPs ratio", "efficiency"]
    rows = [[r["pruner, runtime"], str(r["batch"]), f"{r['original_ms']:.1f}", f"{r['slim_ms']:.1f}",
             f"{r['speedup']:.2f}x", f"{r['flops_ratio']:.2f}x", f"{r['efficiency']:.2f}"] for r in report["rows"]]
    print_rows(f"ResNet-50 at -{report['flops']:.0%} FLOPs, lower quartile of {report['runs']} interleaved runs "
               f"({report['machine']})", header, rows, markdown)


if __name__ == "__main__":
    main()
