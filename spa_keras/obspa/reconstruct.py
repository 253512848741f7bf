"""OBSPA's two passes over the network: Hessians on the original for the scores, then the sequential refit.

`measure_hessians` runs the original model once over the provider's batches and accumulates every consumer's E[x xᵀ]
(in chunks of consumers whose Hessians fit `HESSIAN_BYTES`). `reconstruct` refits the consumers in graph order on
inputs from the already-pruned network: it accumulates E[x_d x_pᵀ] and E[x_p x_pᵀ] (x_d the original network's input
of the consumer, x_p the pruned network's, a constant column for the bias), refits the kept columns
(`spa_keras.compute.obs.refit`) and writes them into the pruned network (removed channels zeroed) before what follows
runs. A format whose backend runs both models side by side (Keras) does it in one pass, BatchNorm statistics
recalibrated on the way; others (ONNX) in stages of consumers that do not feed each other, each stage one run of both
models. Models are reached only through the format's `ActivationBackend` (`backend.py`). The result is the plan's
`updates`: new full-size values of the consumers' weights, of the biases (or BatchNorm running means) that take the
mean shift, and of recalibrated statistics.

Example:

>>> updates = reconstruct(analysis, consumers, removed, batches)      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Hashable, Iterator

import numpy as np

from spa_keras.common.console import progress_bar, track
from spa_keras.compute.obs import damped, refit
from spa_keras.compute.patches import Moments
from spa_keras.obspa.backend import ActivationBackend, NormSite, PrunedNetwork
from spa_keras.obspa.consumers import Consumer
from spa_keras.obspa.diagnostics import ConsumerReport, Diagnostics, NormReport

if TYPE_CHECKING:
    from spa_keras.analysis.graph import SPAGraph
    from spa_keras.analysis.groups import Analysis

# Hessians of the scoring pass held at once (float64): more consumers than fit are measured in several passes
HESSIAN_BYTES = 1 << 28


def _chunks(consumers: list[Consumer]) -> list[list[Consumer]]:
    out: list[list[Consumer]] = [[]]
    size = 0
    for c in consumers:
        need = 8 * c.matrix.shape[1] ** 2
        if out[-1] and size + need > HESSIAN_BYTES:
            out.append([])
            size = 0
        out[-1].append(c)
        size += need
    return out


def measure_hessians(backend: ActivationBackend, consumers: list[Consumer], batches: list[Any],
                     damping: float) -> Iterator[tuple[Consumer, np.ndarray]]:
    """(consumer, E[x xᵀ] damped) of every consumer's input columns on the original model, a chunk of consumers
    at a time (only one chunk's Hessians are held)."""
    for part in _chunks(consumers):
        sites = unique_sites(part)
        reader = backend.reader(sites)
        moments = [Moments(c.matrix.shape[1]) for c in part]
        for batch in track(batches, f"OBSPA: Hessians of {len(part)} layers"):
            values = dict(zip(sites, reader(batch)))
            for m, c in zip(moments, part):
                m.accumulate(c.inputs, values[c.site])
        for c, m in zip(part, moments):
            yield c, damped(m.gram, m.rows, damping)


def unique_sites(consumers: list[Consumer]) -> list[Hashable]:
    """The sites `consumers` read, each once (the parts of a grouped convolution share theirs), in order."""
    return list(dict.fromkeys(c.site for c in consumers))


def stages(graph: SPAGraph, consumers: list[Consumer]) -> list[list[Consumer]]:
    """Consumers in graph order, cut into runs in which no consumer's input depends on another's output."""
    index = {id(c.node): i for i, c in enumerate(consumers)}
    upstream: dict[str, frozenset[int]] = {}  # tensor -> consumers it depends on
    for node in graph.nodes:
        deps: frozenset[int] = frozenset().union(*(upstream.get(t, frozenset()) for t in node.inputs if t))
        if id(node) in index:
            deps = deps | {index[id(node)]}
        for t in node.outputs:
            upstream[t] = deps
    out: list[list[Consumer]] = []
    members: set[int] = set()
    for i, c in enumerate(consumers):
        before = upstream.get(c.node.inputs[0], frozenset())
        if not out or before & members:
            out.append([])
            members = set()
        out[-1].append(c)
        members.add(i)
    return out


def _augmented(m: Moments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E[z_p z_pᵀ], E[z_d z_pᵀ], E[z_d z_dᵀ]) with z = [x; 1]: the constant column carries the bias."""
    n = max(m.rows, 1)
    d = len(m.sum)
    h = np.empty((d + 1, d + 1))
    h[:d, :d], h[:d, d], h[d, :d], h[d, d] = m.gram / n, m.sum / n, m.sum / n, 1.0
    cross = np.empty((d + 1, d + 1))
    cross[:d, :d], cross[:d, d], cross[d, :d], cross[d, d] = m.cross / n, m.ref_sum / n, m.sum / n, 1.0
    reference = np.empty((d + 1, d + 1))
    reference[:d, :d], reference[:d, d], reference[d, :d], reference[d, d] = (
        m.ref_gram / n, m.ref_sum / n, m.ref_sum / n, 1.0)
    return h, cross, reference


def _relative_error(w: np.ndarray, fit: np.ndarray, h: np.ndarray, cross: np.ndarray,
                    reference: np.ndarray) -> float:
    """E‖W z_d − Ŵ z_p‖² / E‖W z_d‖² from the moments (h = E[z_p z_pᵀ], cross = E[z_d z_pᵀ], reference = E[z_d z_dᵀ])."""
    energy = float(np.sum((w @ reference) * w))
    error = energy - 2 * float(np.sum((w @ cross) * fit)) + float(np.sum((fit @ h) * fit))
    return max(error, 0.0) / max(energy, 1e-30)


def _refit_one(graph: SPAGraph, consumer: Consumer, m: Moments, removed: np.ndarray, damping: float,
               current: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], float]:
    """({param: new value}, relative output error after the refit) for one consumer: its weight (`current`: its
    value so far, where other parts of a grouped convolution were refit into it), and the bias (or BatchNorm mean)
    that takes the shift."""
    keep = ~((consumer.columns >= 0) & removed[np.maximum(consumer.columns, 0)])
    h, cross, reference = _augmented(m)
    bias = consumer.bias
    if bias is None:  # no constant column: the output mean cannot move
        h, cross, reference = h[:-1, :-1], cross[:-1, :-1], reference[:-1, :-1]
    w = consumer.matrix.astype(np.float64)
    bias_value = np.zeros(0)
    if bias is not None:
        bias_value = np.asarray(graph.params[bias].value, np.float64).reshape(-1)
        own = consumer.bias_sign > 0
        w = np.concatenate([w, (bias_value if own else np.zeros_like(bias_value))[:, None]], axis=1)
        keep = np.append(keep, True)
    h_damped = damped(h * max(m.rows, 1), max(m.rows, 1), damping)
    # the ridge pulls the kept weights towards their values, not towards zero. Made-up inputs leave directions of H
    # that real data spans nearly empty, and a ridge towards zero shrank the weights there: the zoo's conv stack
    # without BatchNorm, -30% FLOPs data-free, 62.4% -> 76.3% (unpruned 76.2%); with 64 real images 74.7% -> 75.8%
    fit = refit(w, cross, h_damped, keep, ridge=np.diag(h_damped) - np.diag(h))
    measured = _relative_error(w, fit, h, cross, reference)
    weight = graph.params[consumer.weight].value if current is None else current
    out = {consumer.weight: consumer.to_value(fit[:, :consumer.matrix.shape[1]], weight).astype(weight.dtype)}
    if bias is not None:
        shift = fit[:, -1] - (bias_value if consumer.bias_sign > 0 else 0.0)
        new = bias_value + consumer.bias_sign * shift
        out[bias] = new.reshape(graph.params[bias].shape).astype(graph.params[bias].value.dtype)
    return out, measured


def _statistics(x: Any, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of a channels-last activation over every other axis (float64)."""
    x = np.asarray(x, np.float64)
    x = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    return x.mean(axis=0), x.var(axis=0)


def batchnorm_statistics(norm: RunningStatistics, dense_input: Any, pruned_input: Any,
                         mode: str) -> tuple[np.ndarray, np.ndarray]:
    """New running (mean, variance) of a BatchNorm after pruning upstream of it.

    'reestimate': the pruned network's own statistics on the inputs. 'correct': the original statistics moved so
    that the pruned network's normalised output has the mean and spread the original's has on the same inputs
    (σ' = σ·σ_p/σ_d, μ' = μ_p − (μ_d − μ)·σ_p/σ_d): only what pruning changed is corrected."""
    axis = norm.axis % len(pruned_input.shape)
    mean_p, var_p = _statistics(pruned_input, axis)
    if mode == "reestimate":
        return mean_p, var_p
    mean_d, var_d = _statistics(dense_input, axis)
    mean, var = np.asarray(norm.mean, np.float64), np.asarray(norm.variance, np.float64)
    live = var_d > 1e-12
    ratio = np.sqrt(np.where(live, var_p, 1.0) / np.where(live, var_d, 1.0))
    new_mean = np.where(live, mean_p - (mean_d - mean) * ratio, mean)
    new_var = np.where(live, np.maximum((var + norm.epsilon) * ratio ** 2 - norm.epsilon, 0.0), var)
    return new_mean, new_var


@dataclasses.dataclass(frozen=True)
class RunningStatistics:
    """A BatchNorm's running statistics, its channel axis and epsilon."""

    mean: np.ndarray
    variance: np.ndarray
    axis: int
    epsilon: float

    @classmethod
    def of(cls, graph: SPAGraph, norm: NormSite) -> RunningStatistics:
        return cls(graph.params[norm.mean].value, graph.params[norm.variance].value, norm.axis, norm.epsilon)


def _stacked(batches: list[Any]) -> Any:
    """All batches as one (per model input)."""
    first = batches[0]
    if isinstance(first, (list, tuple)):
        return [np.concatenate([b[i] for b in batches]) for i in range(len(first))]
    if isinstance(first, dict):
        return {k: np.concatenate([b[k] for b in batches]) for k in first}
    return np.concatenate([np.asarray(b) for b in batches])


@dataclasses.dataclass
class _Refitter:
    """Refits consumers into the pruned network and records what each refit achieved."""

    graph: SPAGraph
    network: PrunedNetwork
    removed: np.ndarray
    damping: float
    predicted: dict[str, float]  # per consumer key: its predicted relative error
    diagnostics: Diagnostics

    def refit(self, consumer: Consumer, moments: Moments) -> None:
        updates, measured = _refit_one(self.graph, consumer, moments, self.removed, self.damping,
                                       self.network.updates.get(consumer.weight))
        for param, value in updates.items():
            self.network.write(param, value)
        ids = consumer.columns[consumer.columns >= 0]
        report = ConsumerReport(consumer.name, int(len(np.unique(ids[self.removed[ids]]))), int(len(np.unique(ids))),
                                self.predicted.get(consumer.key, float("nan")), measured)
        reports = self.diagnostics.consumers
        if consumer.part is not None and consumer.part[0] > 0 and reports and reports[-1].name == report.name:
            k = consumer.part[0]  # one row per grouped convolution: the mean over its groups so far
            mean = lambda before, now: (before * k + now) / (k + 1)  # noqa: E731
            report = dataclasses.replace(report, predicted=mean(reports[-1].predicted, report.predicted),
                                         measured=mean(reports[-1].measured, report.measured))
            reports.pop()
        reports.append(report)

    def recalibrate(self, norm: NormSite, dense_input: Any, pruned_input: Any, mode: str) -> None:
        before = RunningStatistics.of(self.graph, norm)
        mean, variance = batchnorm_statistics(before, dense_input, pruned_input, mode)
        for param, value in zip((norm.mean, norm.variance), (mean, variance)):
            self.network.write(param, value.astype(np.float32))
        sigma = np.sqrt(np.asarray(before.variance, np.float64) + norm.epsilon)
        kept = variance > 0  # removed channels are zeroed in the pruned network
        if kept.any():
            self.diagnostics.norms.append(NormReport(
                str(norm.site), float(np.mean(np.abs(mean - before.mean)[kept] / sigma[kept])),
                float(np.median(np.sqrt(variance[kept] + norm.epsilon) / sigma[kept]))))


def _reconstruct_in_one_pass(analysis: Analysis, refitter: _Refitter, backend: ActivationBackend,
                             consumers: list[Consumer], batches: list[Any], recalibrate: str | None) -> None:
    """One pass of the original and the pruned copy side by side: each consumer is refit, and each BatchNorm
    recalibrated, just before it runs on the pruned copy."""
    by_site: dict[Hashable, list[Consumer]] = {}
    for c in consumers:  # the parts of a grouped convolution share a site
        by_site.setdefault(c.site, []).append(c)
    norms = backend.norm_sites(analysis) if recalibrate else {}
    with progress_bar(len(consumers), "OBSPA: reconstructing") as advance:
        def hook(site: Hashable, args: list[Any], twin_args: list[Any]) -> None:
            for consumer in by_site.get(site, []):
                moments = Moments(consumer.matrix.shape[1], cross=True)
                moments.accumulate(consumer.inputs, twin_args[0], reference=args[0])
                refitter.refit(consumer, moments)
                advance()
            norm = norms.get(site)
            if norm is not None and recalibrate is not None:  # norms are found only to recalibrate
                refitter.recalibrate(norm, args[0], twin_args[0], recalibrate)

        refitter.network.run_alongside(_stacked(batches), hook)


def _reconstruct_in_stages(analysis: Analysis, refitter: _Refitter, backend: ActivationBackend,
                           consumers: list[Consumer], batches: list[Any]) -> None:
    """Stage by stage: the original and the current pruned model run on every batch."""
    for stage in track(stages(analysis.graph, consumers), "OBSPA: reconstructing"):
        sites = unique_sites(stage)
        dense, pruned = backend.reader(sites), refitter.network.reader(sites)
        moments = [Moments(c.matrix.shape[1], cross=True) for c in stage]
        for batch in batches:
            x_d, x_p = dict(zip(sites, dense(batch))), dict(zip(sites, pruned(batch)))
            for m, c in zip(moments, stage):
                m.accumulate(c.inputs, x_p[c.site], reference=x_d[c.site])
        for c, m in zip(stage, moments):
            refitter.refit(c, m)


def reconstruct(analysis: Analysis, consumers: list[Consumer], removed: np.ndarray, batches: list[Any],
                damping: float = 0.01, recalibrate: str | None = None, predicted: dict[str, float] | None = None,
                diagnostics: Diagnostics | None = None) -> dict[str, np.ndarray]:
    """New values of the consumers' kept weights (and biases), and with `recalibrate` ('correct' or
    'reestimate') of the BatchNorm statistics of a one-pass model, after removing the `removed` channels.
    `diagnostics` collects each consumer's error after its refit (beside its `predicted` one) and each
    recalibrated BatchNorm's change."""
    if not removed.any() or not batches:
        return {}
    backend = analysis.source.activations()
    refitter = _Refitter(analysis.graph, backend.pruned(analysis, removed), removed, damping, predicted or {},
                         Diagnostics() if diagnostics is None else diagnostics)
    if backend.one_pass:
        _reconstruct_in_one_pass(analysis, refitter, backend, consumers, batches, recalibrate)
    else:
        _reconstruct_in_stages(analysis, refitter, backend, consumers, batches)
    return refitter.network.updates
