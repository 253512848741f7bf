"""Zoo sweep: every architecture prunes at ratio 0.3 into a valid model with unchanged output shapes and fewer
parameters, and ratio 0 is the identity. The full sweep is `make test-zoo` (marker `zoo`); the default suite runs
a representative subset."""

import glob
import os

import numpy as np
import onnx
import pytest

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.common.verify import compare
from spa_keras.common.tensors import random_batch
from tests import models
from tests.oracles import assert_removal_equals_masking, independent_params

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(os.path.basename(p)[6:-5] for p in glob.glob(os.path.join(LIGHT, "light_*.onnx")))
DEFAULT_LIGHT = {"squeezenet", "inception_v1"}
GLUON = ["resnet18_v1", "resnet50_v2", "mobilenet1.0", "mobilenetv2_1.0", "vgg11_bn", "densenet121",
         "squeezenet1.0", "inceptionv3", "alexnet"]
GLUON_SIZE = {"inceptionv3": 299}


def check_prunes(model, masking=False, identity_tolerance=1e-5):
    feeds = random_batch(onnx_io.input_specs(model), batch=1)
    ref = onnx_io.run(model, feeds)
    same = spa.prune(model, ratio=0.0, criterion="l1")
    check = compare(ref, onnx_io.run(same.model, feeds), source="original", target="identity",
                    tolerance=identity_tolerance)
    assert check.ok, check
    result = assert_removal_equals_masking(model, ratio=0.3) if masking else spa.prune(model, ratio=0.3, criterion="l1")
    out = onnx_io.run(result.model, feeds)
    assert [v.shape for v in out.values()] == [v.shape for v in ref.values()]
    assert all(np.isfinite(v).all() for v in out.values())
    # weights that live in ConstantOfShape nodes (the light zoo) are not initializers: count those with spa.count
    folded = any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    written = spa.count(result.model).params if folded else independent_params(result.model)
    assert written == result.after.params < result.before.params
    assert spa.count(result.model).flops == result.after.flops
    return result


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in DEFAULT_LIGHT else [pytest.mark.zoo])
                                  for n in LIGHT_MODELS])
def test_onnx_light_zoo(name):
    check_prunes(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")))


@pytest.mark.zoo
@pytest.mark.parametrize("name", GLUON)
def test_gluon_zoo(name, tmp_path):
    size = GLUON_SIZE.get(name, 224)
    prefix = models.gluon_checkpoint(name, str(tmp_path / name), size=size)
    path = tmp_path / f"{name}.onnx"
    spa.convert(prefix, path, input_shape=f"1,3,{size},{size}")
    result = check_prunes(onnx.load(path), masking=True)
    if name == "resnet50_v2":
        assert result.after.params <= 0.8 * result.before.params
