"""`analyze(model)` and `prune(model, ...)`: the public entry points of the SPA engine.

Example:

>>> import spa_keras as spa
>>> analysis = spa.analyze("model.onnx")                  # doctest: +SKIP
>>> analysis.print()                                      # doctest: +SKIP
>>> result = spa.prune("model.onnx", flops=0.5)           # doctest: +SKIP
>>> result.model, result.plan, result.report              # doctest: +SKIP
"""

import dataclasses
import os

from spa_keras.console import console
from spa_keras.cost import CostModel
from spa_keras.errors import InputError
from spa_keras.groups import analyze_graph
from spa_keras.plan import PruningPlan, make_plan


class Analysis:
    """Channel groups of a model, its barriers and counts; `print()` shows the table."""

    def __init__(self, graph_analysis, source="model"):
        self.graph_analysis = graph_analysis
        self.source = source
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
        from spa_keras.report import analysis_table

        return analysis_table(self.graph_analysis, self.cost, limit)

    def print(self, limit=None):
        from spa_keras.report import barrier_table

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
        from spa_keras.report import result_table

        return result_table(self.before, self.after, self.plan, self.analysis.graph_analysis)


def _load_onnx(model):
    import onnx

    from spa_keras.bridges import onnx_io

    if isinstance(model, onnx.ModelProto):
        return model, "ONNX model"
    if isinstance(model, (str, os.PathLike)):
        from spa_keras import files

        kind = files.model_kind(str(model))
        if kind != files.ONNX:
            raise InputError(f"{model}: the engine reads ONNX models here; convert first (spa convert {model} "
                             "model.onnx)")
        loaded = onnx_io.load(str(model))
        onnx_io.check(loaded, where=str(model))
        return loaded, str(model)
    raise InputError(f"cannot analyse a {type(model).__name__}: give an .onnx path or an onnx.ModelProto")


def _keras_model(model):
    """The keras.Model behind `model` (a keras.Model or a .keras/.h5 path), or None for other kinds."""
    if isinstance(model, (str, os.PathLike)):
        from spa_keras import files

        if files.model_kind(str(model)) in (files.KERAS, files.H5):
            from spa_keras.bridges import keras_io

            return keras_io.load(str(model))
        return None
    from spa_keras.convert import is_keras_model

    return model if is_keras_model(model) else None


def analyze(model, input_shape=None, via=None):
    """Analyse `model`: channel groups, barriers, counts.

    `model`: a keras.Model or .keras/.h5 file (Keras front-end; `via="onnx"` analyses its tf2onnx export instead),
    an .onnx path or onnx.ModelProto. `input_shape` ('1,3,224,224' or {name: shape}) fills free input dimensions
    other than the batch (ONNX); FLOP counts and FLOP targets need them.
    """
    from spa_keras.frontends.onnx import from_onnx
    from spa_keras.verify import parse_input_shape

    keras_model = _keras_model(model)
    if keras_model is not None:
        if via == "onnx":
            from spa_keras.bridges.keras_to_onnx import keras_to_onnx

            model = keras_to_onnx(keras_model, where=f"Keras model '{keras_model.name}'")
        else:
            from spa_keras.frontends.keras import from_keras

            return Analysis(analyze_graph(from_keras(keras_model)), f"Keras model '{keras_model.name}'")
    proto, name = _load_onnx(model)
    shapes = parse_input_shape(input_shape) if isinstance(input_shape, str) else (
        {None: tuple(input_shape)} if isinstance(input_shape, (tuple, list)) else input_shape)
    return Analysis(analyze_graph(from_onnx(proto, shapes)), name)


def prune(model, *, ratio=None, flops=None, params=None, plan=None, criterion="l1", global_ranking=True, round_to=1,
          ignore=(), max_per_group=0.9, input_shape=None, via=None, analysis=None):
    """Prune `model`; return a `PruneResult` (the slim model, the plan, counts before/after).

    A Keras model gives a keras.Model (same layer classes and names, trainable, saveable), or with `via="onnx"` an
    onnx.ModelProto; an ONNX model gives an onnx.ModelProto.

    Give one target (`ratio`, `flops` or `params`: fractions removed) or a `plan` (PruningPlan or JSON path).
    """
    from spa_keras.surgery.onnx import prune_onnx

    analysis = analysis or analyze(model, input_shape, via)
    ga = analysis.graph_analysis
    if plan is not None:
        if any(v is not None for v in (ratio, flops, params)):
            raise InputError("give either a plan or a target (ratio/flops/params), not both")
        plan = plan if isinstance(plan, PruningPlan) else PruningPlan.load(plan)
    else:
        if all(v is None for v in (ratio, flops, params)):
            raise InputError("give a target: ratio=, flops= or params= (fractions removed), or a plan")
        plan = make_plan(ga, ratio=ratio, flops=flops, params=params, criterion=criterion,
                         global_ranking=global_ranking, round_to=round_to, ignore=ignore, max_per_group=max_per_group)
    removed = plan.mask(ga)
    if ga.graph.layout == "NHWC":  # the Keras front-end: a native slim Keras model
        from spa_keras.surgery.keras import prune_keras

        slim = prune_keras(ga, removed)
    else:
        slim = prune_onnx(ga, removed)
    return PruneResult(slim, plan, analysis.counts, analysis.cost.counts(removed), analysis)
