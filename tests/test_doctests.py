"""The docstring examples of spa_keras run as doctests (examples that need a model or a file are marked SKIP)."""

import doctest
import importlib
import pkgutil

import pytest

import spa_keras

MODULES = sorted(m.name for m in pkgutil.walk_packages(spa_keras.__path__, "spa_keras."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_the_numpy_modules_have_running_examples():
    """The numpy-only modules show a runnable example, not only skipped ones."""
    for name in ("spa_keras.analysis.labels", "spa_keras.analysis.graph", "spa_keras.common.files",
                 "spa_keras.common.verify", "spa_keras.common.tensors", "spa_keras.compute.data",
                 "spa_keras.compute.calibration",
                 "spa_keras.importance.scoring", "spa_keras.formats.keras.view", "spa_keras.ops.registry",
                 "spa_keras.ops.geometry", "spa_keras.formats.keras.registry", "spa_keras.formats.masking"):
        finder = doctest.DocTestFinder()
        examples = [e for t in finder.find(importlib.import_module(name)) for e in t.examples
                    if not e.options.get(doctest.SKIP)]
        assert examples, f"{name} has no example that runs"
