"""Printable reports: the analysis table (groups, channels, members, shares, blocked and why) and prune results."""

import numpy as np
from rich.table import Table


def group_shares(analysis, cost):
    """Per group: the fraction of the model's parameters and FLOPs its channels carry (all of them removed)."""
    shares = []
    offset = 0
    for g in analysis.groups:
        mask = np.zeros(cost.channels, bool)
        mask[offset:offset + g.channels] = True
        offset += g.channels
        counts = cost.counts(mask)
        shares.append((1 - counts.params / max(cost.base.params, 1), 1 - counts.flops / max(cost.base.flops, 1)))
    return shares


def analysis_table(analysis, cost, limit=None):
    table = Table(title=f"{len(analysis.groups)} channel groups, {len(analysis.barriers)} barriers")
    for col, justify in (("group", "right"), ("first member", "left"), ("channels", "right"), ("members", "right"),
                         ("params %", "right"), ("FLOPs %", "right"), ("status", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col != "status")  # names stay whole
    shares = group_shares(analysis, cost)
    for g, (p, f) in list(zip(analysis.groups, shares))[:limit]:
        if not g.blocked.any():
            status = "prunable"
        elif g.blocked.all():
            status = "blocked: " + "; ".join(g.reasons[:2])
        else:
            status = f"{g.prunable} prunable; blocked: " + "; ".join(g.reasons[:2])
        table.add_row(str(g.id), g.key, str(g.channels), str(len(g.members)), f"{100 * p:.1f}", f"{100 * f:.1f}",
                      status)
    return table


def barrier_table(analysis):
    table = Table(title="barriers (channels that cross them stay)")
    table.add_column("node", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("why")
    for b in analysis.barriers:
        table.add_row(b.node, b.op_type, b.reason)
    return table


def result_table(before, after, plan, analysis):
    table = Table(title="pruning result")
    for col in ("", "before", "after", "removed"):
        table.add_column(col, justify="right" if col else "left")
    for name, b, a in (("parameters", before.params, after.params), ("FLOPs", before.flops, after.flops)):
        table.add_row(name, f"{b:,}", f"{a:,}", f"{100 * (1 - a / b):.1f}%" if b else "-")
    total = sum(g.channels for g in analysis.groups)
    table.add_row("channels", f"{total:,}", f"{total - plan.removed_channels:,}",
                  f"{100 * plan.removed_channels / max(total, 1):.1f}%")
    return table
