"""Element-wise ops: unary ops pass labels through; n-ary ops couple the channels they combine.

Broadcasting follows ONNX (numpy) rules, aligned from the right. On each output axis, the activations that span it
(size > 1) must carry the same channels: their labels are merged (a residual Add, squeeze-excitation's Mul of
[N,C,H,W] by [N,C,1,1]). A constant that spans a labelled axis (a per-channel scale or bias, PRelu's slope) is bound
to those labels and sliced with them; a scalar or size-1 constant is left alone. An activation spanning the axis
without labels (a graph input, a barrier's output) pins the channels: they are frozen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spa_keras.ops.registry import register

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node
    from spa_keras.analysis.propagation import Propagation

UNARY = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "LeakyRelu", "Elu", "Selu", "Celu",
         "ThresholdedRelu", "Cast", "CastLike", "Identity", "Dropout", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp",
         "Log", "Softplus", "Softsign", "Gelu", "Mish", "Floor", "Ceil", "Round", "Sign", "Not", "Sin", "Cos",
         "IsNaN", "IsInf", "Shrink", "QuantizeLinear", "DequantizeLinear")

NARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Less", "Greater",
        "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "Mod")


@register(*UNARY)
def unary(ctx: Propagation, node: Node) -> None:
    # only the first input is an activation (Clip's min/max, Dropout's ratio are scalars)
    ctx.set(node.outputs[0], dict(ctx.get(node.inputs[0])))


@register(*NARY, creates_channels=True)
def broadcast(ctx: Propagation, node: Node) -> None:
    out = node.outputs[0]
    rank = ctx.rank(out)
    out_shape = ctx.shape(out)
    operands = [t for t in node.inputs if t]
    labels = {}
    for axis in range(rank):
        spanning = []  # (tensor, its own axis) for operands with the full size on this output axis
        for t in operands:
            shape = ctx.shape(t)
            own = axis - (rank - len(shape))
            if own >= 0 and shape[own] == out_shape[axis] and out_shape[axis] > 1:
                spanning.append((t, own))
        activations = [(t, a) for t, a in spanning if not ctx.is_param(t)]
        labelled = [ctx.get(t)[a] for t, a in activations if a in ctx.get(t)]
        if not labelled:
            if spanning and not activations:  # only constants span this axis (LayerNorm's γ·rsqrt(var)): new
                labelled = [ctx.new(out_shape[axis])]  # channels, which the constants lose with the rest
            else:
                continue
        if len(labelled) < len(activations):
            ctx.freeze(f"input without prunable channels on axis {axis} meets pruned ones", labelled)
            continue
        for other in labelled[1:]:
            ctx.union(labelled[0], other)
        for t, a in spanning:
            if ctx.is_param(t):
                ctx.bind(t, a, labelled[0])
        labels[axis] = labelled[0]
    ctx.set(out, labels)


@register("Softmax", "LogSoftmax", "Hardmax")
def softmax(ctx: Propagation, node: Node) -> None:
    """Normalises over `axis` from opset 13 on; before, over the input flattened to 2-D at `axis` (every axis from
    `axis` on)."""
    x = node.inputs[0]
    rank = ctx.rank(x)
    axis = node.attr("axis") % rank
    mixed = [axis] if ctx.opset >= 13 else list(range(axis, rank))
    labels = dict(ctx.get(x))
    frozen = [labels.pop(a) for a in mixed if a in labels]
    if frozen:
        ctx.freeze(f"{node.op_type} over channels (axis {', '.join(map(str, mixed))}) mixes them", frozen)
    ctx.set(node.outputs[0], labels)
