"""How long OBSPA takes on a large model, and how much memory: Keras ResNet50 at 224x224 to -50% FLOPs.

    python benchmarks/obspa_speed.py [--repeat 1] [--model ResNet50]

Each run is a fresh process (peak RSS is the process's own): it builds keras.applications.<model>(weights=None)
(random weights are enough for timing) and times `spa.prune(model, flops=0.5, criterion=...)` end to end, for
OBSPA with its defaults (data-free inputs within the default 30 s budget, 128 samples or fewer, reconstruction,
BatchNorm re-estimation) and for L1 as the reference. Prints a table and writes benchmarks/results/obspa_speed.json.
TensorFlow runs the OBS numerics on a GPU when it sees one; the device column says where it ran.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CRITERIA = {"obspa (defaults)": "spa.importance.OBSPA()", "l1": "'l1'"}

RUN = """
import json, resource, time, warnings
warnings.simplefilter("ignore")
import keras, tensorflow as tf
import spa_keras as spa
keras.utils.set_random_seed(0)
model = getattr(keras.applications, {model!r})(weights=None)
start = time.perf_counter()
result = spa.prune(model, flops=0.5, criterion={criterion})
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds=seconds, rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      flops_removed=1 - result.after.flops / result.before.flops,
                      device="GPU" if tf.config.list_physical_devices("GPU") else "CPU")))
"""


def run(model, criterion):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.path.dirname(HERE))
    proc = subprocess.run([sys.executable, "-c", RUN.format(model=model, criterion=criterion)], capture_output=True,
                          text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--model", default="ResNet50")
    args = parser.parse_args()
    rows = []
    for name, criterion in CRITERIA.items():
        runs = [run(args.model, criterion) for _ in range(args.repeat)]
        rows.append(dict(criterion=name, model=args.model, seconds=statistics.median(r["seconds"] for r in runs),
                         rss_gb=max(r["rss_gb"] for r in runs), flops_removed=runs[0]["flops_removed"],
                         device=runs[0]["device"], runs=runs))
    table = Table(title=f"{args.model} 224x224 to -50% FLOPs, end to end ({os.cpu_count()} CPUs)")
    for col in ("criterion", "seconds", "peak RSS", "FLOPs removed", "device"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["criterion"], f"{r['seconds']:.1f}", f"{r['rss_gb']:.2f} GB", f"{100 * r['flops_removed']:.1f}%",
                      r["device"])
    Console().print(table)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "obspa_speed.json"), "w") as f:
        json.dump(dict(machine=dict(python=platform.python_version(), cpus=os.cpu_count()), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
