"""The notebooks run end to end (issue 13): executed with nbclient in a fresh kernel, in a temporary folder.

Fashion-MNIST is cut to a few hundred images by a first cell (`spa_keras.ui.demo.fashion_mnist` returns subsets), so
the notebooks' code runs whole in seconds; their accuracy numbers are not the point here.
"""

import glob
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from spa_keras.ui.demo import FASHION_DIR  # noqa: E402

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks",
                                          "*.ipynb")))

SMALL_DATA = '''
import spa_keras.ui.demo as _demo

_full = _demo.fashion_mnist


def _small():
    data = _full()
    if data is None:
        return None
    (x_train, y_train), (x_test, y_test) = data
    return (x_train[:768], y_train[:768]), (x_test[:256], y_test[:256])


_demo.fashion_mnist = _small
'''


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    if "fashion_mnist" in "".join(c.source for c in notebook.cells) and not os.path.isdir(FASHION_DIR):
        pytest.skip("Fashion-MNIST not installed (make data)")
    notebook.cells.insert(0, nbformat.v4.new_code_cell(SMALL_DATA))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
