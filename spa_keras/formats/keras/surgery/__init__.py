"""Keras surgery: `prune_keras` (a slim keras.Model), `mask_keras` (removed channels zeroed in a live model) and the
table of layer resizers (`resizers.py`)."""

from spa_keras.formats.keras.surgery.surgery import KerasSurgery, compile_like, mask_keras, prune_keras  # noqa: F401

__all__ = ["KerasSurgery", "compile_like", "mask_keras", "prune_keras"]
