"""`make_plan`: which channels go to meet a target.

Targets (fractions removed, in [0, 1)): `ratio` of prunable channels, `flops` or `params` of the whole model
(exact counts from the cost model, so coupled producers and consumers are all counted), or `latency` as a latency
model predicts it. Ranking is global by default (normalised group scores compare across layers) or uniform per
group (`global_ranking=False`). `max_per_group` caps the fraction any group loses (a group never loses all its
channels), `round_to` keeps channel counts multiples of a number (for fast kernels), `ignore` leaves groups that
touch the named parameters or nodes (regular expressions) alone. Under a `flops` or `params` target, channels
whose removal saves next to nothing of it (`NEGLIGIBLE`: squeeze-excitation units, a classifier's hidden neurons
under a FLOPs target) stay.

`criterion` is a registered name or a criterion instance (`spa_keras.importance`); data-driven criteria get `data`
and `loss`. `scores` (one array per group) skips the criterion.

Example:

>>> plan = make_plan(analysis, flops=0.5)          # doctest: +SKIP
>>> plan.save("plan.json")                         # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Callable, Iterable

import numpy as np

from spa_keras.analysis.groups import Analysis, GroupKey
from spa_keras.common.errors import InputError
from spa_keras.importance import TRAINING_CRITERION, Criterion, score_groups
from spa_keras.importance.registry import criterion_name, get_criterion
from spa_keras.planning.plan import PruningPlan
from spa_keras.planning.runtimes import AUTO, channel_multiple, check_runtime, group_multiples
from spa_keras.planning.search import BlockSearch
from spa_keras.planning.target import Target, target_of

# a plan that lands further than this from its target (absolute fraction) says so
LANDING = 0.02
# a FLOPs or parameter target leaves alone channels whose removal saves less than this fraction of the mean saving
# per channel: they buy nothing towards it and cost accuracy. MobileNetV3-style squeeze-excitation units and a
# classifier's hidden neurons went at -30% FLOPs (14 of 18 SE units of a block); with them kept, that zoo net keeps
# 81.6% instead of 79.1% data-free and 81.8% instead of 81.4% with data (ResNet-style, no such channels: unchanged)
NEGLIGIBLE = 0.05
# round_to="auto" keeps the runtime's channel multiple unless its layout removes more than this many times the score
# a multiple of 1 removes (then it halves the multiple). Coarse blocks cannot land in score order: at -30% FLOPs of
# an MNIST Flatten-Dense net multiples of 16 or 8 removed 4x the score (most neurons of a Dense layer, to fill what
# an 8-channel conv block overshot) and multiples of 4 1.01x; over six zoo nets at -30/-50% this keeps 16 or 8 in
# 6 of 12 cases
COARSE_COST = 1.25


def compile_ignore(ignore: str | Iterable[str] | None) -> list[re.Pattern]:
    """The `ignore` regular expressions, compiled; a bad one is an `InputError` that names it."""
    patterns: list[re.Pattern] = []
    for text in [ignore] if isinstance(ignore, str) else list(ignore or ()):
        try:
            patterns.append(re.compile(text))
        except re.error as exc:
            raise InputError(f"ignore {text!r}: not a regular expression ({exc})") from exc
    return patterns


def ignored_groups(analysis: Analysis, ignore: str | Iterable[str] = ()) -> list[bool]:
    """Per group: True when it touches a parameter or node matching one of the `ignore` regular expressions."""
    patterns = compile_ignore(ignore)
    return [any(p.search(name) for p in patterns for m in g.members for name in [m.param] + m.nodes)
            for g in analysis.groups]


def prunable_channels(analysis: Analysis, ignore: str | Iterable[str] = ()) -> int:
    """How many channels a `ratio` target counts: the unblocked channels of the groups not ignored."""
    return int(sum((~g.blocked).sum() for g, skip in zip(analysis.groups, ignored_groups(analysis, ignore))
                   if not skip))


def _round_to(round_to: Any) -> int | str:
    if round_to == AUTO:
        return AUTO
    try:
        whole = not isinstance(round_to, bool) and float(round_to).is_integer() and int(round_to) >= 1
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise InputError(f"round_to={round_to!r}: 'auto' (channel counts the runtime runs fast) or a whole number "
                         "of at least 1 that kept channel counts stay multiples of")
    return int(round_to)


def _said(round_to: int | str, multiple: int) -> str:
    return f"'auto' (multiples of {multiple})" if round_to == AUTO else str(multiple)


def _search(analysis: Analysis, score: np.ndarray, eligible: np.ndarray, round_to: int | str, runtime: str | None,
            global_ranking: bool, removed: np.ndarray | None, achieved: Callable[[np.ndarray], float],
            goal: float) -> tuple[np.ndarray, int]:
    """(removed-channel mask, the channel multiple used). For "auto", the runtime's multiple, halved until a layout
    lands within `LANDING` of the goal while removing at most `COARSE_COST` times the score a multiple of 1 removes
    (a multiple of 1 always may)."""
    multiple = round_to if isinstance(round_to, int) else channel_multiple(runtime)  # else AUTO

    def layout(multiple: int | list[int]) -> np.ndarray:
        search = BlockSearch(analysis.groups, analysis.offsets, score, eligible, multiple, global_ranking, removed)
        mask = search.search(achieved, goal)
        return mask if removed is None else mask | removed

    finest: float | None = None
    while True:
        rounds = group_multiples([g.channels for g in analysis.groups], multiple) if round_to == AUTO else multiple
        mask = layout(rounds)
        if round_to != AUTO or multiple == 1 or not goal:
            return mask, multiple
        if abs(achieved(mask) - goal) <= LANDING:
            if finest is None:
                finest = _removed_score(score, layout(1), removed)
            if finest <= 0 or _removed_score(score, mask, removed) <= COARSE_COST * finest:
                return mask, multiple
        multiple //= 2


def _removed_score(score: np.ndarray, mask: np.ndarray, removed: np.ndarray | None) -> float:
    """The summed score of the channels a layout removes (beyond those already gone)."""
    new = mask if removed is None else mask & ~removed
    return float(score[new].sum())


def _eligible(analysis: Analysis, scores: list[np.ndarray], ignored: list[bool], max_per_group: float,
              removable: dict[GroupKey, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per global channel: its score and whether it may go (unblocked, its group not ignored, among the group's
    `cap` lowest scored; the cap keeps at least one channel and `max_per_group` of them)."""
    offsets = analysis.offsets
    score = np.full(len(analysis.group_of_channel), np.inf)
    eligible = np.zeros(len(score), bool)
    for g, s, skip in zip(analysis.groups, scores, ignored):
        free = np.flatnonzero(~g.blocked)
        if skip or not len(free):
            continue
        cap = min(int(math.floor(max_per_group * g.channels)), g.channels - 1, len(free))
        if removable is not None and g.key in removable:
            cap = max(0, min(cap, int(removable[g.key])))
        score[offsets[g.id] + free] = s[free]
        eligible[offsets[g.id] + free[np.argsort(s[free], kind="stable")[:cap]]] = True
    return score, eligible


