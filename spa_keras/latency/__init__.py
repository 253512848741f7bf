"""Latency: speed measured on a runtime, on this machine, and plans that remove a fraction of it.

    timing.py  Timer (a model compiled for a runtime), interleaved runs, paired speed-ups
    table.py   per-layer latency tables (one-layer models timed at a few widths, cached) and the latency model
               plans are sized on
    target.py  spa.prune(latency=...): plan on the table, build and time the slim model, correct, repeat
"""
