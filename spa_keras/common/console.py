"""Terminal output: one rich console for tables and progress, and `quiet()` for chatty libraries.

TensorFlow, tf2onnx, onnx2tf and MXNet print to stdout and stderr from Python and from C++. `quiet()` sends both file
descriptors to a temporary file while a library call runs, so the user sees our report, not theirs; with
`SPA_DEBUG=1` (the CLI's `--debug`) everything passes through.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sized, TypeVar, cast

from rich.console import Console

if TYPE_CHECKING:
    from spa_keras.common.verify import Verification

T = TypeVar("T")

# piped output has no terminal width: rich would wrap at 80 columns and split names; tables there get room
PIPED_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=PIPED_WIDTH)
    return console


console = _console()
err_console = _console(stderr=True)


def render_text(renderable: object, width: int = 100) -> str:
    """What a rich renderable (a table) prints, as plain text: the `__str__` of reports."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().rstrip()


def debug_enabled() -> bool:
    return os.environ.get("SPA_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def quiet() -> Iterator[list[str]]:
    """Silence stdout and stderr (Python and C level) inside the block; yields a list that gets the captured text."""
    captured: list[str] = []
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


def print_check(check: Verification, what: str = "") -> None:
    """A verification as one line: 'verified' in green, or 'unverified' in yellow when the check could not tell a
    right model from a wrong one (outputs near zero, or the same for every input)."""
    tag = "[green]verified[/green]" if check.note is None else "[yellow]unverified[/yellow]"
    console.print(f"{tag} {what}{check}", soft_wrap=True)


def say(line: str) -> None:
    """A line of progress: on the terminal's status, or as a plain line on stderr when output is not a terminal."""
    if console.is_terminal:
        console.print(f"[dim]{line}[/dim]", soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def track(items: Iterable[T], what: str) -> Iterable[T]:
    """`items`, with a transient progress bar on a terminal (long passes over large models)."""
    from rich.progress import track as rich_track

    if console.is_terminal:
        return rich_track(items, description=what, console=console, transient=True)
    return _plain_track(items, what)


def _plain_track(items: Iterable[T], what: str) -> Iterator[T]:
    progress = _PlainProgress(len(cast(Sized, items)) if hasattr(items, "__len__") else "?", what)
    for item in items:
        yield item
        progress.advance()


@contextlib.contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[], None]]:
    """A transient progress bar on a terminal; yields `advance()`, to call once per finished step."""
    from rich.progress import Progress

    if not console.is_terminal:  # logs and CI: a plain line now and then, once the work has taken a while
        yield _PlainProgress(total, what).advance
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


def is_progress_line(line: str) -> bool:
    """Whether a stderr line is one of the plain progress lines ('what: k/total (n s)') a long step prints when
    output is not a terminal (they are neither errors nor notes).

    >>> is_progress_line("OBSPA: synthetic inputs: 1/1 (3 s)"), is_progress_line("spa: error: x.onnx: no such file")
    (True, False)
    """
    import re

    return re.fullmatch(r".+: \d+/(\d+|\?) \(\d+ s\)", line.strip()) is not None


class _PlainProgress:
    """'what: k/total' on stderr, at most every `EVERY` seconds and only after the first `QUIET` seconds."""

    QUIET, EVERY = 2.0, 10.0

    def __init__(self, total: int | str, what: str) -> None:
        import time

        self.clock = time.monotonic
        self.total, self.what, self.done = total, what, 0
        self.start = self.last = self.clock()

    def advance(self) -> None:
        self.done += 1
        now = self.clock()
        if now - self.start >= self.QUIET and (now - self.last >= self.EVERY or self.done == self.total):
            self.last = now
            print(f"{self.what}: {self.done}/{self.total} ({now - self.start:.0f} s)", file=sys.stderr, flush=True)
