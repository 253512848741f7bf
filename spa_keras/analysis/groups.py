"""Channel groups: the sets of coupled channels that mask propagation found, and the `Analysis` around them.

After propagation, every label root is one channel that can be removed on its own; all parameters whose axes carry
it must shrink together. Channels with the same set of parameter axes form one `ChannelGroup` (a Conv's output
channels with the BatchNorm after it and the input axis of the next Conv, or every conv feeding one residual
stream). A group's members say, per parameter axis, which position belongs to which channel of the group.

`Analysis` is what `spa.analyze(model)` returns and what every later stage works on: the graph (and through
`graph.source` the model's format adapter), the propagation state, the groups, the numbering of their channels
(one global channel id per channel, group after group), costs and the fingerprint plans check.

Example:

>>> analysis = analyze_graph(graph)                  # doctest: +SKIP
>>> [g.channels for g in analysis.groups][:3]        # doctest: +SKIP
>>> analysis.print()                                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import TYPE_CHECKING

import numpy as np

from spa_keras.analysis.cost import CostModel, Counts
from spa_keras.analysis.graph import Shape, SPAGraph
from spa_keras.analysis.propagation import Barrier, Propagation, propagate

if TYPE_CHECKING:
    from rich.table import Table

    from spa_keras.formats.base import Source


@dataclasses.dataclass
class Member:
    """Parameter `param` loses, along `axis`, the positions whose `channel_of_position` is a removed channel."""

    param: str
    axis: int
    channel_of_position: np.ndarray  # group channel index per position along axis, -1 for other groups' positions
    nodes: list[str]

    def positions(self, channel: int) -> np.ndarray:
        return np.flatnonzero(self.channel_of_position == channel)


@dataclasses.dataclass(frozen=True, order=True)
class GroupKey:
    """What names a group, stable across runs on the same model: its first member's parameter and axis, and the
    first position of that axis it owns (a Split can cut one kernel's channels into several groups). Plans write it
    as "param:axis@position".

    >>> key = GroupKey.parse("conv1/kernel:0@0")
    >>> key.param, key.axis, key.position, str(key)
    ('conv1/kernel', 0, 0, 'conv1/kernel:0@0')
    """

    param: str
    axis: int
    position: int

    def __str__(self) -> str:
        return f"{self.param}:{self.axis}@{self.position}"

    @classmethod
    def parse(cls, text: str | GroupKey) -> GroupKey:
        """A key from its text ("param:axis@position"; parameter names may hold ':' and '@')."""
        if isinstance(text, GroupKey):
            return text
        try:
            head, position = str(text).rsplit("@", 1)
            param, axis = head.rsplit(":", 1)
            return cls(param, int(axis), int(position))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a group key ('param:axis@position')") from exc


@dataclasses.dataclass
class ChannelGroup:
    id: int
    key: GroupKey
    roots: np.ndarray  # one label root per channel
    members: list[Member]
    blocked: np.ndarray  # per channel: True when a barrier or a graph output pins it
    reasons: list[str]  # why channels are blocked ("node (op): reason")

    @property
    def channels(self) -> int:
        return len(self.roots)

    @property
    def prunable(self) -> int:
        return int((~self.blocked).sum())

    @property
    def ops(self) -> list[str]:
        seen: list[str] = []
        for m in self.members:
            for n in m.nodes:
                if n not in seen:
                    seen.append(n)
        return seen


@dataclasses.dataclass
class Analysis:
    """The channel groups of one model's graph, with the propagation state and channel numbering that costs, plans
    and surgery read; `print()` shows them as a table."""

    graph: SPAGraph
    state: Propagation
    groups: list[ChannelGroup]
    channel_of_root: np.ndarray  # label root -> global channel id (-1: not in any group)
    group_of_channel: np.ndarray  # global channel id -> group index
    index_in_group: np.ndarray  # global channel id -> channel index within its group

    @functools.cached_property
    def fingerprint(self) -> str:
        """What a plan for this model depends on: its operators and their wiring, the parameter shapes, the groups.
        Weight values and input sizes are left out, so a plan replays on the same model retrained or at another
        resolution; 16 hex digits."""
        graph = self.graph
        ids = {name: f"in{i}" for i, name in enumerate(graph.inputs)}  # activations by position: Keras names its
        for node in graph.nodes:                                      # tensors anew each time a model is built
            ids.update((t, f"t{len(ids)}") for t in node.outputs if t not in ids)
        parts = [f"{n.op_type}({','.join(ids.get(t, t) for t in n.inputs)})" for n in graph.nodes]
        parts += [f"{name}:{tuple(p.value.shape)}" for name, p in sorted(graph.params.items())]
        parts += [f"{g.key}={g.channels}" for g in self.groups]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @property
    def barriers(self) -> list[Barrier]:
        return [b for b in self.state.barriers if b.op_type != "output"]

    @property
    def source(self) -> Source:
        """The format adapter of the analysed model (`spa_keras.formats.Source`)."""
        return self.graph.source

    @property
    def input_shapes(self) -> dict[str, Shape | None]:
        """{input name: shape at batch 1} the model was analysed at."""
        shapes = getattr(self.graph.source, "input_shapes", None)
        return dict(shapes) if shapes else {name: self.graph.shape(name) for name in self.graph.inputs}

    @property
    def channels(self) -> int:
        """How many channels the groups hold in all (the length of a removed-channel mask)."""
        return len(self.group_of_channel)

    @functools.cached_property
    def offsets(self) -> list[int]:
        """The first global channel id of each group."""
        return [int(o) for o in np.cumsum([0] + [g.channels for g in self.groups])[:-1]]

    @functools.cached_property
    def cost(self) -> CostModel:
        return CostModel(self)

    @property
    def counts(self) -> Counts:
        """Parameters and FLOPs of the model as it is."""
        return self.cost.base

    def removed_per_group(self, mask: np.ndarray) -> dict[GroupKey, list[int]]:
        """{group key: removed channel indices} of a global removed-channel mask (groups that lose none left out)."""
        out: dict[GroupKey, list[int]] = {}
        for g, start in zip(self.groups, self.offsets):
            idx = np.flatnonzero(mask[start:start + g.channels])
            if len(idx):
                out[g.key] = idx.tolist()
        return out

    def report(self, limit: int | None = None) -> Table:
        """The groups as a rich table (first `limit` of them)."""
        from spa_keras.analysis.report import analysis_table

        return analysis_table(self, limit)

    def print(self, limit: int | None = None) -> None:
        from spa_keras.analysis.report import print_analysis

        print_analysis(self, limit)

    def dense(self, labels: np.ndarray) -> np.ndarray:
        """Global channel ids of a label array (-1 where the position belongs to no group)."""
        return self.channel_of_root[self.state.uf.find(labels)]

    def keep_mask(self, labels: np.ndarray, removed: np.ndarray) -> np.ndarray:
        """Per position of a label array: True where its channel stays (`removed`: bool per global channel)."""
        ids = self.dense(labels)
        return ~((ids >= 0) & removed[np.maximum(ids, 0)])

    def param_masks(self, removed: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
        """{parameter: {axis: keep mask}} for every parameter that loses positions when `removed` channels go."""
        masks: dict[str, dict[int, np.ndarray]] = {}
        for (param, axis), binding in self.state.bindings.items():
            keep = self.keep_mask(binding.labels, removed)
            if not keep.all():
                masks.setdefault(param, {})[axis] = keep
        return masks


def _unique_pairs(a: np.ndarray, b: np.ndarray, b_count: int) -> np.ndarray:
    """Sorted unique (a, b) pairs as a 2×N array (one 1-D sort of a*b_count + b: much faster than unique(axis=1))."""
    if not len(a):
        return np.zeros((2, 0), np.int64)
    code = np.unique(a.astype(np.int64) * max(b_count, 1) + b)
    return np.stack([code // max(b_count, 1), code % max(b_count, 1)])


def analyze_graph(graph: SPAGraph) -> Analysis:
    """Propagate masks on `graph` and build its `Analysis`."""
    state = propagate(graph)
    uf = state.uf
    bindings = list(state.bindings.values())
    n_labels = len(uf)
    roots_of = [uf.find(b.labels) for b in bindings]
    # owners of each root: which binding (param axis) carries it
    all_roots = np.concatenate(roots_of) if roots_of else np.zeros(0, np.int64)
    all_owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(roots_of)]) if roots_of else all_roots
    pairs = _unique_pairs(all_roots, all_owner, len(bindings))
    # a signature per root: the set of its owners, hashed (random 63-bit codes summed)
    codes = np.random.default_rng(12345).integers(1, 2**62, size=max(len(bindings), 1), dtype=np.int64)
    uniq_roots, start = np.unique(pairs[0], return_index=True)
    signature = np.add.reduceat(codes[pairs[1]], start) if len(start) else np.zeros(0, np.int64)
    _, group_index = np.unique(signature, return_inverse=True)
    # frozen roots and why
    frozen_reason: dict[int, str] = {}
    for barrier in state.barriers:
        if barrier.labels:
            for r in np.unique(uf.find(np.concatenate(barrier.labels))):
                frozen_reason.setdefault(int(r), f"{barrier.node} ({barrier.op_type}): {barrier.reason}")
    pair_group = group_index[np.searchsorted(uniq_roots, pairs[0])] if len(uniq_roots) else pairs[0]
    group_owner = _unique_pairs(pair_group, pairs[1], len(bindings))
    order = np.argsort(group_index, kind="stable")
    boundaries = np.flatnonzero(np.diff(group_index[order])) + 1
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    groups = []
    for chunk in np.split(order, boundaries) if len(order) else []:
        roots = uniq_roots[chunk]  # sorted by label id: creation order
        owners = group_owner[1][group_owner[0] == group_index[chunk[0]]]
        members = []
        for o in owners:
            b = bindings[o]
            local = np.searchsorted(roots, roots_of[o])
            local = np.where((local < len(roots)) & (roots[np.minimum(local, len(roots) - 1)] == roots_of[o]), local, -1)
            members.append(Member(b.param, b.axis, local, list(b.nodes)))
        # the producer's kernel first: it names the group and is what AGG "first" scores. The producer is the op
        # that bound its member earliest in graph order (a Conv's kernel before its BatchNorm and its consumers),
        # whatever axis its channels are on (a Conv's axis 0, a MatMul's axis 1).
        members.sort(key=lambda m: (position[m.nodes[0]], len(graph.params[m.param].shape) < 2, m.axis != 0, m.param))
        blocked = np.array([int(r) in frozen_reason for r in roots])
        reasons = sorted({frozen_reason[int(r)] for r in roots if int(r) in frozen_reason})
        first = members[0]
        # a Split can cut one kernel's channels into several groups: the first position makes the key unique
        key = GroupKey(first.param, first.axis, int(np.argmax(first.channel_of_position >= 0)))
        groups.append(ChannelGroup(0, key, roots, members, blocked, reasons))
    # groups in graph order (creation order of their first label); global channel ids follow that order
    groups.sort(key=lambda g: int(g.roots[0]))
    channel_of_root = np.full(n_labels, -1, np.int64)
    goc: list[np.ndarray] = []
    iig: list[np.ndarray] = []
    next_channel = 0
    for i, g in enumerate(groups):
        g.id = i
        channel_of_root[g.roots] = np.arange(next_channel, next_channel + g.channels)
        next_channel += g.channels
        goc.append(np.full(g.channels, i))
        iig.append(np.arange(g.channels))
    group_of_channel = np.concatenate(goc) if goc else np.zeros(0, np.int64)
    index_in_group = np.concatenate(iig) if iig else np.zeros(0, np.int64)
    return Analysis(graph, state, groups, channel_of_root, group_of_channel, index_in_group)
