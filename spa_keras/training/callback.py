"""`SPACallback`: structured pruning inside `model.fit`, with a physically smaller Keras model at the end.

Keras builds its train function before `on_train_begin` and trains the same model object for the whole `fit`, so
the callback cannot swap in a smaller model mid-fit. It masks instead: the channels it removes are zeroed in every
member variable (kernels, biases, BatchNorm parameters and statistics, the consumers' columns) and in the
optimizer's slots, after every training step, so they stay zero and momentum cannot bring them back. When `fit`
ends, `callback.result` holds what `spa.prune` returns: `.model` is the slim model (same layer names and classes,
the trained values of the kept channels, compiled like the original), with `.plan`, `.before` and `.after`.

When to prune (`when=`):

- `"before"`: at the start of training, on the initial weights; the masks then stay fixed for the whole `fit`.
  Data-driven criteria (SNIP, GraSP, CroP, Taylor) score on the first batches `fit` trains on (arrays and
  tf.data datasets; give `data=` for a Python generator). To make training itself cheaper, prune first and train the
  slim model instead: `slim = spa.prune(model, flops=0.5, criterion="snip", data=(x, y)).model`, then `slim.fit`.
- `"during"` (default): gradual pruning along a schedule (`spa_keras.training.schedules`, default: `PolynomialDecay`
  over the first half of training, 20 pruning steps); at each pruning step the criterion rescores the current weights
  and the masks grow.
- `"after"`: at the end of training; `callback.result.model` is then ready for a second `fit` to fine-tune.

Example:

>>> callback = SPACallback(flops=0.5)                               # doctest: +SKIP
>>> model.fit(x, y, epochs=5, callbacks=[callback])                 # doctest: +SKIP
>>> slim = callback.result.model                                    # doctest: +SKIP
"""

from __future__ import annotations

import warnings

import numpy as np

from spa_keras.common.errors import InputError
from spa_keras.importance.registry import TRAINING_CRITERION
from spa_keras.training.schedules import PolynomialDecay, Schedule
from spa_keras.planning.selection import compile_ignore

try:  # the base class is Keras's own; spa_keras imports without Keras too
    import keras

    _Callback = keras.callbacks.Callback
except ImportError:  # pragma: no cover
    _Callback = object

WHEN = ("before", "during", "after")
# the default schedule prunes in this many steps over the first half of training
DEFAULT_PRUNING_STEPS = 20
# training batches a data-driven criterion (SNIP, Taylor, ...) scores on when no data= is given
FIT_BATCHES = 8


