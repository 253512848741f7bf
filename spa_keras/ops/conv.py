"""Conv and ConvTranspose: output channels are new labels; input channels bind the kernel's input axis.

- `group == 1`: W [M, C, k...] axis 1 takes the input's labels, axis 0 (and the bias) new labels.
- Depthwise (`C / group == 1`, channel multiplier m = M / C): output channel c·m + j comes from input channel c, so
  the outputs repeat the input labels m times and `group` shrinks with the channels (rewritten in surgery).
- Grouped (`1 < group < C`): every group must stay the same size, so position j of each group is one channel: the
  input labels are merged across groups, and the outputs get M / group new labels tiled over the groups.
"""

import numpy as np

from spa_keras.ops.registry import register


def _bind_bias(ctx, node, labels, slot=2):
    if len(node.inputs) > slot and node.inputs[slot]:
        ctx.bind(node.inputs[slot], 0, labels)


def _input_channels(ctx, node):
    """The input's channel labels (or None); False when the kernel is computed, which makes the op a barrier."""
    if not ctx.is_param(node.inputs[1]):
        ctx.freeze(f"{node.op_type} with a computed (non-constant) kernel")
        return False
    labels = ctx.get(node.inputs[0])
    spatial = [l for a, l in labels.items() if a != 1]
    if spatial:
        ctx.freeze("channels on a spatial axis of a convolution input", spatial)
    return labels.get(1)


@register("Conv", creates_channels=True)
def conv(ctx, node):
    lin = _input_channels(ctx, node)
    if lin is False:
        return
    w = node.inputs[1]
    m, cg = ctx.shape(w)[:2]
    group = node.attr("group")
    c = cg * group
    if group == 1:
        if lin is not None:
            ctx.bind(w, 1, lin)
        out = ctx.new(m)
    elif cg == 1:  # depthwise
        if lin is None:
            return  # channels tied to unprunable inputs
        out = np.repeat(lin, m // c)
    else:
        if lin is not None:
            per_group = lin.reshape(group, cg)
            for g in range(1, group):
                ctx.union(per_group[0], per_group[g])
            ctx.bind(w, 1, per_group[0])
        out = np.tile(ctx.new(m // group), group)
    ctx.bind(w, 0, out)
    _bind_bias(ctx, node, out)
    ctx.set(node.outputs[0], {1: out})


@register("ConvTranspose", creates_channels=True)
def conv_transpose(ctx, node):
    lin = _input_channels(ctx, node)
    if lin is False:
        return
    w = node.inputs[1]
    c, mg = ctx.shape(w)[:2]
    group = node.attr("group")
    if group == 1:
        if lin is not None:
            ctx.bind(w, 0, lin)
        out = ctx.new(mg)
        ctx.bind(w, 1, out)
    elif c == group and mg == 1:  # depthwise
        if lin is None:
            return
        ctx.bind(w, 0, lin)
        out = lin
    else:
        ctx.freeze("grouped transposed convolution")
        return
    _bind_bias(ctx, node, out)
    ctx.set(node.outputs[0], {1: out})
