"""Magnitude criteria: the Lp norm of each channel's weights across the group.

Member score: Σ |w|^p over the channel's slice of a weight (kernels and matrices: parameters of rank ≥ 2; biases
and normalisation statistics are left out). Group score: AGG over members (default sum), then the p-th root, so
that the default is the Lp norm of all the channel's weights in the group; NORM (default mean) lets groups compare
in one global ranking.

Example:

>>> scores = L1()(analysis)                        # doctest: +SKIP
>>> scores = L2(agg="max", norm="max")(analysis)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.importance.base import Criterion
from spa_keras.importance.registry import register_criterion
from spa_keras.importance.scoring import slice_sums

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, Member


class Magnitude(Criterion):
    p = 1

    def member_scores(self, analysis: Analysis, member: Member, channels: int, context: Any) -> np.ndarray:
        value = analysis.graph.params[member.param].value
        magnitude = np.abs(value) if self.p == 1 else np.abs(value.astype(np.float64)) ** self.p
        return slice_sums(magnitude, member, channels)

    def finish(self, scores: np.ndarray) -> np.ndarray:
        return scores if self.p == 1 else np.abs(scores) ** (1.0 / self.p)


@register_criterion("l1")
class L1(Magnitude):
    """Σ |w| of each channel's weights."""

    p = 1


@register_criterion("l2")
class L2(Magnitude):
    """(Σ w²)^½ of each channel's weights."""

    p = 2
