"""Magnitude criteria: the Lp norm of each channel's weights, summed over the group's weight members.

Member score: the sum of |w|^p over the channel's slice of a weight (kernels and matrices: parameters of rank ≥ 2;
biases and normalisation statistics are left out), to the power 1/p. Group score (AGG = sum over members), then
NORM = divide by the group's mean, so that groups of different widths and layers compare in one global ranking.

Example:

>>> scores = L1()(analysis)        # doctest: +SKIP
"""

import numpy as np

from spa_keras.importance.registry import register_criterion


class Magnitude:
    p = 1

    def member_scores(self, value, member, channels):
        axes = tuple(a for a in range(value.ndim) if a != member.axis)
        magnitude = np.abs(value) if self.p == 1 else np.abs(value) ** self.p
        per_position = magnitude.sum(axis=axes, dtype=np.float64)
        mask = member.channel_of_position >= 0
        return np.bincount(member.channel_of_position[mask], weights=per_position[mask], minlength=channels)

    def __call__(self, analysis):
        scores = []
        for group in analysis.groups:
            total = np.zeros(group.channels)
            for member in group.members:
                value = analysis.graph.params[member.param].value
                if value.ndim >= 2:
                    total += self.member_scores(value, member, group.channels)
            total = total ** (1.0 / self.p)
            mean = total.mean() if group.channels else 0.0
            scores.append(total / mean if mean > 0 else total)
        return scores


@register_criterion("l1")
class L1(Magnitude):
    p = 1


@register_criterion("l2")
class L2(Magnitude):
    p = 2
