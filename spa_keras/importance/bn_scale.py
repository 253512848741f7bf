"""BN scale (network slimming, Liu et al. 2017): a channel matters as much as its BatchNorm scale |γ|.

Members: the scale parameters of the group's BatchNormalization nodes (input 1: [x, scale, B, mean, var]), in both
front-ends. A group without a BatchNorm scale (a Dense hidden layer, a model whose BatchNorm was folded into the
convolutions by its exporter) falls back to L1 magnitude, so targets stay reachable; NORM puts both on one scale.

Example:

>>> scores = BNScale()(analysis)                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.importance.base import Criterion
from spa_keras.importance.magnitude import L1
from spa_keras.importance.registry import register_criterion
from spa_keras.importance.scoring import slice_sums

if TYPE_CHECKING:
    from spa_keras.analysis.graph import SPAGraph
    from spa_keras.analysis.groups import Analysis, ChannelGroup, Member


def bn_scales(graph: SPAGraph) -> set[str]:
    """Names of the parameters that are a BatchNormalization's scale (also a Keras BatchNorm without β, which the
    front-end writes as per-channel steps with its Mul by γ marked)."""
    return {n.inputs[1] for n in graph.nodes if len(n.inputs) > 1 and (
        n.op_type == "BatchNormalization" or n.attr("batchnorm_scale"))}


@register_criterion("bn_scale")
class BNScale(Criterion):
    def prepare(self, analysis: Analysis, data: Any, loss: Any) -> set[str]:
        return bn_scales(analysis.graph)

    def members(self, analysis: Analysis, group: ChannelGroup, scales: set[str]) -> list[Member]:
        return [m for m in group.members if m.param in scales]

    def member_scores(self, analysis: Analysis, member: Member, channels: int, scales: set[str]) -> np.ndarray:
        return slice_sums(np.abs(analysis.graph.params[member.param].value), member, channels)

    def group_scores(self, analysis: Analysis, group: ChannelGroup, scales: set[str]) -> np.ndarray:
        if not self.members(analysis, group, scales):
            return L1(agg=self.agg, norm=self.norm).group_scores(analysis, group, None)
        return super().group_scores(analysis, group, scales)
