"""`OBSPA`: Optimal Brain SPA, the criterion that prunes a trained model without fine-tuning (its machinery is
`spa_keras.obspa`).

It scores every channel by the exact layer-wise OBS error of removing it from each consumer (the layers that read
it), relative to that layer's output energy so that layers compare, summed over the group's consumers (AGG) with
no further normalisation by default (NORM 'none': the relative errors already compare globally). After the plan is
chosen, `updates` refits the kept weights of every consumer, in graph order, on inputs from the already-pruned
network: the plan carries those new values and every surgery writes them.

Example:

>>> import spa_keras as spa
>>> result = spa.prune(model, flops=0.5, criterion="obspa")                              # doctest: +SKIP
>>> result = spa.prune(model, flops=0.5, criterion=spa.importance.OBSPA(calibration=x))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.common.errors import InputError
from spa_keras.importance.base import Criterion
from spa_keras.importance.registry import register_criterion
from spa_keras.obspa.consumers import Consumer, find_consumers
from spa_keras.obspa.hessians import SAMPLES, BatchNormInputs, Calibration, InputProvider, get_provider, work_for
from spa_keras.compute.obs import block_errors, removal_path
from spa_keras.obspa.diagnostics import Diagnostics
from spa_keras.obspa.reconstruct import measure_hessians, reconstruct

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, ChannelGroup


@dataclasses.dataclass
class _Scored:
    analysis: Analysis
    consumers: list[Consumer]
    skipped: list[str]
    batches: list[Any]
    errors: np.ndarray  # per global channel: Σ over consumers of ΔE / E
    covered: np.ndarray  # per global channel: read by at least one consumer
    costs: dict[str, tuple[np.ndarray, np.ndarray]]  # per consumer key: (channel ids, their ΔE / E)

    def predicted(self, removed: np.ndarray) -> dict[str, float]:
        """Per consumer key: the relative error its removed channels were scored at."""
        return {weight: float(cost[removed[ids]].sum()) for weight, (ids, cost) in self.costs.items()}


# real inputs cost no optimisation: more of them by default than made-up ones
CALIBRATION_SAMPLES = 128
# the ridge of the Hessians: made-up inputs are trusted less than real ones (the refit stays nearer the original
# weights). Data-free, ten zoo cells (five nets at -30/-50% FLOPs): mean accuracy 83.9% with 0.01, 85.4% with 0.05,
# 85.1% with 0.2 (ConvNeXt at -50%: 69.0 / 75.7 / 75.9%; MobileNetV3-style at -30%: 80.4 / 79.1 / 77.0%)
CALIBRATION_DAMPING, SYNTHETIC_DAMPING = 0.01, 0.05


@register_criterion("obspa")
class OBSPA(Criterion):
    """Layer-wise OBS scores of channel groups and the OBS reconstruction of the kept weights.

    Args:
        hessian: where the layer Hessians come from without data: 'batchnorm' (inputs that reproduce the
            network's BatchNorm statistics; Keras models), 'gaussian' (noise) or 'identity' (no compensation).
        calibration: real inputs instead (arrays, a tf.data.Dataset or a generator of batches; labels unused).
        samples: how many inputs the Hessians are measured on (None: 128 of `calibration=`, 64 made-up ones, fewer
            for very large models, see `spa_keras.obspa.hessians.default_work`). A Keras model runs them all at
            once through itself and its pruned copy: fewer are taken, with a warning, when their live activations
            would not fit in about 2 GB.
        batch_size: inputs per forward pass (None: as many as fit in about 1 GB of activations).
        damping: λ in H + λ·mean(diag H)·I, the ridge that pulls the refit towards the original weights (None:
            `CALIBRATION_DAMPING` with `calibration=` data, `SYNTHETIC_DAMPING` with made-up inputs).
        steps: optimisation steps of the 'batchnorm' inputs (None: 200, fewer for very large models).
        budget: None (the default): the 'batchnorm' inputs get all their steps, so the result is the same on every
            machine. Seconds: an explicit limit (fewer steps on large models, said in a warning).
        recalibrate: after the refit, BatchNorm statistics of a Keras model 'correct'ed for what pruning changed,
            'reestimate'd on the inputs, or left alone (None).
        agg, norm: how consumers combine and groups rescale (see `spa_keras.importance.scoring`).
        seed: of the made-up inputs.
    """

    def __init__(self, hessian: str | InputProvider = "batchnorm", calibration: Any = None,
                 samples: int | None = None, batch_size: int | None = None, damping: float | None = None,
                 steps: int | None = None, budget: float | None = None,
                 recalibrate: str | None = "reestimate", agg: str = "sum", norm: str = "mean", seed: int = 0,
                 rounds: int = 16) -> None:
        super().__init__(agg=agg, norm=norm)
        if recalibrate not in (None, "correct", "reestimate"):
            raise InputError(f"recalibrate={recalibrate!r}: 'correct', 'reestimate' or None")
        self.recalibrate = recalibrate
        self.hessian = hessian if calibration is None else "calibration"
        self.samples, self.batch_size, self.seed = samples, batch_size, seed
        if damping is None:
            damping = CALIBRATION_DAMPING if calibration is not None else SYNTHETIC_DAMPING
        self.damping = float(damping)
        self.steps, self.budget, self.rounds = steps, budget, int(rounds)
        self._calibration = calibration
        self._scored: _Scored | None = None
        self._diagnostics = Diagnostics()

    def _provider(self, analysis: Analysis) -> InputProvider:
        if self._calibration is not None:
            samples = self._fitting(analysis, CALIBRATION_SAMPLES if self.samples is None else self.samples)
            return Calibration(self._calibration, samples, self.batch_size, self.seed)
        if isinstance(self.hessian, InputProvider):  # a provider made by the caller, with its own options
            return self.hessian
        hessian = str(self.hessian).lower()
        if hessian == "batchnorm" and not analysis.source.activations().optimises_inputs:
            warnings.warn(f"OBSPA on {analysis.source.name} without calibration= data: inputs cannot be optimised "
                          f"through {analysis.source.framework}, so the Hessians are the identity (relative weight "
                          "magnitudes, no reconstruction); give calibration= inputs (any images of the kind the "
                          "model reads) to reconstruct the kept weights", stacklevel=4)
            hessian = "identity"
        if hessian == "batchnorm":
            samples, steps = work_for(analysis, self.samples, self.steps)
            return BatchNormInputs(self._fitting(analysis, samples), self.batch_size, self.seed, steps,
                                   budget=self.budget)
        samples = self._fitting(analysis, SAMPLES if self.samples is None else self.samples)
        return get_provider(hessian, samples=samples, batch_size=self.batch_size, seed=self.seed)

    def _fitting(self, analysis: Analysis, samples: int) -> int:
        """`samples`, or fewer when a one-pass model's pruned copy could not hold their activations at once."""
        if not analysis.source.activations().one_pass:
            return samples
        from spa_keras.obspa.hessians import BATCH_BYTES, live_floats

        cap = max(1, int(2 * BATCH_BYTES // (4 * 2 * max(live_floats(analysis), 1))))  # two networks' live tensors
        if samples > cap:
            warnings.warn(f"OBSPA: {cap} samples instead of {samples}: the reconstruction runs them at once "
                          "and more would not fit in memory", stacklevel=4)
        return min(samples, cap)

    def prepare(self, analysis: Analysis, data: Any, loss: Any) -> _Scored:
        provider = self._provider(analysis)
        backend = analysis.source.activations()
        consumers, skipped = find_consumers(analysis, backend)
        batches = provider.batches(analysis) if provider.needs_inputs and consumers else []
        measured = (measure_hessians(backend, consumers, batches, self.damping) if batches else
                    ((c, np.eye(c.matrix.shape[1])) for c in consumers))
        n = len(analysis.group_of_channel)
        errors, covered = np.zeros(n), np.zeros(n, bool)
        costs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for consumer, h in measured:
            ids = np.unique(consumer.columns[consumer.columns >= 0])
            blocks = [np.flatnonzero(consumer.columns == i) for i in ids]
            w = consumer.matrix.astype(np.float64)
            energy = max(float(np.sum((w @ h) * w)), 1e-30)  # tr(W H Wᵀ)
            cost = (removal_path(w, h, blocks, self.rounds) if self.rounds else block_errors(w, h, blocks)) / energy
            np.add.at(errors, ids, cost)
            covered[ids] = True
            costs[consumer.key] = (ids, cost)
        self._scored = _Scored(analysis, consumers, skipped, batches, errors, covered, costs)
        return self._scored

    def group_scores(self, analysis: Analysis, group: ChannelGroup, scored: _Scored) -> np.ndarray:
        ids = np.flatnonzero(analysis.group_of_channel == group.id)
        ids = ids[np.argsort(analysis.index_in_group[ids])]
        if scored.covered[ids].any():
            return scored.errors[ids]
        return self._relative_magnitude(analysis, group)

    def _relative_magnitude(self, analysis: Analysis, group: ChannelGroup) -> np.ndarray:
        """No consumer measured (the group's readers are depthwise or not covered): Σ over its weights of
        ‖w_c‖² / ‖W‖², the identity-Hessian error."""
        from spa_keras.importance.scoring import slice_sums

        total = np.zeros(group.channels)
        for member in self.members(analysis, group, None):
            value = np.asarray(analysis.graph.params[member.param].value, np.float64)
            total += slice_sums(value ** 2, member, group.channels) / max(float(np.sum(value ** 2)), 1e-30)
        return total

    def updates(self, analysis: Analysis, removed: np.ndarray) -> dict[str, np.ndarray]:
        """New values of the consumers' kept weights for the channels `removed` (after scoring `analysis`)."""
        scored = self._scored
        if scored is None or scored.analysis is not analysis:
            scored = self.prepare(analysis, None, None)
        self._diagnostics = Diagnostics()
        updates = reconstruct(scored.analysis, scored.consumers, removed, scored.batches, self.damping,
                              self.recalibrate, scored.predicted(removed), self._diagnostics)
        collapsed = self._diagnostics.collapsed
        if collapsed:
            names = ", ".join(f"{c.name} ({c.measured:.0%} of its output lost, {c.removed}/{c.channels} channels "
                              "removed)" for c in collapsed[:3])
            warnings.warn(f"OBSPA could not reconstruct {len(collapsed)} layer(s): {names}; prune less there "
                          "(ignore=, max_per_group=) or give calibration= data", stacklevel=3)
        return updates

    @property
    def diagnostics(self) -> Diagnostics:
        """What the last reconstruction did, layer by layer (`print(criterion.diagnostics)` shows a table)."""
        return self._diagnostics

    @property
    def skipped(self) -> list[str]:
        """The linear layers whose weights OBSPA leaves as they are, and why (after scoring)."""
        return [] if self._scored is None else list(self._scored.skipped)
