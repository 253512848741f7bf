"""What OBSPA asks of a model, whatever its format: the interface a format adapter's `activations()` implements
(`spa_keras.formats.keras.activations`, `spa_keras.formats.onnx.activations`).

OBSPA reads the input activation of every consumer (a Keras layer's input, an ONNX tensor), on the original model
and on a copy whose removed channels are zeroed and whose refit weights are written as it goes. A backend that can
run both models side by side, layer by layer (`one_pass`), lets each consumer be refit just before it runs in one
pass; the others are refit stage by stage (one run of both models per stage of consumers that do not feed each
other). A backend may also optimise inputs through the model to match its BatchNorm statistics (`norm_probe`).

Example:

>>> backend = analysis.source.activations()                  # doctest: +SKIP
>>> site = backend.site(node, weight)                        # doctest: +SKIP
>>> [x] = backend.reader([site])(batch)                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Hashable, Protocol

import numpy as np

from spa_keras.analysis.graph import Node
from spa_keras.compute.distill import NormTarget

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis

Reader = Callable[[Any], list]  # a batch of model inputs -> the activations at the sites asked for, in order


@dataclasses.dataclass(frozen=True)
class NormSite:
    """A BatchNorm whose running statistics OBSPA re-estimates after pruning: its input is read at `site` (channels
    on `axis`), its running mean and variance are the graph parameters `mean` and `variance`."""

    site: Hashable
    mean: str
    variance: str
    axis: int
    epsilon: float


class PrunedNetwork(Protocol):
    """The model with the removed channels zeroed, rewritten as consumers are refit."""

    updates: dict[str, np.ndarray]  # every parameter written so far, full size, in the graph's layout

    def write(self, param: str, value: np.ndarray) -> None:
        """Give `param` a new value (full size; removed positions are zeroed in the network)."""

    def reader(self, sites: list[Hashable]) -> Reader:
        """Read the activations at `sites` of the network as written so far."""

    def run_alongside(self, batch: Any, hook: Callable[[Hashable, list, list], None]) -> None:
        """One-pass backends: run the original and this network side by side on `batch`, calling
        `hook(site, original_args, pruned_args)` before each layer runs (the hook may `write`)."""


class ActivationBackend(Protocol):
    """A model's activations as OBSPA reads them."""

    channels_last: bool  # activations come NHWC (Keras) rather than NCHW (ONNX)
    one_pass: bool  # refits in one side-by-side pass (all samples held at once)
    optimises_inputs: bool  # inputs can be optimised through the model (its gradients): data-free BatchNorm inputs

    def site(self, node: Node, weight: str) -> Hashable | None:
        """Where the input of the consumer `node` (weight `weight`) is read, or None when it cannot be."""

    def reader(self, sites: list[Hashable]) -> Reader:
        """Read the activations at `sites` of the original model."""

    def pruned(self, analysis: Analysis, removed: np.ndarray) -> PrunedNetwork:
        """A copy of the model with the `removed` channels zeroed."""

    def norm_sites(self, analysis: Analysis) -> dict[Hashable, NormSite]:
        """The BatchNorms whose statistics can be re-estimated, by the site their input is read at."""

    def norm_probe(self) -> tuple[Callable, list[NormTarget]] | None:
        """(probe, targets) to optimise inputs for (`spa_keras.compute.distill`): `probe(inputs)` gives every
        BatchNorm's input (one per target), then optionally the model's class output; None (the backend warns
        why) when inputs cannot be optimised through this model."""
