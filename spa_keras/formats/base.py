"""`Source`: the format adapter every kind of model gets, and the one face the engine sees of a model.

A `Source` holds one loaded model (a keras.Model, an onnx.ModelProto, a SavedModel directory, an MXNet checkpoint)
and owns everything that depends on its kind: describing it as an `SPAGraph` (its front-end, at the input shapes it
was loaded with), running it, applying a plan to it (its surgery: the slim model, or a copy with the removed
channels zeroed), reading the activations OBSPA refits on, and writing it to another format (the bridges, each
write verified against the source). The graph carries its source (`graph.source`), so analysis, planning,
importance and OBSPA reach the model only through this interface and never import a format library.

Example:

>>> source = spa_keras.formats.load("model.onnx")           # doctest: +SKIP
>>> analysis = analyze_graph(source.graph)                   # doctest: +SKIP
>>> slim = source.slim(analysis, removed)                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from spa_keras.common.errors import InputError, SpaError, first_line
from spa_keras.common.tensors import TensorSpec, random_batch, resolve_input_shapes

if TYPE_CHECKING:
    from spa_keras.analysis.cost import Counts
    from spa_keras.analysis.graph import SPAGraph
    from spa_keras.analysis.groups import Analysis
    from spa_keras.obspa.backend import ActivationBackend

Feeds = dict[str, np.ndarray]


@dataclasses.dataclass
class WriteJob:
    """One verified write: where to, in which kind and precision, the reference batch and how each check is made.

    Args:
        output: the path written.
        kind: its kind (`spa_keras.common.files`).
        precision: of a TFLite output ("float32", "float16", "int8").
        feeds: the random batch the source ran on.
        verify: `verify(outputs, target_name, tolerance=None)` compares outputs with the source's on `feeds` and
            raises when they differ (nothing is written then).
        say: a line of progress.
    """

    output: str
    kind: str
    precision: str
    feeds: Feeds
    verify: Callable[..., Any]
    say: Callable[[str], None]


class Source:
    """A loaded model of one kind (subclasses: `KerasSource`, `OnnxSource`, `SavedModelSource`, `MXNetSource`).

    Args:
        model: the model as its library holds it.
        name: how messages name it (a path, or "Keras model 'name'").
        input_shapes: {input name or None: shape} given for free input dimensions (`--input-shape`).
    """

    kind: str = ""  # a `spa_keras.common.files` kind (an instance may say which: .keras or .h5)
    framework: ClassVar[str] = ""  # what runs it in checks: keras, onnxruntime, tensorflow, mxnet
    runtime: ClassVar[str] = ""  # the runtime latency targets time the analysed model on by default

    def __init__(self, model: Any, name: str, input_shapes: dict | None = None) -> None:
        self.model = model
        self.name = name
        self.given_shapes = input_shapes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ---- running -------------------------------------------------------------------------------------------------

    @property
    def specs(self) -> list[TensorSpec]:
        """The model's inputs (free dimensions as None), as `run` takes them."""
        raise NotImplementedError

    @property
    def graph_specs(self) -> list[TensorSpec]:
        """The inputs of the model the graph describes (an export's, for kinds analysed through one)."""
        return self.specs

    @property
    def analysed_model(self) -> Any:
        """The model the graph describes and surgery cuts (the ONNX export, for kinds analysed through one)."""
        return self.model

    def run(self, feeds: Feeds) -> Feeds:
        """The model's outputs on `{input name: array}` in its own framework."""
        raise NotImplementedError

    def reference_run(self, shapes: dict | None) -> tuple[Feeds, Feeds]:
        """(feeds, outputs) on a random batch of two, or of one for a model that declares a free batch but runs at
        batch 1 only (a Reshape to a fixed size); a model that runs at neither is an `InputError`."""
        try:
            feeds = random_batch(self.specs, shapes, batch=2)
            return feeds, self.run(feeds)
        except SpaError:
            raise
        except Exception:
            feeds = random_batch(self.specs, shapes, batch=1)
        try:
            return feeds, self.run(feeds)
        except SpaError:
            raise
        except Exception as exc:
            raise InputError(f"{self.framework} cannot run the model on a random batch: {first_line(exc)}") from exc

    # ---- the front-end -------------------------------------------------------------------------------------------

    @functools.cached_property
    def input_shapes(self) -> dict[str, tuple]:
        """{input name: shape at batch 1} the graph describes: given sizes, defaults for the rest (each said in a
        warning)."""
        shapes, notes = resolve_input_shapes(self.graph_specs, self.given_shapes)
        for note in notes:
            warnings.warn(f"{note}; give input_shape= (--input-shape) to choose", stacklevel=3)
        return shapes

    @functools.cached_property
    def graph(self) -> SPAGraph:
        """The model as an `SPAGraph` at `input_shapes` (built once); weights must be finite numbers."""
        self.require_describable()
        graph = self.describe(self.input_shapes)
        graph.source = self
        for param in graph.params.values():
            value = param.value
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                count = int((~np.isfinite(value)).sum())
                raise InputError(f"{self.name}: weight {param.name} holds {count} NaN or infinite value(s); fix or "
                                 "retrain the model first")
        return graph

    def require_describable(self) -> None:
        """Raise an `InputError` that says what to do when the front-end cannot describe this model."""

    def describe(self, input_shapes: dict[str, tuple]) -> SPAGraph:
        """This kind's front-end: the model as an `SPAGraph`."""
        raise NotImplementedError

    # ---- surgery -------------------------------------------------------------------------------------------------

    def slim(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        """A new, smaller model of the same kind without the `removed` channels (bool per global channel), kept
        weights replaced by `updates` ({parameter: full-size value in the graph's layout}); checked before it is
        returned. The loaded model is not changed."""
        raise NotImplementedError

    def slim_analysed(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        """The slim model of what the graph describes (the slim ONNX export, for kinds analysed through one)."""
        return self.slim(analysis, removed, updates)

    def mask_in_place(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        """Zero the removed channels of the loaded model itself (after writing `updates`); shapes stay."""
        raise InputError(f"in-place masking needs a live Keras model; {self.name} is {self.kind}")

    # ---- writing -------------------------------------------------------------------------------------------------

    def write(self, job: WriteJob) -> None:
        """Convert to `job.output`, verify, and write atomically (the routes of `spa.convert`)."""
        raise NotImplementedError

    # ---- what algorithms ask of the model --------------------------------------------------------------------------

    def activations(self) -> ActivationBackend:
        """OBSPA's access to the model's activations (`spa_keras.obspa.backend.ActivationBackend`)."""
        raise NotImplementedError

    def trainable_model(self, criterion: str | None) -> Any:
        """The Keras model gradients are taken of; other kinds cannot give one."""
        raise InputError(f"criterion {criterion!r} computes gradients in TensorFlow and needs a TF/Keras model: give "
                         "spa.prune the keras.Model or .keras/.h5 file (not via='onnx'); convert an ONNX-only model "
                         "to Keras first (e.g. with onnx2tf), or use a data-free criterion "
                         "(l1, l2, bn_scale, random, lamp, fpgm)")

    def params_of_variables(self, per_variable: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{parameter: array in the graph's layout} of arrays laid out like the model's variables (by path)."""
        raise NotImplementedError

    def counts(self) -> Counts:
        """`Counts` (parameters, FLOPs) of the model as `spa.count` reports them."""
        from spa_keras.analysis.cost import Counts, graph_macs, graph_params

        graph = self.graph
        return Counts(graph_params(graph), 2 * graph_macs(graph))
