"""PruningPlan: which channels of which group to remove, chosen to meet a target; JSON in and out.

Targets (fractions removed, in [0, 1)): `ratio` of prunable channels, `flops` or `params` of the whole model
(exact counts from the cost model, so coupled producers and consumers are all counted). Ranking is global by
default (normalised group scores compare across layers) or uniform per group (`global_ranking=False`).
`max_per_group` caps the fraction any group loses (a group never loses all its channels), `round_to` keeps channel
counts multiples of a number (for fast kernels), `ignore` leaves groups that touch the named parameters or nodes
(regular expressions) alone.

`criterion` is a registered name or a criterion instance (`spa_keras.importance`); data-driven criteria get `data`
and `loss`. `scores` (one array per group) skips the criterion.

Example:

>>> plan = make_plan(analysis, flops=0.5)          # doctest: +SKIP
>>> plan.save("plan.json")                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from spa_keras.cost import CostModel
from spa_keras.errors import InputError, first_line
from spa_keras.importance import Criterion, score_groups
from spa_keras.importance.registry import criterion_name


@dataclasses.dataclass
class PruningPlan:
    """Which channels of which group go, for the model the plan was made on.

    `updates` ({parameter: value}) are new values of kept weights (OBSPA's reconstruction): full-size arrays in the
    parameter's layout in the engine's graph (removed positions are ignored), applied by every surgery before it
    slices. A plan with updates saves them beside its JSON (`plan.json` -> `plan.weights.npz`); loading such a plan
    without that file is an error, since replaying it without them would give another model.
    """

    removed: dict[str, list[int]]  # group key -> sorted channel indices to remove
    channels: dict[str, int]  # group key -> channel count (a plan replays only on a model with the same groups)
    target: dict = dataclasses.field(default_factory=dict)
    updates: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        data = {"format": "spa-keras plan 1", "target": self.target, "channels": self.channels,
                "removed": self.removed}
        if self.updates:
            data["updates"] = sorted(self.updates)  # kept weights whose values this plan changes
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, updates: dict | None = None) -> "PruningPlan":
        data = json.loads(text)
        if data.get("format") != "spa-keras plan 1":
            raise InputError("not a spa-keras pruning plan (missing 'format': 'spa-keras plan 1')")
        changed = list(data.get("updates", []))
        missing = sorted(set(changed) - set(updates or {}))
        if missing:
            raise InputError(f"the plan changes the values of {len(missing)} kept weight(s) ({', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''}) but their values were not given; without them "
                             "it would give another model (keep the plan's .weights.npz beside it)")
        return cls({k: list(map(int, v)) for k, v in data["removed"].items()}, data["channels"], data.get("target", {}),
                   {k: np.asarray(updates[k]) for k in changed})

    @staticmethod
    def weights_path(path) -> str:
        """Where a plan saved at `path` keeps its new weight values."""
        return os.path.splitext(str(path))[0] + ".weights.npz"

    def save(self, path):
        from spa_keras import files

        if self.updates:  # the values first: a JSON on disk never names values that are not there
            with files.atomic_output(self.weights_path(path)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **self.updates)
        with files.atomic_output(path) as tmp:
            with open(tmp, "w") as f:
                f.write(self.to_json())
        return path

    @classmethod
    def load(cls, path) -> "PruningPlan":
        try:
            with open(path) as f:
                text = f.read()
            updates = None
            if os.path.exists(cls.weights_path(path)):
                with np.load(cls.weights_path(path)) as archive:
                    updates = {k: archive[k] for k in archive.files}
            return cls.from_json(text, updates)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: cannot read the pruning plan ({first_line(exc)})") from exc

    @property
    def removed_channels(self):
        return sum(len(v) for v in self.removed.values())

    def mask(self, analysis):
        """Global removed-channel mask for `analysis`; raises when the plan was made for another model."""
        by_key = {g.key: g for g in analysis.groups}
        removed = np.zeros(len(analysis.group_of_channel), bool)
        offsets = _offsets(analysis)
        for key, indices in self.removed.items():
            group = by_key.get(key)
            if group is None or group.channels != self.channels.get(key):
                raise InputError(f"the plan does not fit this model: group {key} "
                                 f"{'is missing' if group is None else f'has {group.channels} channels'}")
            idx = np.asarray(indices, int)
            if len(idx) and (idx.min() < 0 or idx.max() >= group.channels or group.blocked[idx].any()):
                raise InputError(f"the plan removes invalid or blocked channels of group {key}")
            removed[offsets[group.id] + idx] = True
        return removed


def _offsets(analysis):
    out, start = [], 0
    for g in analysis.groups:
        out.append(start)
        start += g.channels
    return out


def _fraction(name, value):
    if value is None:
        return None
    value = float(value)
    if not 0 <= value < 1:
        raise InputError(f"{name}={value}: a fraction removed, in [0, 1)")
    return value


def ignored_groups(analysis, ignore=()):
    """Per group: True when it touches a parameter or node matching one of the `ignore` regular expressions."""
    patterns = [re.compile(p) for p in ([ignore] if isinstance(ignore, str) else list(ignore or ()))]
    return [any(p.search(name) for p in patterns for m in g.members for name in [m.param] + m.nodes)
            for g in analysis.groups]


def prunable_channels(analysis, ignore=()):
    """How many channels a `ratio` target counts: the unblocked channels of the groups not ignored."""
    return int(sum((~g.blocked).sum() for g, skip in zip(analysis.groups, ignored_groups(analysis, ignore))
                   if not skip))


def make_plan(analysis, *, ratio=None, flops=None, params=None, criterion="l1", global_ranking=True, round_to=1,
              ignore=(), max_per_group=0.9, scores=None, data=None, loss=None, removable=None):
    """Choose the channels to remove; return a `PruningPlan`.

    `removable` ({group key: channel count}) lowers the cap of the named groups (iterative pruning keeps the cap
    relative to the original model).
    """
    targets = {k: _fraction(k, v) for k, v in (("ratio", ratio), ("flops", flops), ("params", params))
               if v is not None}
    if len(targets) != 1:
        raise InputError("give exactly one target: ratio=, flops= or params= (a fraction removed)")
    (kind, amount), = targets.items()
    if not 0 < max_per_group <= 1:
        raise InputError(f"max_per_group={max_per_group}: a fraction in (0, 1]")
    round_to = max(1, int(round_to))
    groups = analysis.groups
    if scores is None:
        scores = score_groups(criterion, analysis, data=data, loss=loss)
    ignored = ignored_groups(analysis, ignore)
    offsets = _offsets(analysis)
    n = len(analysis.group_of_channel)
    score = np.full(n, np.inf)
    cap = np.zeros(len(groups), int)
    for g, s, skip in zip(groups, scores, ignored):
        free = ~g.blocked
        if skip or not free.any():
            continue
        score[offsets[g.id]:offsets[g.id] + g.channels][free] = s[free]
        cap[g.id] = min(int(math.floor(max_per_group * g.channels)), g.channels - 1, int(free.sum()))
        if removable is not None and g.key in removable:
            cap[g.id] = max(0, min(cap[g.id], int(removable[g.key])))
    candidate = np.isfinite(score)
    group_of = analysis.group_of_channel
    # rank of each channel inside its group by score: only the lowest `cap` of a group may go
    order_in_group = np.lexsort((score, group_of))
    rank = np.empty(n, int)
    starts = np.searchsorted(group_of[order_in_group], np.arange(len(groups)))
    rank[order_in_group] = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    eligible = candidate & (rank < cap[group_of])
    cost = CostModel(analysis)

    if global_ranking:
        order = np.flatnonzero(eligible)[np.argsort(score[eligible], kind="stable")]

        def removal(k):
            mask = np.zeros(n, bool)
            mask[order[:k]] = True
            return _round(mask, score, analysis, offsets, round_to)
        limit = len(order)
    else:
        def removal(k):  # k in thousandths of each group's prunable channels
            mask = np.zeros(n, bool)
            for g in groups:
                if cap[g.id] == 0:
                    continue
                take = min(cap[g.id], int(round(k / 1000 * (~g.blocked).sum())))
                idx = np.flatnonzero(eligible & (group_of == g.id))
                mask[idx[np.argsort(score[idx], kind="stable")[:take]]] = True
            return _round(mask, score, analysis, offsets, round_to)
        limit = 1000

    if kind == "ratio":  # channels removed, counted after rounding
        goal = int(round(amount * prunable_channels(analysis, ignore)))

        def reached(k):
            return int(removal(k).sum()) >= goal
    else:
        base = getattr(cost.base, kind)

        def reached(k):
            return 1 - getattr(cost.counts(removal(k)), kind) / base >= amount
    if amount == 0:
        mask = np.zeros(n, bool)
    else:  # the smallest k that reaches the target (what is removed grows with k), or everything allowed
        lo, hi = 0, limit
        if reached(hi):
            while lo < hi:
                mid = (lo + hi) // 2
                if reached(mid):
                    hi = mid
                else:
                    lo = mid + 1
        mask = removal(hi)
    removed = {}
    for g in groups:
        idx = np.flatnonzero(mask[offsets[g.id]:offsets[g.id] + g.channels])
        if len(idx):
            removed[g.key] = idx.tolist()
    return PruningPlan(removed, {g.key: g.channels for g in groups},
                       {"kind": kind, "amount": amount, "criterion": criterion_name(criterion),
                        **({"criterion_options": repr(criterion)} if isinstance(criterion, Criterion) else {}),
                        "global_ranking": global_ranking, "round_to": round_to, "max_per_group": max_per_group})


def _round(mask, score, analysis, offsets, round_to):
    """Keep more channels where needed so every group keeps a multiple of `round_to`: of the channels a group would
    lose, the best scored are given back."""
    if round_to == 1:
        return mask
    mask = mask.copy()
    for g in analysis.groups:
        part = mask[offsets[g.id]:offsets[g.id] + g.channels]
        removed = np.flatnonzero(part)
        extra = min((len(removed) - g.channels) % round_to, len(removed))
        if extra:
            best = removed[np.argsort(score[offsets[g.id] + removed], kind="stable")[::-1][:extra]]
            part[best] = False
    return mask
