"""TFLite models: run a `.tflite` file or flatbuffer with the LiteRT interpreter.

Example:

>>> outputs = run("model.tflite", {"image": x})      # doctest: +SKIP
"""

import re

import numpy as np

from spa_keras.common.console import quiet
from spa_keras.common.errors import InputError, first_line
from spa_keras.common.tensors import natural_key


def _interpreter(model):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model))
    try:
        return Interpreter(model_path=str(model))
    except Exception as exc:
        raise InputError(f"{model}: not a loadable TFLite model ({first_line(exc, 200)})") from exc


def _key(name):
    name = re.sub(r"^serving_default_|:0$", "", str(name))
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()



def _match(names, feeds):
    by_key = {_key(k): v for k, v in feeds.items()}
    if all(_key(n) in by_key for n in names):
        return [by_key[_key(n)] for n in names]
    if len(names) == len(feeds):
        return list(feeds.values())
    raise InputError(f"the TFLite model expects inputs {names}, given {list(feeds)}")


def run(model, feeds):
    """Run a TFLite model on `{input name: array}`; return `{output name: array}`.

    With a signature (TFLiteConverter output) its inputs and outputs are used, in the source's order; without one
    (onnx2tf output) the raw tensors are, outputs in natural name order (Identity, Identity_1, ...). Inputs are
    matched by name (ignoring `serving_default_` and `:0`), else by position. A model whose batch is fixed at 1
    runs sample by sample.
    """
    interp = _interpreter(model)
    signatures = interp.get_signature_list()
    if signatures:
        key = next(iter(signatures))
        runner = interp.get_signature_runner(key)
        details = runner.get_input_details()
        names = list(signatures[key]["inputs"])
        outputs = sorted(signatures[key]["outputs"], key=natural_key)
        invoke = runner
    else:
        details = {d["name"]: d for d in interp.get_input_details()}
        names = list(details)
        outputs = sorted((d["name"] for d in interp.get_output_details()), key=natural_key)

        def invoke(**arrays):
            for name, array in arrays.items():
                if tuple(details[name]["shape"]) != array.shape:
                    interp.resize_tensor_input(details[name]["index"], array.shape, strict=False)
            interp.allocate_tensors()
            for name, array in arrays.items():
                interp.set_tensor(details[name]["index"], array)
            interp.invoke()
            return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}

    arrays = _match(names, feeds)
    resizable = all(details[n]["shape_signature"][0] == -1 for n in names if len(details[n]["shape"]))
    batch = arrays[0].shape[0]
    chunks = [slice(0, batch)] if resizable else [slice(i, i + 1) for i in range(batch)]
    with quiet():  # LiteRT announces its XNNPACK delegate on stderr
        results = [invoke(**{n: np.ascontiguousarray(a[part]).astype(details[n]["dtype"])
                             for n, a in zip(names, arrays)}) for part in chunks]
    return {name: np.concatenate([r[name] for r in results]) for name in outputs}
