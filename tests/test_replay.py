"""Plans replay on the input they were made on, for every input kind, because the exports they are made on are
the same bytes in every run.

tf2onnx names what it makes with a process-wide counter, orders nodes by those names, and keeps whichever of two
equal constants its (hash-ordered) passes met first; `onnx_names.canonicalize` and `keras_to_onnx.stable_merges`
take those choices out of the SavedModel and `--via onnx` exports. Oracles: `spa prune --plan-out` then `--plan` on
the same input (CliRunner, one process, as a user scripting both), weights compared exactly and outputs on a random
batch; exports compared as `SerializeToString()` in one process and in two fresh processes with other hash seeds.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.bridges.onnx_names import canonicalize
from spa_keras.ui.cli import cli
from tests import models
from tests.test_engine_invariants import resnet_block_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def relu6_cnn(seed=0):
    """Four ReLU6 layers: tf2onnx gives each a Clip with its own bound constants, then merges the equal ones and
    keeps the name of whichever it met first."""
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.ReLU(6.0, name="relu1")(layers.Conv2D(8, 3, padding="same", name="conv1")(inputs))
    y = layers.ReLU(6.0, name="relu2")(layers.DepthwiseConv2D(3, padding="same", name="dw")(x))
    z = layers.ReLU(6.0, name="relu3")(layers.Conv2D(8, 1, name="pw")(x))
    x = layers.ReLU(6.0, name="relu4")(layers.Conv2D(8, 1, name="pw2")(layers.Add(name="add")([y, z])))
    outputs = layers.Dense(3, name="head")(layers.GlobalAveragePooling2D(name="gap")(x))
    return models.randomize_keras(keras.Model(inputs, outputs, name="relu6_cnn"), seed)


# ---- spa prune --plan-out, then --plan, on the same input --------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """{kind: (path, extra CLI arguments, output suffix)}, written once for the module."""
    root = tmp_path_factory.mktemp("replay")
    keras_file = str(root / "small.keras")
    models.small_cnn().save(keras_file)
    onnx_file = str(root / "resnet.onnx")
    onnx.save(resnet_block_model(), onnx_file)
    savedmodel = str(root / "savedmodel")
    models.small_cnn(seed=1).export(savedmodel, verbose=False)
    return {"keras": (keras_file, [], ".keras"), "keras via onnx": (keras_file, ["--via", "onnx"], ".onnx"),
            "onnx": (onnx_file, [], ".onnx"), "savedmodel": (savedmodel, [], ".onnx")}


def _replayed(source, extra, suffix, tmp_path):
    """Prune `source` to a plan written beside it, then again with that plan; the two slim models' paths."""
    first, again, plan = tmp_path / f"first{suffix}", tmp_path / f"again{suffix}", tmp_path / "plan.json"
    run = invoke("prune", "--criterion", "l1", source, *extra, "-o", first, "--flops", "0.3", "--plan-out", plan)
    assert run.exit_code == 0, run.output
    assert json.loads(plan.read_text())["removed"]
    replay = invoke("prune", source, *extra, "-o", again, "--plan", plan)
    assert replay.exit_code == 0, replay.output  # was: "the plan was made on another model"
    return first, again


