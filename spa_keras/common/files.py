"""Model file kinds and atomic output.

`model_kind(path)` tells which bridge reads or writes a path; `atomic_output(path)` gives a temporary path next to
the destination and moves it into place only when the block succeeds, so a failed conversion never leaves a partial
file and never touches an existing one.

Example:

>>> model_kind("slim.keras", for_output=True)
'keras'
>>> model_kind("exported/", for_output=True)
'savedmodel'
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from typing import Collection, Iterable, Iterator, Union

from spa_keras.common.errors import InputError, first_line

StrPath = Union[str, "os.PathLike[str]"]  # a path as users give it

KERAS = "keras"
H5 = "h5"
ONNX = "onnx"
TFLITE = "tflite"
SAVEDMODEL = "savedmodel"
MXNET = "mxnet"

_SUFFIXES = {".keras": KERAS, ".h5": H5, ".hdf5": H5, ".onnx": ONNX, ".tflite": TFLITE}
DESCRIPTIONS = {KERAS: "'.keras'", H5: "'.h5'", ONNX: "'.onnx'", TFLITE: "'.tflite'", SAVEDMODEL: "a SavedModel directory",
                MXNET: "an MXNet prefix (PREFIX-symbol.json)"}
KNOWN = "'.keras', '.h5', '.onnx', '.tflite', a SavedModel directory or an MXNet prefix (PREFIX-symbol.json)"
# what to do with files of other frameworks
FOREIGN = {".pt": "a PyTorch file: export the model to ONNX (torch.onnx.export) and use the .onnx",
           ".pth": "a PyTorch file: export the model to ONNX (torch.onnx.export) and use the .onnx",
           ".pb": "a TensorFlow graph: give the SavedModel directory that holds it",
           ".pdmodel": "a Paddle model: export it to ONNX (paddle2onnx) and use the .onnx",
           ".caffemodel": "a Caffe model: convert it to ONNX first and use the .onnx",
           ".tflite": "TFLite is a deployment format: use the model it was made from (.keras, .onnx, SavedModel)"}


PICTURES = (".png", ".svg", ".pdf")


def check_picture_path(path: StrPath) -> str:
    """A picture file (.png/.svg/.pdf) in an existing folder, checked before any work."""
    if not str(path).lower().endswith(PICTURES):
        raise InputError(f"{path}: give a .png, .svg or .pdf file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{path}: the folder {folder} does not exist")
    return str(path)


def describe(kinds: Iterable[str]) -> str:
    """'.keras', '.h5' or '.onnx': the kinds in words, for messages."""
    words = [DESCRIPTIONS[k] for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def accepted_kind(path: StrPath, accept: Collection[str], command: str) -> str:
    """The kind of the input model at `path`, which `command` must accept (one of `accept`); else one line that
    says what it reads and what to do with this file."""
    path = str(path)
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    reads = f"{command} reads {describe(accept)} models"
    if suffix in FOREIGN and not (suffix == ".pb" and os.path.isdir(path)):
        if os.path.exists(path) or suffix != ".tflite":
            raise InputError(f"{path}: {FOREIGN[suffix]} ({reads})")
    try:
        kind = model_kind(path)
    except InputError as exc:
        if "unknown model kind" in str(exc):
            raise InputError(f"{path}: unknown model kind '{suffix or '(no suffix)'}'; {reads}") from exc
        raise
    if kind not in accept:
        raise InputError(f"{path}: {DESCRIPTIONS[kind]} models are not read by {command}; it reads {describe(accept)}")
    return kind


def refuse_same(output: StrPath, *others: tuple[str, StrPath | None]) -> None:
    """Refuse an output path that is one of the inputs (or another output): writing it would replace that file."""
    target = _same_key(output)
    for label, path in others:
        if path is not None and _same_key(path) == target:
            raise InputError(f"{output}: this is also {label}; writing it would replace that file. Choose another "
                             "path")


def _same_key(path: StrPath) -> str:
    """What identifies the files behind `path`: its real path, an MXNet prefix for `PREFIX-symbol.json`."""
    return os.path.realpath(mxnet_files(path)[0] if isinstance(path, (str, os.PathLike)) else str(path))


def mxnet_files(prefix: StrPath, epoch: int = 0) -> tuple[str, str, str]:
    """The symbol and params files of an MXNet checkpoint `prefix`."""
    prefix = str(prefix)
    for tail in ("-symbol.json", ".json"):
        if prefix.endswith(tail):
            prefix = prefix[: -len(tail)]
    return prefix, f"{prefix}-symbol.json", f"{prefix}-{int(epoch):04d}.params"


def model_kind(path: StrPath, *, for_output: bool = False, source_kind: str | None = None) -> str:
    """The kind of model at `path` (one of KERAS, H5, ONNX, TFLITE, SAVEDMODEL, MXNET).

    Inputs are recognised by what exists; outputs by their suffix: `-symbol.json` is MXNet; a path without a suffix
    is a SavedModel directory, except from an MXNet source (`source_kind`), where it is the prefix of an MXNet
    checkpoint unless it ends in '/' or is an existing directory.
    """
    path = str(path)
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if not for_output:
        if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
            raise InputError(f"{path}: not a regular file (a pipe or device); save the model to a file first")
        if os.path.isdir(path):
            if os.path.exists(os.path.join(path, "saved_model.pb")):
                return SAVEDMODEL
            raise InputError(f"{path}: a directory but not a SavedModel (no saved_model.pb inside)")
        if path.endswith("-symbol.json") or os.path.exists(mxnet_files(path)[1]):
            return MXNET
        if suffix in _SUFFIXES:
            if not os.path.exists(path):
                raise InputError(f"{path}: no such file")
            return _SUFFIXES[suffix]
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file, directory or MXNet prefix")
        raise InputError(f"{path}: unknown model kind '{suffix or '(no suffix)'}'; expected {KNOWN}")
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if path.endswith("-symbol.json"):
        return MXNET
    if suffix == "":
        directory = path.endswith(("/", os.sep)) or os.path.isdir(path)
        return MXNET if source_kind == MXNET and not directory else SAVEDMODEL
    raise InputError(f"{path}: unknown output kind '{suffix}'; expected {KNOWN}")


def check_output_path(path: StrPath) -> None:
    """Fail early, before any work, when `path` cannot be written (or would replace a directory of other files)."""
    path = str(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"{path}: the output directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{path}: the output directory {parent} is not writable")
    if os.path.isdir(path):
        suffix = os.path.splitext(path.rstrip("/"))[1].lower()
        if suffix in _SUFFIXES:
            raise InputError(f"{path}: an existing directory; the {suffix} file cannot replace it. Choose another path")
        if os.listdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise InputError(f"{path}: an existing directory that is not a SavedModel; writing the SavedModel would "
                             "replace its files. Choose a new path")
    elif os.path.exists(path) and not os.path.isfile(path):
        raise InputError(f"{path}: exists and is not a regular file; choose another path")


# what a failed write says when the disk (or a file-size limit) is the cause
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DISK_FULL_WORDS = ("No space left on device", "File too large", "Disk quota exceeded")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    return any(w in str(exc) for w in _DISK_FULL_WORDS)  # TensorFlow's writers raise their own error types


def _workdir_prefix(name: str) -> str:
    """The temporary folder's name fits the file system's limit whatever the length of `name`."""
    return f".{name[:80]}."


# signals the CLI received (its handlers note them before raising): a write they interrupted is never committed,
# even when the exception they raised was swallowed on the way (inside a library, or in a __del__ method)
_signals: list[int] = []


def note_signal(signum: int) -> None:
    _signals.append(signum)


def forget_signals() -> None:
    _signals.clear()


def _not_interrupted() -> None:
    if _signals:
        raise SystemExit(128 + _signals[0])


@contextlib.contextmanager
def atomic_output(path: StrPath) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success move it onto `path` (file or directory) in one step.

    A failure, Ctrl-C or SIGTERM (the CLI turns it into an exception) removes the temporary files; a full disk is one
    clear line."""
    path = os.path.abspath(str(path))
    check_output_path(path)
    parent, name = os.path.split(path)
    try:
        workdir = tempfile.mkdtemp(prefix=_workdir_prefix(name), suffix=".partial", dir=parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write beside it ({first_line(exc)}); nothing was written") from exc
    tmp = os.path.join(workdir, name)
    try:
        try:
            yield tmp
        except Exception as exc:
            if _disk_full(exc):
                raise InputError(f"{path}: cannot write it ({first_line(exc)}); nothing was written. Free some space "
                                 "or choose another disk") from exc
            raise
        _not_interrupted()
        if not os.path.exists(tmp):
            raise RuntimeError(f"nothing was written to {tmp}")
        if os.path.isdir(tmp):
            # A directory cannot replace another atomically: move the old one aside first, drop it after.
            old = None
            if os.path.exists(path):
                old = os.path.join(workdir, name + ".old")
                os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
