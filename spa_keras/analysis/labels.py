"""Channel labels: integer ids for every channel position, merged by a vectorised union-find.

Mask propagation gives each channel a label where it is created (a Conv's output channels, a Gemm's output
features, ...); rules move label arrays through the graph and `union` the labels of positions that must be removed
together (residual adds, shared weights, attention heads). The roots at the end are the prunable channels.
Arrays of labels are processed at once: no Python loop per channel.

Example:

>>> uf = UnionFind()
>>> a, b = uf.new(3), uf.new(3)
>>> uf.union(a, b)
>>> bool((uf.find(a) == uf.find(b)).all())
True
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    """Union-find over integer labels with array operations."""

    def __init__(self) -> None:
        self.parent: np.ndarray = np.zeros(0, dtype=np.int64)
        self._size = 0

    def new(self, n: int) -> np.ndarray:
        """`n` fresh labels."""
        start = self._size
        self._size += n
        if self._size > len(self.parent):
            grown = np.arange(max(self._size, 2 * len(self.parent)), dtype=np.int64)
            grown[: len(self.parent)] = self.parent
            self.parent = grown
        return np.arange(start, start + n, dtype=np.int64)

    def __len__(self) -> int:
        return self._size

    def find(self, labels: np.ndarray) -> np.ndarray:
        """Roots of `labels` (any shape), with path compression."""
        labels = np.asarray(labels, dtype=np.int64)
        parent = self.parent
        roots = parent[labels]
        while True:
            up = parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        parent[labels] = roots
        return roots

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Merge label `a[i]` with `b[i]` for every i (arrays of one shape)."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        while True:
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            if not differ.any():
                return
            # several pairs may share a root: the last write wins, the loop merges the rest
            lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
            self.parent[hi] = lo

    def roots(self) -> np.ndarray:
        """Root of every label created so far."""
        return self.find(np.arange(self._size))
