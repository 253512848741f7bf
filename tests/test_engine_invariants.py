"""DESIGN.md invariants 1-5 on hand-built graphs and real models, plus a property test over random CNNs."""

import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.common.verify import compare
from tests.onnx_graphs import Builder
from tests.oracles import assert_removal_equals_masking, independent_params, run_both


# ---- hand-built architectures -------------------------------------------------------------------------------

def resnet_block_model(seed=0):
    b = Builder(seed)
    x = b.cbr("x", 3, 8)
    y = b.op("Relu", [b.bn(b.conv(b.cbr(x, 8, 6), 6, 8), 8)])
    x = b.op("Add", [x, y])                                       # residual: x's and y's channels coupled
    z = b.op("Relu", [b.bn(b.conv(x, 8, 12, stride=2), 12)])
    s = b.op("Add", [b.bn(b.conv(x, 8, 12, k=1, stride=2), 12), z])  # projection shortcut
    g = b.op("Flatten", [b.op("GlobalAveragePool", [s])])
    return b.model(b.gemm(g, 12, 5), [5])


def concat_split_model(seed=0):
    b = Builder(seed)
    a = b.cbr("x", 3, 6)
    c = b.cbr("x", 3, 4)
    cat = b.op("Concat", [a, c], axis=1)                          # offsets 0..5 and 6..9
    left, right = b.op("Split", [cat, b.const([7, 3])], n_out=2, axis=1)  # a split that cuts across both
    l2 = b.cbr(left, 7, 5)
    r2 = b.cbr(right, 3, 5)
    m = b.op("Add", [l2, r2])
    sl = b.op("Slice", [m, b.const([1]), b.const([4]), b.const([1])])    # channels 1..3
    out = b.conv(sl, 3, 4, k=1)
    flat = b.op("Flatten", [out])                                 # flatten -> dense: NCHW blocks of 8x8
    return b.model(b.gemm(flat, 4 * 64, 3), [3])


def depthwise_grouped_se_model(seed=0):
    b = Builder(seed)
    x = b.cbr("x", 3, 8)
    d = b.op("Relu", [b.bn(b.conv(x, 8, 8, group=8), 8)])         # depthwise
    d2 = b.conv(d, 8, 16, group=8)                                 # depthwise, multiplier 2
    g = b.op("Relu", [b.conv(d2, 16, 12, group=4)])                # grouped: 4 groups of 4 -> 3
    se = b.op("GlobalAveragePool", [g])
    se = b.op("Relu", [b.conv(se, 12, 4, k=1)])
    se = b.op("Sigmoid", [b.conv(se, 4, 12, k=1)])
    y = b.op("Mul", [g, se])                                       # squeeze-excitation
    y = b.op("Mul", [y, b.param([1, 12, 1, 1], positive=True)])    # per-channel constant scale
    y = b.op("Add", [y, b.param([12, 1, 1], 0.1)])                 # per-channel constant bias (broadcast)
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model(b.gemm(flat, 12, 4), [4])


def nhwc_flatten_model(seed=0):
    """tf2onnx's pattern: NHWC input, Transpose to NCHW for Conv, Transpose back, Reshape (flatten) to a MatMul."""
    b = Builder(seed)
    b.input_shape = [None, 8, 8, 3]
    t = b.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    c = b.cbr(t, 3, 5)
    back = b.op("Transpose", [c], perm=[0, 2, 3, 1])
    flat = b.op("Reshape", [back, b.const([-1, 8 * 8 * 5])])
    y = b.op("Add", [b.op("MatMul", [flat, b.param([320, 6])]), b.param([6], 0.1)])
    return b.model(y, [6])


