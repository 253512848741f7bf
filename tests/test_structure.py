"""The package's shape: the tree is the map, so these hold on every change.

- `spa_keras/` holds only `__init__.py` (the public API) and packages, each with a docstring that maps it.
- No import cycle among the package's modules: every import counts (module level or inside a function), except
  those under `if TYPE_CHECKING:`.
- The core packages (common, analysis, ops, importance, obspa, planning) import no format library: a model reaches
  them only through its format adapter (`spa_keras.formats`); TensorFlow as a compute library goes through
  `spa_keras.compute`.
- Format libraries (onnx, onnxruntime, mxnet, tf2onnx, onnx2tf, LiteRT) are imported only by the format adapters and
  the bridges.
- The typed packages (the core, compute and formats) annotate every public function and method: each parameter but
  self/cls, and the return (but `__init__`'s); mypy checks them in `make test` (setup.cfg, [mypy]).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "spa_keras"
CORE = ("common", "analysis", "ops", "importance", "obspa", "planning")
FORMAT_LIBRARIES = {"keras", "tensorflow", "tf_keras", "onnx", "onnxruntime", "mxnet", "tf2onnx", "onnx2tf",
                    "ai_edge_litert", "h5py", "onnxsim", "torch"}
MODEL_LIBRARIES = FORMAT_LIBRARIES - {"keras", "tensorflow", "tf_keras", "h5py"}  # what only formats/bridges read
MODEL_LIBRARY_PACKAGES = ("formats", "bridges")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: pathlib.Path) -> list[str]:
    """Every module `path` imports (dotted names; `from a import b` gives a.b when that is a module, else a),
    wherever the import stands, except under `if TYPE_CHECKING:`."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.append(full if full in MODULES else child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_the_top_level_holds_only_the_public_api_and_packages():
    strays = sorted(p.name for p in ROOT.iterdir() if p.name not in ("__init__.py", "__pycache__")
                    and not (p.is_dir() and (p / "__init__.py").exists()))
    assert not strays, f"spa_keras/ should hold only __init__.py and packages: {strays}"
    for package in sorted(p for p in ROOT.rglob("__init__.py")):
        assert ast.get_docstring(ast.parse(package.read_text())), f"{package.parent.name}/__init__.py has no docstring"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle_among_the_modules():
    graph = {name: {m for m in imports(path) if m in MODULES} for name, path in MODULES.items()}
    assert not _cycles(graph)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]] and not _cycles({"a": {"b"}, "b": set()})


def _library(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", CORE)
def test_core_packages_import_no_format_library(package):
    offenders = {name: sorted({m for m in imports(path) if _library(m) in FORMAT_LIBRARIES})
                 for name, path in MODULES.items() if name.split(".")[1:2] == [package]}
    assert not {k: v for k, v in offenders.items() if v}


def test_model_libraries_are_read_only_by_the_format_adapters_and_bridges():
    offenders = {name: sorted({m for m in imports(path) if _library(m) in MODEL_LIBRARIES})
                 for name, path in MODULES.items() if name.split(".")[1:2] and
                 name.split(".")[1] not in MODEL_LIBRARY_PACKAGES}
    assert not {k: v for k, v in offenders.items() if v}


TYPED = CORE + ("compute", "formats")


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def unannotated(tree: ast.Module) -> list[str]:
    """The public functions and methods of a module (module level, in public classes, under an if/try/with) that
    lack an annotation: "name(param, ..., return)" with what is missing. Nested functions are not public."""
    found: list[str] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
                args = node.args
                params = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
                missing = [p.arg for p in params if p.annotation is None and p.arg not in ("self", "cls")]
                if node.returns is None and node.name != "__init__":
                    missing.append("return")
                if missing:
                    found.append(f"{prefix}{node.name}({', '.join(missing)}) line {node.lineno}")
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for part in getattr(node, block, []):
                        visit(part.body if isinstance(part, ast.ExceptHandler) else [part], prefix)

    visit(tree.body, "")
    return found


@pytest.mark.parametrize("package", TYPED)
def test_public_functions_of_the_typed_packages_are_annotated(package):
    offenders = {name: missing for name, path in MODULES.items() if name.split(".")[1:2] == [package]
                 for missing in [unannotated(ast.parse(path.read_text()))] if missing}
    assert not offenders, f"annotate every parameter (but self/cls) and the return: {offenders}"


def test_the_annotation_check_finds_what_is_missing():
    tree = ast.parse("def f(a, b: int): ...\n"
                     "def _private(a): ...\n"
                     "class C:\n"
                     "    def __init__(self, x): ...\n"
                     "    def m(self, y: int) -> None: ...\n"
                     "    @classmethod\n"
                     "    def make(cls): ...\n"
                     "    def __repr__(self): ...\n"
                     "class _Hidden:\n"
                     "    def m(self, y): ...\n"
                     "if True:\n"
                     "    def g(*args: int, **kw) -> int:\n"
                     "        def inner(z): ...\n"
                     "        return 0\n")
    assert unannotated(tree) == ["f(a, return) line 1", "C.__init__(x) line 4", "C.make(return) line 7",
                                 "g(kw) line 12"]


def test_a_keras_model_goes_down_the_stages_once():
    """`spa.prune` hands a Keras model down the stages once, in order: its format adapter loads and describes it,
    the graph is analysed, a plan is made, the adapter's surgery cuts it (reads of the analysis' properties in
    between are not stages)."""
    import sys

    import spa_keras as spa
    from tests import models

    model = models.small_cnn()
    reads = {"source", "counts", "cost", "offsets", "input_shapes", "channels"}
    stages: list[str] = []

    def profile(frame, event, arg):
        caller = frame.f_back
        if event != "call" or caller is None or frame.f_code.co_name in reads:
            return
        if caller.f_globals.get("__name__", "").startswith("spa_keras.pipeline"):
            parts = frame.f_globals.get("__name__", "").split(".")
            if parts[0] == "spa_keras" and parts[1] != "pipeline":
                stage = ".".join(parts[1:3]) if parts[1] == "formats" and len(parts) > 3 else parts[1]
                if not stages or stages[-1] != stage:
                    stages.append(stage)

    sys.setprofile(profile)
    try:
        spa.prune(model, flops=0.4, criterion="l1")
    finally:
        sys.setprofile(None)
    assert stages == ["formats", "analysis", "planning", "formats.keras"]
