"""Targets: what a plan removes (a fraction of prunable channels, FLOPs, parameters or measured latency) and the
record of how it got there (`Target`, written into the plan's JSON as "target").

Example:

>>> kind, amount = target_of(ratio=None, flops=0.5, params=None)
>>> kind, amount
('flops', 0.5)
>>> Target(kind, amount, reached=0.49, criterion="l1").to_json()
{'kind': 'flops', 'amount': 0.5, 'reached': 0.49, 'criterion': 'l1'}
>>> Target.from_json({"kind": "flops", "amount": 0.5, "reached": 0.49, "future_field": 1}).extra
{'future_field': 1}
>>> Target().to_json()
{}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spa_keras.common.errors import InputError

KINDS = ("ratio", "flops", "params", "latency")
# what a plan with new weight values says about them in its JSON
RECONSTRUCTED = ("kept weights of the layers after removed channels were refit (their new values are in the plan's "
                 ".weights.npz)")


@dataclasses.dataclass
class Target:
    """What a plan aimed at and what it reached, with the options that made it.

    Args:
        kind: "ratio" (of prunable channels), "flops", "params" or "latency" (None for a plan written by hand).
        amount: the fraction removed that was asked.
        reached: the fraction the plan removes (counted exactly; for latency, measured).
        criterion: the criterion's name; `criterion_options` its repr when it had options.
        reconstructed: the plan carries new values of kept weights (OBSPA).
        global_ranking, round_to, max_per_group, runtime, ignore: the options the plan was made with;
            `channel_multiple` the multiple `round_to="auto"` used.
        steps: rounds of iterative pruning.
        flops_removed, measured_speedup, rounds, batch: a latency target's measured search.
        when, schedule: how `SPACallback` pruned.
        extra: fields this version does not know (a plan written by another version), kept as they were.
    """

    kind: str | None = None
    amount: float | None = None
    reached: float | None = None
    criterion: str | None = None
    criterion_options: str | None = None
    reconstructed: bool = False
    when: str | None = None
    schedule: str | None = None
    global_ranking: bool | None = None
    round_to: int | str | None = None
    max_per_group: float | None = None
    channel_multiple: int | None = None
    runtime: str | None = None
    ignore: list[str] | None = None
    steps: int | None = None
    flops_removed: float | None = None
    measured_speedup: float | None = None
    rounds: list[dict] | None = None
    batch: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields that are set, in this order (as plans have always written them)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "extra":
                out.update(value)
            elif field.name == "reconstructed":
                if value:
                    out[field.name] = RECONSTRUCTED
            elif value is not None:
                out[field.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known["reconstructed"] = bool(known.get("reconstructed"))
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def fraction(name: str, value: Any) -> float | None:
    """`value` as a fraction removed, in [0, 1) (None stays None); else an `InputError` that names `name`."""
    if value is None:
        return None
    value = float(value)
    if not 0 <= value < 1:
        raise InputError(f"{name}={value}: a fraction removed, in [0, 1)")
    return value


def target_of(ratio: float | None, flops: float | None, params: float | None,
              latency: float | None = None) -> tuple[str, float]:
    """(kind, amount) of the one target given."""
    targets = {k: fraction(k, v) for k, v in zip(KINDS, (ratio, flops, params, latency)) if v is not None}
    if len(targets) != 1:
        raise InputError("give exactly one target: ratio=, flops=, params= or latency= (a fraction removed)")
    (kind, amount), = targets.items()
    assert amount is not None  # given, so a fraction
    return kind, float(amount)
