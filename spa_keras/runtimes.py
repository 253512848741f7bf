"""Channel counts that inference runtimes run fast: what `round_to="auto"` keeps pruned layers at.

CPU kernels work on channels in blocks of SIMD width, and a layer whose channel count is not a multiple of the
block falls off the fast path. Measured on this project's machine (x86-64 with AVX2, 2 threads; widths 176 to 200
of a 1x1 conv -> 3x3 depthwise -> 1x1 conv block at 56x56, `benchmarks/channel_widths.py`):

- onnxruntime (MLAS): widths that are multiples of 4 run in 34-43 ms, every other width in 63-77 ms (1.7x slower).
  On x86 MLAS converts convolutions to its blocked NCHWc layout only when the channel counts are multiples of its
  block (8 floats with AVX2, 16 with AVX-512) and otherwise falls back to slower kernels; this is why MobileNetV2
  pruned with `round_to=1` ran slower than the original (its depthwise layers left the fast path).
- TFLite (XNNPACK): multiples of 16 fastest (2.47 ms at 176 and 192), others up to 25% slower; its x86 kernels are
  16 channels wide, its ARM NEON kernels 8.
- TensorFlow (oneDNN/Eigen): odd widths up to 2x slower, multiples of 8 on the fast path.

So `round_to="auto"` keeps the kept channel count of every pruned group at a multiple of `channel_multiple(runtime)`:
16 on CPUs with AVX-512 (and for TFLite on x86), 8 otherwise; a group narrower than twice that multiple keeps any
count (too small to matter for speed, and rounding would freeze it). When no layout within 2% of the target exists
with that multiple, the search halves it until one does (the plan records the multiple used). The multiple is
chosen for the CPU that prunes; give `round_to=N` when you deploy on another kind of CPU (8 suits ARM phones).

Example:

>>> channel_multiple("onnxruntime") in (8, 16)
True
>>> group_multiples([16, 12, 64], multiple=8)
[8, 1, 8]
"""

from __future__ import annotations

import functools
import platform
from typing import Sequence

from spa_keras.errors import InputError

RUNTIMES = ("onnxruntime", "tflite", "tensorflow")
AUTO = "auto"


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def check_runtime(runtime: str | None) -> str | None:
    if runtime is not None and runtime not in RUNTIMES:
        raise InputError(f"runtime={runtime!r}: one of {', '.join(RUNTIMES)} (or None for any of them)")
    return runtime


def channel_multiple(runtime: str | None = None) -> int:
    """The channel multiple `runtime` runs fast on this CPU; for `None`, one that suits onnxruntime and TensorFlow
    (and TFLite within ~10%)."""
    check_runtime(runtime)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    if x86 and "avx512f" in cpu_flags():
        return 16
    if runtime == "tflite" and x86:
        return 16
    return 8


def group_multiples(channels: Sequence[int], multiple: int) -> list[int]:
    """Per group of `channels` channels: `multiple`, or 1 for groups narrower than twice it."""
    return [multiple if c >= 2 * multiple else 1 for c in channels]


def runtime_of_path(path: str | None) -> str | None:
    """The runtime an output file is for: .tflite -> tflite, .onnx -> onnxruntime, Keras and SavedModel ->
    tensorflow; None when unknown."""
    if not path:
        return None
    lower = str(path).lower().rstrip("/")
    if lower.endswith(".tflite"):
        return "tflite"
    if lower.endswith(".onnx"):
        return "onnxruntime"
    if lower.endswith((".keras", ".h5")) or "." not in lower.rsplit("/", 1)[-1]:
        return "tensorflow"
    return None
