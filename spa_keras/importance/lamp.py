"""LAMP (layer-adaptive magnitude pruning, Lee et al. 2021), per channel.

Within one member (one layer's parameter), with s_c = Σ w² over channel c's slice, LAMP scores
s_c / Σ_{d: s_d ≥ s_c} s_d: a channel's share of the energy of itself and every larger channel. The largest channel
of every layer scores 1, so layers compare without a per-layer threshold. Ties count in sorted (index) order.

Example:

>>> lamp_scores(np.array([1.0, 4.0, 3.0]))
array([0.125     , 1.        , 0.42857143])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.importance.base import Criterion
from spa_keras.importance.registry import register_criterion
from spa_keras.importance.scoring import slice_sums

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, Member


def lamp_scores(energy: np.ndarray) -> np.ndarray:
    order = np.argsort(energy, kind="stable")
    ranked = energy[order]
    tail = np.cumsum(ranked[::-1])[::-1]  # Σ of this and every larger channel
    out = np.empty_like(ranked)
    out[order] = np.divide(ranked, tail, out=np.zeros_like(ranked), where=tail > 0)
    return out


@register_criterion("lamp")
class LAMP(Criterion):
    def member_scores(self, analysis: Analysis, member: Member, channels: int, context: Any) -> np.ndarray:
        value = analysis.graph.params[member.param].value.astype(np.float64)
        return lamp_scores(slice_sums(value * value, member, channels))
