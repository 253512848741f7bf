"""OBSPA's machinery (Optimal Brain SPA: prune a trained model with neither fine-tuning nor data); the criterion
that uses it is `spa_keras.importance.OBSPA` (`importance/obspa.py`).

    backend.py      what OBSPA asks of a model (activations, a masked copy, BatchNorm statistics): each format
                    adapter implements it
    consumers.py    the layers OBSPA refits: every linear op that reads a group's channels, as a weight matrix
    hessians.py     where the layer Hessians come from: distilled inputs, noise, calibration data or the identity
    reconstruct.py  the Hessian pass for the scores and the sequential refit of the kept weights
The numerics (OBS formulas, im2col, moments, input distillation) are TensorFlow ops in `spa_keras.compute`.
"""

from spa_keras.obspa.hessians import (BatchNormInputs, Calibration, GaussianInputs, IdentityHessian,  # noqa: F401
                                      get_provider)

__all__ = ["BatchNormInputs", "Calibration", "GaussianInputs", "IdentityHessian", "get_provider"]
