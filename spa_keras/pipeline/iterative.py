"""Iterative pruning (`spa.prune(..., steps=N)`): score, prune, rescore on the slimmer model, N times; one plan for
the original model.

Step k aims at k/steps of the target, counted on the original model: it removes from the current slim model what
is still missing. Caps (`max_per_group`) stay relative to the original groups. The slim model keeps its layer and
variable names, so the groups of each step are the original groups with fewer channels; the removed channels are
tracked in original indices.

Example:

>>> plan = iterative_plan(analysis, None, 0.5, None, steps=3, criterion="l1", ...)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spa_keras import formats
from spa_keras.analysis.groups import Analysis, GroupKey, analyze_graph
from spa_keras.common.errors import SpaError
from spa_keras.planning.plan import PruningPlan
from spa_keras.planning.selection import make_plan, prunable_channels


def iterative_plan(analysis: Analysis, ratio, flops, params, steps: int, **options) -> PruningPlan:
    """Score, prune and rescore `steps` times; return one plan for the original model."""
    (kind, amount), = [(k, v) for k, v in (("ratio", ratio), ("flops", flops), ("params", params)) if v is not None]
    amount = float(amount)
    if options["loss"] is None:  # slim models are not compiled: keep the original's loss for every step
        options["loss"] = getattr(analysis.source.model, "loss", None)
    original = {g.key: g.channels for g in analysis.groups}
    kept = {g.key: np.arange(g.channels) for g in analysis.groups}  # original indices still in the current model
    prunable = prunable_channels(analysis, options["ignore"])
    current, plan = analysis, None
    for step in range(1, steps + 1):
        goal = amount * step / steps
        key_of = _original_keys(current, kept)
        if kind == "ratio":
            gone = sum(original.values()) - sum(len(v) for v in kept.values())
            fraction = (goal * prunable - gone) / max(prunable - gone, 1)
        else:
            fraction = 1 - (1 - goal) * getattr(analysis.counts, kind) / max(getattr(current.counts, kind), 1)
        fraction = min(max(fraction, 0.0), 0.999)
        removable = {g.key: math.floor(options["max_per_group"] * original[key_of[g.key]]) -
                     (original[key_of[g.key]] - g.channels) for g in current.groups}
        plan = make_plan(current, **{kind: fraction}, removable=removable, **options)
        for key, idx in plan.removed.items():
            kept[key_of[key]] = np.delete(kept[key_of[key]], idx)
        if step < steps and plan.removed:
            current = _slimmer(current, plan)
    removed = {key: np.setdiff1d(np.arange(n), kept[key]).tolist() for key, n in original.items()
               if len(kept[key]) < n}
    target = dataclasses.replace(plan.target, amount=amount, steps=steps)
    return PruningPlan(removed, original, target, fingerprint=analysis.fingerprint)


def _slimmer(analysis: Analysis, plan: PruningPlan) -> Analysis:
    """The analysis of the slim model `plan` makes (its inputs may be named anew, as Keras does: the same shapes in
    order)."""
    slim = formats.load(analysis.source.slim_analysed(analysis, plan.mask(analysis)))
    slim.given_shapes = dict(zip([s.name for s in slim.graph_specs], analysis.input_shapes.values()))
    return analyze_graph(slim.graph)


def _original_keys(analysis: Analysis, kept: dict[GroupKey, np.ndarray]) -> dict[GroupKey, GroupKey]:
    """{current group key: original group key}. The position of a group cut from a kernel by a Split moves as
    channels go, so groups of one parameter axis pair up in position order."""

    def by_prefix(keys):
        out: dict[tuple[str, int], list[GroupKey]] = {}
        for key in sorted(keys, key=lambda k: k.position):
            out.setdefault((key.param, key.axis), []).append(key)
        return out

    now, before = by_prefix(g.key for g in analysis.groups), by_prefix(kept)
    channels = {g.key: g.channels for g in analysis.groups}
    mapping = {}
    for prefix, keys in now.items():
        old = before.get(prefix, [])
        if len(old) != len(keys) or any(channels[k] != len(kept[o]) for k, o in zip(keys, old)):
            raise SpaError(f"iterative pruning: the slim model's groups of {prefix[0]}:{prefix[1]} do not match the "
                           "original's; prune in one step (steps=1; on the command line, without --steps)")
        mapping.update(zip(keys, old))
    return mapping
