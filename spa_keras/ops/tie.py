"""Tie (domain `spa`): channel j of every input goes together.

A front-end says this when one config value sets the width of several sublayers (keras-hub's ViTEncoder has one
`mlp_dim` for all its blocks), so that every block keeps the same channels count. It has no outputs and no cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spa_keras.ops.registry import register

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node
    from spa_keras.analysis.propagation import Propagation


@register("Tie")
def tie(ctx: Propagation, node: Node) -> None:
    labels = []
    for t in node.inputs:
        axis = node.attr("axis", -1) % ctx.rank(t)
        labels.append(ctx.get(t).get(axis))
    present = [l for l in labels if l is not None]
    if len(present) != len(labels):
        ctx.freeze("tied widths with channels on some inputs only", present)
        return
    for l in present[1:]:
        ctx.union(present[0], l)
