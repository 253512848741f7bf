"""The ONNX surgery's table of op rewriters, one entry per op type.

A rewriter is `rewrite(surgery, node, proto)`: after the parameters were sliced, it fixes what one op says about
channel counts in its attributes or shape operands (depthwise `group`, GroupNorm's `num_groups`, Split sizes, Slice
bounds, Reshape/Expand/Resize targets). `surgery` is the `OnnxSurgery` (old and new shapes, edit helpers), `node`
the SPAGraph node and `proto` the node in the model being written. Ops without an entry need no rewrite.

Example:

>>> @rewrites("MyOp")
... def my_op(surgery, node, proto):
...     surgery.set_attr(proto, "width", surgery.new_shape(node.outputs[0])[1])
>>> rewriter_for("MyOp") is my_op
True
>>> del REWRITERS["MyOp"]
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from spa_keras.ops.slicing import slice_params

REWRITERS: dict[str, Callable] = {}


def rewrites(*op_types: str):
    def wrap(fn):
        for op in op_types:
            REWRITERS[op] = fn
        return fn

    return wrap


def rewriter_for(op_type: str):
    return REWRITERS.get(op_type)


@rewrites("Conv", "ConvTranspose")
def conv_group(surgery, node, proto):
    group = node.attr("group")
    w_shape = surgery.old_shape(node.inputs[1])
    depthwise = group > 1 and (w_shape[1] == 1 if node.op_type == "Conv" else w_shape[0] == group and w_shape[1] == 1)
    if depthwise:
        surgery.set_attr(proto, "group", surgery.new_shape(node.inputs[0])[1])


@rewrites("GroupNormalization")
def group_norm_groups(surgery, node, proto):
    old_c, new_c = surgery.old_shape(node.inputs[0])[1], surgery.new_shape(node.inputs[0])[1]
    if old_c != new_c:
        surgery.set_attr(proto, "num_groups", node.attr("num_groups") * new_c // old_c)


@rewrites("Reshape", "Expand")
def shape_target(surgery, node, proto):
    surgery.rewrite_shape_input(node, 1)


@rewrites("Resize")
def resize_sizes(surgery, node, proto):
    if len(node.inputs) > 3 and node.inputs[3]:
        surgery.rewrite_shape_input(node, 3)


@rewrites("Split")
def split_sizes(surgery, node, proto):
    x = node.inputs[0]
    axis = node.attr("axis") % len(surgery.old_shape(x))
    if surgery.old_shape(x)[axis] == surgery.new_shape(x)[axis]:
        return
    sizes = [surgery.new_shape(t)[axis] for t in node.outputs]
    if node.attr("split") is not None:
        surgery.set_attr(proto, "split", sizes)
    elif len(node.inputs) > 1 and node.inputs[1]:
        surgery.set_input_constant(node, 1, np.array(sizes, dtype=np.int64))
    elif len(set(sizes)) > 1:
        surgery.add_input_constant(node, np.array(sizes, dtype=np.int64))


@rewrites("Slice")
def slice_bounds(surgery, node, proto):
    x = node.inputs[0]
    spec = slice_params(surgery.ctx, node, len(surgery.old_shape(x)))
    if spec is None:  # bounds computed at run time: the rule froze the channels they cut, none of them goes
        return
    changed = False
    starts, ends = [], []
    for axis, start, end, step in spec:
        keep = surgery.kept_positions(x, axis)
        if keep is None or keep.all():
            starts.append(start)
            ends.append(end)
            continue
        lo, hi, _ = slice(start, end).indices(len(keep))  # the rule lets only step 1 cut channels
        new_lo = int(keep[:lo].sum())
        starts.append(new_lo)
        ends.append(new_lo + int(keep[lo:hi].sum()))
        changed = True
    if not changed:
        return
    if len(node.inputs) == 1:
        surgery.set_attr(proto, "starts", starts)
        surgery.set_attr(proto, "ends", ends)
    else:
        surgery.set_input_constant(node, 1, np.array(starts, dtype=np.int64))
        surgery.set_input_constant(node, 2, np.array(ends, dtype=np.int64))
