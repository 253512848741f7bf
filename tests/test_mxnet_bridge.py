"""MXNet checkpoints and Gluon blocks → ONNX, verified against MXNet itself."""

import os

import numpy as np
import onnx
import pytest

from spa_keras import convert
from spa_keras.bridges import mxnet_io, onnx_io
from spa_keras.common.errors import InputError
from spa_keras.common.tensors import random_batch
from tests import models


@pytest.mark.parametrize("fixture", ["mxnet_resnet18", "mxnet_mobilenet"])
def test_prefix_to_onnx(fixture, request, tmp_path):
    prefix = request.getfixturevalue(fixture)
    out = tmp_path / "net.onnx"
    report = convert(prefix, out, input_shape="1,3,32,32")
    assert report.checks[0].source == "mxnet" and report.checks[0].rel <= 1e-4
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["data"]
    ckpt = mxnet_io.load(prefix)
    feeds = random_batch(mxnet_io.input_specs(ckpt, (1, 3, 32, 32)), batch=3, seed=5)  # another batch size
    ref = list(mxnet_io.run(ckpt, feeds).values())[0]
    np.testing.assert_allclose(list(onnx_io.run(model, feeds).values())[0], ref, atol=1e-4 * np.abs(ref).max())


def test_gluon_block_to_onnx(tmp_path):
    net = models.gluon_net("resnet18_v1")
    report = convert(net, tmp_path / "block.onnx", input_shape=(1, 3, 32, 32))
    assert report.checks[0].rel <= 1e-4


def test_fix_gamma_bug_is_worked_around(tmp_path):
    """resnet18_v2's input BatchNorm has fix_gamma: mxnet.onnx exports its stored γ although MXNet uses 1."""
    from spa_keras.bridges.mxnet_compat import import_mxnet

    mx = import_mxnet()
    prefix = models.gluon_checkpoint("resnet18_v2", str(tmp_path / "r18v2"))
    ckpt = mxnet_io.load(prefix)
    fixed = mxnet_io.fixed_gamma_names(ckpt.symbol)
    assert fixed and all(not np.allclose(ckpt.params[n].asnumpy(), 1) for n in fixed)
    feeds = random_batch(mxnet_io.input_specs(ckpt, (1, 3, 32, 32)))
    ref = list(mxnet_io.run(ckpt, feeds).values())[0]
    raw = str(tmp_path / "raw.onnx")  # the exporter on its own
    mx.onnx.export_model(ckpt.symbol, ckpt.params, in_shapes=[(2, 3, 32, 32)], in_types=[np.float32],
                         onnx_file_path=raw)
    raw_out = list(onnx_io.run(onnx.load(raw), feeds).values())[0]
    assert np.abs(raw_out - ref).max() / np.abs(ref).max() > 1e-3, "mxnet.onnx honours fix_gamma now"
    assert convert(prefix, tmp_path / "fixed.onnx", input_shape="1,3,32,32").checks[0].rel <= 1e-4


def test_missing_params_and_epoch_hint(mxnet_resnet18, tmp_path):
    with pytest.raises(InputError, match=r"resnet18_v1-0007.params: MXNet params file not found \(found "
                                         r"resnet18_v1-0000.params: pass --epoch\)"):
        convert(mxnet_resnet18, tmp_path / "x.onnx", epoch=7, input_shape="1,3,32,32")
    with pytest.raises(InputError, match="carry no input shape"):
        convert(mxnet_resnet18, tmp_path / "x.onnx")
    assert not os.path.exists(tmp_path / "x.onnx")


def test_users_import_mxnet_through_spa_keras():
    """`import mxnet` alone fails on numpy >= 1.24; `spa.import_mxnet()` applies the shims, after which a plain
    `import mxnet` works in the same process (the README's documented way)."""
    import subprocess
    import sys

    script = ("import spa_keras as spa\nmx = spa.import_mxnet()\nimport mxnet\n"
              "print(mxnet is mx, mxnet.nd.ones((2, 3)).sum().asscalar())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "6.0"]
