"""Latency targets: a plan that removes a fraction of the latency *measured* on a runtime, on this machine.

FLOPs predict latency poorly (memory-bound layers, kernel blocking, fused ops), so `spa.prune(model, latency=0.5,
runtime="onnxruntime")` plans on measured times. A per-layer latency table (`spa_keras.latency.table`: every
convolution and matrix product timed alone at a few channel counts, once per machine and runtime, cached) predicts
the latency of any plan (channels rank by importance, as for every target), and the first plan aims at the asked
fraction of the predicted latency. The slim model is then built, compiled for the runtime and timed against
the original (interleaved runs, the median of per-turn ratios); when the measured speed-up misses the goal by more
than `tolerance`, the planned fraction is corrected by interpolating the measured latencies (a few rounds; each
shown as a line of progress). The plan records every measured round. Whole-model timing is what a user sees, so the
landing is checked on the quantity itself; the price is one conversion per round (seconds for small models, ~20 s
for a ResNet50 through tf2onnx). Everything is timed at the batch size of `input_shape` (default 1): batch 16 can
want another plan than batch 1. Timings depend on the machine and its load: plan on the machine you deploy on.

Runtimes: see `spa_keras.latency.timing`.

Example:

>>> result = spa.prune(model, latency=0.5, runtime="onnxruntime")     # doctest: +SKIP
>>> batch16 = spa.prune(model, latency=0.5, input_shape=(16, 224, 224, 3))  # doctest: +SKIP
>>> result.plan.target.measured_speedup                                # doctest: +SKIP
1.97
"""

from __future__ import annotations

import warnings
from typing import Callable

from spa_keras.common.console import say
from spa_keras.common.errors import InputError
from spa_keras.importance import get_criterion, score_groups
from spa_keras.latency.table import LatencyModel
from spa_keras.latency.timing import SpeedupMeter
from spa_keras.planning.selection import make_plan
from spa_keras.planning.target import fraction

ROUNDS = 6
TOLERANCE = 0.04  # a measured latency within this fraction of the goal ends the search
MAX_FLOPS = 0.95