class SPACallback(_Callback):
    """Prune a Keras model while `fit` trains it.

    Args:
        ratio, flops, params: the target, one of them: a fraction removed (of prunable channels, FLOPs or
            parameters), as in `spa.prune`.
        criterion: a criterion name or instance (`spa_keras.importance`); data-driven ones need `data`. The default
            is L1 (`spa_keras.importance.TRAINING_CRITERION`): training recovers what pruning loses, and the
            pruning steps rescore the weights as they train (`spa.prune`'s default, OBSPA, is for models pruned
            with no training to follow).
        when: "before", "during" or "after" training (see the module docstring).
        schedule: for "during", a `spa_keras.training.schedules.Schedule` (its final fraction is the target).
        global_ranking, round_to, runtime, ignore, max_per_group: as in `spa.prune`.
        data, loss: batches for data-driven criteria (arrays (x, y), a tf.data.Dataset, a generator) and their
            loss (default: the model's compiled loss).
        input_shape: fills free input dimensions for the FLOP counts, as in `spa.analyze`.
    """

    def __init__(self, *, ratio=None, flops=None, params=None, criterion=TRAINING_CRITERION, when="during",
                 schedule=None, global_ranking=True, round_to="auto", runtime=None, ignore=(), max_per_group=0.9,
                 data=None, loss=None, input_shape=None):
        super().__init__()
        targets = {k: v for k, v in (("ratio", ratio), ("flops", flops), ("params", params)) if v is not None}
        if len(targets) != 1:
            raise InputError("SPACallback: give exactly one target: ratio=, flops= or params= (a fraction removed)")
        (self.kind, amount), = targets.items()
        if not 0 <= float(amount) < 1:
            raise InputError(f"SPACallback: {self.kind}={amount}: a fraction removed, in [0, 1)")
        self.amount = float(amount)
        if when not in WHEN:
            raise InputError(f"SPACallback: when={when!r}: one of {', '.join(WHEN)}")
        if schedule is not None and when != "during":
            raise InputError(f"SPACallback: a schedule applies to when='during', not when={when!r}")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise InputError(f"SPACallback: schedule={schedule!r}: give a spa_keras.training.schedules.Schedule "
                             "(ConstantSparsity, PolynomialDecay)")
        self.when = when
        self.schedule = None if schedule is None else schedule.resolved(self.amount)
        self.criterion, self.data, self.loss, self.input_shape = criterion, data, loss, input_shape
        compile_ignore(ignore)  # a bad regular expression fails here, not after an epoch of training
        self.options = dict(global_ranking=global_ranking, round_to=round_to, runtime=runtime, ignore=ignore,
                            max_per_group=max_per_group)
        self.result = None

    # ---- Keras's hooks ----------------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        from spa_keras.pipeline.prune import analyze

        self.result = None
        self._analysis = analyze(self.model, self.input_shape)
        ga = self._analysis
        if not any(g.prunable for g in ga.groups):
            blocked = "; ".join(sorted({r for g in ga.groups for r in g.reasons}))[:300]
            raise InputError(f"SPACallback: nothing in model '{self.model.name}' can be pruned ({blocked})")
        self._removed = np.zeros(len(ga.group_of_channel), bool)
        self._masks: list = []
        self._step = 0
        self._epoch = 0
        self._synced = False
        self._schedule = self.schedule or (self._default_schedule() if self.when == "during" else None)
        self._counts = self._analysis.counts

    def on_epoch_begin(self, epoch, logs=None):
        if self._synced:
            return
        # after every on_train_begin: keras.callbacks.BackupAndRestore has put back the weights and the optimizer
        # of an interrupted run by now, and with them the masks (channels whose every member is exactly zero) and
        # the schedule's position (the optimizer's step count)
        self._synced = True
        self._epoch = epoch
        optimizer = getattr(self.model, "optimizer", None)
        resumed = epoch > 0 and optimizer is not None  # a fresh fit starts its schedule at 0 whatever came before
        self._step = int(optimizer.iterations.numpy()) if resumed else 0
        self._adopt(self._zero_channels())
        if self.when == "before":
            self._prune_to(self.amount)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._prunes_now("step", self._step):
            self._prune_to(self._schedule.fraction(self._step))
        self._zero()
        self._log(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        if self._prunes_now("epoch", self._epoch):
            self._prune_to(self._schedule.fraction(self._epoch))
            self._zero()
        self._log(logs)

    def on_train_end(self, logs=None):
        from spa_keras.pipeline.prune import apply_plan

        if self.when == "during" and self._removed_fraction() < self.amount - 0.005:
            warnings.warn(f"SPACallback: training ended before the schedule reached {self.kind}={self.amount:g} "
                          f"({self._removed_fraction():.1%} removed); the rest is removed now, untrained",
                          stacklevel=2)
        if self.when != "before":
            self._prune_to(self.amount)
            self._zero()
        if abs(self._removed_fraction() - self.amount) > 0.02:
            warnings.warn(f"SPACallback: {self.kind}={self.amount:g}: the slim model has {self._removed_fraction():.1%} "
                          "removed (the channels removed along the way and the model's coarse groups allow no closer "
                          "layout)", stacklevel=2)
        self.result = apply_plan(self._analysis, self._plan())

    # ---- pruning ------------------------------------------------------------------------------------------------

    def _default_schedule(self):
        """From nothing to the target over the first half of training, in about `DEFAULT_PRUNING_STEPS` steps (by
        epochs when the steps per epoch are unknown, as for a dataset of unknown length)."""
        steps, epochs = (self.params or {}).get("steps"), int((self.params or {}).get("epochs") or 1)
        if not steps:
            return PolynomialDecay(0.0, self.amount, begin_step=0, end_step=max(1, epochs // 2), frequency=1,
                                   unit="epoch")
        end = max(1, int(steps) * epochs // 2)
        return PolynomialDecay(0.0, self.amount, begin_step=0, end_step=end,
                               frequency=max(1, end // DEFAULT_PRUNING_STEPS))

    def _prunes_now(self, unit, position):
        schedule = self._schedule
        return schedule is not None and schedule.unit == unit and schedule.prunes_at(position)

    def _prune_to(self, fraction):
        """Rescore the current weights and grow the removed set until `fraction` of the target kind is gone."""
        from spa_keras.importance import score_groups
        from spa_keras.planning.selection import make_plan

        ga = self._analysis
        if fraction <= 0:
            return
        for param in ga.graph.params.values():  # score the weights as trained so far, not as they were first read
            getattr(param, "forget", lambda: None)()
        scores = score_groups(self.criterion, ga, data=self._data(), loss=self.loss or getattr(self.model, "loss",
                                                                                                None))
        with warnings.catch_warnings():  # a step that lands off its fraction is no news; the end result is said
            warnings.simplefilter("ignore", UserWarning)
            plan = make_plan(ga, **{self.kind: min(fraction, self.amount)}, scores=scores, removed=self._removed,
                             **self.options)  # the masks only grow
        self._adopt(self._removed | plan.mask(ga))

    def _data(self):
        """`data=`, or for a data-driven criterion the batches `fit` trains on (read afresh from its data adapter,
        so training is not disturbed)."""
        from spa_keras.importance import get_criterion

        if self.data is not None or not getattr(get_criterion(self.criterion), "needs_data", False):
            return self.data
        batches = _fit_batches(FIT_BATCHES)
        if not batches:
            raise InputError(f"SPACallback: criterion {self.criterion!r} needs training batches, and the ones fit "
                             "reads cannot be read twice (a Python generator?): give SPACallback(..., data=(x, y))")
        return batches

    def _zero_channels(self):
        """Channels whose every member slice is exactly zero: removed by an earlier (interrupted) run."""
        from spa_keras.importance.scoring import slice_sums

        ga = self._analysis
        removed = np.zeros(ga.channels, bool)
        for group, offset in zip(ga.groups, ga.offsets):
            zero = ~group.blocked
            for member in group.members:
                param = ga.graph.params[member.param]
                getattr(param, "forget", lambda: None)()  # the weights as they are now
                zero &= slice_sums(np.abs(np.asarray(param.value, np.float64)), member, group.channels) == 0
            removed[offset:offset + group.channels] = zero
        return removed

    def _adopt(self, removed):
        if (removed != self._removed).any():
            self._removed = removed
            self._masks = self._variable_masks()
            self._counts = self._analysis.cost.counts(removed)

    def _variable_masks(self):
        """(variable, [(axis, keep as a broadcastable 0/1 tensor)]) for every model and optimizer variable that
        loses positions."""
        import tensorflow as tf

        ga = self._analysis
        slots = _optimizer_slots(self.model)
        out = []
        for variable, axes in ga.source.variable_masks(ga, self._removed):
            factors = []
            for axis, keep in axes.items():
                shape = [1] * len(variable.shape)
                shape[axis] = -1
                factors.append(tf.constant(np.asarray(keep, np.float32).reshape(shape), variable.dtype))
            for target in [variable] + slots.get(variable.path, []):
                out.append((target, factors))
        return out

    def _zero(self):
        """Removed positions back to zero after the optimizer step (weights and the optimizer's slots)."""
        for variable, factors in self._masks:
            value = variable.value if hasattr(variable, "value") else variable
            for factor in factors:
                value = value * factor
            variable.assign(value)

    def _removed_fraction(self):
        base = getattr(self._analysis.counts, self.kind, None) if self.kind != "ratio" else None
        if self.kind == "ratio":
            from spa_keras.planning.selection import prunable_channels

            return float(self._removed.sum()) / max(prunable_channels(self._analysis, self.options["ignore"]), 1)
        return 1 - getattr(self._counts, self.kind) / base if base else 0.0

    def _log(self, logs):
        if logs is None:
            return
        logs["spa_flops"] = float(self._counts.flops)
        logs["spa_params"] = float(self._counts.params)
        logs["spa_sparsity"] = self._removed_fraction()

    def _plan(self):
        from spa_keras.importance.registry import criterion_name
        from spa_keras.planning.plan import PruningPlan
        from spa_keras.planning.target import Target

        ga = self._analysis
        removed = ga.removed_per_group(self._removed)
        ignore = self.options["ignore"]
        target = Target(self.kind, self.amount, round(self._removed_fraction(), 6), criterion_name(self.criterion),
                        when=self.when, schedule=None if self._schedule is None else repr(self._schedule),
                        **{**self.options, "ignore": [ignore] if isinstance(ignore, str) else list(ignore)})
        return PruningPlan(removed, {g.key: g.channels for g in ga.groups}, target, fingerprint=ga.fingerprint)


def _fit_batches(count):
    """Up to `count` (x, y) batches of the data the running `fit` trains on, from a fresh pass of its data adapter
    (arrays and tf.data datasets; None for data that cannot be read twice)."""
    import inspect

    frame = inspect.currentframe()
    adapter = None
    while frame is not None and adapter is None:
        iterator = frame.f_locals.get("epoch_iterator")
        adapter = getattr(iterator, "data_adapter", None)
        frame = frame.f_back
    del frame
    if type(adapter).__name__ not in ("ArrayDataAdapter", "TFDatasetAdapter"):
        return None
    batches = []
    for element in adapter.get_numpy_iterator():
        if isinstance(element, (tuple, list)) and len(element) >= 2:
            batches.append((element[0], element[1]))
        if len(batches) == count:
            break
    return batches


def _optimizer_slots(model):
    """{variable path: the optimizer's slot variables for it (momentum, velocity, ...)}."""
    optimizer = getattr(model, "optimizer", None)
    out: dict[str, list] = {}
    if optimizer is None:
        return out
    by_name = [(v.name, v) for v in optimizer.variables]
    for variable in model.trainable_variables:
        prefix = variable.path.replace("/", "_") + "_"
        out[variable.path] = [v for name, v in by_name if name.startswith(prefix) and tuple(v.shape) ==
                              tuple(variable.shape)]
    return out
