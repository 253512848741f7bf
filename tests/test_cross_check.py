"""The cross-check oracle: one Keras model analysed by the Keras front-end and through tf2onnx gives the same
channel groups (channel counts and the layers with kernels among their members), and one plan gives a slim Keras
model and a slim ONNX model with the same outputs.

tf2onnx folds BatchNorm and names weights after TF ops, so groups are matched by structure: an ONNX weight belongs to
the Keras layer whose name is one of its path parts (`model_1/conv1_1/convolution/ReadVariableOp:0` → conv1), and
channel indices are matched through kernels both sides hold in ONNX layout with the same shape.
"""

import re

import numpy as np
import pytest

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.planning.plan import PruningPlan
from tests import models


def onnx_layer(param, layer_names):
    for part in param.split("/")[1:]:
        name = re.sub(r"_\d+$", "", part)
        if name in layer_names:
            return name
    return None


def keras_kernels(group, graph):
    """{(layer, kernel shape in ONNX layout, axis)} of a Keras-front-end group."""
    return frozenset((m.param.rsplit("/", 2)[-2], graph.shape(m.param), m.axis) for m in group.members
                     if m.param.endswith("kernel"))


def onnx_kernels(group, graph, kernel_shapes):
    """The same for an ONNX group: weights named after a Keras layer with the shape of one of its kernels."""
    out = set()
    for m in group.members:
        layer = onnx_layer(m.param, {name for name, _ in kernel_shapes})
        if layer is not None and (layer, graph.shape(m.param)) in kernel_shapes:
            out.add((layer, graph.shape(m.param), m.axis))
    return frozenset(out)


def matched_groups(model):
    """[(Keras group, ONNX group)]: each ONNX group whose kernels tf2onnx kept named, with the one Keras group
    holding all of them; asserts that the match is unique and that every Keras group is matched."""
    keras_analysis = spa.analyze(model)
    onnx_analysis = spa.analyze(model, via="onnx")
    kgraph, ograph = keras_analysis.graph, onnx_analysis.graph
    kernels = {g.id: keras_kernels(g, kgraph) for g in keras_analysis.groups}
    shapes = {(layer, shape) for pairs in kernels.values() for layer, shape, _ in pairs}
    pairs = []
    for og in onnx_analysis.groups:
        theirs = onnx_kernels(og, ograph, shapes)
        if not theirs:
            continue
        holders = [g for g in keras_analysis.groups if theirs <= kernels[g.id]]
        assert len(holders) == 1, (og.key, theirs, [g.key for g in holders])
        pairs.append((holders[0], og))
    assert sorted(k.id for k, _ in pairs) == sorted(g.id for g in keras_analysis.groups if kernels[g.id])
    return keras_analysis, onnx_analysis, pairs


def channel_map(kgroup, ogroup, kgraph, ograph):
    """Keras channel index → ONNX channel index, read off kernels both groups hold along the same axis."""
    mapping = {}
    shapes = {(layer, shape) for layer, shape, _ in keras_kernels(kgroup, kgraph)}
    names = {layer for layer, _ in shapes}
    for km in kgroup.members:
        if not km.param.endswith("kernel"):
            continue
        layer = km.param.rsplit("/", 2)[-2]
        for om in ogroup.members:
            if onnx_layer(om.param, names) == layer and om.axis == km.axis and \
                    ograph.shape(om.param) == kgraph.shape(km.param) and (layer, ograph.shape(om.param)) in shapes:
                for k, o in zip(km.channel_of_position, om.channel_of_position):
                    if k >= 0 and o >= 0:
                        assert mapping.setdefault(int(k), int(o)) == o, "channel orders disagree"
    return mapping


@pytest.mark.parametrize("name", ["small_cnn", "fashion_resnet", "mobilenet_v2",
                                  pytest.param("resnet50", marks=pytest.mark.zoo)])
def test_keras_and_tf2onnx_agree(name):
    import keras

    from spa_keras.ui.demo import ASSET

    model = {"small_cnn": models.small_cnn, "mobilenet_v2": models.mobilenet_v2,
             "fashion_resnet": lambda: keras.models.load_model(ASSET, compile=False),
             "resnet50": lambda: models.randomize_keras(keras.applications.ResNet50(
                 weights=None, input_shape=(64, 64, 3), classifier_activation=None))}[name]()
    keras_analysis, onnx_analysis, pairs = matched_groups(model)
    for kgroup, ogroup in pairs:  # the same groups: channel and prunable counts
        assert (kgroup.channels, kgroup.prunable) == (ogroup.channels, ogroup.prunable), (kgroup.key, ogroup.key)
    # one plan, two slim models
    result = spa.prune(model, ratio=0.3, analysis=keras_analysis, criterion="l1")
    kgraph, ograph = keras_analysis.graph, onnx_analysis.graph
    removed = {}
    for kgroup, ogroup in pairs:
        gone = result.plan.removed.get(kgroup.key, [])
        if gone:
            mapping = channel_map(kgroup, ogroup, kgraph, ograph)
            assert len(mapping) == kgroup.channels
            removed[ogroup.key] = sorted(mapping[c] for c in gone)
    assert sum(map(len, removed.values())) == result.plan.removed_channels
    plan = PruningPlan(removed, {g.key: g.channels for g in onnx_analysis.groups})
    slim_onnx = spa.prune(None, plan=plan, analysis=onnx_analysis).model
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    want = np.asarray(result.model(x, training=False))
    got = onnx_io.run(slim_onnx, {slim_onnx.graph.input[0].name: x})
    got = next(iter(got.values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert spa.count(slim_onnx).flops == result.after.flops  # parameters differ: tf2onnx folds BatchNorm
