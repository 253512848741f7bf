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

from spa_keras.common import files
from spa_keras.common.errors import InputError, first_line
from spa_keras.common.tensors import TensorSpec


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


def _layer_configs(node):
    """Every serialised object ({"class_name", "config", ...}) in a model config, nested ones included."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for v in node.values():
            yield from _layer_configs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _layer_configs(v)


def _lambda_layers(config):
    return [(c.get("config") or {}).get("name", "?") for c in _layer_configs(config) if c["class_name"] == "Lambda"]


def _unregistered_classes(config):
    """`[(class, layer name)]` of the custom (non-Keras) classes in a model config that Keras cannot find: not
    registered in this process."""
    import keras

    found = []
    for c in _layer_configs(config):
        module = str(c.get("module") or "")
        registered = c.get("registered_name") or c["class_name"]
        if ("config" in c and module and not module.startswith("keras")
                and keras.saving.get_registered_object(registered) is None):
            found.append((registered, (c.get("config") or {}).get("name", "?")))
    return found


def _not_a_model_file(path):
    """Why `path` cannot be a Keras model file (empty, truncated, another format), or None."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "the file is empty"
    if path.lower().endswith(".keras") and not zipfile.is_zipfile(path):
        return ("not a .keras file (a .keras file is a zip archive; this one is truncated or another format)"
                if head[:2] == b"PK" else "not a .keras file (a .keras file is a zip archive; this is another format)")
    if path.lower().endswith((".h5", ".hdf5")) and head != b"\x89HDF\r\n\x1a\n":
        return "not an HDF5 file (.h5): truncated or another format"
    return None


def load(path):
    """Load a `.keras` or `.h5` model (safe_mode=True) with one-line errors that name the file. The model is
    compiled as it was saved (optimizer, loss, metrics) when it was saved compiled and Keras can rebuild that
    configuration; otherwise it loads uncompiled."""
    import keras

    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    why = _not_a_model_file(path)
    if why:
        raise InputError(f"{path}: {why}")
    config = _config_of(path) or {}
    lambdas = _lambda_layers(config)
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
            missing = _unregistered_classes(config)
            if missing:
                listed = ", ".join(f"'{cls}' (layer '{name}')" for cls, name in missing[:3])
                raise InputError(f"{path}: custom class {listed} is not registered: import the module that defines "
                                 "it (decorated with @keras.saving.register_keras_serializable) before loading; with "
                                 "the CLI, spa --import MODULE") from exc
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
