"""The ONNX format adapter: ONNX models from any exporter, and the exports other formats are analysed through.

    source.py       OnnxSource: load, run, describe, slim, write (ONNX, Keras through the native rebuild, TF/TFLite)
    frontend.py     the ModelProto as an SPAGraph: schema defaults filled, constants folded, shapes inferred
    handles.py      where a graph parameter lives in the ModelProto (initializer, Constant, folded op)
    surgery.py      the slim ModelProto (sliced initializers, each op's `rewrite` from spa_keras.ops) and masked
                    copies
    activations.py  OBSPA's access: tensors read in onnxruntime, masked copies rebuilt per stage
"""

from spa_keras.formats.onnx.source import OnnxSource  # noqa: F401

__all__ = ["OnnxSource"]
