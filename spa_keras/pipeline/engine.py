"""The engine's one seam: analyse -> plan -> channel masks per parameter -> surgery.

`spa.prune`, the training callback, OBSPA and the MXNet route all go through these functions instead of through
`prune()`: `analyse` picks the front-end by what the model is; `channel_masks` gives, for a set of removed channels,
the positions every parameter keeps; `slim_model` hands them (and the new values of kept weights a plan may carry)
to the surgery of the graph's format, chosen by its parameter handles (`SPAGraph.format`); `mask_in_place` zeroes the
removed channels of every member variable of a live Keras model instead.

Example:

>>> analysis = analyse(keras_model)                                   # doctest: +SKIP
>>> plan = make_plan(analysis.graph_analysis, flops=0.5)              # doctest: +SKIP
>>> slim = apply_plan(analysis, plan).model                           # doctest: +SKIP
>>> mask_in_place(analysis, plan)     # the live model keeps its shapes, removed channels are zero  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import warnings

import numpy as np

from spa_keras.common.console import console
from spa_keras.planning.cost import CostModel
from spa_keras.common.errors import InputError
from spa_keras.analysis.groups import GraphAnalysis, analyze_graph
from spa_keras.planning.plan import PruningPlan

# format of the parameter handles -> (module, slim-model function, in-place masking function or None)
SURGERIES = {
    "onnx": ("spa_keras.formats.onnx.surgery", "prune_onnx", None),
    "keras": ("spa_keras.formats.keras.surgery", "prune_keras", "mask_keras"),
}


class Analysis:
    """Channel groups of a model, its barriers and counts; `print()` shows the table."""

    def __init__(self, graph_analysis: GraphAnalysis, source: str = "model", input_shapes: dict | None = None,
                 origin: tuple | None = None):
        self.graph_analysis = graph_analysis
        self.source = source
        self.input_shapes = input_shapes or {}  # {input name: shape at batch 1} the model was analysed at
        self.origin = origin  # ("mxnet" | "gluon", Checkpoint) when the graph is the ONNX export of an MXNet model
        self._cost = None

    @property
    def groups(self):
        return self.graph_analysis.groups

    @property
    def barriers(self):
        return self.graph_analysis.barriers

    @property
    def cost(self):
        if self._cost is None:
            self._cost = CostModel(self.graph_analysis)
        return self._cost

    @property
    def counts(self):
        return self.cost.base

    def report(self, limit=None):
        from spa_keras.ui.report import analysis_table

        return analysis_table(self.graph_analysis, self.cost, limit)

    def print(self, limit=None):
        from spa_keras.ui.report import barrier_table

        console.print(f"{self.source}: {self.counts}; {sum(g.channels for g in self.groups):,} channels in "
                      f"{len(self.groups)} groups, {sum(g.prunable for g in self.groups):,} prunable")
        console.print(self.report(limit))
        if self.barriers:
            console.print(barrier_table(self.graph_analysis))


@dataclasses.dataclass
class PruneResult:
    model: object
    plan: PruningPlan
    before: object
    after: object
    analysis: Analysis

    @property
    def report(self):
        from spa_keras.ui.report import result_table

        return result_table(self.before, self.after, self.plan, self.analysis.graph_analysis)


def analyse(model, input_shapes=None, via=None, epoch=0, signature=None) -> Analysis:
    """The `Analysis` of `model`: a keras.Model or .keras/.h5 file through the Keras front-end (or, with
    `via="onnx"`, its tf2onnx export), an .onnx path or onnx.ModelProto through the ONNX front-end; a SavedModel
    directory (its `signature`, default serving_default, through tf2onnx), an MXNet prefix (PREFIX-EPOCH.params with
    `epoch`), an `mxnet_io.Checkpoint` or a Gluon HybridBlock through their ONNX export (`origin` remembers the MXNet
    model, so plans come back to it). `input_shapes`: {input name or None: shape with batch}; free dimensions not
    given take defaults, each said in a warning (`spa_keras.common.verify.resolve_input_shapes`)."""
    keras_model = _keras_model(model)
    if keras_model is not None:
        if via != "onnx":
            from spa_keras.bridges import keras_io
            from spa_keras.formats.keras.frontend import from_keras, require_graph

            require_graph(keras_model)
            shapes = _resolved(keras_io.input_specs(keras_model), input_shapes)
            where = f"Keras model '{keras_model.name}'"
            return Analysis(analyze_graph(_finite(from_keras(keras_model, shapes), where)), where, shapes)
        from spa_keras.bridges.keras_to_onnx import keras_to_onnx

        model = keras_to_onnx(keras_model, where=f"Keras model '{keras_model.name}'")
    from spa_keras.bridges import onnx_io
    from spa_keras.formats.onnx.frontend import from_onnx  # imports onnx: only on the ONNX path
    from spa_keras.common.verify import random_batch

    origin = _mxnet_origin(model, input_shapes, epoch)
    if origin is not None:
        from spa_keras.bridges import mxnet_io

        proto, name = mxnet_io.to_onnx(origin[1], _mxnet_shape(input_shapes)), origin[1].name
    else:
        proto, name = _load_onnx(model, signature)
    onnx_io.refuse_quantized(proto, name)
    specs = onnx_io.input_specs(proto)
    shapes = _resolved(specs, input_shapes)
    # a model onnxruntime cannot run is the input's fault, said before the engine could stumble over it
    onnx_io.require_runs(proto, random_batch(specs, shapes, batch=1), where=name)
    return Analysis(analyze_graph(_finite(from_onnx(proto, shapes), name)), name, shapes, origin)


def _finite(graph, name):
    """The graph, when its weights are finite numbers; else an `InputError` that names the first bad one."""
    for param in graph.params.values():
        value = param.value
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            count = int((~np.isfinite(value)).sum())
            raise InputError(f"{name}: weight {param.name} holds {count} NaN or infinite value(s); fix or retrain the "
                             "model first")
    return graph


def _mxnet_origin(model, input_shapes, epoch):
    """("mxnet", Checkpoint) for an MXNet prefix or Checkpoint, ("gluon", Checkpoint) for a Gluon block, else
    None."""
    from spa_keras.bridges import mxnet_io

    if isinstance(model, (str, os.PathLike)):
        from spa_keras.common import files

        if files.model_kind(str(model)) != files.MXNET:
            return None
        return "mxnet", mxnet_io.load(str(model), epoch)
    if isinstance(model, mxnet_io.Checkpoint):
        return "mxnet", model
    if hasattr(model, "hybridize") and hasattr(model, "collect_params"):
        if input_shapes is None:
            raise InputError("a Gluon block needs input_shape=, for example input_shape=(1, 3, 224, 224)")
        checkpoint = mxnet_io.from_block(model, _mxnet_shape(input_shapes))
        checkpoint.name = f"Gluon {type(model).__name__}"
        return "gluon", checkpoint
    return None


def _mxnet_shape(input_shapes):
    """MXNet symbols carry no shapes: one input's shape as a tuple, several as a dict, None when not given."""
    if isinstance(input_shapes, dict) and set(input_shapes) == {None}:
        return input_shapes[None]
    return input_shapes


