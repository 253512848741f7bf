"""How many channels of which group meet a target: blocks of channels, ranked, then the fewest that reach it.

With `round_to=R` every pruned group must keep a multiple of R channels, so a group loses channels in blocks: first
`C mod R` of its lowest scored (when that is not 0), then R at a time. With R = 1 every channel is its own block.
Blocks are ranked globally by their mean score (`global_ranking`) or by the fraction of their group they complete
(uniform pruning); within a group they always go in score order. The smallest prefix of the ranking that reaches
the target is found by bisection on the exact cost model (what is removed grows with the prefix). Coarse blocks
overshoot (one 8-channel block of a 16-channel layer is half its FLOPs): the ranking then goes on from the prefix
just short of the target, skipping blocks that would overshoot, so the landing stays in score order. Only where that
lands further than 1% away does a local search trade blocks between groups (give one back, take one, or give one
back and take others until the target is reached again) for the closest landing the block sizes allow.

Example:

>>> import numpy as np
>>> blocks = group_blocks(np.array([5, 0, 3, 1, 2, 4]), channels=6, round_to=4)   # 6 channels, keep 4 (or 0)
>>> [b.tolist() for b in blocks]
[[5, 0]]
>>> [b.tolist() for b in group_blocks(np.array([2, 0, 1]), channels=3, round_to=1)]
[[2], [0], [1]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from spa_keras.analysis.groups import ChannelGroup

# a landing within this much of the target (absolute fraction) needs no local search
CLOSE_ENOUGH = 0.005
# local search: at most this many cost evaluations
MAX_EVALUATIONS = 3000
# a score-ordered landing this close to the target is kept (else blocks are traded for a closer one)
WALK_LANDS = 0.01


def group_blocks(order: np.ndarray, channels: int, round_to: int) -> list[np.ndarray]:
    """The blocks a group of `channels` channels loses, in order: `order` lists its removable channels (global ids)
    from the lowest scored; after each block the group keeps a multiple of `round_to` channels."""
    if round_to == 1:
        return [order[i:i + 1] for i in range(len(order))]
    blocks: list[np.ndarray] = []
    start = 0
    size = channels % round_to or round_to
    while start + size <= len(order) and channels - start - size > 0:
        blocks.append(order[start:start + size])
        start += size
        size = round_to
    return blocks


class BlockSearch:
    """Blocks of every group, their ranking, and the search for a target.

    Args:
        groups: the analysis' `ChannelGroup`s.
        offsets: first global channel id of each group.
        score: per global channel, its score (higher keeps).
        eligible: per global channel, whether it may go (unblocked, not ignored, within the group's cap).
        round_to: channel counts of pruned groups stay multiples of this (one number, or one per group).
        global_ranking: rank blocks by score across groups, or remove the same fraction from each group.
        forced: per global channel, already removed (training with growing masks): their blocks go first and are
            never given back.
    """

    def __init__(self, groups: Sequence[ChannelGroup], offsets: Sequence[int], score: np.ndarray,
                 eligible: np.ndarray, round_to: int | Sequence[int], global_ranking: bool,
                 forced: np.ndarray | None = None) -> None:
        rounds = [round_to] * len(groups) if isinstance(round_to, int) else list(round_to)
        self.n = len(score)
        self.floor = np.zeros(len(groups), int)  # blocks of each group that must stay taken
        self.ids: list[np.ndarray] = []  # per group: its removable channels in the order they go
        self.ends: list[np.ndarray] = []  # per group: channels removed after each of its blocks
        keys = []  # (priority, tie-break, group, block index)
        for g in groups:
            ids = offsets[g.id] + np.flatnonzero(eligible[offsets[g.id]:offsets[g.id] + g.channels])
            ids = ids[np.argsort(score[ids], kind="stable")]
            blocks = group_blocks(ids, g.channels, rounds[g.id])
            if forced is not None:
                self.floor[g.id] = sum(1 for _ in _leading(blocks, forced))
            self.ids.append(ids)
            self.ends.append(np.cumsum([len(b) for b in blocks], dtype=int))
            free = max(g.prunable, 1)
            running = -np.inf
            for j, (block, end) in enumerate(zip(blocks, self.ends[-1])):
                running = max(running, float(np.mean(score[block])))  # a group's blocks go in order
                keys.append((running, end / free, g.id, j) if global_ranking else (end / free, running, g.id, j))
        keys.sort()
        self.order = np.array([g for _, _, g, _ in keys], int)  # the group of each ranked block

    @property
    def size(self) -> int:
        return len(self.order)

    def taken(self, k: int) -> np.ndarray:
        """Blocks taken per group by the first `k` blocks of the ranking."""
        return np.bincount(self.order[:k], minlength=len(self.ids))

    def mask(self, taken: np.ndarray) -> np.ndarray:
        """Removed-channel mask when each group loses its first `taken[g]` blocks."""
        mask = np.zeros(self.n, bool)
        for ids, ends, t in zip(self.ids, self.ends, taken):
            if t:
                mask[ids[:ends[t - 1]]] = True
        return mask

    def search(self, achieved: Callable[[np.ndarray], float], amount: float) -> np.ndarray:
        """The removed-channel mask: the shortest ranking prefix whose `achieved(mask)` reaches `amount`, then
        blocks traded between groups to land closer. Everything allowed when nothing reaches it."""
        if amount <= 0 or not self.size:
            return np.zeros(self.n, bool)
        value = lambda taken: achieved(self.mask(taken))  # noqa: E731
        lo, hi = 0, self.size
        if value(self.taken(hi)) < amount:
            return self.mask(self.taken(hi))
        while lo < hi:
            mid = (lo + hi) // 2
            if value(self._at_least_floor(mid)) >= amount:
                hi = mid
            else:
                lo = mid + 1
        taken = self._at_least_floor(hi)
        if abs(value(taken) - amount) > CLOSE_ENOUGH:
            walked = self._walk(hi, value, amount)
            # blocks traded for the landing alone, whatever their scores, only where the ranking cannot land
            taken = walked if abs(value(walked) - amount) <= WALK_LANDS else self._refine(taken, value, amount)
        return self.mask(taken)

    def _walk(self, k: int, value: Callable[[np.ndarray], float], amount: float) -> np.ndarray:
        """Blocks taken when the ranking goes on from the prefix just short of `amount` (its first `k` - 1 blocks),
        skipping blocks that would overshoot it by more than `CLOSE_ENOUGH` (and the rest of their group's), until
        the target is met: the landing stays in score order. Short of the target when the ranking runs out.

        A coarse block (round_to=8 on a 16-channel conv is half its FLOPs) overshoots; trading blocks by distance to
        the target alone took 112 of 128 neurons of a Dense layer (the cheapest FLOPs, not the lowest scores) at
        -30% FLOPs of an MNIST net, 94% accuracy where -50% kept 97%."""
        taken = self._at_least_floor(k - 1)
        seen = np.zeros(len(taken), int)  # blocks of each group the ranking has passed
        for g in self.order[:k - 1]:
            seen[g] += 1
        closed = np.zeros(len(taken), bool)
        for g in self.order[k - 1:min(self.size, k - 1 + MAX_EVALUATIONS)]:
            seen[g] += 1
            if closed[g] or taken[g] >= seen[g]:  # skipped with its group, or taken already (forced)
                continue
            move = _step(taken, g, +1)
            reached = value(move)
            if reached > amount + CLOSE_ENOUGH:
                closed[g] = True
                continue
            taken = move
            if reached >= amount:  # met (never more than CLOSE_ENOUGH over)
                break
        return taken

    def _at_least_floor(self, k: int) -> np.ndarray:
        return np.maximum(self.taken(k), self.floor)

    def _refine(self, taken: np.ndarray, value: Callable[[np.ndarray], float], amount: float) -> np.ndarray:
        """Trade blocks between groups while the landing gets closer to `amount` (from either side)."""
        memo: dict[bytes, float] = {}

        def cached(move: np.ndarray) -> float:  # moves revisit layouts
            key = move.tobytes()
            if key not in memo:
                memo[key] = value(move)
            return memo[key]

        distance = abs(cached(taken) - amount)
        budget = [MAX_EVALUATIONS]

        def measured(move: np.ndarray) -> tuple[float, np.ndarray]:
            budget[0] -= 1
            return abs(cached(move) - amount), move

        while distance > CLOSE_ENOUGH and budget[0] > 0:
            best = min((measured(move) for move in self._moves(taken, cached, amount, budget)),
                       key=lambda pair: pair[0], default=None)
            if best is None or best[0] >= distance - 1e-12:
                break
            distance, taken = best
        return taken

    def _moves(self, taken: np.ndarray, value: Callable[[np.ndarray], float], amount: float,
               budget: list[int]) -> Iterator[np.ndarray]:
        """Give one block back or take one; or give one back and take blocks of another group until the target is
        reached again."""
        groups = range(len(taken))
        can_give = [g for g in groups if taken[g] > self.floor[g]]
        can_take = [g for g in groups if taken[g] < len(self.ends[g])]
        for g in can_give:
            yield _step(taken, g, -1)
        for h in can_take:
            yield _step(taken, h, +1)
        for g in can_give:
            for h in can_take:
                if h == g:
                    continue
                move = _step(taken, g, -1)
                while move[h] < len(self.ends[h]) and budget[0] > 0:
                    move = _step(move, h, +1)
                    budget[0] -= 1
                    if value(move) >= amount:
                        break
                yield move
            if budget[0] <= 0:
                return


def _leading(blocks: list[np.ndarray], forced: np.ndarray) -> Iterator[np.ndarray]:
    """The leading blocks whose channels are all forced."""
    for block in blocks:
        if not forced[block].all():
            return
        yield block


def _step(taken: np.ndarray, group: int, by: int) -> np.ndarray:
    move = taken.copy()
    move[group] += by
    return move
