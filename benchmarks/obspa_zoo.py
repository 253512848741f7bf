"""Where OBSPA breaks: a zoo of small trained networks pruned with no fine-tuning at -30/-50/-70% FLOPs.

    python benchmarks/obspa_zoo.py [--models issue_cnn,resnet_bn] [--reductions 0.5] [--quick] [--resume]
    python benchmarks/obspa_zoo.py --table benchmarks/reference/obspa_zoo.json [--markdown]
    python benchmarks/obspa_zoo.py --merge a.json b.json --out all.json   # runs of different --models combined

The zoo (`benchmarks/zoo_models.py`): eleven architectures trained here on Fashion-MNIST or MNIST (one to three
minutes each on two cores, cached in benchmarks/results/zoo/): a conv stack without BatchNorm, ResNet basic blocks
with BatchNorm, MobileNetV1 depthwise-separable, MobileNetV2/V3 inverted residuals with squeeze-excitation and
hard-swish, DenseNet concatenation, ResNeXt grouped convolutions, ConvNeXt (7x7 depthwise, LayerNorm, GELU),
Dense layers after Flatten, the issue's 10-layer MNIST CNN, and a PyTorch ResNet exported to ONNX twice, with its
BatchNormalization nodes kept and with them folded into the convolutions.

Each trained model is pruned to each FLOPs reduction by

- `l1`: L1 group magnitude (the library's default criterion);
- `obspa`: data-free OBSPA, `spa.importance.OBSPA(budget=None)` (the synthetic inputs get all their optimisation
  steps whatever the machine's load; an ONNX model gets the identity Hessian, as the library warns);
- `obspa+data`: OBSPA on 256 training images, `OBSPA(calibration=x, samples=256)`;

each with the default `round_to` ("auto": multiples of 16 here) and with `round_to=1`. Test accuracy is measured on
10,000 test images (2,000 with --quick) beside the FLOPs and parameters actually removed, the seconds the prune
took, the warnings it printed and the layers OBSPA skipped. The data-free synthetic inputs depend on the model
alone: they are made once per model (timed apart, `synthetic_seconds`) and cached beside the model (keyed by a
hash of the code that makes them); the cells then give them to OBSPA as its inputs.

Results go to benchmarks/results/obspa_zoo.json after every cell (`--resume` skips measured cells); `--table`
prints the tables of a JSON, `--markdown` the README's. Cells that miss the acceptance goal are marked: `<L1` where
OBSPA scores below L1 at the same reduction and round_to, `!` where it falls further below the unpruned accuracy
than the goal allows (data-free: 3 points at -30% FLOPs, 5 for a network without BatchNorm, 8 at -50%; with 256
real images: 2 and 5 points).
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import zoo_models  # noqa: E402
from tables import print_rows, table_options  # noqa: E402

FULL = dict(models=tuple(zoo_models.ZOO), reductions=(0.5, 0.3, 0.7), round_tos=("auto", 1), test=10000,
            calibration=256, seed=0)
QUICK = dict(models=("issue_cnn", "resnet_bn", "torch_bn_kept"), reductions=(0.5,), round_tos=("auto",), test=2000,
             calibration=256, seed=0)
METHODS = ("l1", "obspa", "obspa+data")

# the acceptance goal: largest drop below unpruned (points) by method and reduction; None: only "not below L1"
GOAL = {("obspa", 0.3): 3.0, ("obspa", 0.5): 8.0, ("obspa+data", 0.3): 2.0, ("obspa+data", 0.5): 5.0}
GOAL_NO_BN = {("obspa", 0.3): 5.0}


def misses(model, method, reduction, accuracy, unpruned, l1):
    """Why `accuracy` (fractions) misses the goal: '<L1' and/or '!' (too far below unpruned); '' when it meets it."""
    if method == "l1" or accuracy is None:
        return "" if accuracy is not None else "error"
    marks = ""
    if l1 is not None and accuracy < l1:
        marks += "<L1"
    limit = GOAL.get((method, reduction))
    if not zoo_models.has_batchnorm(model):
        limit = GOAL_NO_BN.get((method, reduction), limit)
    if limit is not None and 100 * (unpruned - accuracy) > limit:
        marks += "!"
    return marks


class CachedInputs:
    """The data-free synthetic inputs of one model, made once (OBSPA's `batchnorm` provider with its defaults) and
    cached on disk at `path` (None: in memory only). The cells give them to OBSPA as `calibration=` inputs: the
    Hessians, the refit and the BatchNorm re-estimation see the same inputs as `OBSPA()` itself makes, and the
    round_to variants need not make them again."""

    def __init__(self, model, path, seed=0):
        self.model, self.path, self.seed = model, path, seed
        self.batches, self.warnings, self.seconds = None, [], 0.0

    def load_or_make(self):
        if self.batches is not None:
            return self
        if self.path and os.path.exists(self.path):
            saved = np.load(self.path, allow_pickle=False)
            self.batches = [saved[k] for k in sorted((k for k in saved.files if k.startswith("b")),
                                                     key=lambda k: int(k[1:]))]
            info = json.loads(str(saved["info"]))
            self.warnings, self.seconds = info["warnings"], info["seconds"]
            return self
        import spa_keras as spa
        from spa_keras.obspa.hessians import BatchNormInputs

        analysis = spa.analyze(self.model)
        start = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.batches = BatchNormInputs(seed=self.seed).batches(analysis)  # OBSPA's defaults
        self.seconds = time.time() - start
        self.warnings = sorted({str(w.message) for w in caught})
        if self.path:
            np.savez(self.path, info=json.dumps(dict(warnings=self.warnings, seconds=self.seconds)),
                     **{f"b{i}": b for i, b in enumerate(self.batches)})
        return self

    def inputs(self):
        return np.concatenate(self.batches)


def obspa_source_hash():
    """A short hash of the code that makes OBSPA's synthetic inputs: cached inputs of other code are not reused."""
    import hashlib

    import spa_keras

    root = os.path.dirname(spa_keras.__file__)
    digest = hashlib.sha256()
    for rel in ("obspa/hessians.py", "compute/distill.py"):
        full = os.path.join(root, rel)
        if os.path.exists(full):
            with open(full, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:10]


def prune_cell(name, model, method, reduction, round_to, calibration, synthetic):
    """Prune `model` (a keras.Model or an ONNX path); return (result, criterion, warnings, seconds)."""
    import spa_keras as spa

    if method == "l1":
        criterion = "l1"
    elif method == "obspa+data":
        criterion = spa.importance.OBSPA(calibration=calibration, samples=len(calibration))
    elif synthetic is not None:
        from spa_keras.importance.obspa import SYNTHETIC_DAMPING

        x = synthetic.inputs()  # the inputs OBSPA() makes, through the route real data takes, with their damping
        criterion = spa.importance.OBSPA(calibration=x, samples=len(x), damping=SYNTHETIC_DAMPING)
    else:
        criterion = spa.importance.OBSPA(budget=None)
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = spa.prune(model, flops=reduction, criterion=criterion, round_to=round_to)
    return result, criterion, sorted({str(w.message) for w in caught}), time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated names from benchmarks/zoo_models.py ZOO")
    parser.add_argument("--reductions", help="comma-separated FLOPs fractions removed (default 0.5,0.3,0.7)")
    parser.add_argument("--methods", help="comma-separated: l1, obspa, obspa+data")
    parser.add_argument("--round-to", help="comma-separated: auto, 1, ... (default auto,1)")
    parser.add_argument("--test", type=int, help="test images (default 10000)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/obspa_zoo[_quick].json)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine results JSONs (runs of different --models) into --out and print its tables")
    table_options(parser)
    args = parser.parse_args()
    if args.merge:
        merged = merge([json.load(open(p)) for p in args.merge])
        out = args.out or os.path.join(HERE, "results", "obspa_zoo.json")
        with open(out, "w") as f:
            json.dump(merged, f, indent=1)
        print_table(merged, args.markdown)
        return
    if args.table:
        with open(args.table) as f:
            print_table(json.load(f), args.markdown)
        return
    cfg = dict(QUICK if args.quick else FULL)
    if args.models:
        unknown = set(args.models.split(",")) - set(zoo_models.ZOO)
        if unknown:
            sys.exit(f"unknown models {sorted(unknown)}: choose from {', '.join(zoo_models.ZOO)}")
        cfg["models"] = tuple(args.models.split(","))
    if args.reductions:
        cfg["reductions"] = tuple(float(r) for r in args.reductions.split(","))
    if args.round_to:
        cfg["round_tos"] = tuple(r if r == "auto" else int(r) for r in args.round_to.split(","))
    if args.test:
        cfg["test"] = args.test
    if args.seed is not None:
        cfg["seed"] = args.seed
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = args.out or os.path.join(out_dir, "obspa_zoo_quick.json" if args.quick else "obspa_zoo.json")
    report = json.load(open(path)) if args.resume and os.path.exists(path) else {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "models": {}, "cells": []}
    def key(c):
        return c["model"], c["method"], c["reduction"], str(c["round_to"])

    done = {key(c) for c in report["cells"] if not c.get("error")}  # --resume tries failed cells again

    def save():
        with open(path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(path + ".tmp", path)

    def record(cell):
        report["cells"] = [c for c in report["cells"] if key(c) != key(cell)] + [cell]
        save()
        acc = "error" if cell["accuracy"] is None else f"{100 * cell['accuracy']:.2f}%"
        print(f"{cell['model']:16s} {cell['method']:10s} -{100 * cell['reduction']:.0f}% round_to={cell['round_to']}: "
              f"{acc} (FLOPs -{100 * cell['flops_removed']:.1f}%, {cell['seconds']:.1f} s)"
              + "".join(f"\n    warning: {w}" for w in cell["warnings"]), flush=True)

    loaded = {}

    def model_state(name):
        """(model, data, calibration, synthetic inputs, unpruned accuracy) of `name`, loaded once."""
        if name in loaded:
            return loaded[name]
        import keras

        seed = cfg["seed"]
        model_path = zoo_models.trained(name, seed)
        meta = zoo_models.metadata(name, seed)
        (x_train, _), (x_test, y_test) = zoo_models.load_dataset(meta["dataset"])
        x_test, y_test = x_test[:cfg["test"]], y_test[:cfg["test"]]
        calibration = x_train[np.random.default_rng(seed).choice(len(x_train), cfg["calibration"], replace=False)]
        if zoo_models.is_onnx(name):
            model, synthetic = model_path, None
            calibration = np.ascontiguousarray(calibration.transpose(0, 3, 1, 2))

            def score(m):
                return zoo_models.onnx_accuracy(m, x_test, y_test)
        else:
            model = keras.models.load_model(model_path)
            cached = f"{model_path}.synthetic-{obspa_source_hash()}.npz"
            synthetic = CachedInputs(model, cached, seed) if "obspa" in methods else None

            def score(m):
                return zoo_models.keras_accuracy(m, x_test, y_test)
        if name not in report["models"]:
            report["models"][name] = dict(meta, unpruned=score(model), description=zoo_models.ZOO[name][4],
                                          batchnorm=zoo_models.has_batchnorm(name))
            save()
        loaded[name] = (model, calibration, synthetic, score)
        return loaded[name]

    for reduction in cfg["reductions"]:
        for name in cfg["models"]:
            for round_to in cfg["round_tos"]:
                for method in methods:
                    if (name, method, reduction, str(round_to)) in done:
                        continue
                    model, calibration, synthetic, score = model_state(name)
                    if method == "obspa" and synthetic is not None and synthetic.batches is None:
                        synthetic.load_or_make()
                        info = report["models"][name]
                        info["synthetic_seconds"], info["synthetic_warnings"] = synthetic.seconds, synthetic.warnings
                        print(f"{name}: synthetic inputs in {synthetic.seconds:.0f} s"
                              + "".join(f"\n    warning: {w}" for w in synthetic.warnings), flush=True)
                    cell = dict(model=name, method=method, reduction=reduction, round_to=round_to)
                    try:
                        result, criterion, caught, seconds = prune_cell(name, model, method, reduction, round_to,
                                                                        calibration, synthetic)
                    except Exception as exc:  # a crash is a finding: record it and go on
                        cell.update(accuracy=None, flops_removed=0.0, params_removed=0.0, seconds=0.0,
                                    warnings=[], skipped=[], error=f"{type(exc).__name__}: {exc}"[:2000])
                        record(cell)
                        continue
                    cell.update(accuracy=score(result.model),
                                flops_removed=1 - result.after.flops / result.before.flops,
                                params_removed=1 - result.after.params / result.before.params,
                                seconds=seconds, warnings=caught,
                                skipped=list(getattr(criterion, "skipped", [])))
                    record(cell)
    print_table(report)


def merge(reports):
    """One report of several: models and cells of the later ones win where they overlap."""
    out = dict(reports[0], models={}, cells=[])
    for report in reports:
        out["models"].update(report["models"])
        keys = {(c["model"], c["method"], c["reduction"], str(c["round_to"])) for c in report["cells"]}
        out["cells"] = [c for c in out["cells"] if (c["model"], c["method"], c["reduction"], str(c["round_to"]))
                        not in keys] + report["cells"]
    return out


def _cell(cells, name, method, reduction, round_to):
    for c in cells:
        if (c["model"], c["method"], c["reduction"], str(c["round_to"])) == (name, method, reduction, str(round_to)):
            return c
    return None


def print_table(report, markdown=False):
    cells, models = report["cells"], report["models"]
    names = [n for n in zoo_models.ZOO if n in models] + sorted(set(models) - set(zoo_models.ZOO))
    reductions = sorted({c["reduction"] for c in cells})
    for round_to in sorted({str(c["round_to"]) for c in cells}, key=lambda r: (r != "auto", r)):
        header = ["model", "unpruned"] + [f"-{100 * r:.0f}% {m}" for r in reductions for m in METHODS]
        rows = []
        for name in names:
            unpruned = models[name]["unpruned"]
            row = [name + ("" if models[name].get("batchnorm", True) else " (no BN)"), f"{100 * unpruned:.2f}"]
            for r in reductions:
                l1 = _cell(cells, name, "l1", r, round_to)
                l1_acc = None if l1 is None else l1["accuracy"]
                for m in METHODS:
                    c = _cell(cells, name, m, r, round_to)
                    if c is None:
                        row.append("-")
                    elif c["accuracy"] is None:
                        row.append("error")
                    else:
                        row.append(f"{100 * c['accuracy']:.2f}" + misses(name, m, r, c["accuracy"], unpruned,
                                                                        l1_acc))
            rows.append(row)
        print_rows(f"Test accuracy % without fine-tuning, round_to={round_to} (<L1: below L1; !: further below "
                   "unpruned than the goal)", header, rows, markdown)
    achieved = [[name] + [f"{100 * c['flops_removed']:.1f}/{100 * c['params_removed']:.1f}"
                          if (c := _cell(cells, name, m, r, rt)) and c["accuracy"] is not None else "-"
                          for r in reductions for m in METHODS for rt in ("auto",)] for name in names]
    print_rows("FLOPs / params removed %, round_to=auto", ["model"] + [f"-{100 * r:.0f}% {m}" for r in reductions
                                                                       for m in METHODS], achieved, markdown)
    notes = []
    for name in names:
        seen = set(models[name].get("synthetic_warnings", []))
        for c in cells:
            if c["model"] == name:
                seen |= set(c.get("warnings", []))
                if c.get("error"):
                    seen.add(f"{c['method']} -{100 * c['reduction']:.0f}% round_to={c['round_to']}: {c['error']}")
                seen |= {f"OBSPA skipped: {s}" for s in c.get("skipped", [])}
        notes += [[name, w[:300]] for w in sorted(seen)]
    if notes:
        print_rows("Warnings, skipped layers and errors", ["model", "message"], notes, markdown)


if __name__ == "__main__":
    main()
