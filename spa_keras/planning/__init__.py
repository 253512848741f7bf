"""Planning: which channels go to meet a target.

    target.py     Target: what a plan aimed at (ratio, FLOPs, parameters, latency) and how it got there
    selection.py  make_plan: scores, eligibility (blocked, ignored, capped groups), ranking, the landing
    search.py     BlockSearch: channels in blocks of round_to, the shortest ranking prefix that meets the target
    runtimes.py   channel multiples each runtime runs fast (round_to="auto")
    plan.py       PruningPlan: removed channels per group, JSON in and out, replayable by fingerprint
"""
