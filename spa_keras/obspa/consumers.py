"""The layers OBSPA reconstructs: every linear op that mixes a group's channels into its outputs.

A consumer computes Y = W X with W seen as a matrix [d_out, d_in]: a Conv (one group) has one column per input
channel and kernel offset (im2col, columns in (channel, kh, kw) order, as the graph's [M, C, kh, kw] kernel
flattens), a Dense / Gemm / MatMul has one column per input feature (a Dense after Flatten has the H·W positions
of a channel). Removing a channel removes its columns from every consumer; OBS scores that removal and refits the
kept columns. Found on the `SPAGraph`, so it works the same for every format; where the input activation is read
(a Keras layer's input, NHWC; an ONNX tensor, NCHW) is the format's `site` (`spa_keras.obspa.backend`).

A grouped convolution is one consumer per group (`Consumer.part`): each group is a dense convolution of its own
input channels. Consumers that are not covered (depthwise convs, 1-D/3-D convs, transposed convs, attention
projections, layers inside nested Keras models, inputs wider than `MAX_COLUMNS`) are not reconstructed; their
channels are scored by the identity Hessian (relative weight magnitude), as `skipped` says.

Example:

>>> found, skipped = find_consumers(analysis)       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Hashable

import numpy as np

from spa_keras.analysis.graph import Node, SPAGraph
from spa_keras.compute.patches import InputColumns, PatchSpec
from spa_keras.ops import spec_for
from spa_keras.ops.geometry import GROUPED, conv_kind
from spa_keras.ops.registry import WeightMatrix

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis
    from spa_keras.obspa.backend import ActivationBackend

# a consumer with more input columns than this keeps its weights (its d_in x d_in Hessian would not fit)
MAX_COLUMNS = 8192


@dataclasses.dataclass
class Consumer:
    """One reconstructable layer.

    Args:
        node: the graph op.
        weight: the graph parameter of W, `matrix` its value as [d_out, d_in].
        columns: the global channel id of each column (-1 where no group owns it).
        bias: the graph parameter that takes the compensation of the output mean (a bias, or the running mean of
            the BatchNorm that follows, `bias_sign` -1), or None.
        site: where its input activation is read (the format's: a Keras layer name, an ONNX tensor name).
        inputs: how that activation becomes the matrix's columns (im2col patches for a convolution).
        part: (group, groups) for one group of a grouped convolution: `matrix` is that group's rows of the kernel
            (output channels group·M/groups onwards) and `inputs` reads that group's input channels; None for a
            whole layer.
    """

    node: Node
    weight: str
    kind: str  # "conv" or "dense"
    layout: str  # how the weight's value becomes the matrix: "conv", "rows" ([d_out, d_in]) or "cols" ([d_in, d_out])
    matrix: np.ndarray
    columns: np.ndarray
    bias: str | None
    bias_sign: float
    site: Hashable
    inputs: InputColumns
    part: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        if self.part is None:
            return self.node.display_name
        return f"{self.node.display_name} ({self.part[1]} groups)"

    @property
    def key(self) -> str:
        """What tells consumers apart: the weight, and the group of a grouped convolution's part."""
        return self.weight if self.part is None else f"{self.weight}#{self.part[0]}"

    def to_value(self, matrix: np.ndarray, like: np.ndarray) -> np.ndarray:
        """A [d_out, d_in] matrix back in the weight's graph layout (shape of `like`, the weight's current value:
        a grouped convolution's part replaces its own rows of it)."""
        if self.part is not None:
            rows = len(matrix)
            out = np.array(like, copy=True)
            out[self.part[0] * rows:(self.part[0] + 1) * rows] = matrix.reshape((rows,) + like.shape[1:])
            return out
        if self.layout == "conv":
            return matrix.reshape(like.shape)
        return matrix if self.layout == "rows" else matrix.T


def _matrix(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "conv":
        return value.reshape(value.shape[0], -1)
    return value if layout == "rows" else value.T


def _bias(graph: SPAGraph, node: Node, d_out: int) -> tuple[str | None, float]:
    """(parameter, sign) that takes a change of the consumer's output mean, or (None, 0)."""
    if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 2 and graph.is_param(node.inputs[2]):
        if np.prod(graph.params[node.inputs[2]].shape) == d_out:
            return node.inputs[2], 1.0
    out = node.outputs[0]
    for _ in range(4):  # through the Transposes that wrap a Keras conv and BatchNorm (NHWC <-> NCHW)
        users = graph.consumers(out)
        if len(users) != 1:
            return None, 0.0
        user = users[0]
        if user.op_type == "Add" and node.op_type == "MatMul":
            other = [t for t in user.inputs if t != out]
            if len(other) == 1 and graph.is_param(other[0]) and np.prod(graph.params[other[0]].shape) == d_out:
                return other[0], 1.0
        if user.op_type == "BatchNormalization" and len(user.inputs) > 3 and graph.is_param(user.inputs[3]):
            return user.inputs[3], -1.0  # (y + δ - mean) = (y - (mean - δ))
        if user.op_type != "Transpose":
            return None, 0.0
        out = user.outputs[0]
    return None, 0.0


def _conv_patch(node: Node, kernel: tuple[int, int]) -> PatchSpec | None:
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "SAME_LOWER":
        return None
    pads = node.attr("pads") or [0, 0, 0, 0]
    pads = "SAME" if auto_pad == "SAME_UPPER" else (0, 0, 0, 0) if auto_pad == "VALID" else (
        int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3]))
    return PatchSpec(kernel, tuple(node.attr("strides") or (1, 1)), tuple(node.attr("dilations") or (1, 1)), pads)