def _per_second(analysis: Analysis, score: np.ndarray, eligible: np.ndarray, latency_model: Any) -> np.ndarray:
    """Scores divided by the predicted seconds a channel of their group saves (relative to the mean, floored at a
    twentieth of it): the same importance goes first where it buys more time."""
    cost = latency_model.channel_costs(analysis.groups, analysis.offsets)
    mean = cost[eligible].mean() if eligible.any() else 0.0
    if mean <= 0:
        return score
    relative = np.maximum(cost / mean, 0.05)
    return np.where(score >= 0, score / relative, score * relative)  # negative scores: cheap ones go later too


def _worth_removing(analysis: Analysis, kind: str, eligible: np.ndarray) -> np.ndarray:
    """Per global channel: whether removing it saves at least `NEGLIGIBLE` times the mean saving per eligible
    channel of the target's kind (its group losing a quarter of its channels from the full model)."""
    from spa_keras.analysis.cost import channel_savings

    saving = channel_savings(analysis.groups, analysis.offsets, len(eligible),
                             lambda mask: float(getattr(analysis.cost.counts(mask), kind)))
    mean = float(saving[eligible].mean()) if eligible.any() else 0.0
    return saving >= NEGLIGIBLE * mean


def _achieved(analysis: Analysis, kind: str, ignore: str | Iterable[str],
              latency_model: Any = None) -> Callable[[np.ndarray], float]:
    """The fraction a removed-channel mask achieves of the target's kind (channels after rounding for `ratio`;
    predicted latency for `latency`)."""
    if kind == "latency":
        return latency_model.removed_fraction
    if kind == "ratio":
        prunable = max(prunable_channels(analysis, ignore), 1)
        return lambda mask: float(mask.sum()) / prunable
    cost = analysis.cost
    base = getattr(cost.base, kind)
    return lambda mask: 1 - getattr(cost.counts(mask), kind) / base if base else 0.0


