"""Per-layer latency tables (NetAdapt-style): how long each convolution and matrix product takes on a runtime at
the channel counts a plan may leave it, measured once per machine and runtime and cached.

FLOPs predict latency poorly: a depthwise convolution or a narrow 1x1 convolution at batch 1 takes far longer per FLOP
than a wide one, and kernels have fast and slow channel counts. So a latency target plans on measured layer times
instead. Every op whose spec gives it a `layer` (`spa_keras.ops`: Conv, Gemm, MatMul with a weight) is built alone as
a one-layer model for the runtime (one ONNX node for onnxruntime; one Keras layer, channels last, for TFLite and
TensorFlow) at a small grid of input and output channel counts (`FRACTIONS` of the original, at multiples the runtime
runs fast), and timed (lower quartile of `RUNS` runs). A layer's time at other counts is interpolated on that grid
(bilinear; proportional below the smallest count). The time the layers do not account for (activations, pooling,
element-wise ops, per-node overhead) is the whole model's measured latency minus the layers' sum, and is held
constant.

Tables are cached in `$SPA_KERAS_CACHE` (default `~/.cache/spa-keras`), one JSON per machine (CPU model, core count),
runtime, runtime version and thread count; entries are keyed by layer shape, so models that share layer shapes
(repeated blocks, the same backbone) share measurements. Building a table shows a progress bar; a ResNet50 at batch 1
on onnxruntime needs a few hundred one-layer timings (about a minute here), the next prune of it none.

Example:

>>> model = LatencyModel(analysis, "onnxruntime", batch=1)        # doctest: +SKIP
>>> model.removed_fraction(mask)   # predicted fraction of the latency a removed-channel mask saves  # doctest: +SKIP
0.41
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import platform
import time

import numpy as np

from spa_keras.ops.geometry import LayerShape
from spa_keras.ops import spec_for
from spa_keras.planning.runtimes import group_multiples

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
RUNS = 10
WARMUP = 3
FORMAT = "spa-keras latency table 1"
SAVE_EVERY = 30.0  # seconds between saves while a table is measured


# a one-node model that does nothing: its time is the runtime's fixed cost of one run (binding inputs, fetching
# outputs, a Python call), which every one-layer timing includes and a layer inside a model does not pay
NOTHING = LayerShape("Identity", (1, 1), ())


def layer_shape(node, graph, batch: int) -> LayerShape | None:
    """The `LayerShape` of a graph node at `batch` (its op spec's `layer`), or None when it is not timed: other ops,
    a product of two activations, Gemm with transA, grouped convolutions that are not depthwise."""
    spec = spec_for(node.op_type)
    return None if spec is None or spec.layer is None else spec.layer(node, graph, batch)


def grid(channels: int) -> list[int]:
    """The channel counts a layer of `channels` channels is timed at: `FRACTIONS` of it, at multiples of the
    largest power of two up to 16 that fits four times in it."""
    m = group_multiples([channels], 16)[0]
    return sorted({max(m, int(round(channels * f / m)) * m) if channels >= m else channels for f in FRACTIONS}
                  | {channels})


def cache_path(runtime: str, threads: int) -> str:
    """The JSON file that caches `runtime`'s layer timings on this machine."""
    root = os.environ.get("SPA_KERAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "spa-keras")
    machine = f"{platform.machine()} {_cpu_model()} {os.cpu_count()} {runtime} {_version(runtime)} {threads}"
    digest = hashlib.sha1(machine.encode()).hexdigest()[:12]
    return os.path.join(root, f"latency-{runtime}-{digest}.json")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(runtime: str) -> str:
    import importlib.metadata as md

    package = {"onnxruntime": "onnxruntime", "tflite": "ai-edge-litert", "tensorflow": "tensorflow"}[runtime]
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "?"


class LatencyTable:
    """Measured seconds per `LayerShape` on one runtime on this machine, cached on disk."""

    def __init__(self, runtime: str, threads: int | None = None, path: str | None = None):
        from spa_keras.latency.timing import THREADS

        self.runtime, self.threads = runtime, threads or THREADS
        self.path = path or cache_path(runtime, self.threads)
        self.seconds: dict[str, float] = {}
        try:
            with open(self.path) as f:
                data = json.load(f)
            if data.get("format") == FORMAT:
                self.seconds = {k: float(v) for k, v in data["seconds"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no cache yet, or an unreadable one: measure again

    def missing(self, shapes) -> list[LayerShape]:
        seen, out = set(), []
        for s in shapes:
            if s.key not in self.seconds and s.key not in seen:
                seen.add(s.key)
                out.append(s)
        return out

    def measure(self, shapes, what: str = "timing layers") -> None:
        """Time every shape not in the table yet (a progress bar), then save the table."""
        from spa_keras.common.console import progress_bar

        todo = self.missing(shapes)
        if not todo:
            return
        saved = time.monotonic()
        with progress_bar(len(todo), f"{what} on {self.runtime}") as advance:
            for s in todo:
                self.seconds[s.key] = time_layer(s, self.runtime, self.threads)
                advance()
                if time.monotonic() - saved > SAVE_EVERY:  # an interrupted build keeps what it measured
                    self.save()
                    saved = time.monotonic()
        self.save()

    def save(self) -> None:
        from spa_keras.common import files

        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with files.atomic_output(self.path) as tmp:
                with open(tmp, "w") as f:
                    json.dump({"format": FORMAT, "runtime": self.runtime, "seconds": self.seconds}, f, indent=0)
        except Exception as exc:  # noqa: BLE001  a cache that cannot be written costs time next run, not this one
            import warnings

            from spa_keras.common.errors import first_line

            warnings.warn(f"latency table not cached at {self.path} ({first_line(exc)}); set SPA_KERAS_CACHE to a "
                          "writable folder to keep it", stacklevel=2)

    def __getitem__(self, shape: LayerShape) -> float:
        return self.seconds[shape.key]


def time_layer(shape: LayerShape, runtime: str, threads: int) -> float:
    """Seconds one run of the one-layer model of `shape` takes on `runtime` (lower quartile of `RUNS`)."""
    from spa_keras.common.console import quiet
    from spa_keras.formats.keras.single_layer import keras_input_shape, keras_layer
    from spa_keras.formats.onnx.single_layer import onnx_layer
    from spa_keras.latency.timing import Timer, interleaved, lower_quartile

    with quiet():
        if runtime == "onnxruntime":
            model, inputs = onnx_layer(shape), {"x": shape.x}
        else:
            model, inputs = keras_layer(shape), {"x": keras_input_shape(shape)}
        timer = Timer(model, runtime, inputs, threads=threads)
        times, = interleaved((timer,), RUNS, WARMUP)
    return lower_quartile(times)


class LayerWidths:
    """The timed layers (`layer_shape`) of an analysed model and their channel counts with any set of channels removed.

    Args:
        analysis: the `GraphAnalysis` of the model.
        batch: the batch size the layers' shapes are taken at.
    """

    def __init__(self, analysis, batch: int = 1):
        self.cost = analysis.cost
        entry = {(name, axis): e for e, (name, axis, _) in enumerate(self.cost.entries)}
        graph = analysis.graph
        # (LayerShape at full width, entry of its input channel axis, entry of its output channel axis; None: fixed)
        self.layers = []
        for node in graph.nodes:
            shape = layer_shape(node, graph, batch)
            if shape is not None:
                axis = 1 if shape.op == "Conv" else len(shape.x) - 1
                self.layers.append((shape, entry.get((node.inputs[0], axis)), entry.get((node.outputs[0], axis))))

    def widths(self, removed: np.ndarray) -> list[tuple[int, int]]:
        """Per layer, (input channels, output channels) without the `removed` channels."""
        gone = self.cost.removed_per_entry(removed)
        out = []
        for shape, ein, eout in self.layers:
            cin = shape.cin - (gone[ein] if ein is not None else 0)
            cout = (shape.cout * cin // shape.cin if shape.depthwise  # follows its input (depth multiplier)
                    else shape.cout - (gone[eout] if eout is not None else 0))
            out.append((cin, cout))
        return out

    def layer_seconds(self, index: int, cin: int, cout: int) -> float:
        """Seconds of layer `index` at `cin` inputs and `cout` outputs."""
        raise NotImplementedError

    def layers_seconds(self, removed: np.ndarray) -> float:
        """Sum of the layers' seconds without the `removed` channels."""
        return sum(self.layer_seconds(i, cin, cout) for i, (cin, cout) in enumerate(self.widths(removed)))


class LatencyModel(LayerWidths):
    """Predicted latency of an analysed model with any set of channels removed, from a `LatencyTable`.

    Args:
        analysis: the `GraphAnalysis` of the model.
        runtime: "onnxruntime", "tflite" or "tensorflow".
        batch: the batch size the model will run at.
        whole_seconds: the whole model's measured latency on the runtime (the time the layers do not account for
            is this minus their sum); None counts the layers only.
        table: a `LatencyTable` (default: this machine's cached one); missing layer timings are measured now.
    """

    def __init__(self, analysis, runtime: str, batch: int = 1, whole_seconds: float | None = None,
                 table: LatencyTable | None = None):
        super().__init__(analysis, batch)
        self.table = table or LatencyTable(runtime)
        # per layer, the channel counts it is timed at (only along axes a group can change)
        self.grids = [(grid(s.cin) if ein is not None else [s.cin],
                       grid(s.cout) if eout is not None and not s.depthwise else [s.cout])
                      for s, ein, eout in self.layers]
        shapes = [s for s, _, _ in self.layers]
        self.table.measure([NOTHING] + [s.at(a, b) for s, (ins, outs) in zip(shapes, self.grids)
                                        for a in ins for b in outs])
        # per layer: its measured seconds on the grid, [cin index][cout index], less the fixed cost of a run
        fixed = self.table[NOTHING]
        self.times = [_monotone([[max(self.table[s.at(a, b)] - fixed, 0.0) for b in outs] for a in ins])
                      for s, (ins, outs) in zip(shapes, self.grids)]
        self.full = self.layers_seconds(np.zeros(self.cost.channels, bool))
        self.rest = max(0.0, whole_seconds - self.full) if whole_seconds else 0.0

    def layer_seconds(self, index: int, cin: int, cout: int) -> float:
        ins, outs = self.grids[index]  # a depthwise layer's output count follows its input and is not on a grid
        return _interp1(ins, [_interp1(outs, row, cout) for row in self.times[index]], cin)

    def seconds(self, removed: np.ndarray) -> float:
        return self.rest + self.layers_seconds(removed)

    def removed_fraction(self, removed: np.ndarray) -> float:
        """The predicted fraction of the latency that removing `removed` saves."""
        base = self.rest + self.full
        return 1.0 - self.seconds(removed) / base if base else 0.0

    def channel_costs(self, groups, offsets) -> np.ndarray:
        """Per global channel: the predicted seconds its group saves per channel when it loses a quarter of its
        channels from the full model (what `make_plan(..., rank_by_latency=True)` divides scores by, as HALP
        does)."""
        from spa_keras.analysis.cost import channel_savings

        return channel_savings(groups, offsets, self.cost.channels, self.layers_seconds)



def _monotone(times) -> list[list[float]]:
    """The grid's times made non-decreasing in both channel counts (running maxima): timing noise must not let
    removing channels predict a slower layer, or the search could chase it."""
    t = np.maximum.accumulate(np.maximum.accumulate(np.asarray(times, float), axis=0), axis=1)
    return t.tolist()


def _interp1(xs: list[int], ys: list[float], x: float) -> float:
    """Linear interpolation on sorted `xs`; below the first point proportional to x (no channels, no time)."""
    if len(xs) == 1:
        return ys[0]
    if x <= xs[0]:
        return ys[0] * x / xs[0]
    i = min(bisect.bisect_left(xs, x), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
