"""`analyze(model)` and `prune(model, ...)`: the public entry points of the SPA engine.

Example:

>>> import spa_keras as spa
>>> analysis = spa.analyze("model.onnx")                  # doctest: +SKIP
>>> analysis.print()                                      # doctest: +SKIP
>>> result = spa.prune("model.onnx", flops=0.5)           # doctest: +SKIP
>>> result.model, result.plan, result.report              # doctest: +SKIP
"""

from spa_keras.pipeline.engine import Analysis, PruneResult, analyse, apply_plan, input_names, slim_model  # noqa: F401
from spa_keras.common.errors import InputError
from spa_keras.planning.plan import PruningPlan, make_plan


def analyze(model, input_shape=None, via=None, epoch=0, signature=None) -> Analysis:
    """Analyse `model`: channel groups, barriers, counts.

    `model`: a keras.Model or .keras/.h5 file (Keras front-end; `via="onnx"` analyses its tf2onnx export instead),
    an .onnx path or onnx.ModelProto, a SavedModel directory (`signature`, default serving_default), an MXNet prefix
    (`epoch`: which PREFIX-EPOCH.params) or a Gluon HybridBlock (both need `input_shape`). `input_shape`
    ('1,3,224,224' or {name: shape}, batch included) fills free input dimensions other than the batch; free
    dimensions not given count as 1 in FLOPs.
    """
    return analyse(model, input_shapes(input_shape), via, epoch, signature)


def input_shapes(input_shape):
    """{input name or None: shape} from '1,3,224,224' / 'a:1,8;b:1,8', a tuple, or such a dict."""
    from spa_keras.common.verify import parse_input_shape

    if input_shape is None or isinstance(input_shape, dict):
        return input_shape
    if isinstance(input_shape, str):
        return parse_input_shape(input_shape)
    return {None: tuple(int(d) for d in input_shape)}


def prune(model, *, ratio=None, flops=None, params=None, latency=None, plan=None, criterion="l1",
          global_ranking=True, round_to="auto", runtime=None, ignore=(), max_per_group=0.9, input_shape=None,
          via=None, analysis=None, data=None, loss=None, steps=1, epoch=0, signature=None):
    """Prune `model`; return a `PruneResult` (the slim model, the plan, counts before/after).

    A Keras model gives a keras.Model (same layer classes and names, trainable, saveable), or with `via="onnx"` an
    onnx.ModelProto; an ONNX model or a SavedModel directory (`signature`) gives an onnx.ModelProto; an MXNet prefix
    (`epoch`) or `mxnet_io.Checkpoint` gives a slim Checkpoint (`spa.convert(result.model, "slim-symbol.json")`
    writes it), a Gluon HybridBlock a trainable `gluon.SymbolBlock`; MXNet models need `input_shape`.

    Give one target (`ratio`, `flops` or `params`: fractions removed, of the original model) or a `plan`
    (PruningPlan or JSON path). `criterion`: a name or instance from `spa_keras.importance`; data-driven ones
    (taylor, snip, grasp, crop, obd) take `data` ((x, y) arrays, a tf.data.Dataset or a generator of batches) and
    `loss` (default: the model's compiled loss). `steps=N` prunes iteratively: N rounds of score, prune, rescore on
    the slimmer model, each reaching a further 1/N of the target; the result's plan applies to the original model.
    `round_to="auto"` keeps pruned layers at channel counts that `runtime` ("onnxruntime", "tflite", "tensorflow";
    None: any of them) runs fast on this CPU (multiples of 16 on x86, 8 on ARM; see `spa_keras.planning.runtimes`);
    `round_to=1` lets every channel count through, `round_to=N` keeps multiples of N.

    `latency=0.5` removes half of the latency measured on `runtime` on this machine (default: onnxruntime for ONNX
    models, tensorflow for Keras models), at the input shapes analysed and the batch size `input_shape` gives
    (default 1; `input_shape=(16, 224, 224, 3)` plans for batches of 16): see `spa_keras.latency.timing`.
    """
    from spa_keras.importance import Batches, get_criterion

    analysis = analysis or analyze(model, input_shape, via, epoch, signature)
    ga = analysis.graph_analysis
    steps = int(steps)
    if steps < 1:
        raise InputError(f"steps={steps}: at least 1")
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
            if sum(v is not None for v in targets) > 1 or steps > 1:
                raise InputError("latency= is a target of its own: give it without ratio/flops/params and steps")
            plan = _latency_plan(analysis, latency, options, batch=_batch_of(input_shapes(input_shape)))
        elif steps == 1:
            plan = make_plan(ga, ratio=ratio, flops=flops, params=params, **options)
        else:
            plan = _iterative_plan(analysis, ratio, flops, params, steps, analysis.input_shapes, **options)
    return apply_plan(analysis, plan)


