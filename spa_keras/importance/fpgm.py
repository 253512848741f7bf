"""FPGM (filter pruning via geometric median, He et al. 2019): a channel near the geometric median of its layer is
replaceable by the others, so the score is its summed distance to the layer's other channels.

Member score: Σ_d ‖v_c − v_d‖₂ over the member's channels, v_c the channel's slice of the weight flattened (rank ≥ 2
parameters: kernels and matrices, both output and input slices).

Example:

>>> fpgm_scores(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]))
array([6.        , 9.24264069, 5.24264069])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.importance.base import Criterion
from spa_keras.importance.registry import register_criterion
from spa_keras.importance.scoring import channel_vectors

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, Member


def fpgm_scores(vectors: np.ndarray) -> np.ndarray:
    """Σ of Euclidean distances from each row of `vectors` to every row (a Gram matrix, not a pairwise loop)."""
    gram = vectors @ vectors.T
    sq = np.diag(gram)
    distance = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0))
    return distance.sum(axis=1)


@register_criterion("fpgm")
class FPGM(Criterion):
    def member_scores(self, analysis: Analysis, member: Member, channels: int, context: Any) -> np.ndarray:
        value = analysis.graph.params[member.param].value
        return fpgm_scores(channel_vectors(value, member, channels))
