"""The public entry points, each one trip down the stages: `analyze` and `prune` (format adapter -> analysis ->
planning -> surgery), `convert` (format adapter -> bridge -> verification -> write), `count`.

    prune.py      analyze, prune, apply_plan
    iterative.py  steps=N: score, prune, rescore on the slimmer model
    result.py     PruneResult and its printable report
    convert.py    convert and its report
    count.py      count
"""
