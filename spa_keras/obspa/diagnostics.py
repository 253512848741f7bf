"""What OBSPA's reconstruction achieved, layer by layer: the error each consumer was predicted to take, the error
measured after its refit, and how far each BatchNorm's statistics moved.

The predicted error of a consumer is the sum of its removed channels' costs along the removal path (relative to the
layer's output energy, as the scores are); the measured one is ‖W x_d − Ŵ x_p‖² / ‖W x_d‖² on the same inputs
after the refit, x_d the original network's input of the layer and x_p the pruned network's (so it includes what
the layers before it did). A layer whose measured error is far above its prediction, or near 1, is where a slim
model collapses: `collapsed` names them, and OBSPA warns with their names.

Example:

>>> report = ConsumerReport("conv2d_4", removed=28, channels=64, predicted=0.08, measured=0.13)
>>> report.collapsed
False
"""

from __future__ import annotations

import dataclasses

# a layer whose output error after the refit is this share of its output energy or more has lost what it computed
COLLAPSED = 0.5


@dataclasses.dataclass(frozen=True)
class ConsumerReport:
    """One reconstructed layer: `removed` of its `channels` input channels gone; relative output errors."""

    name: str
    removed: int
    channels: int
    predicted: float
    measured: float

    @property
    def collapsed(self) -> bool:
        return self.measured >= COLLAPSED


@dataclasses.dataclass(frozen=True)
class NormReport:
    """One BatchNorm recalibrated after pruning: `shift` = mean |μ' − μ| / σ, `scale` = median σ' / σ (1: unchanged)."""

    name: str
    shift: float
    scale: float


@dataclasses.dataclass
class Diagnostics:
    """What one reconstruction did (`OBSPA.diagnostics` after pruning)."""

    consumers: list[ConsumerReport] = dataclasses.field(default_factory=list)
    norms: list[NormReport] = dataclasses.field(default_factory=list)

    @property
    def collapsed(self) -> list[ConsumerReport]:
        return [c for c in self.consumers if c.collapsed]

    def __rich__(self) -> object:
        from rich.table import Table

        table = Table(title="OBSPA reconstruction")
        for column in ("layer", "channels removed", "predicted error", "error after refit"):
            table.add_column(column, justify="left" if column == "layer" else "right")
        for c in self.consumers:
            style = "red" if c.collapsed else None
            table.add_row(c.name, f"{c.removed}/{c.channels}", f"{c.predicted:.2%}", f"{c.measured:.2%}",
                          style=style)
        for n in self.norms:
            table.add_row(f"{n.name} (BatchNorm)", "", f"mean moved {n.shift:.2f} σ", f"σ x {n.scale:.2f}")
        return table

    def __str__(self) -> str:
        from spa_keras.common.console import render_text

        return render_text(self)
