"""What removing channels saves: parameters and FLOPs of the model with a given set of channels removed.

Every labelled tensor axis and parameter axis knows which global channel each position belongs to, so the shapes after
removal are one vectorised count per axis, and the counts follow from the same formulas as `spa.count` (FLOPs = 2 ×
MACs of the ops whose spec counts them: Conv, ConvTranspose, Gemm, MatMul; `spa_keras.ops`). Coupled producers and
consumers are all included because they are all members of the groups.

Example:

>>> model = CostModel(analysis)                    # doctest: +SKIP
>>> model.counts(np.zeros(model.channels, bool))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from spa_keras.ops import spec_for

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node, Shape, SPAGraph
    from spa_keras.analysis.groups import Analysis
    from spa_keras.ops.registry import ShapeOf

    MacsOf = Callable[[Node, ShapeOf], int]


@dataclasses.dataclass(frozen=True)
class Counts:
    params: int
    flops: int

    @property
    def macs(self) -> int:
        return self.flops // 2

    def __str__(self) -> str:
        return f"{self.params:,} parameters, {self.flops / 1e6:,.2f} MFLOPs"


def channel_savings(groups: Any, offsets: Any, channels: int, measure: Callable[[np.ndarray], float]) -> np.ndarray:
    """Per global channel: what `measure(removed mask)` (FLOPs, parameters, predicted seconds) saves per channel
    when its group alone loses a quarter of its channels from the full model."""
    base = measure(np.zeros(channels, bool))
    saving = np.zeros(channels)
    for g in groups:
        k = max(1, g.channels // 4)
        mask = np.zeros(channels, bool)
        mask[offsets[g.id]:offsets[g.id] + k] = True
        saving[offsets[g.id]:offsets[g.id] + g.channels] = max(base - measure(mask), 0.0) / k
    return saving


def macs_of(op_type: str) -> Optional[MacsOf]:
    """The MAC count of an op type (its spec's `macs`), or None for ops that are not counted."""
    spec = spec_for(op_type)
    return None if spec is None else spec.macs


def graph_macs(graph: SPAGraph, shape_of: ShapeOf | None = None) -> int:
    """MACs of the linear ops of an `SPAGraph` at batch 1 (`shape_of` overrides shapes, for pruned variants)."""
    shape_of = shape_of or graph.shape
    return sum(macs(n, shape_of) for n in graph.nodes for macs in [macs_of(n.op_type)] if macs)


def graph_params(graph: SPAGraph, shape_of: ShapeOf | None = None) -> int:
    """Elements of the parameters an `SPAGraph` counts (front-ends decide: ONNX floating-point weights, every Keras
    variable as in `count_params()`)."""
    shape_of = shape_of or graph.shape
    return sum(int(np.prod(_known(shape_of(name), name))) for name, p in graph.params.items() if p.counted)


def _known(shape: Shape | None, name: str) -> Shape:
    """The shape of a parameter or a labelled tensor, which is known (a constant, or a rule labelled it)."""
    assert shape is not None, f"{name}: shape unknown"
    return shape


class CostModel:
    """Exact parameter and FLOP counts of the analysed model with any set of channels removed."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.graph = graph = analysis.graph
        self.channels = len(analysis.group_of_channel)
        entries = []
        for tensor, labels in analysis.state.labels.items():
            for axis, l in labels.items():
                entries.append((tensor, axis, analysis.dense(l)))
        for (param, axis), binding in analysis.state.bindings.items():
            entries.append((param, axis, analysis.dense(binding.labels)))
        self.entries = [(name, axis, ids[ids >= 0]) for name, axis, ids in entries if (ids >= 0).any()]
        # all entries' channel ids end to end: one bincount per evaluation counts the removed positions of each
        self._ids = np.concatenate([ids for _, _, ids in self.entries]) if self.entries else np.zeros(0, np.int64)
        self._entry_of = np.repeat(np.arange(len(self.entries)), [len(ids) for _, _, ids in self.entries])
        self.linear = [(n, macs) for n in graph.nodes for macs in [macs_of(n.op_type)] if macs]
        self.base = Counts(graph_params(graph), 2 * graph_macs(graph))
        self._counted = {n for n, p in graph.params.items() if p.counted}

    def removed_per_entry(self, removed: np.ndarray) -> np.ndarray:
        """Per labelled axis (`entries`), how many of its positions `removed` takes away."""
        return np.bincount(self._entry_of, weights=removed[self._ids], minlength=len(self.entries)).astype(int)

    def shapes(self, removed: np.ndarray) -> dict[str, Shape]:
        """`{name: new shape}` for every tensor and parameter whose shape changes when `removed` channels go."""
        new: dict[str, Shape] = {}
        gone = self.removed_per_entry(removed)
        for e in np.flatnonzero(gone):
            name, axis, _ = self.entries[e]
            shape = list(new.get(name) or self._shape(name))
            shape[axis] -= int(gone[e])
            new[name] = tuple(shape)
        return new

    def node_flops(self, removed: np.ndarray) -> dict[str, int]:
        """FLOPs of each Conv, ConvTranspose, Gemm and MatMul node without the `removed` channels."""
        new = self.shapes(removed)
        shape_of = lambda t: new.get(t) or self.graph.shape(t)  # noqa: E731
        return {n.name: 2 * macs(n, shape_of) for n, macs in self.linear}

    def counts(self, removed: np.ndarray) -> Counts:
        """`Counts` of the model without the channels where `removed` (bool per global channel) is True."""
        new = self.shapes(removed)
        shape_of = lambda t: new.get(t) or self.graph.shape(t)  # noqa: E731
        params = self.base.params + sum(math.prod(shape) - math.prod(self._shape(name))
                                        for name, shape in new.items() if name in self._counted)
        macs = sum(count(n, shape_of) for n, count in self.linear)
        return Counts(params, 2 * macs)

    def _shape(self, name: str) -> Shape:
        return _known(self.graph.shape(name), name)
