"""MXNet checkpoints (`PREFIX-symbol.json` + `PREFIX-EPOCH.params`) and Gluon HybridBlocks: load, run, → ONNX.

ONNX export goes through `mxnet.onnx.export_model` with a dynamic batch. Its BatchNorm converter ignores
`fix_gamma` (it exports γ as stored while MXNet computes with γ = 1; gluon `BatchNorm(scale=False)`, e.g. the input
BN of resnet*_v2), so γ of those layers is set to 1 in the copy we export.

Example:

>>> checkpoint = load("resnet18_v1", epoch=0)                # doctest: +SKIP
>>> onnx_model = to_onnx(checkpoint, input_shape=(1, 3, 224, 224))  # doctest: +SKIP
"""

import dataclasses
import json
import os
import tempfile

import numpy as np

from spa_keras import files
from spa_keras.bridges.mxnet_compat import import_mxnet
from spa_keras.console import quiet
from spa_keras.errors import ConversionError, InputError, first_line
from spa_keras.verify import TensorSpec


@dataclasses.dataclass
class Checkpoint:
    """An MXNet symbol with its parameters (`name -> NDArray`, args and aux together)."""

    symbol: object
    params: dict
    name: str = "MXNet model"

    @property
    def input_names(self):
        return [n for n in self.symbol.list_inputs() if n not in self.params]

    @property
    def output_names(self):
        return list(self.symbol.list_outputs())


def load(prefix, epoch=0):
    """Load `PREFIX-symbol.json` and `PREFIX-{epoch:04d}.params` with errors that name the missing file."""
    mx = import_mxnet()
    prefix, symbol_file, params_file = files.mxnet_files(prefix, epoch)
    for path, what in ((symbol_file, "symbol"), (params_file, "params")):
        if not os.path.isfile(path):
            others = sorted(f for f in os.listdir(os.path.dirname(os.path.abspath(prefix)) or ".")
                            if f.startswith(os.path.basename(prefix)) and f.endswith(".params"))
            hint = f" (found {', '.join(others)}: pass --epoch)" if what == "params" and others else ""
            raise InputError(f"{path}: MXNet {what} file not found{hint}")
    try:
        symbol = mx.sym.load(symbol_file)
    except Exception as exc:
        raise InputError(f"{symbol_file}: not a readable MXNet symbol file ({first_line(exc, 200)})") from exc
    try:
        raw = mx.nd.load(params_file)
    except Exception as exc:
        raise InputError(f"{params_file}: not a readable MXNet params file ({first_line(exc, 200)})") from exc
    params = {k.split(":", 1)[-1]: v for k, v in raw.items()}
    return Checkpoint(symbol, params, name=os.path.basename(prefix))


def from_block(block, input_shape):
    """A `Checkpoint` from a Gluon HybridBlock (initialised), traced on `input_shape`."""
    mx = import_mxnet()
    with tempfile.TemporaryDirectory() as tmp:
        block.hybridize()
        with quiet():
            block(mx.nd.zeros(tuple(input_shape)))
            block.export(os.path.join(tmp, "block"), epoch=0)
        return load(os.path.join(tmp, "block"), 0)


def input_specs(checkpoint, input_shape=None):
    """Data inputs as `TensorSpec`s. Symbols carry no shapes: `input_shape` (N, C, H, W) gives them, batch free."""
    if input_shape is None:
        raise InputError(f"{checkpoint.name}: MXNet symbol files carry no input shape; pass --input-shape, "
                         "for example --input-shape 1,3,224,224")
    shapes = input_shape if isinstance(input_shape, dict) else {None: tuple(input_shape)}
    specs = []
    for name in checkpoint.input_names:
        shape = shapes.get(name, shapes.get(None))
        if shape is None:
            raise InputError(f"{checkpoint.name}: no --input-shape for input '{name}'")
        specs.append(TensorSpec(name, (None,) + tuple(shape[1:]), "float32"))
    return specs


def run(checkpoint, feeds):
    """Run the symbol with MXNet on `{input name: array}`; return `{output name: array}`."""
    mx = import_mxnet()
    names = checkpoint.input_names
    arrays = [feeds[n] for n in names] if set(names) <= set(feeds) else list(feeds.values())
    args = {k: v for k, v in checkpoint.params.items()}
    for n, a in zip(names, arrays):
        args[n] = mx.nd.array(a)
    aux_names = set(checkpoint.symbol.list_auxiliary_states())
    executor = checkpoint.symbol.bind(mx.cpu(), args={k: v for k, v in args.items() if k not in aux_names},
                                      aux_states={k: v for k, v in args.items() if k in aux_names}, grad_req="null")
    with quiet():  # MXNet logs its subgraph backend on every bind
        outputs = [o.asnumpy() for o in executor.forward(is_train=False)]
    return dict(zip(checkpoint.output_names, outputs))


def fixed_gamma_names(symbol):
    """Names of the γ parameters of BatchNorm nodes with `fix_gamma` on (MXNet's default)."""
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    names = []
    for node in nodes:
        if node["op"] != "BatchNorm":
            continue
        attrs = node.get("attrs", node.get("param", {})) or {}
        if str(attrs.get("fix_gamma", "True")).lower() in ("true", "1"):
            names.append(nodes[node["inputs"][1][0]]["name"])
    return names


def to_onnx(checkpoint, input_shape):
    """Export to a checked ONNX model with a dynamic batch (mxnet.onnx, the opset it stamps)."""
    import onnx

    from spa_keras.bridges import onnx_io

    mx = import_mxnet()
    specs = input_specs(checkpoint, input_shape)
    params = dict(checkpoint.params)
    for name in fixed_gamma_names(checkpoint.symbol):
        if name in params:
            params[name] = mx.nd.ones_like(params[name])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            with quiet():
                mx.onnx.export_model(checkpoint.symbol, params,
                                     in_shapes=[(1,) + tuple(s.shape[1:]) for s in specs],
                                     in_types=[np.float32] * len(specs), onnx_file_path=path, dynamic=True,
                                     dynamic_input_shapes=[(None,) + tuple(s.shape[1:]) for s in specs])
        except Exception as exc:
            raise ConversionError(f"{checkpoint.name}: mxnet.onnx.export_model failed: {first_line(exc)}") from exc
        model = onnx.load(path)
    # mxnet.onnx also lists every weight as a graph input (pre-IR-4 style); keep only the data inputs
    weights = {i.name for i in model.graph.initializer}
    data_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(data_inputs)
    onnx_io.check(model, where=f"ONNX from {checkpoint.name}")
    return model
