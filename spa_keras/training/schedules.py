"""Pruning schedules for `SPACallback(when="during")`: how much of the target is removed at each training step.

A schedule maps a step (a training batch, or an epoch with `unit="epoch"`) to the fraction removed then (of the
callback's target kind: FLOPs, parameters or channels), and says at which steps to prune. The fraction never
decreases, and channels once removed stay removed. The names and arguments follow TFMOT's schedules.

Example:

>>> schedule = PolynomialDecay(initial=0.0, final=0.5, begin_step=0, end_step=100, frequency=10)
>>> [round(schedule.fraction(step), 3) for step in (0, 50, 100, 200)]
[0.0, 0.438, 0.5, 0.5]
>>> schedule.prunes_at(20), schedule.prunes_at(25)
(True, False)
"""

from __future__ import annotations

from spa_keras.common.errors import InputError


class Schedule:
    """Base: `fraction(step)` removed at `step`, `prunes_at(step)` whether to prune there.

    Args:
        begin_step: first step that prunes.
        end_step: last step that prunes (the final fraction is reached there); -1: never stops.
        frequency: prune every `frequency` steps between them.
        unit: "step" (training batches) or "epoch".
    """

    def __init__(self, begin_step: int = 0, end_step: int = -1, frequency: int = 100, unit: str = "step"):
        if unit not in ("step", "epoch"):
            raise InputError(f"unit={unit!r}: 'step' or 'epoch'")
        if int(frequency) < 1:
            raise InputError(f"frequency={frequency}: prune every N steps, N at least 1")
        if int(begin_step) < 0 or (int(end_step) != -1 and int(end_step) < int(begin_step)):
            raise InputError(f"begin_step={begin_step}, end_step={end_step}: need 0 <= begin_step <= end_step "
                             "(or end_step=-1)")
        self.begin_step, self.end_step, self.frequency, self.unit = int(begin_step), int(end_step), int(frequency), unit

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def prunes_at(self, step: int) -> bool:
        if step < self.begin_step or (self.end_step != -1 and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def fraction(self, step: int) -> float:
        raise NotImplementedError

    @property
    def final(self) -> float | None:
        raise NotImplementedError

    def _set_final(self, final: float) -> None:
        raise NotImplementedError

    def resolved(self, target: float) -> "Schedule":
        """A copy whose final fraction is the callback's `target` (a schedule that names another one is an
        error: the callback's target is what the plan must reach)."""
        import copy

        if self.final is not None and abs(self.final - target) > 1e-9:
            raise InputError(f"the schedule ends at {self.final:g} but the callback's target is {target:g}: give "
                             "one of them, or the same value")
        twin = copy.copy(self)
        twin._set_final(target)
        return twin


def _fraction(name, value):
    value = float(value)
    if not 0 <= value < 1:
        raise InputError(f"{name}={value}: a fraction removed, in [0, 1)")
    return value


class ConstantSparsity(Schedule):
    """The whole target at every pruning step from `begin_step` on (one-shot pruning during training).

    Args:
        target: the fraction removed (None: the callback's target).
    """

    def __init__(self, target: float | None = None, begin_step: int = 0, end_step: int = -1, frequency: int = 100,
                 unit: str = "step"):
        super().__init__(begin_step, end_step, frequency, unit)
        self.target = None if target is None else _fraction("target", target)

    def fraction(self, step):
        return 0.0 if step < self.begin_step else float(self.target or 0.0)

    @property
    def final(self):
        return self.target

    def _set_final(self, final):
        self.target = final


class PolynomialDecay(Schedule):
    """From `initial` at `begin_step` to `final` at `end_step` along final + (initial − final)·(1 − t)^power,
    t the progress between them (TFMOT's gradual pruning, Zhu & Gupta 2017).

    Args:
        initial: fraction removed at `begin_step`.
        final: fraction removed from `end_step` on (None: the callback's target).
        power: the curve's exponent (3: fast at first, gentle at the end).
    """

    def __init__(self, initial: float = 0.0, final: float | None = None, begin_step: int = 0, end_step: int = 1000,
                 power: float = 3.0, frequency: int = 100, unit: str = "step"):
        super().__init__(begin_step, end_step, frequency, unit)
        if self.end_step == -1:
            raise InputError("PolynomialDecay needs an end_step (when the final fraction is reached)")
        self.initial = _fraction("initial", initial)
        self.final_fraction = None if final is None else _fraction("final", final)
        self.power = float(power)

    @property
    def final(self):
        return self.final_fraction

    def fraction(self, step):
        final = self.final_fraction or 0.0
        if step < self.begin_step:
            return 0.0
        span = max(self.end_step - self.begin_step, 1)
        progress = min(max((step - self.begin_step) / span, 0.0), 1.0)
        return final + (self.initial - final) * (1 - progress) ** self.power

    def _set_final(self, final):
        self.final_fraction = final


__all__ = ["Schedule", "ConstantSparsity", "PolynomialDecay"]
