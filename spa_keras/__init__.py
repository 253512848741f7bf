"""spa-keras: structurally prune anything, Keras first.

Public API (re-exported here; everything else is internal):

>>> import spa_keras as spa
>>> report = spa.convert("model.h5", "model.onnx")    # doctest: +SKIP
>>> print(report)                                     # doctest: +SKIP
>>> result = spa.prune(model, flops=0.5, criterion=spa.importance.Taylor(), data=(x, y), loss="mse")  # doctest: +SKIP
>>> model.fit(x, y, epochs=5, callbacks=[spa.SPACallback(flops=0.5)])       # doctest: +SKIP
"""

__version__ = "0.1.0"

from spa_keras import importance
from spa_keras.training import schedules  # noqa: E402
from spa_keras.bridges.mxnet_compat import import_mxnet  # noqa: E402
from spa_keras.pipeline.convert import convert  # noqa: E402
from spa_keras.planning.counts import count  # noqa: E402
from spa_keras.common.errors import ConversionError, InputError, SpaError, VerificationError  # noqa: E402
from spa_keras.planning.plan import PruningPlan  # noqa: E402
from spa_keras.pipeline.prune import analyze, prune  # noqa: E402

__all__ = ["analyze", "prune", "convert", "count", "importance", "schedules", "SPACallback", "import_mxnet",
           "PruningPlan", "SpaError", "InputError", "ConversionError", "VerificationError", "__version__"]


def __getattr__(name):
    """`SPACallback` is a Keras callback: importing it imports Keras, so it loads on first use (the CLI checks its
    arguments before TensorFlow loads)."""
    if name == "SPACallback":
        from spa_keras.training.callback import SPACallback

        return SPACallback
    raise AttributeError(f"module 'spa_keras' has no attribute {name!r}")
