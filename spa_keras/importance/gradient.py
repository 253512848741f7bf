"""Gradient criteria, computed in TensorFlow on the Keras model: Taylor, SNIP, GraSP, CroP and OBD.

Each criterion turns gradients of the loss on `data` into a saliency per weight (laid out like the Keras variable),
which the model's format adapter maps into the parameters' layout (`Source.params_of_variables`); it is summed over
each channel's slice; members are every trainable parameter of the group (kernels, biases, BatchNorm γ and β),
combined by AGG and NORM. The tensor work is `spa_keras.compute.gradients`.
With g the mean gradient and H the Hessian of the loss (model in inference mode):

- `taylor`: Σ_batches |w ⊙ g_b| / B (first-order Taylor per weight, after Molchanov et al. 2019, whose group form
  squares the summed product instead; here members' |w ⊙ g| are summed per channel);
- `snip`: |w ⊙ g| on one batch (Lee et al. 2019; meant for models at initialisation);
- `grasp`: w ⊙ Hg (Wang et al. 2020: keeps the weights whose removal would lower gradient flow; GraSP's score
  −w ⊙ Hg removes the largest, so its negative is our keep-score, signed);
- `crop`: |w ⊙ Hg| (CroP, Rachwan et al. 2022);
- `obd`: ½ diag(H) ⊙ w² (Optimal Brain Damage, LeCun et al. 1990), diag(H) by Hutchinson's estimator
  E[v ⊙ Hv] over Rademacher probes v: for each batch, `probes` probes, each drawing one ±1 array per trainable
  variable in `model.trainable_variables` order from `np.random.default_rng(seed)`.

Hessian-vector products use nested gradient tapes. Groups without a trainable member (frozen layers) fall back to
L1 magnitude. On an ONNX model these criteria raise `InputError`: they need the Keras model.

Example:

>>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)    # doctest: +SKIP
>>> spa.prune(model, flops=0.5, criterion="taylor", data=(x, y), loss=loss)  # doctest: +SKIP
>>> spa.prune(model, flops=0.5, criterion=Taylor(batches=4, batch_size=64, norm="max"), data=ds, loss=loss)
...                                                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.common.console import track
from spa_keras.common.errors import InputError, first_line
from spa_keras.importance.base import Criterion
from spa_keras.compute.data import Batches, as_numpy
from spa_keras.compute.gradients import hessian_vector_products, loss_gradients, resolve_loss
from spa_keras.importance.magnitude import L1
from spa_keras.importance.registry import register_criterion
from spa_keras.importance.scoring import slice_sums

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis, ChannelGroup, Member
    from spa_keras.compute.data import Batch
    from spa_keras.compute.gradients import Loss


class GradientCriterion(Criterion):
    """Base of the gradient criteria: `saliency(model, variables, batches, loss)` → one array per variable."""

    needs_data = True
    default_batches = 8

    def __init__(self, agg: str = "sum", norm: str = "mean", batches: int | None = None,
                 batch_size: int = 32) -> None:
        super().__init__(agg, norm)
        self.batches = self.default_batches if batches is None else int(batches)
        self.batch_size = int(batch_size)
        if self.batches < 1 or self.batch_size < 1:
            raise InputError(f"{type(self).__name__}: batches and batch_size must be at least 1")

    def saliency(self, model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
        raise NotImplementedError

    def prepare(self, analysis: Analysis, data: Any, loss: Any) -> dict[str, np.ndarray]:
        model = analysis.source.trainable_model(self.name)
        if data is None:
            raise InputError(f"criterion {self.name!r} needs data=: a tf.data.Dataset of (x, y) batches, arrays "
                             "(x, y) or a generator of (x, y) batches (and loss=, or a compiled model)")
        loss = resolve_loss(loss, model, self.name)
        batches = Batches.of(data).take(self.batches, self.batch_size)
        variables = list(model.trainable_variables)
        try:
            per_weight = self.saliency(model, variables, batches, loss)
        except InputError:
            raise
        except Exception as exc:  # TF's own message is long; its first line says what did not fit
            raise InputError(f"criterion {self.name!r}: running model '{model.name}' and loss= on data= failed: "
                             f"{first_line(exc)}. data must give batches (x, y) with x shaped like the model's "
                             "inputs (batch a tf.data.Dataset with .batch()) and y what the loss expects") from exc
        return analysis.source.params_of_variables({v.path: np.asarray(s, np.float64)
                                                     for v, s in zip(variables, per_weight)})

    def members(self, analysis: Analysis, group: ChannelGroup, saliency: dict[str, np.ndarray]) -> list[Member]:
        return [m for m in group.members if m.param in saliency]

    def member_scores(self, analysis: Analysis, member: Member, channels: int,
                      saliency: dict[str, np.ndarray]) -> np.ndarray:
        return slice_sums(saliency[member.param], member, channels)

    def group_scores(self, analysis: Analysis, group: ChannelGroup, saliency: dict[str, np.ndarray]) -> np.ndarray:
        if not self.members(analysis, group, saliency):
            return L1(agg=self.agg, norm=self.norm).group_scores(analysis, group, None)
        return super().group_scores(analysis, group, saliency)


def _weights(variables: list[Any]) -> list[np.ndarray]:
    return [as_numpy(v).astype(np.float64) for v in variables]


def _mean_gradient(model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
    total = [np.zeros(v.shape) for v in variables]
    for batch in track(batches, "gradients"):
        for t, g in zip(total, loss_gradients(model, variables, batch, loss)):
            t += as_numpy(g)
    return [t / len(batches) for t in total]


def _hessian_gradient(model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
    """Hg: g the mean gradient over `batches`, then the mean over batches of H_b·g."""
    g = _mean_gradient(model, variables, batches, loss)
    total = [np.zeros(v.shape) for v in variables]
    for batch in track(batches, "Hessian-gradient products"):
        for t, hg in zip(total, hessian_vector_products(model, variables, batch, loss, g)):
            t += as_numpy(hg)
    return [t / len(batches) for t in total]


@register_criterion("taylor")
class Taylor(GradientCriterion):
    """First-order Taylor: Σ_batches |w ⊙ g_b| / B."""

    def saliency(self, model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
        weights = _weights(variables)
        total = [np.zeros(v.shape) for v in variables]
        for batch in track(batches, f"{self.name}: gradients"):
            for t, w, g in zip(total, weights, loss_gradients(model, variables, batch, loss)):
                t += np.abs(w * as_numpy(g))
        return [t / len(batches) for t in total]


@register_criterion("snip")
class SNIP(Taylor):
    """Connection sensitivity |w ⊙ g| on one batch."""

    default_batches = 1


@register_criterion("grasp")
class GraSP(GradientCriterion):
    """w ⊙ Hg (signed): higher keeps."""

    default_batches = 4

    def saliency(self, model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
        return [w * hg for w, hg in zip(_weights(variables), _hessian_gradient(model, variables, batches, loss))]


@register_criterion("crop")
class CroP(GradientCriterion):
    """|w ⊙ Hg|."""

    default_batches = 4

    def saliency(self, model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
        return [np.abs(w * hg) for w, hg in zip(_weights(variables),
                                                _hessian_gradient(model, variables, batches, loss))]


@register_criterion("obd")
class OBD(GradientCriterion):
    """½ diag(H) ⊙ w², diag(H) ≈ mean of v ⊙ Hv over `probes` Rademacher probes per batch."""

    default_batches = 2

    def __init__(self, agg: str = "sum", norm: str = "mean", batches: int | None = None, batch_size: int = 32,
                 probes: int = 4, seed: int = 0) -> None:
        super().__init__(agg, norm, batches, batch_size)
        self.probes = int(probes)
        self.seed = seed
        if self.probes < 1:
            raise InputError("OBD: probes must be at least 1")

    def saliency(self, model: Any, variables: list[Any], batches: list[Batch], loss: Loss) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        diagonal = [np.zeros(v.shape) for v in variables]
        for batch in track(batches, f"OBD: {self.probes} Hessian probes per batch"):
            for _ in range(self.probes):
                probes = [rng.integers(0, 2, size=tuple(v.shape)) * 2.0 - 1.0 for v in variables]
                for d, v, hv in zip(diagonal, probes, hessian_vector_products(model, variables, batch, loss, probes)):
                    d += v * as_numpy(hv)
        samples = len(batches) * self.probes
        return [0.5 * (d / samples) * w * w for d, w in zip(diagonal, _weights(variables))]
