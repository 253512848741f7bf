"""Writing helpers the format adapters share.

Example:

>>> write_bytes(b"...", "model.tflite")      # doctest: +SKIP
"""

from __future__ import annotations

from spa_keras.common import files


def write_bytes(data: bytes, output: files.StrPath) -> None:
    """`data` to `output`, atomically."""
    with files.atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
