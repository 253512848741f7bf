"""`Criterion`: the shape every importance criterion shares.

A criterion scores channel groups: `criterion(analysis, data=None, loss=None)` returns one float64 array per group,
one score per channel, higher = keep. Subclasses say which members count (`members`) and how one member's slices
score (`member_scores`); the base class combines members with AGG and rescales groups with NORM
(`spa_keras.importance.scoring`). Criteria that need data set `needs_data = True` and get `data` and `loss`.

Example:

>>> from spa_keras.importance import L2
>>> scores = L2(agg="max", norm="max")(analysis)    # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from spa_keras.importance.scoring import AGGREGATIONS, NORMALIZATIONS, aggregate, check_choice, normalize

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, ChannelGroup, Member


class Criterion:
    name: ClassVar[str | None] = None  # the registry name (set by register_criterion)
    needs_data: ClassVar[bool] = False

    def __init__(self, agg: str = "sum", norm: str = "mean") -> None:
        self.agg = check_choice("agg", agg, AGGREGATIONS)
        self.norm = check_choice("norm", norm, NORMALIZATIONS)

    def __repr__(self) -> str:  # every option a criterion was made with (a plan records it)
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"

    # ---- what subclasses define -----------------------------------------------------------------------------

    def prepare(self, analysis: Analysis, data: Any, loss: Any) -> Any:
        """Work shared by all groups (gradients, a random generator); returns a context passed to the scorers."""
        return None

    def members(self, analysis: Analysis, group: ChannelGroup, context: Any) -> list[Member]:
        """The members that take part in the score: by default the weights (rank ≥ 2: kernels and matrices;
        biases and normalisation parameters are left out), or every member where a group has no weight."""
        params = analysis.graph.params
        weights = [m for m in group.members if params[m.param].value.ndim >= 2]
        return weights or list(group.members)

    def member_scores(self, analysis: Analysis, member: Member, channels: int, context: Any) -> np.ndarray:
        raise NotImplementedError

    def finish(self, scores: np.ndarray) -> np.ndarray:
        """A transform of the aggregated group scores before NORM (magnitude takes the p-th root)."""
        return scores

    # ---- shared ---------------------------------------------------------------------------------------------

    def group_scores(self, analysis: Analysis, group: ChannelGroup, context: Any) -> np.ndarray:
        members = self.members(analysis, group, context)
        if not members:
            return np.zeros(group.channels)
        stack = np.stack([self.member_scores(analysis, m, group.channels, context) for m in members])
        return self.finish(aggregate(stack, self.agg))

    def __call__(self, analysis: Analysis, data: Any = None, loss: Any = None) -> list[np.ndarray]:
        context = self.prepare(analysis, data, loss)
        return [normalize(self.group_scores(analysis, g, context), self.norm) for g in analysis.groups]
