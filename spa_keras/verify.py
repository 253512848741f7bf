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

import dataclasses
import re

import numpy as np

from spa_keras.errors import InputError, VerificationError

# Default tolerance on the relative difference, by target precision.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "int8": 2e-1}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its name, shape (None for a free dimension) and numpy dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"


def parse_input_shape(text):
    """Parse `--input-shape`: '1,3,224,224' for every input, or 'a:1,8;b:1,8' per input name."""
    if text is None:
        return None
    shapes = {}
    try:
        for part in str(text).split(";"):
            name, _, dims = part.rpartition(":")
            shapes[name.strip() or None] = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise InputError(f"--input-shape {text!r}: expected comma-separated integers such as 1,224,224,3 "
                         "(or NAME:1,224,224,3;NAME2:... for several inputs)") from None
    return shapes


def concrete_shape(spec, input_shapes=None, batch=2):
    """`spec.shape` with every free dimension filled: the batch from `batch`, the rest from `input_shapes`."""
    given = None
    if input_shapes:
        given = input_shapes.get(spec.name, input_shapes.get(None))
    if given is not None:
        if len(given) != len(spec.shape):
            raise InputError(f"input '{spec.name}' has rank {len(spec.shape)} {_fmt(spec.shape)}, "
                             f"but --input-shape gives {len(given)} dimensions {_fmt(given)}")
        shape = [g if s is None else s for s, g in zip(spec.shape, given)]
        shape[0] = batch if spec.shape[0] is None else spec.shape[0]
        return tuple(shape)
    shape = list(spec.shape)
    if shape and shape[0] is None:
        shape[0] = batch
    free = [i for i, d in enumerate(shape) if d is None]
    if free:
        raise InputError(f"input '{spec.name}' has free dimensions {_fmt(spec.shape)}: pass --input-shape "
                         f"(for example --input-shape {','.join('1' if d is None else str(d) for d in spec.shape)})")
    return tuple(shape)


def random_batch(specs, input_shapes=None, batch=2, seed=0):
    """A reproducible random batch for `specs`: floats in [-1, 1), integers in {0, 1}, booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, input_shapes, batch)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(-1, 1, shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise InputError(f"input '{spec.name}' has dtype {dtype}, which spa-keras cannot generate data for")
    return feeds


@dataclasses.dataclass(frozen=True)
class Verification:
    """The outcome of one comparison: largest absolute difference, output scale and their ratio."""

    source: str
    target: str
    max_abs: float
    scale: float
    tolerance: float

    @property
    def rel(self):
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs

    @property
    def ok(self):
        return bool(np.isfinite(self.rel)) and self.rel <= self.tolerance

    def __str__(self):
        verdict = "ok" if self.ok else "FAILED"
        return (f"{self.target} vs {self.source}: max |diff| {self.max_abs:.2e}, output scale {self.scale:.2e}, "
                f"relative {self.rel:.2e} (tolerance {self.tolerance:.0e}) {verdict}")

    def require(self):
        """Raise `VerificationError` unless the difference is within tolerance."""
        if not self.ok:
            raise VerificationError(f"{self}; the {self.target} model does not reproduce {self.source}, nothing was "
                                    "written (use --tolerance to accept a larger difference)")
        return self


def natural_key(name):
    """Sort key that puts 'output_2' before 'output_10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def _key(name):
    return re.sub(r"[^0-9a-zA-Z]+", "_", re.sub(r":0$", "", str(name))).strip("_").lower()


def _pairs(reference, outputs):
    """Match outputs by (normalised) name when the names agree, else by position."""
    if len(reference) != len(outputs):
        raise VerificationError(f"the source has {len(reference)} outputs {list(reference)} but the converted model "
                                f"has {len(outputs)} {list(outputs)}")
    ref_keys = {_key(k): k for k in reference}
    out_keys = {_key(k): k for k in outputs}
    if set(ref_keys) == set(out_keys) and len(ref_keys) == len(reference):
        return [(k, reference[ref_keys[n]], outputs[out_keys[n]]) for n, k in ((_key(k), k) for k in reference)]
    return [(k, r, o) for (k, r), o in zip(reference.items(), outputs.values())]


def _align(name, ref, out):
    """Return `ref` in the layout of `out`: converters may move the channel axis last (NCHW -> NHWC)."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape == out.shape:
        return ref
    if ref.ndim >= 3 and np.moveaxis(ref, 1, -1).shape == out.shape:
        return np.moveaxis(ref, 1, -1)
    if ref.size == out.size and ref.squeeze().shape == out.squeeze().shape:
        return ref.reshape(out.shape)
    raise VerificationError(f"output '{name}' has shape {ref.shape} in the source but {out.shape} after conversion")


def compare(reference, outputs, *, source, target, tolerance=TOLERANCE["float32"]):
    """Compare two `{output name: array}` dicts (same batch); return a `Verification`."""
    max_abs, scale = 0.0, 0.0
    for name, ref, out in _pairs(reference, outputs):
        ref = _align(name, ref, out).astype(np.float64)
        out = np.asarray(out, np.float64)
        diff = float(np.max(np.abs(ref - out), initial=0.0))
        max_abs = max(max_abs, diff if np.isfinite(diff) else float("inf"))  # NaN must not compare away
        scale = max(scale, float(np.max(np.abs(ref), initial=0.0)))
    return Verification(source, target, max_abs, scale, tolerance)


def _fmt(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