def make_plan(analysis: Analysis, *, ratio: float | None = None, flops: float | None = None,
              params: float | None = None, criterion: Any = TRAINING_CRITERION, global_ranking: bool = True,
              round_to: int | str = "auto", ignore: str | Iterable[str] = (), max_per_group: float = 0.9,
              scores: list[np.ndarray] | None = None, data: Any = None, loss: Any = None,
              removable: dict[GroupKey, int] | None = None, removed: np.ndarray | None = None,
              runtime: str | None = None, reconstruct: bool = True, latency: float | None = None,
              latency_model: Any = None, rank_by_latency: bool = False) -> PruningPlan:
    """Choose the channels to remove; return a `PruningPlan`.

    `removable` ({group key: channel count}) lowers the cap of the named groups (iterative pruning keeps the cap
    relative to the original model). `removed` (bool per global channel) are channels already gone (training with
    growing masks): they stay in the plan. `reconstruct=False` leaves out a criterion's new weight values (OBSPA).
    `latency` is a fraction of the latency `latency_model` (a `spa_keras.latency.table.LatencyModel`) predicts
    (`spa.prune(latency=...)` measures the landing). `rank_by_latency=True` ranks channels by score per second
    the `latency_model` predicts they save (HALP-style), whatever the target; measured here it gave slower models
    than ranking by score alone at the same FLOPs (`benchmarks/latency_table.py`), so it is off by default.
    `round_to="auto"` keeps pruned groups at channel counts `runtime` runs fast (`spa_keras.planning.runtimes`), a
    smaller multiple when that one cannot land within 2% of the target; the plan records the multiple used. When no
    layout within 2% of the target exists under `round_to`, `max_per_group` and the barriers, a warning says where
    the plan landed (`plan.target.reached`).
    """
    kind, amount = target_of(ratio, flops, params, latency)
    if (kind == "latency" or rank_by_latency) and latency_model is None:
        raise InputError("latency= and rank_by_latency= need a latency model of the runtime (latency_model=; "
                         "spa.prune(model, latency=...) builds one)")
    if not 0 < max_per_group <= 1:
        raise InputError(f"max_per_group={max_per_group}: a fraction in (0, 1]")
    round_to = _round_to(round_to)
    check_runtime(runtime)
    given = criterion
    if scores is None:
        criterion = get_criterion(criterion)  # one instance scores and, for OBSPA, reconstructs
        scores = score_groups(criterion, analysis, data=data, loss=loss)
    score, eligible = _eligible(analysis, scores, ignored_groups(analysis, ignore), max_per_group, removable)
    achieved = _achieved(analysis, kind, ignore, latency_model)
    if kind in ("flops", "params"):
        eligible &= _worth_removing(analysis, kind, eligible)
    if rank_by_latency:
        score = _per_second(analysis, score, eligible, latency_model)
    goal = amount
    if kind == "ratio":  # a whole number of channels
        prunable = max(prunable_channels(analysis, ignore), 1)
        goal = round(amount * prunable) / prunable
    if removed is not None:  # channels already gone rank first
        score = np.where(removed & eligible, -np.inf, score)
    mask, multiple = _search(analysis, score, eligible, round_to, runtime, global_ranking, removed, achieved, goal)
    reached = achieved(mask)
    if amount and abs(reached - amount) > LANDING:
        warnings.warn(f"{kind}={amount:g}: the plan removes {reached:.1%}; no layout closer to the target was found "
                      f"with round_to={_said(round_to, multiple)}, max_per_group={max_per_group:g} and the model's "
                      "barriers",
                      stacklevel=2)
    updates = criterion.updates(analysis, mask) if reconstruct and hasattr(criterion, "updates") else {}
    per_group = analysis.removed_per_group(mask)
    options = isinstance(given, Criterion) or hasattr(criterion, "updates")
    auto = round_to == AUTO
    target = Target(kind, amount, round(float(reached), 6), criterion_name(criterion),
                    repr(criterion) if options else None, bool(updates), global_ranking=global_ranking,
                    round_to=round_to, max_per_group=max_per_group, channel_multiple=multiple if auto else None,
                    runtime=(runtime or "any") if auto else None)
    return PruningPlan(per_group, {g.key: g.channels for g in analysis.groups}, target, updates, analysis.fingerprint)
