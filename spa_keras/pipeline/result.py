"""`PruneResult`: what `spa.prune` returns, with a report that prints as a table.

Example:

>>> result = spa.prune(model, flops=0.5)        # doctest: +SKIP
>>> print(result.report)                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.table import Table

from spa_keras.analysis.cost import Counts
from spa_keras.analysis.groups import Analysis
from spa_keras.common.console import render_text
from spa_keras.planning.plan import PruningPlan


@dataclasses.dataclass
class PruneReport:
    """Counts before and after and the channels removed: `print()` (or a rich console) shows it as a table."""

    before: Counts
    after: Counts
    removed_channels: int
    channels: int

    def table(self) -> Table:
        table = Table(title="pruning result")
        for col in ("", "before", "after", "removed"):
            table.add_column(col, justify="right" if col else "left")
        for name, b, a in (("parameters", self.before.params, self.after.params),
                           ("FLOPs", self.before.flops, self.after.flops)):
            table.add_row(name, f"{b:,}", f"{a:,}", f"{100 * (1 - a / b):.1f}%" if b else "-")
        table.add_row("channels", f"{self.channels:,}", f"{self.channels - self.removed_channels:,}",
                      f"{100 * self.removed_channels / max(self.channels, 1):.1f}%")
        return table

    def __rich__(self) -> Table:
        return self.table()

    def __str__(self) -> str:
        return render_text(self.table())


@dataclasses.dataclass
class PruneResult:
    """The slim model (the same kind as the input), the plan, counts before and after, the analysis."""

    model: Any
    plan: PruningPlan
    before: Counts
    after: Counts
    analysis: Analysis

    @property
    def report(self) -> PruneReport:
        return PruneReport(self.before, self.after, self.plan.removed_channels, self.analysis.channels)