def _candidate(graph: SPAGraph, node: Node) -> WeightMatrix | None:
    """The op's constant weight as a matrix (its spec's `weight_matrix`), or None."""
    spec = spec_for(node.op_type)
    return None if spec is None or spec.weight_matrix is None else spec.weight_matrix(graph, node)


def _grouped(graph: SPAGraph, node: Node) -> bool:
    """A grouped 2-D Conv (`spa_keras.ops.geometry.conv_kind`: neither dense nor depthwise) with a constant
    kernel."""
    if node.op_type != "Conv" or len(node.inputs) < 2 or not graph.is_param(node.inputs[1]):
        return False
    shape = graph.params[node.inputs[1]].shape
    return len(shape) == 4 and conv_kind(int(node.attr("group") or 1), shape[1]) == GROUPED


def _group_parts(analysis: Analysis, backend: ActivationBackend, node: Node, skipped: list[str]) -> list[Consumer]:
    """A grouped convolution as one consumer per group: group g's output channels mix only its input channels, so
    its rows of the kernel are a dense convolution of those (position j of every group is one channel, scored and
    removed across the groups together; `spa_keras.ops.conv`)."""
    graph, weight = analysis.graph, node.inputs[1]
    binding = analysis.state.bindings.get((weight, 1))
    if binding is None:
        return []
    ids = analysis.dense(binding.labels)
    if (ids < 0).all():
        return []
    value = np.asarray(graph.params[weight].value)
    groups, (m, cg, kh, kw) = int(node.attr("group")), value.shape
    site = backend.site(node, weight)
    patch = _conv_patch(node, (kh, kw))
    if site is None or patch is None or m % groups:
        skipped.append(f"{node.display_name} ({node.op_type}, {groups} groups): its input cannot be read here")
        return []
    rows = m // groups
    columns = np.repeat(ids, kh * kw)
    return [Consumer(node, weight, "conv", "conv", value[g * rows:(g + 1) * rows].reshape(rows, -1), columns,
                     None, 0.0, site, InputColumns(cg * kh * kw, patch, backend.channels_last,
                                                   (g * cg, (g + 1) * cg)), (g, groups))
            for g in range(groups)]


def find_consumers(analysis: Analysis, backend: ActivationBackend) -> tuple[list[Consumer], list[str]]:
    """The consumers OBSPA reconstructs, in graph order, and why the other linear ops that read group channels
    are left as they are (`backend`: the model's `ActivationBackend`)."""
    graph = analysis.graph
    found: list[Consumer] = []
    skipped: list[str] = []
    for node in graph.nodes:
        if _grouped(graph, node):
            found.extend(_group_parts(analysis, backend, node, skipped))
            continue
        candidate = _candidate(graph, node)
        if candidate is None:
            continue
        weight, axis, kind, layout = candidate.weight, candidate.input_axis, candidate.kind, candidate.layout
        binding = analysis.state.bindings.get((weight, axis))
        if binding is None:
            continue
        ids = analysis.dense(binding.labels)
        if (ids < 0).all():
            continue
        value = np.asarray(graph.params[weight].value)
        matrix = _matrix(value, layout)
        columns = np.repeat(ids, int(np.prod(value.shape[2:]))) if kind == "conv" else ids
        if matrix.shape[1] > MAX_COLUMNS:
            skipped.append(f"{node.display_name}: {matrix.shape[1]} input columns (more than {MAX_COLUMNS})")
            continue
        site = backend.site(node, weight)
        patch = _conv_patch(node, (value.shape[2], value.shape[3])) if kind == "conv" else None  # a 2-D kernel
        if site is None or (kind == "conv" and patch is None):
            skipped.append(f"{node.display_name} ({node.op_type}): its input cannot be read here")
            continue
        bias, sign = _bias(graph, node, matrix.shape[0])
        inputs = InputColumns(matrix.shape[1], patch, backend.channels_last)
        found.append(Consumer(node, weight, kind, layout, matrix, columns, bias, sign, site, inputs))
    return found, skipped
