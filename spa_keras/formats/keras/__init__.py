"""The Keras format adapter: Keras 3 Functional and Sequential models, keras-hub models included.

    source.py       KerasSource: load (.keras/.h5 or in memory), run, describe, slim, mask in place, write
    frontend.py     the model as an SPAGraph: every layer call described in ONNX ops, channels last
    builder.py      GraphBuilder and the helpers layer descriptions use; KerasParam (lazy variable values)
    view.py         KerasView: a graph parameter as a view of a layer's variable (and its inverse for masks)
    registry.py     LayerSpec per layer class: description, resizer, MAC count
    layers/         one module per layer family: how its calls are described, how its config takes new widths,
                    its MACs
    surgery.py      the slim model (clone_model at the new widths) and in-place masking
    counts.py       spa.count for Keras models
    activations.py  OBSPA's access: layer inputs, a masked clone refit beside the original, BatchNorm statistics
    lockstep.py     running the original and its masked clone side by side, layer by layer
"""

from spa_keras.formats.keras.source import KerasSource  # noqa: F401

__all__ = ["KerasSource"]
