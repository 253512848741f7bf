"""Which channel counts do the runtimes run fast? The measurement behind `round_to="auto"` (spa_keras/runtimes.py).

    python benchmarks/channel_widths.py [--widths 176,180,...] [--runs 40] [--runtimes onnxruntime,tflite,tensorflow]

One MobileNet-style block at 56x56 with 32 input channels: 1x1 conv to W channels, ReLU, 3x3 depthwise conv, ReLU,
1x1 conv back to 32, for W around 184 (multiples of 1, 2, 4, 8 and 16). onnxruntime runs an ONNX graph built here
(NCHW, as tf2onnx writes it after its transposes are folded); TFLite (XNNPACK) and TensorFlow run the same block
built in Keras. Batch 1, 2 threads, every width timed in turn, lower quartile of `--runs` runs. Prints a table and
writes benchmarks/results/channel_widths.json.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tables import print_rows  # noqa: E402

C, SIZE, THREADS = 32, 56, 2


def onnx_block(width):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": (width, C, 1, 1), "w2": (width, 1, 3, 3), "w3": (C, width, 1, 1)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in weights.items()]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1] * 4, group=width),
             helper.make_node("Relu", ["c"], ["d"]), helper.make_node("Conv", ["d", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE,
                                                                                                        SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def keras_block(width):
    import keras

    x = keras.Input((SIZE, SIZE, C))
    y = keras.layers.Conv2D(width, 1, activation="relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    return keras.Model(x, keras.layers.Conv2D(C, 1)(y))


def runner(runtime, width):
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        session = ort.InferenceSession(onnx_block(width).SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        x = np.random.rand(1, C, SIZE, SIZE).astype(np.float32)
        return lambda: session.run(None, {"x": x})
    model = keras_block(width)
    x = np.random.rand(1, SIZE, SIZE, C).astype(np.float32)
    if runtime == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        sys.path.insert(0, os.path.dirname(HERE))
        from spa_keras.bridges.keras_to_tf import keras_to_tflite

        interpreter = Interpreter(model_content=keras_to_tflite(model), num_threads=THREADS)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]

        def run():
            interpreter.set_tensor(index, x)
            interpreter.invoke()
        return run
    import tensorflow as tf

    call = tf.function(lambda t: model(t, training=False))
    return lambda: call(x).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="176,180,182,184,186,187,188,190,192,194,196,200")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--runtimes", default="onnxruntime,tflite,tensorflow")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    report = {"runs": args.runs, "widths": widths, "ms": {}}
    for runtime in args.runtimes.split(","):
        runners = {w: runner(runtime, w) for w in widths}
        times = {w: [] for w in widths}
        for run in runners.values():
            run()
        for _ in range(args.runs):
            for w, run in runners.items():
                start = time.perf_counter()
                run()
                times[w].append(time.perf_counter() - start)
        report["ms"][runtime] = {w: 1e3 * statistics.quantiles(t, n=4)[0] for w, t in times.items()}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "channel_widths.json"), "w") as f:
        json.dump(report, f, indent=1)
    header = ["width", "largest power of 2 dividing it"] + [f"{r} ms" for r in report["ms"]]
    rows = [[str(w), str(w & -w)] + [f"{report['ms'][r][w]:.2f}" for r in report["ms"]] for w in widths]
    print_rows(f"one 1x1 -> depthwise 3x3 -> 1x1 block, 56x56, lower quartile of {args.runs} runs", header, rows)


if __name__ == "__main__":
    main()
