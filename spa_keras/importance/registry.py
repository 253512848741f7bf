"""The registry of importance criteria, selectable by name or passed as an instance.

Example:

>>> @register_criterion("ones")                          # doctest: +SKIP
... class Ones(Criterion):
...     def member_scores(self, analysis, member, channels, context):
...         return np.ones(channels)
>>> get_criterion("ones")                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis
    from spa_keras.importance.base import Criterion

C = TypeVar("C", bound="type[Criterion]")

CRITERIA: dict[str, type[Criterion]] = {}

# The defaults, in one place. `spa.prune` and `spa prune` prune a model as it is, trained and with no fine-tuning to
# follow: OBSPA is the criterion that keeps such a model usable (it refits the kept weights; README, "OBSPA"), at the
# price of time (seconds on small models, about a minute on ResNet50 on 2 cores, against L1's second or two).
# Training routes fine-tune anyway and rescore often (SPACallback; `steps` > 1 rescores between steps, which a
# criterion that refits cannot): they use TRAINING_CRITERION.
DEFAULT_CRITERION = "obspa"
TRAINING_CRITERION = "l1"


def register_criterion(name: str) -> Callable[[C], C]:
    def wrap(cls: C) -> C:
        CRITERIA[name] = cls
        cls.name = name
        return cls

    return wrap


def get_criterion(criterion: Any) -> Criterion | Callable[[Analysis], Sequence[Any]]:
    """A criterion instance from a registered name (default options) or the criterion itself (an instance or any
    callable `f(analysis) -> [scores per group]`)."""
    from spa_keras.common.errors import InputError

    if callable(criterion) and not isinstance(criterion, str):
        if isinstance(criterion, type):
            return criterion()
        return criterion
    try:
        return CRITERIA[str(criterion).lower()]()
    except KeyError as exc:
        raise InputError(f"unknown criterion {criterion!r}; available: {', '.join(sorted(CRITERIA))}") from exc


def default_criterion(analysis: Analysis, steps: int = 1) -> str:
    """The criterion `spa.prune(criterion=None)` and `spa prune` without --criterion use on `analysis`:
    `DEFAULT_CRITERION` when it can run on the model as it is, else `TRAINING_CRITERION`: for iterative pruning
    (`steps` > 1 rescores between steps), for inputs that are not floating point (token ids: OBSPA cannot make them
    up), for a graph without a model behind it, and for a model whose inputs OBSPA would optimise but that gives it
    neither BatchNorm statistics nor a class output to optimise them for (or has several inputs; BatchNorm folded
    into an ONNX graph): its synthetic inputs would be Gaussian noise, measured useless for the Hessians of a
    trained CNN (README, OBSPA)."""
    if DEFAULT_CRITERION != "obspa":
        return DEFAULT_CRITERION
    source = getattr(analysis.graph, "source", None)
    if steps > 1 or source is None or any(np.dtype(spec.dtype).kind != "f" for spec in source.graph_specs):
        return TRAINING_CRITERION
    backend = source.activations()
    if backend.optimises_inputs:
        import warnings

        with warnings.catch_warnings():  # why there is no probe matters only when OBSPA runs
            warnings.simplefilter("ignore")
            if backend.norm_probe() is None:
                return TRAINING_CRITERION
    return DEFAULT_CRITERION


def criterion_name(criterion: Any) -> str:
    if isinstance(criterion, str):
        return criterion.lower()
    return getattr(criterion, "name", None) or getattr(criterion, "__name__", None) or type(criterion).__name__


def score_groups(criterion: Any, analysis: Analysis, data: Any = None, loss: Any = None) -> list[np.ndarray]:
    """Run `criterion` on `analysis` and check its answer: one finite float64 array per group, one score per
    channel."""
    from spa_keras.common.errors import InputError
    from spa_keras.importance.base import Criterion

    criterion = get_criterion(criterion)
    ga = analysis
    if isinstance(criterion, Criterion):
        scores = criterion(ga, data=data, loss=loss)
    else:  # a plain function of the analysis
        scores = criterion(ga)
    name = criterion_name(criterion)
    if len(scores) != len(ga.groups):
        raise InputError(f"criterion {name!r} returned {len(scores)} score arrays for {len(ga.groups)} groups")
    out: list[np.ndarray] = []
    for group, s in zip(ga.groups, scores):
        s = np.asarray(s, np.float64).reshape(-1)
        if len(s) != group.channels:
            raise InputError(f"criterion {name!r} gave {len(s)} scores to group {group.key} of {group.channels} "
                             "channels")
        if not np.isfinite(s).all():
            raise InputError(f"criterion {name!r} gave non-finite scores to group {group.key} (a loss that "
                             "overflows, or data with NaNs?)")
        out.append(s)
    return out
