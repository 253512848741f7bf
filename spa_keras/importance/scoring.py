"""Group scoring: score every member of a group (one parameter axis), combine them (AGG), normalise the group (NORM).

A group's channels live in several parameters (a Conv's kernel rows, its BatchNorm, the next Conv's kernel
columns). A criterion scores each member's slices on its own; AGG turns the member scores into one score per
channel, and NORM rescales each group so that groups of different layers compare in one global ranking.

AGG (over members, per channel): `sum` (default), `mean`, `max`, `prod`, `first` (the producer's kernel: members
are sorted producer first).
NORM (per group): `none`, `sum` (I / Σ|I|), `mean` (I / mean |I|, the default), `max` (I / max |I|), `minmax`
((I − min) / (max − min)), `gaussian` ((I − mean) / std). Dividing by magnitudes keeps the sign of signed scores
(GraSP) and equals the usual definition for non-negative ones.

Example:

>>> import numpy as np
>>> aggregate(np.array([[1.0, 3.0], [2.0, 5.0]]), "max")
array([2., 5.])
>>> normalize(np.array([1.0, 3.0]), "mean")
array([0.5, 1.5])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Collection

import numpy as np

from spa_keras.common.errors import InputError

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Member

AGGREGATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda s: s.sum(axis=0),
    "mean": lambda s: s.mean(axis=0),
    "max": lambda s: s.max(axis=0),
    "prod": lambda s: s.prod(axis=0),
    "first": lambda s: s[0],
}


def _divide(scores: np.ndarray, by: Any) -> np.ndarray:
    # any positive scale divides (tiny gradient saliencies too); nothing to divide by leaves the scores as they are
    return scores / by if by > 0 else scores


NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda s: s,
    "sum": lambda s: _divide(s, np.abs(s).sum()),
    "mean": lambda s: _divide(s, np.abs(s).mean()),
    "max": lambda s: _divide(s, np.abs(s).max()),
    "minmax": lambda s: _divide(s - s.min(), s.max() - s.min()),
    "gaussian": lambda s: _divide(s - s.mean(), s.std()),
}


def check_choice(kind: str, value: Any, choices: Collection[str]) -> str:
    value = str(value).lower()
    if value not in choices:
        raise InputError(f"{kind}={value!r}: choose one of {', '.join(choices)}")
    return value


def aggregate(member_scores: Any, agg: str = "sum") -> np.ndarray:
    """One score per channel from a [members, channels] array (float64)."""
    return AGGREGATIONS[check_choice("agg", agg, AGGREGATIONS)](np.asarray(member_scores, np.float64))


def normalize(scores: Any, norm: str = "mean") -> np.ndarray:
    """`scores` of one group rescaled by NORM. An empty or all-zero group is returned as it is; a constant group
    under `minmax` or `gaussian` (nothing varies) becomes all zeros."""
    scores = np.asarray(scores, np.float64)
    if not scores.size:
        return scores
    return NORMALIZATIONS[check_choice("norm", norm, NORMALIZATIONS)](scores)


def channel_sums(per_position: np.ndarray, member: Member, channels: int) -> np.ndarray:
    """Per-channel sums of a per-position vector along `member.axis` (several positions may carry one channel:
    a depthwise multiplier, a flattened feature map)."""
    mask = member.channel_of_position >= 0
    return np.bincount(member.channel_of_position[mask], weights=per_position[mask], minlength=channels)


def slice_sums(values: np.ndarray, member: Member, channels: int) -> np.ndarray:
    """Σ of `values` (an array laid out like the member's parameter) over each channel's slice."""
    axes = tuple(a for a in range(values.ndim) if a != member.axis)
    return channel_sums(values.sum(axis=axes, dtype=np.float64), member, channels)


def channel_vectors(values: np.ndarray, member: Member, channels: int) -> np.ndarray:
    """[channels, features]: each channel's slice flattened (several positions of one channel side by side,
    zero-padded to the longest)."""
    moved = np.moveaxis(np.asarray(values, np.float64), member.axis, 0).reshape(values.shape[member.axis], -1)
    owner = member.channel_of_position
    counts = np.bincount(owner[owner >= 0], minlength=channels)
    width = int(counts.max()) if counts.size else 0
    out = np.zeros((channels, width, moved.shape[1]))
    positions = np.flatnonzero(owner >= 0)
    order = positions[np.argsort(owner[positions], kind="stable")]
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[owner[order], slot] = moved[order]
    return out.reshape(channels, -1)