def next_fraction(points: list[tuple[float, float]], goal: float) -> float:
    """The planned fraction (`points`: (planned, measured latency fraction = 1 / speed-up)) to try next: linear
    interpolation at the two points that bracket `goal`, or extrapolation from the last two when none lies beyond.

    >>> next_fraction([(0.0, 1.0), (0.5, 0.6)], goal=0.5)     # planning 0.5 gave 0.6 of the latency: go further
    0.625
    >>> next_fraction([(0.0, 1.0), (0.5, 0.6), (0.7, 0.4)], goal=0.5)
    0.6
    """
    pts = sorted(points)
    above = [p for p in pts if p[1] <= goal]  # latency low enough
    hi = above[0] if above else None
    below = [p for p in pts if p[1] > goal and (hi is None or p[0] < hi[0])]  # latency still too high, before hi
    a, b = (below[-1], hi) if below and hi else (pts[-2], pts[-1]) if len(pts) > 1 else (pts[0], pts[0])
    if b[1] == a[1]:
        f = (a[0] + b[0]) / 2 if hi else min(a[0] + 0.1, MAX_FLOPS)
    else:
        f = a[0] + (goal - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
    lo, top = (below[-1][0] if below else 0.0), (hi[0] if hi else MAX_FLOPS)
    if not lo < f < top:  # outside the bracket (noisy timings, or extrapolation too far): bisect it
        f = (lo + top) / 2
    return round(min(max(f, 0.0), MAX_FLOPS), 4)


def latency_plan(amount: float, plan_at: Callable, measure: Callable, rounds: int = ROUNDS,
                 tolerance: float = TOLERANCE, say=None, what: str = ""):
    """The plan whose measured speed-up is closest to removing `amount` of the latency.

    `plan_at(fraction)` makes a plan that removes `fraction` of what it plans on (the latency a per-layer table
    predicts, or FLOPs; its `target.reached`); `measure(plan)` is the speed-up of its slim model; `say(line)`
    reports each round. The plan's target records the rounds (planned fraction, FLOPs removed, measured speed-up),
    the FLOPs removed and the measured speed-up of the chosen one.
    """
    goal = 1.0 - amount
    say = say or (lambda line: None)
    points, measured, plans = [(0.0, 1.0)], [], []
    fraction = amount
    for k in range(rounds):
        plan = plan_at(fraction)
        plans.append(plan)
        reached = plan.target.reached
        removed_flops = plan.target.flops_removed if plan.target.flops_removed is not None else reached
        ratio = measure(plan)
        measured.append({"planned": round(reached, 4), "flops": round(removed_flops, 4), "speedup": round(ratio, 4)})
        planned = f"planned -{reached:.1%}, " if plan.target.kind == "latency" else ""
        say(f"latency target {amount:.0%}{what}: round {k + 1}: {planned}FLOPs -{removed_flops:.1%} -> "
            f"{ratio:.2f}x (aim {1 / goal:.2f}x)")
        points.append((reached, 1 / ratio))
        if abs(1 / ratio - goal) <= tolerance * goal:
            break
        following = next_fraction(points, goal)
        if any(abs(following - f) < 0.002 for f, _ in points):
            break
        fraction = following
    best = min(range(len(measured)), key=lambda i: abs(1 / measured[i]["speedup"] - goal))
    plan = plans[best]
    target = plan.target
    target.kind, target.amount, target.flops_removed = "latency", amount, measured[best]["flops"]
    target.reached = round(1 - 1 / measured[best]["speedup"], 6)
    target.measured_speedup, target.rounds = measured[best]["speedup"], measured
    return plan


def latency_target_plan(analysis, latency, options: dict, batch: int = 1):
    """Measure and search: the criterion scores once; a per-layer latency table of the runtime
    (`spa_keras.latency.table`, measured once per machine) predicts the latency of any plan; rounds plan a
    predicted latency fraction without reconstruction (latency does not depend on weight values), and the whole
    slim model is timed to correct the prediction; the chosen plan gets the criterion's new weights. Everything is
    timed at `batch` (the analysis keeps shapes at batch 1)."""
    latency = fraction("latency", latency)
    options = dict(options)
    runtime = options.pop("runtime") or analysis.source.runtime
    options["runtime"] = runtime
    criterion = get_criterion(options.pop("criterion"))
    scores = score_groups(criterion, analysis, data=options.pop("data"), loss=options.pop("loss"))
    shapes = batched(analysis.input_shapes, batch)
    speedup_of = SpeedupMeter(analysis.source.analysed_model, runtime, shapes)
    model = LatencyModel(analysis, runtime, batch=batch, whole_seconds=speedup_of.base_seconds())
    flops = analysis.cost

    def plan_at(fraction):
        with warnings.catch_warnings():  # a landing off the predicted fraction is what the measured rounds correct
            warnings.simplefilter("ignore")
            plan = make_plan(analysis, latency=fraction, latency_model=model, scores=scores, criterion=criterion,
                             reconstruct=False, **options)
        plan.target.flops_removed = round(1 - flops.counts(plan.mask(analysis)).flops / flops.base.flops, 6)
        return plan

    measure = lambda p: speedup_of(analysis.source.slim_analysed(analysis, p.mask(analysis)))  # noqa: E731
    plan = latency_plan(latency, plan_at, measure, say=say, what=f" on {runtime}")
    plan.target.batch = batch  # the speed-ups recorded hold at this batch size
    if hasattr(criterion, "updates"):
        plan.updates = criterion.updates(analysis, plan.mask(analysis))
    return plan


def batched(shapes: dict, batch: int = 1) -> dict:
    """Input shapes at `batch` (free sizes as 1), for timing."""
    return {name: (batch, *(1 if d is None else int(d) for d in shape[1:])) for name, shape in shapes.items()}


def batch_of(shapes: dict | None) -> int:
    """The batch size given with the input shapes (`input_shape=(16, 224, 224, 3)`), else 1."""
    batches = {int(shape[0]) for shape in (shapes or {}).values() if shape and shape[0] is not None}
    if len(batches) > 1:
        raise InputError(f"input_shape gives different batch sizes ({', '.join(map(str, sorted(batches)))}); a "
                         "latency target times the model at one batch size")
    return batches.pop() if batches else 1
