"""Writing helpers the format adapters share.

Example:

>>> write_bytes(b"...", "model.tflite")      # doctest: +SKIP
"""

from spa_keras.common import files


def write_bytes(data: bytes, output: str) -> None:
    """`data` to `output`, atomically."""
    with files.atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
