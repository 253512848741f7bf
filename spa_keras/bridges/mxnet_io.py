"""MXNet checkpoints (`PREFIX-symbol.json` + `PREFIX-EPOCH.params`) and Gluon HybridBlocks: load, run, → ONNX.

ONNX export goes through `mxnet.onnx.export_model` with a dynamic batch. Its BatchNorm converter ignores
`fix_gamma` (it exports γ as stored while MXNet computes with γ = 1; gluon `BatchNorm(scale=False)`, e.g. the input
BN of resnet*_v2), so γ of those layers is set to 1 in the copy we export.

Module-API checkpoints end in a loss head (`SoftmaxOutput(fc, softmax_label)`, ...) whose label is an input that
inference does not read and that mxnet.onnx cannot export: running and exporting use `inference_symbol`, the same
graph with each loss head replaced by what it computes at inference (softmax, sigmoid, identity). Slim checkpoints
are written with the original symbol, loss heads included, so Module users train them as before.

Example:

>>> checkpoint = load("resnet18_v1", epoch=0)                # doctest: +SKIP
>>> onnx_model = to_onnx(checkpoint, input_shape=(1, 3, 224, 224))  # doctest: +SKIP
"""

import dataclasses
import json
import os
import tempfile

import numpy as np

from spa_keras.common import files
from spa_keras.bridges.mxnet_compat import import_mxnet
from spa_keras.common.console import quiet
from spa_keras.common.errors import ConversionError, InputError, first_line
from spa_keras.common.tensors import TensorSpec


@dataclasses.dataclass
class Checkpoint:
    """An MXNet symbol with its parameters (`name -> NDArray`, args and aux together)."""

    symbol: object
    params: dict
    name: str = "MXNet model"

    @property
    def inference(self):
        """The symbol without loss heads (see the module docstring)."""
        return inference_symbol(self.symbol)

    @property
    def input_names(self):
        return [n for n in self.inference.list_inputs() if n not in self.params]

    @property
    def output_names(self):
        return list(self.inference.list_outputs())


# loss heads of the Module API -> (the op that computes their inference output, its attributes)
LOSS_HEADS = {"SoftmaxOutput": ("softmax", {"axis": "-1"}), "LogisticRegressionOutput": ("sigmoid", {}),
              "LinearRegressionOutput": ("identity", {}), "MAERegressionOutput": ("identity", {})}


def inference_symbol(symbol):
    """`symbol` with every loss head replaced by its inference computation (the label inputs disappear), and
    `FullyConnected`'s default `flatten=True` written out: mxnet.onnx reads a missing `flatten` as False and exports
    a Gemm on the wrong shape."""
    mx = import_mxnet()
    graph = json.loads(symbol.tojson())
    heads = [node for node in graph["nodes"] if node["op"] in LOSS_HEADS]
    implicit = [node for node in graph["nodes"]
                if node["op"] == "FullyConnected" and "flatten" not in (node.get("attrs") or {})]
    if not heads and not implicit:
        return symbol
    for node in implicit:
        node.setdefault("attrs", {})["flatten"] = "True"
    for node in heads:
        attrs = node.get("attrs", {}) or {}
        op, new_attrs = LOSS_HEADS[node["op"]]
        if node["op"] == "SoftmaxOutput" and str(attrs.get("multi_output", "False")).lower() in ("true", "1"):
            new_attrs = {"axis": "1"}
        node["op"], node["attrs"], node["inputs"] = op, dict(new_attrs), node["inputs"][:1]
    return mx.sym.load_json(json.dumps(graph))


