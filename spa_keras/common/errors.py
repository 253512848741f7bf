"""Errors a user can act on.

Every failure that reaches the user is a `SpaError` whose message is one line naming what failed (file, node, op or
layer) and what to do about it. The CLI prints that line and exits non-zero; only `--debug` shows a traceback.
"""

from __future__ import annotations


class SpaError(Exception):
    """Base class: a failure with a one-line, actionable message."""


class InputError(SpaError):
    """The input (file, model, argument) cannot be used as given."""


class ConversionError(SpaError):
    """A converter (tf2onnx, mxnet.onnx, onnx2tf, TFLite) failed or produced an invalid model."""


class VerificationError(SpaError):
    """A converted or pruned model does not reproduce its source's outputs."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception message (its type when empty): what a one-line error quotes."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
