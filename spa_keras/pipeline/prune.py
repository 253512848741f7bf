"""`analyze(model)` and `prune(model, ...)`: the public entry points of the SPA engine.

A model goes down the stages once: its format adapter loads it and describes it (`spa_keras.formats`), the graph is
analysed into channel groups (`spa_keras.analysis`), a plan meets the target (`spa_keras.planning`, or the measured
search of `spa_keras.latency` for latency targets), and the adapter's surgery applies the plan.

Example:

>>> import spa_keras as spa
>>> analysis = spa.analyze("model.onnx")                  # doctest: +SKIP
>>> analysis.print()                                      # doctest: +SKIP
>>> result = spa.prune("model.onnx", flops=0.5)           # doctest: +SKIP
>>> result.model, result.plan, result.report              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from spa_keras import formats
from spa_keras.analysis.groups import Analysis, analyze_graph
from spa_keras.common.errors import InputError
from spa_keras.common.tensors import parse_input_shape
from spa_keras.pipeline.result import PruneResult
from spa_keras.planning.plan import PruningPlan
from spa_keras.planning.selection import make_plan


def analyze(model: Any, input_shape: Any = None, via: str | None = None, epoch: int = 0,
            signature: str | None = None) -> Analysis:
    """Analyse `model`: channel groups, barriers, counts.

    `model`: a keras.Model or .keras/.h5 file (Keras front-end; `via="onnx"` analyses its tf2onnx export instead),
    an .onnx path or onnx.ModelProto, a SavedModel directory (`signature`, default serving_default), an MXNet prefix
    (`epoch`: which PREFIX-EPOCH.params) or a Gluon HybridBlock (both need `input_shape`). `input_shape`
    ('1,3,224,224' or {name: shape}, batch included) fills free input dimensions other than the batch; free
    dimensions not given count as 1 in FLOPs.
    """
    source = formats.load(model, input_shapes=input_shapes(input_shape), via=via, epoch=epoch, signature=signature)
    return analyze_graph(source.graph)


def input_shapes(input_shape: Any) -> dict | None:
    """{input name or None: shape} from '1,3,224,224' / 'a:1,8;b:1,8', a tuple, or such a dict."""
    if input_shape is None or isinstance(input_shape, dict):
        return input_shape
    if isinstance(input_shape, str):
        return parse_input_shape(input_shape)
    return {None: tuple(int(d) for d in input_shape)}


def apply_plan(analysis: Analysis, plan: PruningPlan) -> PruneResult:
    """Surgery for `plan` on the analysed model: the slim model with its counts before and after."""
    removed = plan.mask(analysis)
    model = analysis.source.slim(analysis, removed, plan.updates)
    return PruneResult(model, plan, analysis.counts, analysis.cost.counts(removed), analysis)


def prune(model, *, ratio=None, flops=None, params=None, latency=None, plan=None, criterion=None,
          global_ranking=True, round_to="auto", runtime=None, ignore=(), max_per_group=0.9, input_shape=None,
          via=None, analysis=None, data=None, loss=None, steps=1, epoch=0, signature=None) -> PruneResult:
    """Prune `model`; return a `PruneResult` (the slim model, the plan, counts before/after).

    A Keras model gives a keras.Model (same layer classes and names, trainable, saveable), or with `via="onnx"` an
    onnx.ModelProto; an ONNX model or a SavedModel directory (`signature`) gives an onnx.ModelProto; an MXNet prefix
    (`epoch`) or `mxnet_io.Checkpoint` gives a slim Checkpoint (`spa.convert(result.model, "slim-symbol.json")`
    writes it), a Gluon HybridBlock a trainable `gluon.SymbolBlock`; MXNet models need `input_shape`.

    Give one target (`ratio`, `flops` or `params`: fractions removed, of the original model) or a `plan`
    (PruningPlan or JSON path). `criterion`: a name or instance from `spa_keras.importance`; data-driven ones
    (taylor, snip, grasp, crop, obd) take `data` ((x, y) arrays, a tf.data.Dataset or a generator of batches) and
    `loss` (default: the model's compiled loss). The default (None) is OBSPA, data-free: a trained model pruned
    with no fine-tuning stays usable, at the price of seconds to a minute of computation; `criterion="l1"` is the
    fast weight-magnitude ranking for models that will be fine-tuned (`spa_keras.importance.default_criterion`
    says when the default is L1: `steps` > 1, inputs that are not floating point). `steps=N` prunes iteratively: N
    rounds of score, prune, rescore on the slimmer model, each reaching a further 1/N of the target; the result's
    plan applies to the original model.
    `round_to="auto"` keeps pruned layers at channel counts that `runtime` ("onnxruntime", "tflite", "tensorflow";
    None: any of them) runs fast on this CPU (multiples of 16 on x86, 8 on ARM; see `spa_keras.planning.runtimes`);
    `round_to=1` lets every channel count through, `round_to=N` keeps multiples of N.

    `latency=0.5` removes half of the latency measured on `runtime` on this machine (default: onnxruntime for ONNX
    models, tensorflow for Keras models), at the input shapes analysed and the batch size `input_shape` gives
    (default 1; `input_shape=(16, 224, 224, 3)` plans for batches of 16): see `spa_keras.latency.target`.
    """
    from spa_keras.importance import Batches, default_criterion, get_criterion

    analysis = analysis or analyze(model, input_shape, via, epoch, signature)
    steps = int(steps)
    if steps < 1:
        raise InputError(f"steps={steps}: at least 1")
    if criterion is None:
        criterion = default_criterion(analysis, steps)
    targets = (ratio, flops, params, latency)
    if plan is not None:
        if any(v is not None for v in targets):
            raise InputError("give either a plan or a target (ratio/flops/params/latency), not both")
        if steps > 1:
            raise InputError("steps= prunes towards a target; a given plan is applied in one step")
        plan = plan if isinstance(plan, PruningPlan) else PruningPlan.load(plan)
    else:
        if all(v is None for v in targets):
            raise InputError("give a target: ratio=, flops=, params= or latency= (fractions removed), or a plan")
        data = None if data is None else Batches.of(data)  # a generator is read once, for every step
        if steps > 1 and hasattr(get_criterion(criterion), "updates"):
            raise InputError("steps= rescores between steps, but a criterion that rewrites kept weights (obspa) "
                             "prunes in one step: give steps=1")
        options = dict(criterion=criterion, global_ranking=global_ranking, round_to=round_to, runtime=runtime,
                       ignore=ignore, max_per_group=max_per_group, data=data, loss=loss)
        if latency is not None:
            from spa_keras.latency.target import batch_of, latency_target_plan

            if sum(v is not None for v in targets) > 1 or steps > 1:
                raise InputError("latency= is a target of its own: give it without ratio/flops/params and steps")
            plan = latency_target_plan(analysis, latency, options, batch=batch_of(input_shapes(input_shape)))
        elif steps == 1:
            plan = make_plan(analysis, ratio=ratio, flops=flops, params=params, **options)
        else:
            from spa_keras.pipeline.iterative import iterative_plan

            plan = iterative_plan(analysis, ratio, flops, params, steps, **options)
    return apply_plan(analysis, plan)
