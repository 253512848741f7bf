"""Random importance: a baseline every criterion should beat. Reproducible through `seed`.

Example:

>>> scores = Random(seed=1)(analysis)              # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.importance.base import Criterion
from spa_keras.importance.registry import register_criterion

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, ChannelGroup


@register_criterion("random")
class Random(Criterion):
    """Uniform [0, 1) scores per channel; members, AGG and NORM play no part."""

    def __init__(self, seed: int = 0, agg: str = "sum", norm: str = "none") -> None:
        super().__init__(agg, norm)
        self.seed = seed

    def prepare(self, analysis: Analysis, data: Any, loss: Any) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def group_scores(self, analysis: Analysis, group: ChannelGroup, rng: np.random.Generator) -> np.ndarray:
        return rng.random(group.channels)