def _assert_same_onnx(first, again, feeds=None):
    a, b = onnx.load(first), onnx.load(again)
    weights = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    replayed = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert weights.keys() == replayed.keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(replayed[name], value, err_msg=name)
    if feeds is None:
        feeds = {s.name: np.random.default_rng(0).normal(size=(2,) + tuple(d or 1 for d in s.shape[1:]))
                 .astype(s.dtype) for s in onnx_io.input_specs(a)}
    out_a, out_b = onnx_io.run(a, feeds), onnx_io.run(b, feeds)
    for name, value in out_a.items():
        np.testing.assert_allclose(out_b[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["keras", "keras via onnx", "onnx", "savedmodel"])
def test_a_plan_replays_on_the_input_it_was_made_on(kind, inputs, tmp_path):
    source, extra, suffix = inputs[kind]
    first, again = _replayed(source, extra, suffix, tmp_path)
    if suffix == ".onnx":
        _assert_same_onnx(first, again)
        return
    import keras

    a, b = keras.models.load_model(first), keras.models.load_model(again)
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wb), np.asarray(wa), err_msg=wa.path)
    x = np.random.default_rng(0).normal(size=(2,) + tuple(a.inputs[0].shape[1:])).astype("float32")
    np.testing.assert_allclose(b.predict(x, verbose=0), a.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_a_plan_replays_on_an_mxnet_prefix(mxnet_mobilenet, tmp_path):
    first, again = _replayed(mxnet_mobilenet, ["--input-shape", "1,3,32,32"], ".onnx", tmp_path)
    _assert_same_onnx(first, again)


# ---- the exports plans are made on ---------------------------------------------------------------------------

def test_two_analyses_in_one_process_have_one_fingerprint(tmp_path):
    model = models.small_cnn()
    path = str(tmp_path / "savedmodel")
    model.export(path, verbose=False)
    assert spa.analyze(path).fingerprint == spa.analyze(path).fingerprint
    assert spa.analyze(model, via="onnx").fingerprint == spa.analyze(model, via="onnx").fingerprint


def test_tf2onnx_exports_are_the_same_bytes_in_one_process(tmp_path):
    from spa_keras.bridges.keras_to_onnx import keras_to_onnx
    from spa_keras.bridges.savedmodel_io import savedmodel_to_onnx

    model = relu6_cnn()
    path = str(tmp_path / "savedmodel")
    model.export(path, verbose=False)
    first = keras_to_onnx(model)
    assert all(keras_to_onnx(model).SerializeToString() == first.SerializeToString() for _ in range(2))
    assert savedmodel_to_onnx(path).SerializeToString() == savedmodel_to_onnx(path).SerializeToString()
    assert [i.name for i in first.graph.input] == ["image"] and [o.name for o in first.graph.output] == ["head"]


EXPORT = """
import hashlib, sys
import keras
from spa_keras.bridges.keras_to_onnx import keras_to_onnx
from spa_keras.bridges.savedmodel_io import savedmodel_to_onnx
for proto in (keras_to_onnx(keras.models.load_model(sys.argv[1])), savedmodel_to_onnx(sys.argv[2])):
    print(hashlib.sha256(proto.SerializeToString()).hexdigest())
"""


def test_tf2onnx_exports_are_the_same_bytes_in_fresh_processes(tmp_path):
    """Each process counts from the start, but tf2onnx's passes visit sets of names in hash-seed order."""
    model = relu6_cnn()
    keras_file, savedmodel = str(tmp_path / "relu6.keras"), str(tmp_path / "savedmodel")
    model.save(keras_file)
    model.export(savedmodel, verbose=False)
    digests = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", EXPORT, keras_file, savedmodel], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.append(proc.stdout.split())
    assert digests[0] == digests[1] and len(digests[0]) == 2


def test_mxnet_exports_are_the_same_bytes(mxnet_mobilenet):
    from spa_keras.bridges import mxnet_io

    first = mxnet_io.to_onnx(mxnet_io.load(mxnet_mobilenet), (1, 3, 32, 32)).SerializeToString()
    assert mxnet_io.to_onnx(mxnet_io.load(mxnet_mobilenet), (1, 3, 32, 32)).SerializeToString() == first


# ---- canonicalize on hand-made graphs ------------------------------------------------------------------------

def _generated_graph(offset, swap=False):
    """x -> Transpose__a -> (Relu__b, Neg__c) -> Add__d -> y, named the way tf2onnx names them, counters from
    `offset`; `swap` lists the two branches the other way round and the initializers backwards."""
    t, r, n, d = (f"{op}__{offset + k}" for k, op in enumerate(("Transpose", "Relu", "Neg", "Add")))
    branches = [helper.make_node("Relu", [f"{t}:0"], [f"{r}:0"], name=r),
                helper.make_node("Mul", [f"{t}:0", f"scale__{offset + 7}"], [f"{n}:0"], name=n)]
    nodes = [helper.make_node("Transpose", ["x"], [f"{t}:0"], name=t, perm=[0, 2, 1]),
             *(branches[::-1] if swap else branches),
             helper.make_node("Add", [f"{r}:0", f"{n}:0"], ["y"], name=d),
             helper.make_node("Add", ["y", f"bias__{offset + 8}"], [f"{d}__{offset + 9}:0"], name=f"{d}__{offset + 9}")]
    inits = [helper.make_tensor(f"scale__{offset + 7}", TensorProto.FLOAT, [1], [2.0]),
             helper.make_tensor(f"bias__{offset + 8}", TensorProto.FLOAT, [1], [1.0])]
    graph = helper.make_graph(nodes, "tf2onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [f"unk__{offset + 5}", 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"unk__{offset + 6}", 3, 2]),
                               helper.make_tensor_value_info(f"{d}__{offset + 9}:0", TensorProto.FLOAT,
                                                             [f"unk__{offset + 10}", 3, 2])],
                              inits[::-1] if swap else inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_canonicalize_gives_one_graph_whatever_the_counters_and_order():
    canonical = canonicalize(_generated_graph(40), keep=["x", "y"])
    onnx.checker.check_model(canonical, full_check=True)
    assert canonicalize(_generated_graph(1234, swap=True), keep=["x", "y"]).SerializeToString() == \
        canonical.SerializeToString()
    x = np.arange(12, dtype="float32").reshape(2, 2, 3)
    expected = onnx_io.run(_generated_graph(40), {"x": x})
    assert onnx_io.run(canonical, {"x": x}).keys() != expected.keys()  # the generated output was renamed ...
    np.testing.assert_array_equal(list(onnx_io.run(canonical, {"x": x}).values()), list(expected.values()))
    assert [o.name for o in canonical.graph.output][0] == "y"  # ... the real one was not
    assert canonical.graph.node[0].name == "Transpose__2" and canonical.graph.input[0].name == "x"


def test_canonicalize_never_reuses_a_name_it_keeps():
    """A real input named like a generated tensor keeps its name; the tensor that would get it takes another."""
    nodes = [helper.make_node("Relu", ["x__1"], ["Relu__57:0"], name="Relu__57"),
             helper.make_node("Neg", ["Relu__57:0"], ["Relu__1"], name="Neg__58")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x__1", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("Relu__1", TensorProto.FLOAT, [2])])
    model = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x__1"] and [o.name for o in model.graph.output] == ["Relu__1"]
    names = [model.graph.node[0].name, model.graph.node[0].output[0], model.graph.node[1].name]
    assert names == ["Relu__1_1", "Relu__1:0", "Neg__2"]


def test_canonicalize_follows_tensors_into_subgraphs():
    then = helper.make_graph([helper.make_node("Neg", ["Relu__80:0"], ["Neg__93:0"], name="Neg__93")], "then", [],
                             [helper.make_tensor_value_info("Neg__93:0", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["Relu__80:0"], ["Id__94:0"], name="Id__94")], "else",
                              [], [helper.make_tensor_value_info("Id__94:0", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Relu", ["x"], ["Relu__80:0"], name="Relu__80"),
             helper.make_node("If", ["cond"], ["y"], name="If__81", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model, full_check=True)
    branch = model.graph.node[1].attribute[0].g
    assert list(branch.node[0].input) == ["Relu__1:0"] and branch.node[0].name in ("Neg__3", "Id__3")
    out = onnx_io.run(model, {"x": np.array([-1.0, 2.0], "float32"), "cond": np.array(True)})
    np.testing.assert_array_equal(out["y"], [-0.0, -2.0])
