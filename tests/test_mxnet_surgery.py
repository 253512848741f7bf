"""Slim MXNet models back to MXNet: native surgery on the symbol and params, checked with MXNet itself.

Oracles: the slim checkpoint's MXNet outputs equal the slim ONNX model's in onnxruntime, and equal the original
ONNX export with the removed channels zeroed (removal = masking); parameter counts are those of the plan's slim
ONNX; `SymbolBlock.imports` and `Module` load what the CLI writes.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import spa_keras as spa
from spa_keras.bridges import mxnet_io, onnx_io
from spa_keras.ui.cli import cli
from spa_keras.formats.onnx.surgery import mask_onnx
from spa_keras.common.tensors import random_batch
from tests import models

DEFAULT = [("resnet18_v1", 32), ("mobilenetv2_0.25", 32), ("resnet18_v2", 32)]
ZOO = [("mobilenet0.25", 32), ("vgg11_bn", 32), ("densenet121", 224), ("squeezenet1.0", 224), ("inceptionv3", 299),
       ("alexnet", 224)]


def _mx():
    from spa_keras.bridges.mxnet_compat import import_mxnet

    return import_mxnet()


def _first(outputs):
    return next(iter(outputs.values()))


def _check_family(name, size, tmp_path):
    prefix = models.gluon_checkpoint(name, str(tmp_path / name), size)
    shape = (1, 3, size, size)
    analysis = spa.analyze(prefix, shape)
    result = spa.prune(prefix, flops=0.4, input_shape=shape, analysis=analysis, criterion="l1")
    removed = result.plan.mask(analysis)
    assert isinstance(result.model, mxnet_io.Checkpoint) and removed.any()
    feeds = random_batch(mxnet_io.input_specs(result.model, shape), batch=2, seed=3)
    slim_mx = _first(mxnet_io.run(result.model, feeds))
    slim_onnx = analysis.source.slim_analysed(analysis, removed)
    scale = np.abs(slim_mx).max()
    np.testing.assert_allclose(slim_mx, _first(onnx_io.run(slim_onnx, feeds)), atol=1e-4 * scale)
    masked = _first(onnx_io.run(mask_onnx(analysis, removed), feeds))
    np.testing.assert_allclose(slim_mx, masked, atol=1e-4 * scale)
    n_mx = sum(v.size for v in result.model.params.values())
    n_onnx = sum(int(np.prod(i.dims)) for i in slim_onnx.graph.initializer if i.name in result.model.params)
    assert n_mx == n_onnx < sum(v.size for v in mxnet_io.load(prefix).params.values())
    return prefix, result


@pytest.mark.parametrize("name,size", DEFAULT)
def test_zoo_families_come_back_to_mxnet(name, size, tmp_path):
    _check_family(name, size, tmp_path)


@pytest.mark.zoo
@pytest.mark.parametrize("name,size", ZOO)
def test_all_zoo_families_come_back_to_mxnet(name, size, tmp_path):
    _check_family(name, size, tmp_path)


def test_cli_writes_a_checkpoint_symbolblock_imports(tmp_path):
    mx = _mx()
    prefix = models.gluon_checkpoint("resnet18_v1", str(tmp_path / "r18"))
    for output in ("slim", "slim2-symbol.json"):
        run = CliRunner().invoke(cli, ["prune", "--criterion", "l1", prefix, "--epoch", "0", "--input-shape",
                                       "1,3,32,32", "--flops", "0.5", "-o", str(tmp_path / output)])
        assert run.exit_code == 0, run.output
    onnx_run = CliRunner().invoke(cli, ["prune", "--criterion", "l1", prefix, "--input-shape", "1,3,32,32", "--flops",
                                        "0.5", "-o", str(tmp_path / "slim.onnx")])
    assert onnx_run.exit_code == 0, onnx_run.output
    block = mx.gluon.SymbolBlock.imports(str(tmp_path / "slim-symbol.json"), ["data"],
                                         str(tmp_path / "slim-0000.params"))
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype("float32")
    out = block(mx.nd.array(x)).asnumpy()
    ref = _first(onnx_io.run(onnx_io.load(str(tmp_path / "slim.onnx")), {"data": x}))
    np.testing.assert_allclose(out, ref, atol=1e-4 * np.abs(ref).max())
    second = mx.gluon.SymbolBlock.imports(str(tmp_path / "slim2-symbol.json"), ["data"],
                                          str(tmp_path / "slim2-0000.params"))
    np.testing.assert_array_equal(second(mx.nd.array(x)).asnumpy(), out)


def module_checkpoint(prefix):
    """A Module-API network: default `flatten` on FullyConnected and a SoftmaxOutput loss head."""
    mx = _mx()
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=16, kernel=(3, 3), pad=(1, 1), name="conv1")
    x = mx.sym.Activation(mx.sym.BatchNorm(x, name="bn1"), act_type="relu", name="relu1")
    x = mx.sym.Convolution(x, num_filter=32, kernel=(3, 3), pad=(1, 1), stride=(2, 2), name="conv2")
    x = mx.sym.Pooling(mx.sym.Activation(x, act_type="relu"), kernel=(2, 2), stride=(2, 2), pool_type="max")
    out = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(x, num_hidden=10, name="fc"), name="softmax")
    mod = mx.mod.Module(out, context=mx.cpu())
    mod.bind(data_shapes=[("data", (4, 1, 28, 28))], label_shapes=[("softmax_label", (4,))])
    mod.init_params(mx.init.Normal(0.5))
    mod.save_checkpoint(prefix, 0)
    return prefix


def test_module_checkpoint_prunes_and_trains_again_with_module(tmp_path):
    mx = _mx()
    prefix = module_checkpoint(str(tmp_path / "modnet"))
    assert "flatten" not in open(prefix + "-symbol.json").read()
    run = CliRunner().invoke(cli, ["prune", "--criterion", "l1", prefix, "--input-shape", "1,1,28,28", "--ratio", "0.5",
                                   "--round-to", "1", "--local", "-o", str(tmp_path / "slim")])
    assert run.exit_code == 0, run.output
    symbol, args, aux = mx.model.load_checkpoint(str(tmp_path / "slim"), 0)
    assert "softmax_label" in symbol.list_arguments()  # the loss head stays: Module users train on
    assert args["conv2_weight"].shape[0] == 16 and args["fc_weight"].shape[1] == 16 * 7 * 7
    nodes = {n["name"]: n for n in json.loads(symbol.tojson())["nodes"]}
    assert nodes["conv2"]["attrs"]["num_filter"] == "16"
    mod = mx.mod.Module(symbol, context=mx.cpu())
    mod.bind(data_shapes=[("data", (4, 1, 28, 28))], label_shapes=[("softmax_label", (4,))])
    mod.set_params(args, aux)
    batch = mx.io.DataBatch([mx.nd.random.normal(shape=(4, 1, 28, 28))], [mx.nd.array([0, 1, 2, 3])])
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1})
    before = mod.get_params()[0]["fc_weight"].asnumpy().copy()
    mod.forward_backward(batch)
    mod.update()
    assert not np.allclose(mod.get_params()[0]["fc_weight"].asnumpy(), before)
    # the slim ONNX says the same as the slim checkpoint
    onnx_run = CliRunner().invoke(cli, ["prune", "--criterion", "l1", prefix, "--input-shape", "1,1,28,28", "--ratio",
                                        "0.5", "--round-to", "1", "--local", "-o", str(tmp_path / "slim.onnx")])
    assert onnx_run.exit_code == 0, onnx_run.output
    feeds = {"data": np.random.default_rng(1).normal(size=(2, 1, 28, 28)).astype("float32")}
    ours = _first(mxnet_io.run(mxnet_io.load(str(tmp_path / "slim")), feeds))
    ref = _first(onnx_io.run(onnx_io.load(str(tmp_path / "slim.onnx")), feeds))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_gluon_block_gives_a_symbolblock_that_trains(tmp_path):
    mx = _mx()
    net = models.gluon_net("mobilenetv2_0.25")
    result = spa.prune(net, flops=0.5, input_shape=(1, 3, 32, 32), criterion="l1")
    block = result.model
    assert isinstance(block, mx.gluon.SymbolBlock)
    x = mx.nd.array(np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype("float32"))
    y = mx.nd.array([0, 1, 2, 3])
    trainer = mx.gluon.Trainer(block.collect_params(), "sgd", {"learning_rate": 0.1})
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    name = next(n for n in block.collect_params() if n.endswith("weight"))
    before = block.collect_params()[name].data().asnumpy().copy()
    with mx.autograd.record():
        loss = loss_fn(block(x), y)
    loss.backward()
    trainer.step(4)
    assert np.isfinite(loss.asnumpy()).all()
    assert not np.allclose(block.collect_params()[name].data().asnumpy(), before)


def test_mxnet_outputs_only_from_mxnet_and_no_extension_means_mxnet(tmp_path):
    from spa_keras.common import files

    prefix = models.gluon_checkpoint("resnet18_v1", str(tmp_path / "r18"))
    assert files.model_kind(tmp_path / "slim", for_output=True, source_kind=files.MXNET) == files.MXNET
    assert files.model_kind(str(tmp_path / "slim") + "/", for_output=True, source_kind=files.MXNET) == \
        files.SAVEDMODEL
    assert files.model_kind(tmp_path / "slim", for_output=True) == files.SAVEDMODEL
    cnn = models.small_cnn()
    cnn.save(tmp_path / "cnn.keras")
    run = CliRunner().invoke(cli, ["prune", str(tmp_path / "cnn.keras"), "--flops", "0.3", "-o",
                                   str(tmp_path / "x-symbol.json")])
    assert run.exit_code == 2 and "mx.onnx.import_model" in run.output and not (tmp_path / "x-symbol.json").exists()
    same = CliRunner().invoke(cli, ["prune", prefix, "--input-shape", "1,3,32,32", "--flops", "0.3", "-o",
                                    prefix + "-symbol.json"])
    assert same.exit_code == 2 and "replace" in same.output
