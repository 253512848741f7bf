"""The analysis as tables: one row per group (channels, members, its share of parameters and FLOPs, blocked and
why) and one per barrier.

Example:

>>> analysis.print(limit=10)         # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.table import Table

from spa_keras.common.console import console

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from spa_keras.analysis.groups import Analysis


def group_shares(analysis: Analysis) -> list[tuple[float, float]]:
    """Per group: the fraction of the model's parameters and FLOPs its channels carry (all of them removed)."""
    cost = analysis.cost
    shares = []
    for g, start in zip(analysis.groups, analysis.offsets):
        mask = np.zeros(cost.channels, bool)
        mask[start:start + g.channels] = True
        counts = cost.counts(mask)
        shares.append((1 - counts.params / max(cost.base.params, 1), 1 - counts.flops / max(cost.base.flops, 1)))
    return shares


def analysis_table(analysis: Analysis, limit: int | None = None) -> Table:
    table = Table(title=f"{len(analysis.groups)} channel groups, {len(analysis.barriers)} barriers")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("group", "right"), ("first member", "left"), ("channels", "right"), ("members", "right"),
        ("params %", "right"), ("FLOPs %", "right"), ("status", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col != "status")  # names stay whole
    for g, (p, f) in list(zip(analysis.groups, group_shares(analysis)))[:limit]:
        if not g.blocked.any():
            status = "prunable"
        elif g.blocked.all():
            status = "blocked: " + "; ".join(g.reasons[:2])
        else:
            status = f"{g.prunable} prunable; blocked: " + "; ".join(g.reasons[:2])
        table.add_row(str(g.id), str(g.key), str(g.channels), str(len(g.members)), f"{100 * p:.1f}",
                      f"{100 * f:.1f}", status)
    return table


def barrier_table(analysis: Analysis) -> Table:
    table = Table(title="barriers (channels that cross them stay)")
    table.add_column("node", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("why")
    for b in analysis.barriers:
        table.add_row(b.node, b.op_type, b.reason)
    return table


def print_analysis(analysis: Analysis, limit: int | None = None) -> None:
    """The summary line, the group table and the barriers on the console."""
    name = getattr(analysis.source, "name", "model")
    console.print(f"{name}: {analysis.counts}; {sum(g.channels for g in analysis.groups):,} channels in "
                  f"{len(analysis.groups)} groups, {sum(g.prunable for g in analysis.groups):,} prunable")
    console.print(analysis_table(analysis, limit))
    if analysis.barriers:
        console.print(barrier_table(analysis))
