"""PruningPlan: which channels of which group to remove (made by `spa_keras.planning.selection.make_plan`); JSON in
and out, replayable on the model it was made on (its fingerprint), with the new values of kept weights a
reconstruction gives beside it.

Example:

>>> plan = PruningPlan({"conv/kernel:0@0": [1, 3]}, {"conv/kernel:0@0": 8}, Target("ratio", 0.25))
>>> plan.removed_channels, str(next(iter(plan.removed)))
(2, 'conv/kernel:0@0')
>>> PruningPlan.from_json(plan.to_json()).removed == plan.removed
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from typing import Any, Iterator, NoReturn

import numpy as np

from spa_keras.analysis.groups import Analysis, GroupKey
from spa_keras.common.errors import InputError, first_line
from spa_keras.planning.target import Target

FORMAT = "spa-keras plan 1"


@dataclasses.dataclass
class PruningPlan:
    """Which channels of which group go, for the model the plan was made on.

    `updates` ({parameter: value}) are new values of kept weights (OBSPA's reconstruction): full-size arrays in the
    parameter's layout in the engine's graph (removed positions are ignored), applied by every surgery before it
    slices. A plan with updates saves them beside its JSON (`plan.json` -> `plan.weights.npz`); loading such a plan
    without that file is an error, since replaying it without them would give another model.
    """

    removed: dict[GroupKey, list[int]]  # sorted channel indices to remove, per group
    channels: dict[GroupKey, int]  # channel count per group (a plan replays only on a model with the same groups)
    target: Target = dataclasses.field(default_factory=Target)
    updates: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    fingerprint: str | None = None  # Analysis.fingerprint of the model the plan was made on

    def __post_init__(self) -> None:
        # keys may be given as their text ("param:axis@position"), targets as their JSON
        self.removed = {GroupKey.parse(k): list(v) for k, v in self.removed.items()}
        self.channels = {GroupKey.parse(k): int(v) for k, v in self.channels.items()}
        if not isinstance(self.target, Target):
            self.target = Target.from_json(dict(self.target or {}))

    def to_json(self) -> str:
        data: dict[str, Any] = {"format": FORMAT, "fingerprint": self.fingerprint, "target": self.target.to_json(),
                "channels": {str(k): v for k, v in self.channels.items()},
                "removed": {str(k): v for k, v in self.removed.items()}}
        if self.updates:
            data["updates"] = sorted(self.updates)  # kept weights whose values this plan changes
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, updates: dict[str, Any] | None = None) -> PruningPlan:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError("not a spa-keras pruning plan (missing 'format': 'spa-keras plan 1')")
        _check_structure(data)
        changed = list(data.get("updates", []))
        given = updates or {}
        missing = sorted(set(changed) - set(given))
        if missing:
            raise InputError(f"the plan changes the values of {len(missing)} kept weight(s) ({', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''}) but their values were not given; without them "
                             "it would give another model (keep the plan's .weights.npz beside it)")
        try:
            removed = {GroupKey.parse(k): list(map(int, v)) for k, v in data["removed"].items()}
            channels = {GroupKey.parse(k): v for k, v in data["channels"].items()}
        except ValueError as exc:  # no model has such a group
            raise InputError(f"the plan does not fit this model: {exc}") from exc
        return cls(removed, channels, Target.from_json(data.get("target", {})),
                   {k: np.asarray(given[k]) for k in changed}, data.get("fingerprint"))

    @staticmethod
    def weights_path(path: str | os.PathLike) -> str:
        """Where a plan saved at `path` keeps its new weight values."""
        return os.path.splitext(str(path))[0] + ".weights.npz"

    def save(self, path: str | os.PathLike) -> str | os.PathLike:
        with self.staged(path):
            pass
        return path

    @contextlib.contextmanager
    def staged(self, path: str | os.PathLike) -> Iterator[str | os.PathLike]:
        """Write the plan beside `path` now, move it into place when the block succeeds (`spa prune` writes the
        model inside, so a failure leaves neither). The weight values land before the JSON that names them."""
        from spa_keras.common import files

        with files.atomic_output(path) as tmp_json:
            with open(tmp_json, "w") as f:
                f.write(self.to_json())
            with contextlib.ExitStack() as stack:
                if self.updates:
                    tmp = stack.enter_context(files.atomic_output(self.weights_path(path)))
                    archive = io.BytesIO()  # made in memory: a full disk fails one write, not zipfile midway
                    np.savez(archive, **self.updates)
                    with open(tmp, "wb") as f:
                        f.write(archive.getvalue())
                yield path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningPlan:
        try:
            with open(path) as f:
                text = f.read()
            updates = None
            if os.path.exists(cls.weights_path(path)):
                with np.load(cls.weights_path(path)) as archive:
                    updates = {k: archive[k] for k in archive.files}
            return cls.from_json(text, updates)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: cannot read the pruning plan ({first_line(exc)})") from exc

    @property
    def removed_channels(self) -> int:
        return sum(len(v) for v in self.removed.values())

    def mask(self, analysis: Analysis) -> np.ndarray:
        """Global removed-channel mask for `analysis`; raises when the plan was made for another model."""
        if self.fingerprint and self.fingerprint != analysis.fingerprint:
            raise InputError(f"the plan was made on another model (fingerprint {self.fingerprint}, this model "
                             f"{analysis.fingerprint}): make a plan for this model (--flops/--ratio/--params)")
        by_key = {g.key: g for g in analysis.groups}
        removed = np.zeros(len(analysis.group_of_channel), bool)
        offsets = analysis.offsets
        for key, indices in self.removed.items():
            group = by_key.get(key)
            if group is None or group.channels != self.channels.get(key):
                raise InputError(f"the plan does not fit this model: group {key} "
                                 f"{'is missing' if group is None else f'has {group.channels} channels'}")
            idx = np.asarray(indices, int)
            if len(idx) and (idx.min() < 0 or idx.max() >= group.channels or group.blocked[idx].any()):
                raise InputError(f"the plan removes invalid or blocked channels of group {key}")
            if len(np.unique(idx)) >= group.channels:
                raise InputError(f"the plan removes all {group.channels} channels of group {key}; a group keeps at "
                                 "least one (edit the plan)")
            removed[offsets[group.id] + idx] = True
        return removed


def _check_structure(data: dict[str, Any]) -> None:
    """A plan's JSON has the types replaying it needs; else one line that names the field."""
    def fail(field: str, wants: str) -> NoReturn:
        raise InputError(f"not a valid spa-keras pruning plan: '{field}' must be {wants}")

    for field in ("removed", "channels"):
        if not isinstance(data.get(field), dict):
            fail(field, "an object {group key: ...}")
    for key, idx in data["removed"].items():
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            fail(f"removed.{key}", "a list of channel indices")
    for key, count in data["channels"].items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            fail(f"channels.{key}", "a positive channel count")
    if not isinstance(data.get("target", {}), dict):
        fail("target", "an object")
    if not isinstance(data.get("updates", []), list):
        fail("updates", "a list of parameter names")
    if not isinstance(data.get("fingerprint"), (str, type(None))):
        fail("fingerprint", "a string")
