"""Analysis: the standard graph and the channel groups mask propagation finds in it.

    graph.py        SPAGraph: nodes in ONNX vocabulary with complete attributes, static shapes, parameters with a
                    handle back to their format (the front-ends in spa_keras.formats build it)
    labels.py       union-find over channel labels, vectorised
    propagation.py  the driver: one pass in graph order, each op's rule (spa_keras.ops) moves and merges labels,
                    ops without one are barriers
    groups.py       ChannelGroup, GroupKey and Analysis (what spa.analyze returns): groups, channel numbering,
                    fingerprint, parameter masks for a set of removed channels
    cost.py         Counts and CostModel: exact parameters and FLOPs with any channels removed
    report.py       the analysis as tables
"""