def input_names(model) -> list[str]:
    """The names of a model's inputs (a keras.Model or an onnx.ModelProto), in order."""
    if _keras_model(model) is not None:
        return [t.name for t in model.inputs]
    from spa_keras.bridges import onnx_io

    return [s.name for s in onnx_io.input_specs(model)]


def _resolved(specs, input_shapes):
    from spa_keras.common.verify import resolve_input_shapes

    shapes, notes = resolve_input_shapes(specs, input_shapes)
    for note in notes:
        warnings.warn(f"{note}; give input_shape= (--input-shape) to choose", stacklevel=3)
    return shapes


def _load_onnx(model, signature=None):
    import onnx

    from spa_keras.bridges import onnx_io

    if isinstance(model, onnx.ModelProto):
        return model, "ONNX model"
    if isinstance(model, (str, os.PathLike)):
        from spa_keras.common import files

        kind = files.model_kind(str(model))
        if kind == files.SAVEDMODEL:
            from spa_keras.bridges import savedmodel_io

            return savedmodel_io.savedmodel_to_onnx(str(model), signature=signature), str(model)
        if kind != files.ONNX:
            raise InputError(f"{model}: {files.DESCRIPTIONS[kind]} models cannot be pruned; prune the model it was "
                             "made from (.keras, .onnx, a SavedModel or an MXNet checkpoint)")
        loaded, _ = onnx_io.repaired(onnx_io.load(str(model)), where=str(model))
        return loaded, str(model)
    raise InputError(f"cannot analyse a {type(model).__name__}: give a keras.Model, an onnx.ModelProto, a Gluon "
                     "HybridBlock or a path (.keras, .h5, .onnx, SavedModel directory, MXNet prefix)")