ARCHITECTURES = {"resnet": resnet_block_model, "concat_split_slice": concat_split_model,
                 "depthwise_grouped_se": depthwise_grouped_se_model, "nhwc_flatten": nhwc_flatten_model}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_zero_pruning_is_identity(name):
    model = ARCHITECTURES[name]()
    result = spa.prune(model, ratio=0.0, criterion="l1")
    assert result.plan.removed_channels == 0
    ref, out = run_both(model, result.model)
    assert compare(ref, out, source="original", target="slim", tolerance=1e-5).ok


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_removal_equals_masking(name, ratio):
    model = ARCHITECTURES[name]()
    result = assert_removal_equals_masking(model, ratio=ratio)
    assert result.plan.removed_channels > 0
    assert independent_params(result.model) == result.after.params < result.before.params  # invariant 3
    assert spa.count(result.model).flops == result.after.flops


def test_grouped_and_depthwise_attributes_follow():
    model = depthwise_grouped_se_model()
    result = spa.prune(model, ratio=0.5, criterion="l1")
    convs = [n for n in result.model.graph.node if n.op_type == "Conv"]
    inits = {i.name: i.dims for i in result.model.graph.initializer}
    depthwise = [n for n in convs if {a.name: a.i for a in n.attribute}.get("group", 1) > 4]
    for n in depthwise:
        group = {a.name: a.i for a in n.attribute}["group"]
        assert inits[n.input[1]][1] == 1 and inits[n.input[1]][0] % group == 0  # still depthwise
    grouped = [n for n in convs if {a.name: a.i for a in n.attribute}.get("group", 1) == 4]
    assert grouped and all(inits[n.input[1]][0] % 4 == 0 for n in grouped)    # groups stay equal


def test_concat_split_offsets_are_rewritten():
    result = spa.prune(concat_split_model(), ratio=0.5, criterion="l1")
    split = next(n for n in result.model.graph.node if n.op_type == "Split")
    sizes = numpy_helper.to_array(next(i for i in result.model.graph.initializer if i.name == split.input[1]))
    assert sizes.sum() < 10 and len(sizes) == 2


# ---- real models ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_models(mxnet_resnet18, mxnet_mobilenet, ppocr_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    paths = {}
    for name, prefix in (("resnet18_v1", mxnet_resnet18), ("mobilenet0.25", mxnet_mobilenet)):
        paths[name] = str(out / f"{name}.onnx")
        spa.convert(prefix, paths[name], input_shape="1,3,32,32")
    paths["ppocr"] = ppocr_onnx
    return paths


@pytest.mark.parametrize("name", ["resnet18_v1", "mobilenet0.25", "ppocr"])
def test_real_models_identity_and_masking(real_models, name):
    shape = "1,3,48,192" if name == "ppocr" else None
    model = onnx_io.load(real_models[name])
    result = spa.prune(model, ratio=0.0, input_shape=shape, criterion="l1")
    ref, out = run_both(model, result.model, input_shape=shape)
    assert compare(ref, out, source="original", target="slim", tolerance=1e-5).ok
    if name != "ppocr":  # ppocr ends in HardSigmoid SE chains: removed channels are not linear-terminated
        result = assert_removal_equals_masking(model, ratio=0.3)
    else:
        result = spa.prune(model, ratio=0.3, input_shape=shape, criterion="l1")
        ref, out = run_both(model, result.model, input_shape=shape)
        assert [v.shape for v in ref.values()] == [v.shape for v in out.values()]
    assert result.after.params < result.before.params
    assert independent_params(result.model) == result.after.params


# ---- barriers (invariant 5) -------------------------------------------------------------------------------

