"""Random importance: a baseline every criterion should beat. Reproducible through `seed`.

Example:

>>> scores = Random(seed=1)(analysis)              # doctest: +SKIP
"""

import numpy as np

from spa_keras.importance.base import Criterion
from spa_keras.importance.registry import register_criterion


@register_criterion("random")
class Random(Criterion):
    """Uniform [0, 1) scores per channel; members, AGG and NORM play no part."""

    def __init__(self, seed=0, agg="sum", norm="none"):
        super().__init__(agg, norm)
        self.seed = seed

    def prepare(self, analysis, data, loss):
        return np.random.default_rng(self.seed)

    def group_scores(self, analysis, group, rng):
        return rng.random(group.channels)
