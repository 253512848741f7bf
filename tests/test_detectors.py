"""Detector-style ONNX graphs as exported from PyTorch, with free spatial dimensions: YOLO (Conv+SiLU, C2f
Split/Concat, Resize x2 of a pruned tensor concatenated with a skip) and DB text detection (an FPN whose Resize
sizes are computed from the skip's Shape at run time, ConvTranspose head, sigmoid)."""

import numpy as np
import onnx
import pytest

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.common.verify import compare
from spa_keras.common.tensors import random_batch
from tests.onnx_graphs import Builder
from tests.oracles import masked_model
from tests.test_cli_prune import invoke


def silu(b, x):
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


def cbs(b, x, cin, cout, **kw):
    return silu(b, b.bn(b.conv(x, cin, cout, bias=False, **kw), cout))


def c2f(b, x, cin, cout):
    """C2f: a 1x1 conv split in two halves, a residual bottleneck on the second, all three concatenated."""
    half = cout // 2
    y = cbs(b, x, cin, 2 * half, k=1)
    first, second = b.op("Split", [y, b.const([half, half])], n_out=2, axis=1)
    deep = b.op("Add", [second, cbs(b, cbs(b, second, half, half), half, half)])
    return cbs(b, b.op("Concat", [first, second, deep], axis=1), 3 * half, cout, k=1)




def yolo_model(seed=0):
    b = Builder(seed=seed)
    x = cbs(b, "x", 3, 16, stride=2)
    p3 = c2f(b, cbs(b, x, 16, 32, stride=2), 32, 32)
    p4 = c2f(b, cbs(b, p3, 32, 64, stride=2), 64, 64)
    up = b.op("Resize", [p4, "", b.const([1, 1, 2, 2], np.float32)], mode="nearest")
    head = c2f(b, b.op("Concat", [up, p3], axis=1), 96, 32)
    det = b.conv(head, 32, 18, k=1)
    b.input_shape = [None, 3, None, None]
    model = b.model(det, [18, None, None])
    return model


def db_model(seed=0):
    b = Builder(seed=seed)
    c2 = b.cbr(b.cbr("x", 3, 16, stride=2), 16, 16)
    c3 = b.cbr(c2, 16, 32, stride=2)
    c4 = b.cbr(c3, 32, 64, stride=2)
    lateral = b.conv(c4, 64, 32, k=1)
    # F.interpolate(lateral, size=c3.shape[2:]): sizes = Concat(Shape(lateral)[:2], Shape(c3)[2:])
    sizes = b.op("Concat", [b.op("Slice", [b.op("Shape", [lateral]), b.const([0]), b.const([2])]),
                            b.op("Slice", [b.op("Shape", [c3]), b.const([2]), b.const([4])])], axis=0)
    fused = b.op("Add", [b.op("Resize", [lateral, "", "", sizes], mode="nearest"), c3])
    y = b.cbr(fused, 32, 16)
    w = b.param([16, 8, 2, 2])
    y = b.op("Relu", [b.op("ConvTranspose", [y, w], kernel_shape=[2, 2], strides=[2, 2])])
    y = b.op("ConvTranspose", [y, b.param([8, 1, 2, 2])], kernel_shape=[2, 2], strides=[2, 2])
    b.input_shape = [None, 3, None, None]
    return b.model(b.op("Sigmoid", [y]), [1, None, None])


MODELS = {"yolo": yolo_model, "db": db_model}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_free_spatial_detector_prunes_at_the_default_size_and_runs_at_others(name, tmp_path):
    """No --input-shape: the free height and width are taken as 224 (said in a note); the slim model equals the
    masked original there, and still runs at other sizes, as a fully convolutional net does."""
    model = MODELS[name]()
    with pytest.warns(UserWarning, match="free height and width: taken as 224x224"):
        analysis = spa.analyze(model)
    result = spa.prune(model, ratio=0.3, analysis=analysis, criterion="l1")
    assert result.plan.removed
    removed = result.plan.mask(analysis)
    for size in (224, 160):
        feeds = random_batch(onnx_io.input_specs(model), {None: (1, 3, size, size)})
        ref = onnx_io.run(masked_model(analysis, removed), feeds)
        slim = onnx_io.run(result.model, feeds)
        check = compare(ref, slim, source="masked", target="slim", tolerance=1e-4)
        assert check.ok, (size, check)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cli_prunes_a_free_spatial_detector(name, tmp_path):
    path, out = tmp_path / f"{name}.onnx", tmp_path / "slim.onnx"
    onnx.save(MODELS[name](), path)
    result = invoke("prune", "--criterion", "l1", path, "-o", out, "--ratio", "0.3")
    assert result.exit_code == 0, result.output
    result = invoke("prune", "--criterion", "l1", path, "-o", out, "--flops", "0.3", "--input-shape", "1,3,96,96")
    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.output
    onnx.checker.check_model(onnx.load(out))
