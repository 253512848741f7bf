"""Bridges between formats, one module per source or target.

- `keras_io`, `onnx_io`, `tflite_io`, `savedmodel_io`, `mxnet_io`: load, describe and run each format.
- `keras_to_onnx` (tf2onnx), `keras_to_tf` (TFLite, SavedModel), `onnx_to_tf` (onnx2tf), `mxnet_io.to_onnx`.
- `mxnet_compat`: the numpy/onnx shims MXNet 1.9.1 needs, applied only when MXNet is imported.
- `onnx_names`: tf2onnx's counter-numbered names and node order made canonical (the same bytes in every run).

`spa_keras.pipeline.convert` picks the route; nothing here imports the CLI.
"""
