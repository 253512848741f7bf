"""Keras 3 models and files: load safely, describe inputs, run, save atomically.

Files load with `safe_mode=True`: a Lambda layer (stored Python code) is refused, never executed.

Example:

>>> model = load("model.keras")          # doctest: +SKIP
>>> specs = input_specs(model)           # doctest: +SKIP
"""

import json
import os
import warnings
import zipfile

import numpy as np

from spa_keras import files
from spa_keras.errors import InputError, first_line
from spa_keras.verify import TensorSpec


def _config_of(path):
    """The model config dict stored in a `.keras` zip or an `.h5` file, or None when it cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else None
    except Exception:
        return None


def _lambda_layers(config):
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(node.get("config", {}).get("name", "?"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return found


def load(path):
    """Load a `.keras` or `.h5` model (safe_mode=True) with one-line errors that name the file. The model is
    compiled as it was saved (optimizer, loss, metrics) when it was saved compiled and Keras can rebuild that
    configuration; otherwise it loads uncompiled."""
    import keras

    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    lambdas = _lambda_layers(_config_of(path) or {})
    if lambdas:
        raise InputError(f"{path}: contains Lambda layer(s) {', '.join(lambdas)}; Keras safe_mode forbids running "
                         "their stored Python code and spa-keras will not execute it. Replace them with registered "
                         "custom layers, or load the model yourself and pass the keras.Model to the Python API")
    with warnings.catch_warnings():  # "compiled metrics have yet to be built" and the like
        warnings.simplefilter("ignore")
        try:
            return keras.models.load_model(path, compile=True, safe_mode=True)
        except Exception:  # a compile configuration Keras cannot rebuild (custom loss): the model alone
            pass
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:
            raise InputError(f"{path}: Keras cannot load this file: {first_line(exc)}") from exc


def input_specs(model):
    """The model's inputs as `TensorSpec`s (batch and other free dimensions as None)."""
    return [TensorSpec(t.name, tuple(t.shape), np.dtype(t.dtype).name) for t in model.inputs]


def output_names(model):
    return list(getattr(model, "output_names", None) or [t.name for t in model.outputs])


def run(model, feeds):
    """Run `model` in inference mode on `{input name: array}`; return `{output name: array}`."""
    import keras

    names = [t.name for t in model.inputs]
    arrays = [feeds[n] for n in names] if set(names) <= set(feeds) else list(feeds.values())
    with warnings.catch_warnings():  # legacy .h5 models declare list inputs and warn about a bare tensor
        warnings.simplefilter("ignore", UserWarning)
        result = model(arrays if len(arrays) > 1 else arrays[0], training=False)
    flat = keras.tree.flatten(result)
    return {n: keras.ops.convert_to_numpy(v) for n, v in zip(output_names(model), flat)}


def save(model, path):
    """Save a Keras model to `.keras` or `.h5` atomically."""
    with files.atomic_output(path) as tmp:
        model.save(tmp)
    return path