def _keras_model(model):
    """The keras.Model behind `model` (a keras.Model or a .keras/.h5 path), or None for other kinds."""
    if isinstance(model, (str, os.PathLike)):
        from spa_keras.common import files

        if files.model_kind(str(model)) in (files.KERAS, files.H5):
            from spa_keras.bridges import keras_io

            return keras_io.load(str(model))
        return None
    from spa_keras.pipeline.convert import is_keras_model

    return model if is_keras_model(model) else None


def channel_masks(analysis, removed: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """{parameter: {axis: keep mask}} for every parameter that loses positions (`removed`: bool per channel)."""
    return _graph_analysis(analysis).param_masks(removed)


def _graph_analysis(analysis) -> GraphAnalysis:
    return getattr(analysis, "graph_analysis", analysis)


def _surgery(analysis, which):
    fmt = analysis.graph.format
    entry = SURGERIES.get(fmt)
    if entry is None or entry[which] is None:
        what = "in-place masking" if which == 2 else "surgery"
        raise InputError(f"no {what} for models whose parameters are {fmt or 'absent'}"
                         + ("; in-place masking needs a live Keras model" if which == 2 else ""))
    return getattr(importlib.import_module(entry[0]), entry[which])


def slim_model(analysis, removed: np.ndarray, updates: dict | None = None):
    """The slim model without the `removed` channels, kept weights replaced by `updates` ({parameter: full-size
    value in the graph's layout}); the analysed model is not changed."""
    ga = _graph_analysis(analysis)
    return _surgery(ga, 1)(ga, removed, updates)


def mask_in_place(analysis, plan: PruningPlan | np.ndarray):
    """Zero the removed channels of every member variable of the analysed live model (a keras.Model), after writing
    the plan's new values of kept weights; the model keeps its shapes. Returns the model."""
    ga = _graph_analysis(analysis)
    removed, updates = (plan.mask(ga), plan.updates) if isinstance(plan, PruningPlan) else (plan, None)
    return _surgery(ga, 2)(ga, removed, updates)


def apply_plan(analysis: Analysis, plan: PruningPlan) -> PruneResult:
    """Surgery for `plan` on the analysed model: the slim model with its counts before and after."""
    removed = plan.mask(analysis.graph_analysis)
    model = slim_model(analysis, removed, plan.updates)
    if getattr(analysis, "origin", None) is not None:
        model = _back_to_mxnet(analysis, removed, plan.updates, model)
    return PruneResult(model, plan, analysis.counts, analysis.cost.counts(removed), analysis)


def _back_to_mxnet(analysis, removed, updates, slim_onnx):
    """The plan applied to the MXNet model the graph was exported from (`spa_keras.formats.mxnet.surgery`), checked by an
    MXNet forward pass against the slim ONNX model: a slim Checkpoint, or a Gluon SymbolBlock for a block."""
    from spa_keras.bridges import mxnet_io, onnx_io
    from spa_keras.formats.mxnet.surgery import prune_mxnet
    from spa_keras.formats.onnx.surgery.surgery import analysis_batch
    from spa_keras.common.verify import compare

    kind, checkpoint = analysis.origin
    slim = prune_mxnet(checkpoint, channel_masks(analysis, removed), slim_onnx, updates)
    feeds = analysis_batch(analysis.graph_analysis.graph, onnx_io.input_specs(slim_onnx))
    compare(onnx_io.run(slim_onnx, feeds), mxnet_io.run(slim, feeds), source="slim ONNX",
            target="slim MXNet").require()
    return mxnet_io.to_block(slim) if kind == "gluon" else slim
