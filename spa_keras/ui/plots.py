"""Pictures of a pruning: channels per group and FLOPs per layer, before and after (`spa analyze --plot`,
`spa prune --plot`).

Example:

>>> import spa_keras as spa                                                  # doctest: +SKIP
>>> result = spa.prune(model, flops=0.5)                                     # doctest: +SKIP
>>> plot_widths(result.analysis, "widths.png", result.plan)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from spa_keras.common.files import check_picture_path


def plot_widths(analysis, path: str, plan=None) -> str:
    """Write a picture (.png/.svg/.pdf) with two panels: channels of every group (kept and removed when a `plan`
    is given), and FLOPs of every Conv/Gemm/MatMul layer before and after, in graph order. Returns `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    check_picture_path(path)
    removed = plan.mask(analysis) if plan is not None else np.zeros(len(analysis.group_of_channel), bool)
    cost = analysis.cost
    groups = analysis.groups
    gone = np.array([removed[o:o + g.channels].sum() for g, o in zip(groups, analysis.offsets)])
    channels = np.array([g.channels for g in groups])
    before = cost.node_flops(np.zeros_like(removed))
    after = cost.node_flops(removed)
    names = list(before)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.12 * max(len(groups), len(names))), 7))
    x = np.arange(len(groups))
    top.bar(x, channels - gone, color="C0", label="kept")
    if plan is not None:
        top.bar(x, gone, bottom=channels - gone, color="C3", alpha=0.6, label="removed")
        top.legend(fontsize=8)
    top.set_title(f"channels per group ({len(groups)} groups, graph order)")
    top.set_xlabel("group")
    top.set_ylabel("channels")
    x = np.arange(len(names))
    bottom.bar(x, [before[n] / 1e6 for n in names], color="C7", label="original")
    if plan is not None:
        bottom.bar(x, [after[n] / 1e6 for n in names], color="C0", label="pruned")
    bottom.set_title(f"FLOPs per layer: {sum(before.values()) / 1e9:.3g} G"
                     + (f" -> {sum(after.values()) / 1e9:.3g} G" if plan is not None else ""))
    bottom.set_xlabel("Conv / Gemm / MatMul layer")
    bottom.set_ylabel("MFLOPs")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
