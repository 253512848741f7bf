"""Group importance: a criterion scores every channel of every group; higher means keep.

Select a criterion by name (`criterion="taylor"`, default options) or pass an instance with options
(`criterion=Taylor(agg="mean", norm="max", batches=4)`). Data-free: `l1`, `l2`, `bn_scale`, `random`, `lamp`,
`fpgm`; data-driven (need `data=` and a loss, and the Keras model): `taylor`, `snip`, `grasp`, `crop`, `obd`.
`obspa` scores with layer-wise OBS and also rewrites the kept weights (no data needed; see `spa_keras.obspa`): it is
the default of `spa.prune` and `spa prune` (`DEFAULT_CRITERION`; `default_criterion` says when `l1`,
`TRAINING_CRITERION`, is used instead, as by `SPACallback`).
Every criterion scores each member of a group, then combines members with AGG and rescales the group with NORM
(defaults: `agg="sum"`, `norm="mean"`; see `scoring`).

Example:

>>> from spa_keras.importance import Taylor, get_criterion
>>> get_criterion("fpgm")
FPGM(agg='sum', norm='mean')
>>> scores = Taylor(batches=2)(analysis, data=(x, y), loss="mse")      # doctest: +SKIP
"""

from spa_keras.importance.base import Criterion  # noqa: F401
from spa_keras.importance.bn_scale import BNScale  # noqa: F401
from spa_keras.importance.fpgm import FPGM  # noqa: F401
from spa_keras.importance.gradient import OBD, SNIP, CroP, GradientCriterion, GraSP, Taylor  # noqa: F401
from spa_keras.importance.lamp import LAMP  # noqa: F401
from spa_keras.importance.magnitude import L1, L2, Magnitude  # noqa: F401
from spa_keras.importance.random import Random  # noqa: F401
from spa_keras.importance.registry import (CRITERIA, DEFAULT_CRITERION, TRAINING_CRITERION,  # noqa: F401
                                           default_criterion, get_criterion, register_criterion, score_groups)
from spa_keras.importance.scoring import AGGREGATIONS, NORMALIZATIONS, aggregate, normalize  # noqa: F401
from spa_keras.importance.obspa import OBSPA  # noqa: F401
from spa_keras.compute.data import Batches  # noqa: F401  (re-exported: data= of the gradient criteria)

__all__ = ["Criterion", "GradientCriterion", "Magnitude", "L1", "L2", "BNScale", "Random", "LAMP", "FPGM", "Taylor",
           "SNIP", "GraSP", "CroP", "OBD", "OBSPA", "Batches", "CRITERIA", "AGGREGATIONS", "NORMALIZATIONS",
           "get_criterion", "register_criterion", "score_groups", "aggregate", "normalize", "DEFAULT_CRITERION",
           "TRAINING_CRITERION", "default_criterion"]