def test_unknown_op_is_a_barrier_and_the_rest_prunes():
    b = Builder(3)
    x = b.cbr("x", 3, 8)
    lrn = b.op("LRN", [x], size=3)                   # mixes neighbouring channels; the engine has no rule
    y = b.cbr(lrn, 8, 6)
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    model = b.model(b.gemm(flat, 6, 2), [2])
    analysis = spa.analyze(model)
    assert [(bar.op_type, bar.reason) for bar in analysis.barriers] == [("LRN", "no rule for op LRN")]
    blocked = [g for g in analysis.groups if g.blocked.all() and "output" not in g.reasons[0]]
    free = [g for g in analysis.groups if not g.blocked.any()]
    assert len(blocked) == 1 and blocked[0].channels == 8 and "LRN" in blocked[0].reasons[0]
    assert [g.channels for g in free] == [6]  # the conv after the barrier still prunes
    result = spa.prune(model, ratio=0.5, criterion="l1")
    assert result.after.params < result.before.params
    ref, out = run_both(model, result.model)
    assert [v.shape for v in ref.values()] == [v.shape for v in out.values()]


def test_custom_domain_op_is_named_in_the_report():
    b = Builder(4)
    x = b.cbr("x", 3, 8)
    b.nodes.append(onnx.helper.make_node("Mystery", [x], ["m"], name="mystery_node", domain="com.example"))
    y = b.cbr("m", 8, 6)
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    graph = onnx.helper.make_graph(b.nodes + [onnx.helper.make_node("Gemm", [flat, b.param([2, 6]), b.param([2])],
                                                                    ["out"], transB=1)], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                                   [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 2])],
                                   b.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                         onnx.helper.make_opsetid("com.example", 1)])
    from spa_keras.formats.onnx.frontend import from_onnx
    from spa_keras.analysis.groups import analyze_graph

    ga = analyze_graph(from_onnx(model))
    # shape inference stops at the unknown op, so the ops after it are reported as well
    assert (ga.barriers[0].node, ga.barriers[0].op_type) == ("mystery_node", "Mystery")
    assert "domain com.example" in ga.barriers[0].reason
    assert all("shapes unknown" in bar.reason for bar in ga.barriers[1:])
    first = ga.groups[0]
    assert first.blocked.all() and "mystery_node (Mystery)" in first.reasons[0]


@pytest.mark.parametrize("opset,blocked", [(11, True), (13, False)])
def test_softmax_axis_default_follows_the_opset(opset, blocked):
    """Softmax without `axis`: before opset 13 the default is 1 and it normalises the input flattened from axis 1
    (every channel mixes); from 13 on it is -1 (the width only). Read from the op schema, not guessed."""
    b = Builder(5)
    x = b.cbr("x", 3, 8)
    y = b.op("Softmax", [x])
    model = b.model(b.conv(y, 8, 4, k=1), [4, 8, 8])
    model.opset_import[0].version = opset
    onnx.checker.check_model(model)
    analysis = spa.analyze(model)
    group = next(g for g in analysis.groups if g.channels == 8)
    assert bool(group.blocked.all()) == blocked
    if blocked:
        assert "Softmax over channels (axis 1, 2, 3)" in group.reasons[0]
    else:
        assert_removal_equals_masking(model, ratio=0.5)


def test_onnx_attributes_carry_their_schema_defaults():
    """Every node of the ONNX front-end holds every attribute its schema defines a default for, at the model's
    opset; the Keras front-end writes them too (rules read attributes without guessing)."""
    from spa_keras.formats.keras.frontend import OPSET, from_keras
    from spa_keras.formats.onnx.frontend import from_onnx, schema_defaults
    from tests import models

    graphs = [(from_onnx(depthwise_grouped_se_model()), 17)]
    graphs += [(from_keras(m), OPSET) for m in (models.small_cnn(), models.more_layers(), models.sequence_layers())]
    for graph, opset in graphs:
        for node in graph.nodes:
            if node.domain not in ("", "ai.onnx"):
                continue
            missing = set(schema_defaults(node.op_type, "", opset)) - set(node.attrs)
            assert not missing, (node.name, node.op_type, missing)


def test_the_keras_front_ends_copy_of_the_schema_defaults_is_exact():
    from spa_keras.formats.keras.frontend import OPSET
    from spa_keras.formats.keras.schema import DEFAULTS
    from spa_keras.formats.onnx.frontend import schema_defaults

    for op_type, defaults in DEFAULTS.items():
        assert defaults == pytest.approx(schema_defaults(op_type, "", OPSET)), op_type


