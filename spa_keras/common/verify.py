"""Verification of a converted or pruned model against its source, on a random batch.

Every bridge and every surgery ends here: the source framework and the target runtime run the same batch and the
largest difference, relative to the largest reference output, must stay under a tolerance. Relative, because
randomly initialised nets give outputs from 1e-8 to 1e6.

Example:

>>> import numpy as np
>>> ref = {"y": np.ones((2, 3))}
>>> compare(ref, {"y": ref["y"] + 1e-7}, source="keras", target="onnxruntime").ok
True
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from spa_keras.common.errors import VerificationError

# Default tolerance on the relative difference, by target precision.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "int8": 2e-1}


# outputs smaller than this are float32 rounding noise of O(1) activations: a comparison against them tells nothing
NEAR_ZERO = 1e-6


@dataclasses.dataclass(frozen=True)
class Verification:
    """The outcome of one comparison: largest absolute difference, output scale and their ratio.

    `spread` is how much the reference outputs vary across the batch: when they do not vary, any model that
    gives the same constant passes, and the check says it cannot tell. Outputs below `NEAR_ZERO` are within
    float32 rounding of zero: differences under ten times that pass, and the check says it cannot tell.

    >>> print(Verification("keras", "onnxruntime", 1.5e-07, 1.8e-07, 1e-4, spread=1e-7).note)
    outputs are near zero (scale 1.80e-07): float32 rounding alone is that large, the check cannot tell
    """

    source: str
    target: str
    max_abs: float
    scale: float
    tolerance: float
    spread: float = float("inf")

    @property
    def rel(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs

    @property
    def near_zero(self) -> bool:
        return self.scale < NEAR_ZERO

    @property
    def ok(self) -> bool:
        if not np.isfinite(self.max_abs):
            return False
        return self.rel <= self.tolerance or (self.near_zero and self.max_abs <= 10 * NEAR_ZERO)

    @property
    def note(self) -> str | None:
        """Why the check cannot tell a right model from a wrong one, or None when it can."""
        if self.near_zero:
            return (f"outputs are near zero (scale {self.scale:.2e}): float32 rounding alone is that large, the check "
                    "cannot tell")
        if self.spread <= self.tolerance * self.scale:
            return "the outputs do not depend on the input (the same for every sample): the check cannot tell"
        return None

    def __str__(self) -> str:
        verdict = "FAILED" if not self.ok else "ok" if self.note is None else f"inconclusive: {self.note}"
        return (f"{self.target} vs {self.source}: max |diff| {self.max_abs:.2e}, output scale {self.scale:.2e}, "
                f"relative {self.rel:.2e} (tolerance {self.tolerance:.0e}) {verdict}")

    def require(self) -> Verification:
        """Raise `VerificationError` unless the difference is within tolerance."""
        if not self.ok:
            raise VerificationError(f"{self}; the {self.target} model does not reproduce {self.source}, nothing was "
                                    "written (spa convert --tolerance accepts a larger difference)")
        return self


def _key(name: Any) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", re.sub(r":0$", "", str(name))).strip("_").lower()


def _pairs(reference: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Match outputs by (normalised) name when the names agree, else by position."""
    if len(reference) != len(outputs):
        raise VerificationError(f"the source has {len(reference)} outputs {list(reference)} but the converted model "
                                f"has {len(outputs)} {list(outputs)}")
    ref_keys = {_key(k): k for k in reference}
    out_keys = {_key(k): k for k in outputs}
    if set(ref_keys) == set(out_keys) and len(ref_keys) == len(reference):
        return [(k, reference[ref_keys[n]], outputs[out_keys[n]]) for n, k in ((_key(k), k) for k in reference)]
    return [(k, r, o) for (k, r), o in zip(reference.items(), outputs.values())]


def _align(name: str, ref: Any, out: Any) -> np.ndarray:
    """Return `ref` in the layout of `out`: converters may move the channel axis last (NCHW -> NHWC)."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape == out.shape:
        return ref
    if ref.ndim >= 3 and np.moveaxis(ref, 1, -1).shape == out.shape:
        return np.moveaxis(ref, 1, -1)
    if ref.size == out.size and ref.squeeze().shape == out.squeeze().shape:
        return ref.reshape(out.shape)
    raise VerificationError(f"output '{name}' has shape {ref.shape} in the source but {out.shape} after conversion")


def compare(reference: Mapping[str, Any], outputs: Mapping[str, Any], *, source: str, target: str,
            tolerance: float = TOLERANCE["float32"]) -> Verification:
    """Compare two `{output name: array}` dicts (same batch); return a `Verification`."""
    max_abs, scale, spread = 0.0, 0.0, 0.0
    for name, ref, out in _pairs(reference, outputs):
        ref = _align(name, ref, out).astype(np.float64)
        out = np.asarray(out, np.float64)
        # NaN or infinity in the same place on both sides agree (a model that computes them on this batch); anywhere
        # else they are a difference that must not compare away
        same = (np.isnan(ref) & np.isnan(out)) | (np.isinf(ref) & (ref == out))
        ref, out = np.where(same, 0.0, ref), np.where(same, 0.0, out)
        diff = float(np.max(np.abs(ref - out), initial=0.0))
        max_abs = max(max_abs, diff if np.isfinite(diff) else float("inf"))
        scale = max(scale, float(np.max(np.abs(ref), initial=0.0, where=np.isfinite(ref))))
        if ref.ndim and len(ref) > 1:  # how much the samples of the batch differ
            spread = max(spread, float(np.max(np.abs(ref - ref[:1]), initial=0.0, where=np.isfinite(ref - ref[:1]))))
        else:
            spread = float("inf")
    return Verification(source, target, max_abs, scale, tolerance, spread)


