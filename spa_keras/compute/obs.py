"""Layer-wise Optimal Brain Surgeon for channels, in TensorFlow ops (float64; on a GPU when TensorFlow sees one).

A consumer computes Y = W X (W: [d_out, d_in]); H = E[x xᵀ] is the Hessian of its output error ½‖ΔW X‖². Removing
the columns Q of one input channel and compensating with the kept columns costs, exactly,

    ΔE(Q) = tr( W_Q ((H⁻¹)_QQ)⁻¹ W_Qᵀ ),

and the compensation is the least-squares refit of the kept columns K: Ŵ_K = W H_{:,K} (H_KK)⁻¹. When the inputs of
the consumer have themselves changed (its upstream layers were pruned and refit), the refit matches the original
outputs from the new inputs: Ŵ_K = W E[x_d x_pᵀ]_{:,K} (E[x_p x_pᵀ]_KK)⁻¹, x_d the original input, x_p the new one.
With a bias (or a BatchNorm after it) a constant input column lets the refit move the output mean too.

Example (the predicted error is the measured one):

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x, w = rng.normal(size=(500, 6)), rng.normal(size=(3, 6))
>>> h = x.T @ x / 500
>>> cost = float(block_errors(w, h, [np.array([0, 1])])[0])
>>> fit = refit(w, h, h, np.array([False, False, True, True, True, True]))
>>> bool(np.isclose(cost, np.sum((x @ w.T - x[:, 2:] @ fit[:, 2:].T) ** 2) / 500))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Hessians up to this many columns are factorised in float64; wider ones (damped, so well conditioned) in float32,
# which halves the time of the largest solves (a ResNet50 stage-4 3x3 conv has 4,608 columns)
FLOAT64_UP_TO = 2048


def _dtype(d: int) -> Any:
    import tensorflow as tf

    return tf.float64 if d <= FLOAT64_UP_TO else tf.float32


def damped(gram: np.ndarray, rows: int, damping: float) -> np.ndarray:
    """E[x xᵀ] from a sum over `rows` rows, with dead columns (never non-zero) set to 1 on the diagonal and
    `damping` · max(1, columns / rows) · mean(diag) added to it (keeps the solves well conditioned)."""
    h = gram / max(rows, 1)
    diag = np.einsum("ii->i", h)  # a writable view of the diagonal
    diag[diag <= 0] = 1.0
    # fewer rows than columns (a Dense after Flatten on 64 inputs: 3,136 columns) leave H rank-deficient and the
    # refit would fit those rows exactly: the ridge grows with columns per row (MNIST Flatten-Dense net, -50%
    # FLOPs data-free, round_to=1: 58.7% -> 79.8%; with 256 real images unchanged)
    diag += damping * max(1.0, len(h) / max(rows, 1)) * max(float(np.mean(diag)), 1e-12)
    return h


def block_errors(w: np.ndarray, h: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """ΔE of removing each block of columns (one channel's) alone, with the optimal compensation."""
    import tensorflow as tf

    dtype = _dtype(len(h))
    return _block_costs(_inverse(h, dtype), tf.constant(w, dtype), blocks)


def _inverse(h: np.ndarray, dtype: Any) -> Any:
    """H⁻¹ through its Cholesky factor (H is damped, so positive definite)."""
    import tensorflow as tf

    return tf.linalg.cholesky_solve(tf.linalg.cholesky(tf.constant(h, dtype)), tf.eye(len(h), dtype=dtype))


def refit(w: np.ndarray, cross: np.ndarray, h: np.ndarray, keep: np.ndarray,
          ridge: np.ndarray | None = None) -> np.ndarray:
    """W with its kept columns refit: Ŵ_K = (W cross_{:,K} + W_K diag(ridge_K)) (h_KK)⁻¹ (`cross` = E[x_d x_pᵀ],
    `h` = E[x_p x_pᵀ] damped, `ridge` the damping on h's diagonal, per column): the least-squares fit of the
    original outputs from the new inputs, its ridge pulling the kept columns towards their values in W rather than
    towards zero (as OBS's damped H does when x_p = x_d). Removed columns are returned as zero.

    Example (the ridge refit is the least-squares solution with rows that tie each kept column to W's):

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x, w, keep = rng.normal(size=(8, 5)), rng.normal(size=(2, 5)), np.array([True, True, True, False, True])
    >>> ridge = np.full(5, 0.5)
    >>> fit = refit(w, x.T @ x / 8, x.T @ x / 8 + np.diag(ridge), keep, ridge)
    >>> tie = np.sqrt(8 * 0.5) * np.eye(5)[keep]          # rows √(n λ) e_k with targets √(n λ) W_k
    >>> a = np.vstack([x[:, keep], tie[:, keep]])
    >>> b = np.vstack([x @ w.T, tie @ w.T])
    >>> bool(np.allclose(fit[:, keep], np.linalg.lstsq(a, b, rcond=None)[0].T))
    True
    """
    import tensorflow as tf

    k = np.flatnonzero(keep)
    dtype = _dtype(len(k))
    h_kk = tf.constant(h[np.ix_(k, k)], dtype)
    target = w @ cross[:, k] + (0.0 if ridge is None else w[:, k] * ridge[k])
    rhs = tf.constant(target.T, dtype)  # [d_K, d_out]
    fit = tf.linalg.cholesky_solve(tf.linalg.cholesky(h_kk), rhs).numpy().astype(np.float64).T
    out = np.zeros_like(w, dtype=np.float64)
    out[:, k] = fit
    return out


def _block_costs(h_inv: Any, w: Any, blocks: list[np.ndarray]) -> np.ndarray:
    """tr(W_Q ((H⁻¹)_QQ)⁻¹ W_Qᵀ) of each block Q alone, from H⁻¹ itself (TensorFlow tensors)."""
    import tensorflow as tf

    out = np.zeros(len(blocks))
    by_size: dict[int, list[int]] = {}
    for i, block in enumerate(blocks):
        by_size.setdefault(len(block), []).append(i)
    for which in by_size.values():  # blocks of one size in one batched solve
        index = tf.constant(np.stack([blocks[i] for i in which]), tf.int32)  # [n, q]
        inv_qq = tf.gather(tf.gather(h_inv, index, axis=0), index, axis=2, batch_dims=1)  # [n, q, q]
        w_q = tf.transpose(tf.gather(w, index, axis=1), [1, 2, 0])  # [n, q, d_out]
        z = tf.linalg.triangular_solve(tf.linalg.cholesky(inv_qq), w_q, lower=True)
        out[which] = tf.reduce_sum(z * z, axis=[1, 2]).numpy()
    return out


def removal_path(w: np.ndarray, h: np.ndarray, blocks: list[np.ndarray], rounds: int = 16) -> np.ndarray:
    """What removing each block costs on the way to removing them all, the cheapest first, with the optimal
    compensation at every step: the blocks' marginal errors along a greedy OBS path.

    Errors of single removals (`block_errors`) do not add up: in a layer of redundant channels each one alone costs
    almost nothing (the others take its part), but removing most of them costs much. The path removes, in `rounds`
    rounds, the cheapest blocks given those already gone (H⁻¹ and W downdated after each round, as OBS does), and
    spreads each round's exact joint error over its blocks in proportion to their single costs. Along the path
    the costs never decrease, so that the blocks with the lowest cost are a prefix of the path and their sum is
    the error of removing them together (exactly at round boundaries).

    Args:
        w: the consumer's matrix [d_out, d_in].
        h: its damped Hessian E[x xᵀ] [d_in, d_in].
        blocks: the columns of each block (one channel's), disjoint.
        rounds: how many downdates the path takes (more: closer to one block at a time).

    Returns:
        The marginal error of each block, in the order of `blocks`.

    Example (six columns in two directions: five go at the cost the path says, far more than their single costs):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 2)) @ rng.normal(size=(2, 6)) + 0.1 * rng.normal(size=(400, 6))
    >>> w, h = rng.normal(size=(3, 6)), x.T @ x / 400
    >>> blocks = [np.array([i]) for i in range(6)]
    >>> cost = removal_path(w, h, blocks, rounds=6)
    >>> first = np.argsort(cost)[:5]
    >>> together = block_errors(w, h, [first])[0]
    >>> bool(np.isclose(cost[first].sum(), together)), bool(together > 10 * block_errors(w, h, blocks)[first].sum())
    (True, True)
    """

    import tensorflow as tf

    n = len(blocks)
    out = np.zeros(n)
    if n == 0:
        return out
    dtype = _dtype(len(h))
    h_inv = _inverse(h, dtype)
    w_t = tf.constant(w, dtype)
    left = np.arange(n)  # blocks not yet removed
    kept = np.arange(len(h))  # columns of h_inv / w_t, in the original numbering
    floor, step = 0.0, max(1, -(-n // max(1, rounds)))
    while len(left):
        position = np.full(len(h), -1)
        position[kept] = np.arange(len(kept))
        local = [position[blocks[b]] for b in left]
        single = _block_costs(h_inv, w_t, local)
        order = np.argsort(single, kind="stable")[:step]
        chosen = np.concatenate([local[i] for i in order])
        inv_qq = tf.gather(tf.gather(h_inv, chosen, axis=0), chosen, axis=1)
        chol = tf.linalg.cholesky(inv_qq)
        w_q = tf.gather(w_t, chosen, axis=1)
        joint = float(tf.reduce_sum(tf.linalg.triangular_solve(chol, tf.transpose(w_q), lower=True) ** 2))
        share = single[order] / max(float(single[order].sum()), 1e-300)
        costs = np.maximum.accumulate(np.maximum(joint * share, 0.0))
        out[left[order]] = np.maximum(costs, floor)
        floor = float(out[left[order]].max())
        # OBS downdate after removing `chosen`: W -= W_Q (H⁻¹_QQ)⁻¹ H⁻¹_Q,:, H⁻¹ -= H⁻¹_:,Q (H⁻¹_QQ)⁻¹ H⁻¹_Q,:
        rows = tf.gather(h_inv, chosen, axis=0)  # [q, d]
        solved = tf.linalg.cholesky_solve(chol, rows)  # (H⁻¹_QQ)⁻¹ H⁻¹_Q,:
        w_t = w_t - tf.matmul(w_q, solved)
        h_inv = h_inv - tf.matmul(rows, solved, transpose_a=True)
        stay = np.setdiff1d(np.arange(len(kept)), chosen)
        h_inv = tf.gather(tf.gather(h_inv, stay, axis=0), stay, axis=1)
        w_t = tf.gather(w_t, stay, axis=1)
        kept = kept[stay]
        left = np.delete(left, order)
    return out