def mxnet_message(exc, limit=200) -> str:
    """What an MXNet error says, without the C++ stack MXNet puts first ('Traceback ...', 'File ..., line N')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Traceback", "File ", "[bt]", "Stack trace", "At "))]
    text = said[0] if said else first_line(exc)
    return text.removeprefix("MXNetError: ")[:limit]


def check_params(checkpoint, specs):
    """Every parameter the symbol needs is in the params file with the shape the symbol infers at `specs`; else an
    `InputError` that names the first that is not (the params of another network, or another epoch)."""
    symbol = checkpoint.inference
    try:
        with quiet():
            args, _, aux = symbol.infer_shape_partial(**{s.name: (1,) + tuple(s.shape[1:]) for s in specs})
    except Exception as exc:
        raise InputError(f"{checkpoint.name}: the symbol does not accept input shape "
                         f"{', '.join(str((1,) + tuple(s.shape[1:])) for s in specs)} ({mxnet_message(exc)})") from exc
    inputs = {s.name for s in specs}
    needed = [(n, shape) for n, shape in zip(symbol.list_arguments(), args) if n not in inputs]
    needed += list(zip(symbol.list_auxiliary_states(), aux))
    missing = [n for n, _ in needed if n not in checkpoint.params]
    if missing:
        raise InputError(f"{checkpoint.name}: the params file has no value for {missing[0]}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: are they the params of "
                         "another network?")
    for name, shape in needed:
        have = tuple(checkpoint.params[name].shape)
        if shape and all(shape) and have != tuple(shape):
            raise InputError(f"{checkpoint.name}: {name} is {have} in the params file but the symbol needs "
                             f"{tuple(shape)} at this input shape: are they the params of another network?")


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
        raise InputError(f"{symbol_file}: not a readable MXNet symbol file ({mxnet_message(exc)})") from exc
    try:
        raw = mx.nd.load(params_file)
    except Exception as exc:
        raise InputError(f"{params_file}: not a readable MXNet params file ({mxnet_message(exc)})") from exc
    params = {k.split(":", 1)[-1]: v for k, v in raw.items()}
    _require_params(symbol, params, params_file)
    return Checkpoint(symbol, params, name=os.path.basename(prefix))


# names Gluon and the Module API give parameters (what is not data)
PARAM_SUFFIXES = ("_weight", "_bias", "_gamma", "_beta", "_moving_mean", "_moving_var", "_running_mean",
                  "_running_var")


def _require_params(symbol, params, params_file):
    """Every auxiliary state and every argument named like a parameter has a value: else these params belong to
    another network (or epoch)."""
    needed = [n for n in symbol.list_arguments() if n.endswith(PARAM_SUFFIXES)] + symbol.list_auxiliary_states()
    missing = [n for n in needed if n not in params]
    if missing:
        raise InputError(f"{params_file}: has no value for {missing[0]}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''} of the symbol: are they "
                         "the params of another network?")


def save(checkpoint, prefix, epoch=0):
    """Write `PREFIX-symbol.json` and `PREFIX-{epoch:04d}.params` (arguments as `arg:`, auxiliary states as `aux:`,
    as `Module.save_checkpoint` does), both or neither: each goes through a temporary file."""
    mx = import_mxnet()
    prefix, symbol_file, params_file = files.mxnet_files(prefix, epoch)
    aux = set(checkpoint.symbol.list_auxiliary_states())
    named = {("aux:" if k in aux else "arg:") + k: v for k, v in checkpoint.params.items()}
    with files.atomic_output(symbol_file) as tmp_symbol, files.atomic_output(params_file) as tmp_params:
        checkpoint.symbol.save(tmp_symbol)
        mx.nd.save(tmp_params, named)
    return symbol_file, params_file


def to_block(checkpoint):
    """A `gluon.SymbolBlock` of the inference symbol with the checkpoint's parameters loaded (trainable), through
    `SymbolBlock.imports`, the way Gluon users load exported models."""
    mx = import_mxnet()
    inference = Checkpoint(checkpoint.inference, checkpoint.params, checkpoint.name)
    with tempfile.TemporaryDirectory() as tmp:
        symbol_file, params_file = save(inference, os.path.join(tmp, "block"))
        with quiet():
            return mx.gluon.SymbolBlock.imports(symbol_file, checkpoint.input_names, params_file)


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
    symbol = checkpoint.inference
    aux_names = set(symbol.list_auxiliary_states())
    with quiet():  # MXNet logs its subgraph backend on every bind
        executor = symbol.bind(mx.cpu(), args={k: v for k, v in args.items() if k not in aux_names},
                               aux_states={k: v for k, v in args.items() if k in aux_names}, grad_req="null")
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
    check_params(checkpoint, specs)
    params = dict(checkpoint.params)
    for name in fixed_gamma_names(checkpoint.symbol):
        if name in params:
            params[name] = mx.nd.ones_like(params[name])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            with quiet():
                mx.onnx.export_model(checkpoint.inference, params,
                                     in_shapes=[(1,) + tuple(s.shape[1:]) for s in specs],
                                     in_types=[np.float32] * len(specs), onnx_file_path=path, dynamic=True,
                                     dynamic_input_shapes=[(None,) + tuple(s.shape[1:]) for s in specs])
        except Exception as exc:
            raise ConversionError(f"{checkpoint.name}: mxnet.onnx.export_model failed: {mxnet_message(exc)}") from exc
        model = onnx.load(path)
    # mxnet.onnx also lists every weight as a graph input (pre-IR-4 style); keep only the data inputs
    weights = {i.name for i in model.graph.initializer}
    data_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(data_inputs)
    onnx_io.check(model, where=f"ONNX from {checkpoint.name}")
    return model
