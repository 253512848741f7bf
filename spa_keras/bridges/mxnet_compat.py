"""The one place for the shims MXNet 1.9.1 needs on today's numpy and onnx; applied only when MXNet is used.

- numpy ≥ 1.24 removed the aliases `np.bool`, `np.int`, ... that `import mxnet` still touches.
- `mxnet.onnx.export_model` imports `onnx.mapping`, which onnx 1.17 removed; we rebuild the two tables it reads.

Example:

>>> mx = import_mxnet()      # doctest: +SKIP
"""

import sys
import types

from spa_keras.common.errors import InputError

_NUMPY_ALIASES = (("bool", bool), ("int", int), ("float", float), ("object", object), ("complex", complex),
                  ("str", str))


def _shim_numpy():
    import numpy as np

    for name, value in _NUMPY_ALIASES:
        if name not in np.__dict__:
            setattr(np, name, value)


def _shim_onnx_mapping():
    import numpy as np
    import onnx
    import onnx.helper

    if "onnx.mapping" in sys.modules:
        return
    mapping = types.ModuleType("onnx.mapping")
    mapping.TENSOR_TYPE_TO_NP_TYPE = {}
    for value in onnx.TensorProto.DataType.values():
        try:
            mapping.TENSOR_TYPE_TO_NP_TYPE[value] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value))
        except Exception:  # types numpy cannot hold (bfloat16 without ml_dtypes, strings, ...)
            pass
    mapping.NP_TYPE_TO_TENSOR_TYPE = {}
    for tensor_type, np_type in mapping.TENSOR_TYPE_TO_NP_TYPE.items():
        mapping.NP_TYPE_TO_TENSOR_TYPE.setdefault(np_type, tensor_type)
    mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype("float32")] = onnx.TensorProto.FLOAT
    sys.modules["onnx.mapping"] = onnx.mapping = mapping


def import_mxnet():
    """Apply the shims, then import and return `mxnet`; a clear error when it is not installed.

    MXNet 1.9.1 does not import on numpy >= 1.24 by itself. Call this once before using MXNet next to spa-keras;
    after it, a plain `import mxnet` works in the same process too:

        import spa_keras as spa
        mx = spa.import_mxnet()
        net = mx.gluon.model_zoo.vision.resnet18_v1()
    """
    _shim_numpy()
    _shim_onnx_mapping()
    try:
        import mxnet
    except ImportError as exc:
        raise InputError(f"MXNet is not usable here ({exc}); install it with: pip install 'spa-keras[mxnet]'") from exc
    return mxnet