def _latency_plan(analysis, latency, options, batch=1):
    """Measure and search (`spa_keras.latency.timing`): the criterion scores once; a per-layer latency table of the
    runtime (`spa_keras.latency.table`, measured once per machine) predicts the latency of any plan; rounds plan a
    predicted latency fraction without reconstruction (latency does not depend on weight values), and the whole
    slim model is timed to correct the prediction; the chosen plan gets the criterion's new weights. Everything is
    timed at `batch` (the analysis keeps shapes at batch 1)."""
    import warnings

    from spa_keras.common.console import say
    from spa_keras.planning.cost import CostModel
    from spa_keras.importance import get_criterion, score_groups
    from spa_keras.latency.timing import latency_plan, SpeedupMeter
    from spa_keras.latency.table import LatencyModel
    from spa_keras.planning.plan import _fraction

    ga = analysis.graph_analysis
    latency = _fraction("latency", latency)
    keras_source = hasattr(ga.graph.source, "layers")
    runtime = options.pop("runtime") or ("tensorflow" if keras_source else "onnxruntime")
    options["runtime"] = runtime
    criterion = get_criterion(options.pop("criterion"))
    scores = score_groups(criterion, ga, data=options.pop("data"), loss=options.pop("loss"))
    shapes = _batched(analysis.input_shapes, batch)
    speedup_of = SpeedupMeter(ga.graph.source, runtime, shapes)
    model = LatencyModel(ga, runtime, batch=batch, whole_seconds=speedup_of.base_seconds())
    flops = CostModel(ga)

    def plan_at(fraction):
        with warnings.catch_warnings():  # a landing off the predicted fraction is what the measured rounds correct
            warnings.simplefilter("ignore")
            plan = make_plan(ga, latency=fraction, latency_model=model, scores=scores, criterion=criterion,
                             reconstruct=False, **options)
        plan.target["flops_removed"] = round(1 - flops.counts(plan.mask(ga)).flops / flops.base.flops, 6)
        return plan

    measure = lambda p: speedup_of(slim_model(ga, p.mask(ga)))  # noqa: E731
    plan = latency_plan(latency, plan_at, measure, say=say, what=f" on {runtime}")
    plan.target["batch"] = batch  # the speed-ups recorded hold at this batch size
    if hasattr(criterion, "updates"):
        plan.updates = criterion.updates(ga, plan.mask(ga))
    return plan


def _batched(shapes, batch=1):
    """Input shapes at `batch` (free sizes as 1), for timing."""
    return {name: (batch, *(1 if d is None else int(d) for d in shape[1:])) for name, shape in shapes.items()}


def _batch_of(shapes) -> int:
    """The batch size given with the input shapes (`input_shape=(16, 224, 224, 3)`), else 1."""
    batches = {int(shape[0]) for shape in (shapes or {}).values() if shape and shape[0] is not None}
    if len(batches) > 1:
        raise InputError(f"input_shape gives different batch sizes ({', '.join(map(str, sorted(batches)))}); a "
                         "latency target times the model at one batch size")
    return batches.pop() if batches else 1


def _iterative_plan(analysis, ratio, flops, params, steps, input_shapes, **options):
    """Score, prune and rescore `steps` times; return one plan for the original model.

    Step k aims at k/steps of the target, counted on the original model: it removes from the current slim model
    what is still missing. Caps (`max_per_group`) stay relative to the original groups. The slim model keeps its
    layer and variable names, so the groups of each step are the original groups with fewer channels; the removed
    channels are tracked in original indices.
    """
    import math

    import numpy as np

    from spa_keras.planning.plan import prunable_channels

    (kind, amount), = [(k, v) for k, v in (("ratio", ratio), ("flops", flops), ("params", params)) if v is not None]
    amount = float(amount)
    ga0 = analysis.graph_analysis
    if options["loss"] is None:  # slim models are not compiled: keep the original's loss for every step
        options["loss"] = getattr(ga0.graph.source, "loss", None)
    original = {g.key: g.channels for g in ga0.groups}
    kept = {g.key: np.arange(g.channels) for g in ga0.groups}  # original indices still in the current model
    prunable = prunable_channels(ga0, options["ignore"])
    current, plan = analysis, None
    for step in range(1, steps + 1):
        goal = amount * step / steps
        ga = current.graph_analysis
        key_of = _original_keys(ga, kept)
        if kind == "ratio":
            gone = sum(original.values()) - sum(len(v) for v in kept.values())
            fraction = (goal * prunable - gone) / max(prunable - gone, 1)
        else:
            fraction = 1 - (1 - goal) * getattr(analysis.counts, kind) / max(getattr(current.counts, kind), 1)
        fraction = min(max(fraction, 0.0), 0.999)
        removable = {g.key: math.floor(options["max_per_group"] * original[key_of[g.key]]) -
                     (original[key_of[g.key]] - g.channels) for g in ga.groups}
        plan = make_plan(ga, **{kind: fraction}, removable=removable, **options)
        for key, idx in plan.removed.items():
            kept[key_of[key]] = np.delete(kept[key_of[key]], idx)
        if step < steps and plan.removed:
            slim = slim_model(ga, plan.mask(ga))  # its inputs may be named anew (Keras): the same shapes in order
            current = analyze(slim, dict(zip(input_names(slim), input_shapes.values())))
    removed = {key: np.setdiff1d(np.arange(n), kept[key]).tolist() for key, n in original.items()
               if len(kept[key]) < n}
    return PruningPlan(removed, original, dict(plan.target, amount=amount, steps=steps),
                       fingerprint=analysis.graph_analysis.fingerprint)


def _original_keys(ga, kept):
    """{current group key: original group key}. Keys are `param:axis@position`; the position of a group cut from
    a kernel by a Split moves as channels go, so groups of one `param:axis` pair up in position order."""
    from spa_keras.common.errors import SpaError

    def by_prefix(keys):
        out = {}
        for key in sorted(keys, key=lambda k: int(k.rsplit("@", 1)[1])):
            out.setdefault(key.rsplit("@", 1)[0], []).append(key)
        return out

    now, before = by_prefix(g.key for g in ga.groups), by_prefix(kept)
    channels = {g.key: g.channels for g in ga.groups}
    mapping = {}
    for prefix, keys in now.items():
        old = before.get(prefix, [])
        if len(old) != len(keys) or any(channels[k] != len(kept[o]) for k, o in zip(keys, old)):
            raise SpaError(f"iterative pruning: the slim model's groups of {prefix} do not match the original's; "
                           "prune in one step (steps=1)")
        mapping.update(zip(keys, old))
    return mapping
