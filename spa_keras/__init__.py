"""spa-keras: structurally prune anything, Keras first.

Public API (re-exported here; everything else is internal):

>>> import spa_keras as spa
>>> report = spa.convert("model.h5", "model.onnx")    # doctest: +SKIP
>>> print(report)                                     # doctest: +SKIP
>>> result = spa.prune(model, flops=0.5, criterion=spa.importance.Taylor(), data=(x, y), loss="mse")  # doctest: +SKIP
>>> model.fit(x, y, epochs=5, callbacks=[spa.SPACallback(flops=0.5)])       # doctest: +SKIP

The package is one folder per stage a model goes through, in this order:

    formats/     a format adapter per kind of model: load, describe as a graph, surgery, write
    analysis/    the standard graph (SPAGraph), mask propagation, channel groups, costs
    ops/         one module per op family: what the engine knows about an op (its propagation rule, ...)
    importance/  criteria that score channels (and obspa/: OBSPA, data-free scoring and reconstruction)
    planning/    targets, the search that meets them, PruningPlan
    latency/     timing on runtimes, per-layer latency tables, latency targets
    pipeline/    analyze, prune, convert, count: one trip down the stages each
    training/    SPACallback and pruning schedules
    bridges/     conversions between formats (tf2onnx, onnx2tf, mxnet.onnx, ONNX -> Keras 3, TFLite)
    compute/     TensorFlow as a compute library (gradients, OBS linear algebra, im2col, distilled inputs)
    common/      errors, console, files, tensors, verification
    ui/          the `spa` command line, plots, the demo
"""

__version__ = "0.1.0"

from spa_keras import importance  # noqa: E402
from spa_keras.bridges.mxnet_compat import import_mxnet  # noqa: E402
from spa_keras.common import errors  # noqa: E402
from spa_keras.common.errors import ConversionError, InputError, SpaError, VerificationError  # noqa: E402
from spa_keras.pipeline.convert import convert  # noqa: E402
from spa_keras.pipeline.count import count  # noqa: E402
from spa_keras.pipeline.prune import analyze, prune  # noqa: E402
from spa_keras.planning.plan import PruningPlan  # noqa: E402
from spa_keras.training import schedules  # noqa: E402

__all__ = ["analyze", "prune", "convert", "count", "importance", "schedules", "SPACallback", "import_mxnet",
           "PruningPlan", "errors", "SpaError", "InputError", "ConversionError", "VerificationError", "__version__"]


def __getattr__(name):
    """`SPACallback` is a Keras callback: importing it imports Keras, so it loads on first use (the CLI checks its
    arguments before TensorFlow loads)."""
    if name == "SPACallback":
        from spa_keras.training.callback import SPACallback

        return SPACallback
    raise AttributeError(f"module 'spa_keras' has no attribute {name!r}")
