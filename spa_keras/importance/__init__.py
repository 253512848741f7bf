"""Group importance: a criterion scores every channel of every group; higher means keep.

`get_criterion("l1")` returns a criterion instance; a criterion is `criterion(analysis) -> [scores per group]`.
More criteria (BN scale, Taylor, SNIP, GraSP, CroP, OBD, OBS) plug into the same registry.
"""

from spa_keras.importance.registry import CRITERIA, get_criterion, register_criterion  # noqa: F401
from spa_keras.importance import magnitude  # noqa: F401,E402  (fills the registry)
