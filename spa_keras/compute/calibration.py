"""Calibration inputs from files: what `spa prune --calibration PATH` reads, as the arrays
`OBSPA(calibration=...)` takes.

`load_calibration(path, input_shapes, preprocess)` reads

- `.npy`: one array of model inputs, batch first, for a model with one input; used as it is.
- `.npz`: one array per model input, keyed by the input's name (or `arr_0`, `arr_1`, ... in input order, as
  `np.savez` names them), or a single array for a one-input model. Keys that hold labels (`y`, `label`, `labels`,
  `target`, `targets`) are left out: OBSPA's Hessians are measured on inputs only.
- a folder of images (`IMAGE_EXTENSIONS`, searched recursively, in path order; read with Pillow), for a model with
  one image input (rank 4 with 1 or 3 channels). Each image is converted to RGB (3 channels; `color="bgr"` reverses
  their order) or grayscale (1 channel), resized to the input's height and width (bilinear; `resize="crop"` keeps
  the aspect ratio and cuts the centre), and becomes float32 `(pixel * scale - mean) / std` per channel, laid out
  as the model reads it: channels last (NHWC) or first (NCHW), from the input's shape (`image_layout`) unless
  `layout=` says. `Preprocess` states all this; the default only scales pixels to [0, 1].

Arrays must fit the model's input shapes on every axis but the batch; a mismatch is an `InputError` that names the
file, the shape expected and the shape given. Arrays are not preprocessed: they are model inputs already.

Example:

>>> import os, tempfile
>>> from PIL import Image
>>> folder = tempfile.mkdtemp()
>>> Image.new("RGB", (40, 30), (255, 0, 51)).save(os.path.join(folder, "red.png"))
>>> x = load_calibration(folder, {"image": (1, 3, 8, 8)}, Preprocess.parse("scale=1/255,mean=0.5,std=0.5"))
>>> x.shape, x.dtype, [round(float(v), 2) for v in x[0, :, 0, 0]]
((1, 3, 8, 8), dtype('float32'), [1.0, -1.0, -0.6])
>>> import shutil; shutil.rmtree(folder)
>>> Preprocess.parse("torch,layout=nchw")
Preprocess('scale=1/255, mean=0.485,0.456,0.406, std=0.229,0.224,0.225, layout=nchw')
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spa_keras.common.errors import InputError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ARRAY_EXTENSIONS = (".npy", ".npz")
# .npz keys that hold labels, not inputs
LABEL_KEYS = ("y", "label", "labels", "target", "targets")

LAYOUTS = ("nhwc", "nchw")
COLORS = ("rgb", "bgr", "gray")
RESIZES = ("stretch", "crop")

# keras.applications' `preprocess_input` modes, as `(pixel * scale - mean) / std`
PRESETS: dict[str, dict[str, Any]] = {
    "torch": dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "tf": dict(scale=1 / 127.5, mean=(1.0,), std=(1.0,)),
    "caffe": dict(scale=1.0, mean=(103.939, 116.779, 123.68), std=(1.0,), color="bgr"),
}
KEYS = ("scale", "mean", "std", "layout", "color", "resize")


def _number(text: str, what: str) -> float:
    """A number, or a fraction a/b ('1/255')."""
    try:
        top, _, bottom = text.partition("/")
        value = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        value = float("nan")
    if not np.isfinite(value):
        raise InputError(f"{what}={text!r}: expected a number such as 0.5 or a fraction such as 1/255")
    return value


def _said(value: float) -> str:
    """A scale as it is usually written: 1/255 rather than 0.00392..."""
    if 0 < value < 1:
        inverse = 1 / value
        if abs(inverse - round(inverse, 3)) < 1e-9 * inverse:
            return f"1/{round(inverse, 3):g}"
    return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: `(pixel * scale - mean) / std` per channel, float32.

    Args:
        scale: multiplies the 0..255 pixel values first (default 1/255: [0, 1]).
        mean, std: one value for every channel or one per channel (in the order fed: BGR after `color="bgr"`).
        layout: "nhwc" or "nchw", the model input's layout; None: read off its shape (`image_layout`).
        color: "rgb", "bgr" or "gray"; None: RGB for 3 channels, grayscale for 1.
        resize: "stretch" (to the input's height and width) or "crop" (the shorter side to size, then the centre).
    """

    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None
    color: str | None = None
    resize: str = "stretch"

    def __post_init__(self) -> None:
        for key, value, choices in (("layout", self.layout, LAYOUTS), ("color", self.color, COLORS),
                                    ("resize", self.resize, RESIZES)):
            if value is not None and value not in choices:
                raise InputError(f"{key}={value!r}: one of {', '.join(choices)}")
        if not self.mean or not self.std:
            raise InputError("mean= and std= take one value, or one per channel")
        if not np.isfinite(self.scale) or self.scale == 0:
            raise InputError(f"scale={self.scale!r}: a finite number other than 0")
        if any(s == 0 for s in self.std):
            raise InputError(f"std={','.join(f'{s:g}' for s in self.std)}: values other than 0")

    @classmethod
    def parse(cls, text: str | None) -> Preprocess:
        """From 'scale=1/255,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nchw': keys (`KEYS`) with
        values, separated by commas, semicolons or spaces (the values of mean and std run on to the next key), and
        optionally first a preset (`PRESETS`: torch, tf, caffe, as keras.applications' preprocess_input modes)
        that the keys then change. None or '' is the default."""
        if not text or not str(text).strip():
            return cls()
        fields: dict[str, list[str]] = {}
        preset: str | None = None
        key: str | None = None
        for token in (t for t in re.split(r"[,;\s]+", str(text).strip()) if t):
            if "=" in token:
                key, _, value = token.partition("=")
                key = key.strip().lower()
                if key not in KEYS:
                    raise InputError(f"{text!r}: unknown key {key!r}; keys: {', '.join(KEYS)} (and first, if you "
                                     f"like, a preset: {', '.join(PRESETS)})")
                if key in fields:
                    raise InputError(f"{text!r}: {key}= given twice")
                fields[key] = [value] if value else []
            elif key in ("mean", "std"):
                fields[key].append(token)
            elif key is None and preset is None and token.lower() in PRESETS:
                preset = token.lower()
            else:
                raise InputError(f"{text!r}: {token!r} is neither KEY=VALUE (keys: {', '.join(KEYS)}) nor a value "
                                 f"of mean= or std=" + ("" if key else f" nor a preset ({', '.join(PRESETS)})"))
        options: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
        for key, values in fields.items():
            if not values or (key not in ("mean", "std") and len(values) > 1):
                raise InputError(f"{text!r}: {key}= takes " + ("one or more numbers" if key in ("mean", "std")
                                                                else "one value"))
            if key == "scale":
                options[key] = _number(values[0], key)
            elif key in ("mean", "std"):
                options[key] = tuple(_number(v, key) for v in values)
            else:
                options[key] = values[0].lower()
        return cls(**options)

    def __str__(self) -> str:
        parts = [f"scale={_said(self.scale)}", "mean=" + ",".join(f"{m:g}" for m in self.mean),
                 "std=" + ",".join(f"{s:g}" for s in self.std)]
        parts += [f"{key}={getattr(self, key)}" for key in ("layout", "color") if getattr(self, key) is not None]
        if self.resize != "stretch":
            parts.append(f"resize={self.resize}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"Preprocess({str(self)!r})"


def image_layout(shape: Sequence[int | None], layout: str | None = None,
                 channels_last: bool | None = None) -> tuple[str, str]:
    """(layout, why) of a rank-4 image input of `shape` (batch first): `layout` when given, else the axis (1 or 3)
    that holds 1 or 3 channels while the other does not; when both could, `channels_last` decides (the format's
    convention: Keras reads NHWC, ONNX models are mostly NCHW).

    >>> image_layout((1, 3, 224, 224))
    ('nchw', 'channels on axis 1 of the input shape')
    >>> image_layout((1, 28, 28, 1))
    ('nhwc', 'channels on axis 3 of the input shape')
    """
    shape = tuple(shape)
    if len(shape) != 4:
        raise InputError(f"a folder of images feeds an image input of rank 4 (N,H,W,C or N,C,H,W); the model's "
                         f"input has shape {_shape(shape)}: give an .npy or .npz of model inputs")
    if layout is not None:
        if layout not in LAYOUTS:
            raise InputError(f"layout={layout!r}: one of {', '.join(LAYOUTS)}")
        channels = shape[3] if layout == "nhwc" else shape[1]
        if channels not in (1, 3):
            raise InputError(f"layout={layout} puts {channels} channels in the model's input {_shape(shape)}; "
                             "images give 1 or 3")
        return layout, "layout= given"
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if last and not first:
        return "nhwc", "channels on axis 3 of the input shape"
    if first and not last:
        return "nchw", "channels on axis 1 of the input shape"
    if first and last and channels_last is not None:
        return ("nhwc" if channels_last else "nchw"), "axes 1 and 3 could both hold channels: the format's convention"
    if first and last:
        raise InputError(f"the model's input {_shape(shape)} could hold its channels on axis 1 or on axis 3: say "
                         "layout=nhwc or layout=nchw")
    raise InputError(f"the model's input {_shape(shape)} has no axis of 1 or 3 channels (images give 1 or 3): give "
                     "an .npy or .npz of model inputs")


def _shape(shape: Sequence[Any]) -> str:
    """(N, 28, 28, 1): a model input's shape with its batch axis as N."""
    return "(" + ", ".join(["N", *("?" if d is None else str(d) for d in tuple(shape)[1:])]) + ")"


def _given(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def _transpose_hint(given: tuple[int, ...], expected: tuple) -> str:
    if len(given) == 4 and len(expected) == 4:
        if given[1:] == (expected[2], expected[3], expected[1]):
            return " (the arrays are channels-last, the model reads channels first: x.transpose(0, 3, 1, 2))"
        if given[1:] == (expected[3], expected[1], expected[2]):
            return " (the arrays are channels-first, the model reads channels last: x.transpose(0, 2, 3, 1))"
    if given == tuple(expected)[1:]:
        return " (one sample without its batch axis? x[None] adds it)"
    return ""


def _checked(path: str, what: str, array: np.ndarray, name: str, expected: tuple, limit: int | None) -> np.ndarray:
    """`array` (rows up to `limit`) when it fits input `name` of shape `expected` on every axis but the batch."""
    given = tuple(int(d) for d in array.shape)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: {what} holds {array.dtype} values; model inputs are numbers")
    if len(given) != len(expected) or any(e is not None and g != e for g, e in zip(given[1:], expected[1:])):
        raise InputError(f"{path}: {what} has shape {_given(given)}, but the model's input '{name}' takes "
                         f"{_shape(expected)} (batch first){_transpose_hint(given, tuple(expected))}")
    if not given[0]:
        raise InputError(f"{path}: {what} holds no inputs (shape {_given(given)})")
    out = np.asarray(array[:limit] if limit else array)
    if out.dtype.kind == "f":
        out = out.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputError(f"{path}: {what} holds NaN or infinite values")
    return out


def _npz_keys(path: str, keys: list[str], names: list[str]) -> tuple[dict[str, str], list[str]]:
    """({input name: key}, keys left out) of an .npz for the inputs `names`."""
    inputs = [k for k in keys if k.lower() not in LABEL_KEYS]
    if all(n in keys for n in names):
        chosen = {n: n for n in names}
    elif len(names) == 1 and len(inputs) == 1:
        chosen = {names[0]: inputs[0]}
    elif sorted(inputs) == [f"arr_{i}" for i in range(len(names))]:
        chosen = {n: f"arr_{i}" for i, n in enumerate(names)}
    else:
        missing = [n for n in names if n not in keys]
        raise InputError(f"{path}: keys {', '.join(keys) or '(none)'}; the model's input(s) "
                         f"{', '.join(repr(n) for n in names)}: key the arrays by input name (missing: "
                         f"{', '.join(repr(n) for n in missing)})")
    return chosen, [k for k in keys if k not in chosen.values()]


def _load_arrays(path: str, shapes: dict[str, tuple], limit: int | None) -> tuple[dict[str, np.ndarray], str]:
    names = list(shapes)
    if path.lower().endswith(".npy"):
        if len(names) != 1:
            raise InputError(f"{path}: an .npy holds one array, and the model has {len(names)} inputs "
                             f"({', '.join(names)}): give an .npz with one array per input name")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read it as an .npy array ({first_line(exc)})") from exc
        arrays = {names[0]: _checked(path, "the array", array, names[0], shapes[names[0]], limit)}
        return arrays, "used as they are"
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            chosen, left = _npz_keys(path, keys, names)
            arrays = {n: _checked(path, f"array '{k}'", npz[k], n, shapes[n], limit) for n, k in chosen.items()}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as an .npz archive ({first_line(exc)})") from exc
    rows = {len(a) for a in arrays.values()}
    if len(rows) > 1:
        raise InputError(f"{path}: the arrays hold different numbers of inputs ({', '.join(map(str, sorted(rows)))})")
    said = ", ".join(f"'{k}' for input '{n}'" for n, k in chosen.items() if k != n)
    labels = [k for k in left if k.lower() in LABEL_KEYS]
    others = [k for k in left if k not in labels]
    notes = [said] if said else []
    if labels:
        notes.append(f"left out {', '.join(repr(k) for k in labels)} (labels: the Hessians need inputs only)")
    if others:
        notes.append(f"left out {', '.join(repr(k) for k in others)} (not a model input)")
    return arrays, "; ".join(["used as they are", *notes])


def image_files(folder: str) -> list[str]:
    """The image files under `folder` (`IMAGE_EXTENSIONS`, any depth), in path order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and f[0] != "."]
    return sorted(found, key=lambda p: os.path.relpath(p, folder))


def _read_image(path: str, mode: str, height: int, width: int, resize: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read it as an image ({first_line(exc)})") from exc
    if resize == "crop":
        w, h = image.size
        ratio = max(width / w, height / h)
        size = (max(width, round(w * ratio)), max(height, round(h * ratio)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
    else:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, np.float32)
    return array[..., None] if array.ndim == 2 else array


def _per_channel(values: tuple[float, ...], channels: int, key: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise InputError(f"{key}= has {len(values)} values for {channels} channel{'s' * (channels != 1)}: give one, or "
                         "one per channel")
    return np.asarray(values, np.float32)


def _load_images(folder: str, name: str, shape: tuple, preprocess: Preprocess, limit: int | None,
                 channels_last: bool | None) -> tuple[np.ndarray, str]:
    try:
        layout, why = image_layout(shape, preprocess.layout, channels_last)
        height, width, channels = (shape[1], shape[2], shape[3]) if layout == "nhwc" else \
            (shape[2], shape[3], shape[1])
        if height is None or width is None:
            raise InputError(f"the model's input '{name}' {_shape(shape)} has no fixed height and width: give "
                             "--input-shape (input_shape=) to say the size images are resized to")
        color = preprocess.color or ("rgb" if channels == 3 else "gray")
        if (color == "gray") != (channels == 1):
            raise InputError(f"color={color} gives {'1 channel' if color == 'gray' else '3 channels'}; the model's "
                             f"input '{name}' {_shape(shape)} reads {channels} ({layout})")
        mean = _per_channel(preprocess.mean, channels, "mean")
        std = _per_channel(preprocess.std, channels, "std")
    except InputError as exc:
        raise InputError(f"{folder}: {exc}") from exc
    paths = image_files(folder)
    if not paths:
        raise InputError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} at any depth)")
    total = len(paths)
    if limit and total > limit:  # evenly spaced in path order: every class folder, not the first one alone
        paths = [paths[i] for i in np.unique(np.linspace(0, total - 1, limit).round().astype(int))]
    images = np.stack([_read_image(p, "L" if color == "gray" else "RGB", int(height), int(width), preprocess.resize)
                       for p in paths])
    if color == "bgr":
        images = images[..., ::-1]
    x = (images * np.float32(preprocess.scale) - mean) / std
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, np.float32)
    count = f"{len(paths)} of {total} images (evenly spaced in path order)" if len(paths) < total else \
        f"{len(paths)} image{'s' * (len(paths) != 1)}"
    said = (f"{count}, {'grayscale' if color == 'gray' else color.upper()}, "
            f"{'resized' if preprocess.resize == 'stretch' else 'centre-cropped'} to {height}x{width}, "
            f"(pixel * {_said(preprocess.scale)} - {','.join(f'{m:g}' for m in preprocess.mean)}) / "
            f"{','.join(f'{s:g}' for s in preprocess.std)}, float32 {layout.upper()} {_given(x.shape)} for input "
            f"'{name}' {_shape(shape)} ({why})")
    return x, said


def load_calibration(path: str | os.PathLike, input_shapes: Mapping[str, Sequence[int | None]] | Sequence[int],
                     preprocess: Preprocess | str | None = None, *, limit: int | None = None,
                     channels_last: bool | None = None,
                     say: Callable[[str], None] | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Model inputs for OBSPA's calibration from an .npy, an .npz or a folder of images (see the module docstring).

    Args:
        path: the file or folder.
        input_shapes: the model's inputs {name: shape, batch first} as analysed (`spa.analyze(model).input_shapes`),
            or the shape of its one input.
        preprocess: a `Preprocess` or its text (`Preprocess.parse`), for a folder of images only.
        limit: read at most this many inputs (the first rows of arrays; images evenly spaced in path order).
        channels_last: the format's convention when an input's shape leaves the image layout open.
        say: called with one line that says what was read and how it was made into inputs.

    Returns:
        float32 arrays (other dtypes of arrays kept): one array for a model with one input, else {input name: array}.
    """
    path = os.fspath(path)
    shapes = ({str(k): tuple(v) for k, v in input_shapes.items()} if isinstance(input_shapes, Mapping) else
              {"input": tuple(input_shapes)})
    if not shapes:
        raise InputError("the model has no inputs to calibrate")
    if not isinstance(preprocess, Preprocess):
        given = preprocess is not None and str(preprocess).strip() != ""
        preprocess = Preprocess.parse(preprocess)
    else:
        given = preprocess != Preprocess()
    if limit is not None and limit < 1:
        raise InputError(f"limit={limit}: at least 1")
    if os.path.isdir(path):
        if len(shapes) != 1:
            raise InputError(f"{path}: a folder of images feeds a model with one input; this one has {len(shapes)} "
                             f"({', '.join(shapes)}): give an .npz with one array per input name")
        (name, shape), = shapes.items()
        x, said = _load_images(path, name, shape, preprocess, limit, channels_last)
        if say:
            say(f"{path}: {said}")
        return x
    if not path.lower().endswith(ARRAY_EXTENSIONS):
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file or folder")
        raise InputError(f"{path}: calibration data is an .npy, an .npz or a folder of images")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if given:
        raise InputError(f"{path}: .npy and .npz files hold model inputs as they are; preprocessing applies to a "
                         "folder of images")
    arrays, said = _load_arrays(path, shapes, limit)
    if say:
        first = next(iter(arrays.values()))
        inputs = ", ".join(f"'{n}' {_given(a.shape[1:])}" for n, a in arrays.items())
        say(f"{path}: {len(first)} input{'s' * (len(first) != 1)} for {inputs} ({said})")
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays
