"""OBSPA's view of an ONNX model (`spa_keras.obspa.backend.ActivationBackend`): tensors read as extra outputs in
onnxruntime; the pruned network is the masked copy ONNX surgery writes, made anew with the refit values before each
stage is read. onnxruntime gives no gradients, so data-free inputs are optimised through the model rebuilt in Keras
(`norm_probe.py`: every BatchNormalization node's input and the statistics the graph keeps, and the class output);
a model that does not rebuild, or has neither, gets Gaussian inputs instead, with a warning.
SavedModels and MXNet models are analysed as their ONNX export (`proto`) and take the same route.

Sites are tensor names: a consumer's input tensor.

Example:

>>> backend = OnnxSource(model).activations()               # doctest: +SKIP
>>> [x] = backend.reader(["conv1_input"])(batch)            # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, cast

import numpy as np

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node
    from spa_keras.analysis.groups import Analysis
    from spa_keras.compute.distill import NormTarget
    from spa_keras.obspa.backend import NormSite
    from spa_keras.formats.onnx.source import OnnxSource


class OnnxReader:
    """Tensors of an ONNX model: the model with those tensors as extra outputs, in onnxruntime."""

    def __init__(self, model: Any, sites: list[str]) -> None:
        import onnx
        from onnx import helper

        from spa_keras.bridges import onnx_io

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.value_info[:]
        del probe.graph.output[:]
        self.tensors = list(dict.fromkeys(sites))
        probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in self.tensors)
        self.session = onnx_io.session(probe, "OBSPA's activation model", optimize=False)
        self.index = [self.tensors.index(site) for site in sites]

    def __call__(self, batch: Any) -> list:
        names = [i.name for i in self.session.get_inputs()]
        feeds = batch if isinstance(batch, dict) else dict(zip(names, batch if isinstance(batch, (list, tuple))
                                                               else [batch]))
        values = self.session.run(self.tensors, feeds)
        return [values[i] for i in self.index]


class OnnxActivations:
    """The `ActivationBackend` of an `OnnxSource`."""

    channels_last = False
    one_pass = False
    optimises_inputs = True  # through the Keras rebuild (`norm_probe`); Gaussian inputs where it is refused

    def __init__(self, source: OnnxSource) -> None:
        self.source = source

    def site(self, node: Node, weight: str) -> str:
        return node.inputs[0]

    def reader(self, sites: list[Hashable]) -> OnnxReader:
        return OnnxReader(self.source.proto, cast("list[str]", sites))  # what `site` gave: tensor names

    def pruned(self, analysis: Analysis, removed: np.ndarray) -> MaskedOnnxNetwork:
        return MaskedOnnxNetwork(analysis, removed)

    def norm_sites(self, analysis: Analysis) -> dict[Hashable, NormSite]:
        return {}

    def norm_probe(self) -> tuple[Callable, list[NormTarget]] | None:
        """The model rebuilt in Keras up to every BatchNormalization input, and the graph's statistics; None (with a
        warning) when the rebuild is refused or no BatchNormalization is left (folded)."""
        import warnings

        from spa_keras.formats.onnx.norm_probe import onnx_norm_probe

        # the rebuild takes seconds to minutes on large graphs and the default criterion probes before OBSPA does:
        # built once per source, its warnings said again at every use
        cached = getattr(self.source, "_norm_probe", None)
        shapes = repr(self.source.input_shapes)
        if cached is None or cached[0] != shapes:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probe = onnx_norm_probe(self.source.proto, self.source.input_shapes)
            cached = (shapes, probe, [w.message for w in caught])
            self.source._norm_probe = cached  # type: ignore[attr-defined]
        _, probe, said = cached
        for message in said:
            warnings.warn(message, stacklevel=2)
        return None if probe is None else (probe.probe, probe.targets)


class MaskedOnnxNetwork:
    """The analysed model with the removed channels zeroed and the values written so far."""

    def __init__(self, analysis: Analysis, removed: np.ndarray) -> None:
        self.analysis, self.removed = analysis, removed
        self.updates: dict[str, np.ndarray] = {}

    def write(self, param: str, value: np.ndarray) -> None:
        self.updates[param] = value

    def reader(self, sites: list[Hashable]) -> OnnxReader:
        from spa_keras.formats.onnx.surgery import mask_onnx

        return OnnxReader(mask_onnx(self.analysis, self.removed, self.updates), cast("list[str]", sites))

    def run_alongside(self, batch: Any, hook: Callable[[Hashable, list, list], None]) -> None:
        raise NotImplementedError("ONNX models are refit stage by stage")
