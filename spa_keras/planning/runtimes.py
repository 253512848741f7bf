"""Channel counts that inference runtimes run fast: what `round_to="auto"` keeps pruned layers at.

CPU kernels work on channels in blocks of SIMD width, and a layer whose channel count is not a multiple of the
block falls off the fast path. Measured on this project's machine (x86-64 with AVX2, 2 threads):

- Whole models at -50% FLOPs (`benchmarks/latency.py`, batch 1 / 16): on onnxruntime, ResNet50 ran 1.28x / 1.47x
  faster with any channel count (`round_to=1`), 1.49x / 1.82x with multiples of 8 and 1.84x / 1.89x with multiples
  of 16; MobileNetV2 ran *slower* with any count (0.80x / 0.83x) and 1.9-2.2x / 1.6x with multiples of 8 or 16.
  TFLite (XNNPACK) is less sensitive (ResNet50 1.85x / 1.78x with any count, 1.97x / 1.91x with 16; MobileNetV2
  1.55x / 1.84x and 1.89x / 2.13x).
- One 1x1 -> depthwise 3x3 -> 1x1 block at widths 176-200 (`benchmarks/channel_widths.py`): onnxruntime runs
  widths that are not multiples of 4 1.7x slower (its blocked NCHWc convolutions need whole blocks, 8 floats with
  AVX2 and 16 with AVX-512; other counts take slower kernels and re-layouts); XNNPACK's x86 kernels are 16
  channels wide (its ARM NEON kernels 8); TensorFlow's oneDNN/Eigen kernels favour multiples of 8.

So `round_to="auto"` keeps the kept channel count of every pruned group at a multiple of
`channel_multiple(runtime)`: 16 on x86 for onnxruntime, TFLite and "any runtime" (None), 8 for TensorFlow on AVX2
and 8 on ARM. A group narrower than four times that multiple uses the largest power of two that fits four times
in it (a 32-channel layer keeps multiples of 8, a 16-channel one multiples of 4): narrow layers never take odd
counts (MobileNetV2's 16- and 24-channel layers run at 112x112 and 56x56, where an odd count costs most), and
never lose half their channels in one block. When no layout within 2% of the target exists with that multiple,
the search halves it until one does (the plan records the multiple used). The multiple is chosen for the CPU
that prunes; give `round_to=N` when you deploy on another kind of CPU (8 suits ARM phones).

Example:

>>> channel_multiple("onnxruntime") in (8, 16)
True
>>> channel_multiple("tensorflow") <= channel_multiple()
True
>>> group_multiples([16, 12, 64, 32, 3], multiple=16)
[4, 2, 16, 8, 1]
"""

from __future__ import annotations

import functools
import platform
from typing import Sequence

from spa_keras.common.errors import InputError

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
    """The channel multiple `runtime` runs fast on this CPU; for `None`, one that suits every runtime here."""
    check_runtime(runtime)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    if not x86:
        return 8
    if runtime == "tensorflow" and "avx512f" not in cpu_flags():
        return 8
    return 16


def group_multiples(channels: Sequence[int], multiple: int) -> list[int]:
    """Per group of `channels` channels: the largest power of two up to `multiple` that fits four times in the
    group, so a block is at most a quarter of it (coarser blocks cost accuracy in narrow layers for little speed):
    with multiple 16, 64 channels keep multiples of 16, 32 of 8, 16 of 4."""
    out = []
    for c in channels:
        m = multiple
        while m > 1 and c < 4 * m:
            m //= 2
        out.append(m)
    return out


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
