"""Terminal output: one rich console for tables and progress, and `quiet()` for chatty libraries.

TensorFlow, tf2onnx, onnx2tf and MXNet print to stdout and stderr from Python and from C++. `quiet()` sends both file
descriptors to a temporary file while a library call runs, so the user sees our report, not theirs; with
`SPA_DEBUG=1` (the CLI's `--debug`) everything passes through.
"""

import contextlib
import os
import sys
import tempfile

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def debug_enabled():
    return os.environ.get("SPA_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def quiet():
    """Silence stdout and stderr (Python and C level) inside the block; yields a list that gets the captured text."""
    captured = []
    if debug_enabled():
        yield captured
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