# ---- property test (acceptance 1) -------------------------------------------------------------------------

BLOCKS = ["cbr", "residual", "concat", "split", "depthwise", "grouped", "se", "shuffle"]


def random_cnn(seed, blocks):
    b = Builder(seed)
    x, c = b.cbr("x", 3, 8), 8
    for kind in blocks:
        if kind == "cbr":
            x, c = b.cbr(x, c, c + 4), c + 4
        elif kind == "residual":
            x = b.op("Add", [x, b.op("Relu", [b.bn(b.conv(x, c, c), c)])])
        elif kind == "concat":
            x, c = b.op("Concat", [x, b.cbr(x, c, 4)], axis=1), c + 4
        elif kind == "split":
            half = c // 2
            p, q = b.op("Split", [x, b.const([half, c - half])], n_out=2, axis=1)
            x, c = b.op("Concat", [b.cbr(p, half, 4), q], axis=1), 4 + c - half
        elif kind == "depthwise":
            x = b.op("Relu", [b.bn(b.conv(x, c, c, group=c), c)])
        elif kind == "grouped":
            x = b.cbr(x, c, c, group=2) if c % 2 == 0 else b.cbr(x, c, c)
        elif kind == "shuffle" and c % 2 == 0:
            s = b.op("Reshape", [x, b.const([0, 2, c // 2, 8, 8])])
            s = b.op("Transpose", [s], perm=[0, 2, 1, 3, 4])
            x = b.op("Reshape", [s, b.const([0, c, 8, 8])])
        elif kind == "se":
            s = b.op("Sigmoid", [b.conv(b.op("Relu", [b.conv(b.op("GlobalAveragePool", [x]), c, 4, k=1)]), 4, c,
                                        k=1)])
            x = b.op("Mul", [x, s])
    if seed % 2:
        flat = b.op("Flatten", [x])                                   # flatten -> dense
        return b.model(b.gemm(flat, c * 64, 3), [3])
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    return b.model(b.gemm(flat, c, 3), [3])


@given(seed=st.integers(0, 10_000), blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5),
       ratio=st.floats(0.05, 0.7))
def test_random_cnns(seed, blocks, ratio):
    model = random_cnn(seed, blocks)
    result = spa.prune(model, ratio=0.0, criterion="l1")
    ref, out = run_both(model, result.model)
    assert compare(ref, out, source="original", target="identity", tolerance=1e-5).ok
    result = assert_removal_equals_masking(model, ratio=ratio)
    assert independent_params(result.model) == result.after.params


def channel_shuffle_model(seed=0, groups=2):
    """ShuffleNetV2's channel shuffle: Reshape [N, g·c, H, W] → [N, g, c, H, W], Transpose, Reshape back."""
    b = Builder(seed)
    x = b.cbr("x", 3, 12)
    s = b.op("Reshape", [x, b.const([0, groups, 12 // groups, 8, 8])])
    s = b.op("Transpose", [s], perm=[0, 2, 1, 3, 4])
    s = b.op("Reshape", [s, b.const([0, 12, 8, 8])])
    y = b.cbr(s, 12, 6)
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    return b.model(b.gemm(flat, 6, 3), [3])


def test_channel_shuffle_keeps_fine_units():
    model = channel_shuffle_model()
    analysis = spa.analyze(model)
    shuffled = next(g for g in analysis.groups if len(g.members) > 3)
    assert shuffled.channels == 6 and not shuffled.blocked.any()  # 6 units of 2 channels (one per group)
    result = assert_removal_equals_masking(model, ratio=0.5)
    targets = [numpy_helper.to_array(i).tolist() for i in result.model.graph.initializer if i.dims == [5]]
    assert targets and targets[0][1] == 2 and targets[0][2] < 6  # both groups keep the same channel count
