"""OBSPA (Optimal Brain SPA): prune a trained model with neither fine-tuning nor data.

`consumers.py` finds the layers that read each group's channels, `hessians.py` says what inputs their Hessians are
measured on (data-free by default), `obs.py` holds the OBS formulas in TensorFlow ops, `reconstruct.py` runs the
scoring and the sequential refit, and `criterion.py` is the criterion `spa.prune(..., criterion="obspa")` uses.
"""

from spa_keras.obspa.criterion import OBSPA  # noqa: F401
from spa_keras.obspa.hessians import (BatchNormInputs, Calibration, GaussianInputs, IdentityHessian,  # noqa: F401
                                      get_provider)

__all__ = ["OBSPA", "BatchNormInputs", "Calibration", "GaussianInputs", "IdentityHessian", "get_provider"]
