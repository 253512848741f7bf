"""Surgery: apply removed channels (and new values of kept weights) to a model and return a new, smaller one.

One package per format (`onnx/`, `keras/`), each with its own table of per-op rewriters or per-layer resizers. The
engine picks the surgery by the format of the graph's parameter handles (`SPAGraph.format`); originals are never
mutated.
"""
