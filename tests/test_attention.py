"""Attention heads: Q, K and V projections lose whole heads together, reshape targets follow."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import spa_keras as spa
from tests.onnx_graphs import Builder
from tests.oracles import assert_removal_equals_masking


def mha_model(heads=4, head_dim=4, seq=5, seed=0):
    b = Builder(seed)
    c = heads * head_dim

    def proj(x):
        return b.op("Add", [b.op("MatMul", [x, b.param([c, c])]), b.param([c], 0.1)])

    def split_heads(t, perm):
        return b.op("Transpose", [b.op("Reshape", [t, b.const([0, 0, heads, head_dim])])], perm=perm)

    x = "x"
    q = split_heads(proj(x), [0, 2, 1, 3])          # [1, H, T, D]
    k = split_heads(proj(x), [0, 2, 3, 1])          # [1, H, D, T]
    v = split_heads(proj(x), [0, 2, 1, 3])
    scores = b.op("Mul", [b.op("MatMul", [q, k]), b.const(np.float32(1 / np.sqrt(head_dim)), np.float32)])
    attn = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [attn], perm=[0, 2, 1, 3]), b.const([0, 0, c])])
    out = b.op("Add", [b.op("MatMul", [merged, b.param([c, 8])]), b.param([8], 0.1)])
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, seq, c])
    graph = helper.make_graph(b.nodes, "mha", [inp], [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                                                    [None, seq, 8])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_heads_are_pruned_whole_and_consistently():
    model = mha_model()
    analysis = spa.analyze(model)
    heads = [g for g in analysis.groups if len(g.members) > 3]
    assert len(heads) == 1 and heads[0].channels == 4  # one group: the 4 heads of Q, K and V together
    member_params = {m.param for m in heads[0].members}
    assert len(member_params) == 7  # Wq, bq, Wk, bk, Wv, bv, Wo
    result = assert_removal_equals_masking(model, ratio=0.5)
    inits = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    widths = {inits[n.input[1]].shape[1] for n in result.model.graph.node
              if n.op_type == "MatMul" and n.input[1] in inits and inits[n.input[1]].shape[0] == 16}
    assert len(widths) == 1 and widths.pop() % 4 == 0  # Q, K, V keep the same whole heads
    targets = [inits[n.input[1]].tolist() for n in result.model.graph.node if n.op_type == "Reshape"]
    kept_heads = [t[2] for t in targets if len(t) == 4]
    assert len(set(kept_heads)) == 1 and kept_heads[0] < 4
