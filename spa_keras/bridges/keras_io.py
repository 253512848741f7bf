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


def _layer_configs(node, layer="?"):
    """`(object, layer name)` for every serialised object ({"class_name", "config", ...}) in a model config, nested
    ones included (a layer's activation function, a sub-model's layers): the layer is the innermost one holding it."""
    if isinstance(node, dict):
        if "class_name" in node:
            config = node.get("config")
            if isinstance(config, dict) and isinstance(config.get("name"), str):
                layer = config["name"]
            yield node, layer
        for v in node.values():
            yield from _layer_configs(v, layer)
    elif isinstance(node, list):
        for v in node:
            yield from _layer_configs(v, layer)


def _lambda_layers(config):
    return [layer for c, layer in _layer_configs(config) if c["class_name"] == "Lambda"]


# the packages whose classes Keras finds by their module alone (no registration needed)
KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras"}
SPA_PACKAGE = "spa_keras>"  # the classes spa-keras itself writes into models (the ONNX rebuild's ConstantAffine)


def _custom_objects(config):
    """`[(kind, registered name, layer, module or None, class name)]` of the custom (non-Keras) classes and
    functions a model config names. Keras 3 files give a class's `registered_name` ("package>Name" for
    `register_keras_serializable(package=...)`) and `module` (custom unless Keras finds it by its module: a user's
    module may well be called keras_something); legacy .h5 files only "package>Name" as `class_name`; a function
    is {"class_name": "function", "config": its registered name}."""
    found = []
    for c, layer in _layer_configs(config):
        class_name, module = c["class_name"], c.get("module")
        module = module if isinstance(module, str) and module not in ("", "builtins", "__main__") else None
        if class_name == "function":
            name, kind = c.get("config"), "function"
        else:
            name, kind = c.get("registered_name") or class_name, "class"
        if not isinstance(name, str) or name.startswith("__"):  # tensors, numpy arrays, lambdas: Keras's own
            continue
        custom = module.split(".")[0] not in KERAS_PACKAGES if module is not None else ">" in name
        if custom and (kind, name, layer, module, class_name) not in found:
            found.append((kind, name, layer, module, class_name))
    return found


def _spa_objects(config):
    """{registered name: class} of spa-keras's own classes the config names: every load provides them, so a file
    spa wrote loads in a fresh process, where nothing has imported the module that registers them."""
    if not any(found[1].startswith(SPA_PACKAGE) for found in _custom_objects(config)):
        return {}
    from spa_keras.bridges.onnx_to_keras import ConstantAffine

    return {SPA_PACKAGE + "ConstantAffine": ConstantAffine}


def _unregistered_classes(config):
    """`[(kind, registered name, layer, module or None, class name)]` of the custom classes and functions in a model
    config that Keras cannot find: not registered in this process (spa-keras's own ones are, by `load`)."""
    import keras

    return [found for found in _custom_objects(config)
            if not found[1].startswith(SPA_PACKAGE) and keras.saving.get_registered_object(found[1]) is None]


def _unregistered_message(path, missing):
    """One line: which custom classes are missing (and in which layers), and how to make them known."""
    import keras

    listed = []
    for kind, name, layer, module, class_name in missing[:3]:
        # the very class (same module and name) registered under another name than the file's
        elsewhere = [other for other, obj in keras.saving.get_custom_objects().items()
                     if module and getattr(obj, "__module__", None) == module
                     and getattr(obj, "__name__", None) == class_name]
        listed.append(f"{kind} '{name}' (layer '{layer}')" +
                      (f" (registered here as '{elsewhere[0]}', another name)" if elsewhere else ""))
    modules = list(dict.fromkeys(found[3] for found in missing if found[3]))
    where = f" ({', '.join(modules)})" if modules else ""
    return (f"{path}: custom {', '.join(listed)}{' ...' if len(missing) > 3 else ''} "
            f"{'is' if len(missing) == 1 else 'are'} not registered: in Python, import the module that defines it"
            f"{where} before loading; with the CLI, spa --import {modules[0] if modules else 'MODULE'} (the module "
            "registers it with @keras.saving.register_keras_serializable)")


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
    own = _spa_objects(config)
    with warnings.catch_warnings():  # "compiled metrics have yet to be built" and the like
        warnings.simplefilter("ignore")
        try:
            return keras.models.load_model(path, custom_objects=own, compile=True, safe_mode=True)
        except Exception:  # a compile configuration Keras cannot rebuild (custom loss): the model alone
            pass
        try:
            return keras.models.load_model(path, custom_objects=own, compile=False, safe_mode=True)
        except Exception as exc:
            missing = _unregistered_classes(config)
            if missing:
                raise InputError(_unregistered_message(path, missing)) from exc
            raise InputError(f"{path}: Keras cannot load this file: {first_line(exc)}") from exc


def load_fresh(path):
    """`load` as a user in a fresh process would: spa-keras's own classes are hidden from Keras's registry while it
    loads, so the file must name them in a way `load` provides them itself, not rely on a module this process
    happened to import (the ONNX rebuild registers ConstantAffine). Classes the user registered stay (a user's fresh
    process imports their module again: spa --import). What every Keras write is verified with."""
    import keras

    registry = keras.saving.get_custom_objects()
    hidden = {name: registry.pop(name) for name in list(registry) if name.startswith(SPA_PACKAGE)}
    try:
        return load(path)
    finally:
        registry.update(hidden)


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
