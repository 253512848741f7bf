"""Geometry the op families share: TensorFlow's "same" padding, what kind of convolution a `group` makes, and
`LayerShape`, an op with a weight as a layer of its own (what per-layer latency tables time).

Example:

>>> same_pads(16, 3, 2)
((0, 1), 8)
>>> conv_kind(group=32, in_per_group=1), conv_kind(group=4, in_per_group=8), conv_kind(group=1, in_per_group=8)
('depthwise', 'grouped', 'dense')
>>> LayerShape("Conv", (1, 32, 8, 8), (32, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), group=32).at(16, 16).w
(16, 1, 3, 3)
"""

from __future__ import annotations

import dataclasses
import json

DENSE, DEPTHWISE, GROUPED = "dense", "depthwise", "grouped"


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[tuple[int, int], int]:
    """TensorFlow's "same" padding of one spatial axis (ONNX auto_pad SAME_UPPER): ((begin, end), output size);
    the odd pad goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2), out


def conv_kind(group: int, in_per_group: int) -> str:
    """What a convolution of `group` groups, each reading `in_per_group` input channels, is: DENSE (one group),
    DEPTHWISE (one input channel per group: its outputs follow their input channel, and `group` shrinks with the
    channels) or GROUPED (every group must keep the same size)."""
    if group == 1:
        return DENSE
    return DEPTHWISE if in_per_group == 1 else GROUPED


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One op with a weight, alone: `op` ("Conv", "Gemm" or "MatMul"), input shape `x` (batch included; NCHW for
    Conv), weight shape `w` (ONNX layout: OIHW for Conv, (K, N) for MatMul, (N, K) for Gemm with transB), and for
    Conv its `strides`, `pads`, `dilations` and `group`."""

    op: str
    x: tuple
    w: tuple
    strides: tuple = ()
    pads: tuple = ()
    dilations: tuple = ()
    group: int = 1

    @property
    def key(self) -> str:
        return json.dumps(dataclasses.astuple(self))

    @property
    def depthwise(self) -> bool:
        return self.op == "Conv" and conv_kind(self.group, self.x[1] // self.group) == DEPTHWISE

    @property
    def cin(self) -> int:
        return self.x[1] if self.op == "Conv" else self.x[-1]

    @property
    def cout(self) -> int:
        return self.w[1] if self.op == "MatMul" else self.w[0]

    def at(self, cin: int, cout: int) -> LayerShape:
        """The same layer with `cin` input and `cout` output channels (a depthwise layer keeps its multiplier)."""
        if self.op == "Conv":
            group = cin if self.depthwise else self.group
            if self.depthwise:
                cout = cin * (self.w[0] // self.x[1])
            x = (self.x[0], cin, *self.x[2:])
            return dataclasses.replace(self, x=x, w=(cout, cin // group, *self.w[2:]), group=group)
        x = (*self.x[:-1], cin)
        w = (cin, cout) if self.op == "MatMul" else (cout, cin)
        return dataclasses.replace(self, x=x, w=w)
