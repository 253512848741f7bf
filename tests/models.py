"""Small real architectures for tests, with randomised BatchNorm statistics and biases.

Zero biases and identity BatchNorm let converters fold ops away (stack notes §2), so tests randomise them first.
"""

import numpy as np


def randomize_keras(model, seed=0):
    """Give BatchNorm statistics, scales and every bias random values (in place); return the model."""
    rng = np.random.default_rng(seed)
    for layer in flat_layers(model):
        for var in layer.weights:
            name = var.path.rsplit("/", 1)[-1]
            # gamma / sqrt(variance) <= 1: deep nets (EfficientNetB7) must not blow their activations up
            if name == "moving_variance":
                var.assign(rng.uniform(1.0, 2.0, var.shape).astype("float32"))
            elif name == "gamma":
                var.assign(rng.uniform(0.5, 1.0, var.shape).astype("float32"))
            elif name in ("moving_mean", "beta", "bias"):
                var.assign(rng.normal(0, 0.1, var.shape).astype("float32"))
    return model


def flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from flat_layers(layer)
        else:
            yield layer


def small_cnn(seed=0):
    """Conv/BN/ReLU, a residual add, a SeparableConv2D, a DepthwiseConv2D, concat, GAP, Dense."""
    import keras
    from keras import layers

    inputs = keras.Input((24, 24, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    y = layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    y = layers.BatchNormalization(name="bn2")(y)
    x = layers.Add(name="add")([x, y])
    z = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    w = layers.Conv2D(4, 1, strides=2, name="pw")(x)
    x = layers.Concatenate(name="cat")([z, w])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="logits")(x)
    return randomize_keras(keras.Model(inputs, outputs, name="small_cnn"), seed)


def convnext_block(seed=0):
    """A ConvNeXt-style block: grouped Conv2D (XLA-wrapped in Keras 3), LayerNorm, exact GELU (Erfc)."""
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(16, 2, strides=2, name="stem")(inputs)
    y = layers.Conv2D(16, 7, padding="same", groups=16, name="dwconv")(x)
    y = layers.LayerNormalization(epsilon=1e-6, name="ln")(y)
    y = layers.Dense(32, name="pw1")(y)
    y = layers.Activation("gelu", name="gelu")(y)
    y = layers.Dense(16, name="pw2")(y)
    x = layers.Add(name="res")([x, y])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, name="head")(x)
    return randomize_keras(keras.Model(inputs, outputs, name="convnext_block"), seed)


def two_in_two_out(seed=0):
    """Two inputs (image, vector) and two outputs in a deliberate order ('zeta' before 'alpha')."""
    import keras
    from keras import layers

    image = keras.Input((12, 12, 2), name="image")
    meta = keras.Input((4,), name="meta")
    x = layers.Conv2D(6, 3, name="conv")(image)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    m = layers.Dense(6, name="meta_dense")(meta)
    joined = layers.Concatenate(name="join")([x, m])
    zeta = layers.Dense(3, name="zeta")(joined)
    alpha = layers.Dense(2, name="alpha")(joined)
    return randomize_keras(keras.Model([image, meta], [zeta, alpha], name="two_in_two_out"), seed)


def mobilenet_v2(size=32, seed=0):
    import keras

    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, weights=None,
                                           classifier_activation=None)
    return randomize_keras(model, seed)


def gluon_net(name, size=32, seed=0):
    """A Gluon model-zoo network, initialised, with random BatchNorm statistics and scales."""
    from spa_keras.bridges.mxnet_compat import import_mxnet

    mx = import_mxnet()
    from mxnet.gluon.model_zoo import vision

    mx.random.seed(seed)
    net = vision.get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, size, size)))
    rng = np.random.default_rng(seed)
    for pname, p in net.collect_params().items():
        if pname.endswith(("running_var", "gamma")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif pname.endswith(("running_mean", "beta")):
            p.set_data(mx.nd.array(rng.normal(0, 0.1, p.shape)))
    return net


def gluon_checkpoint(name, prefix, size=32, seed=0):
    """Export a Gluon zoo network as `prefix-symbol.json` + `prefix-0000.params`; return the prefix."""
    gluon_net(name, size, seed).export(prefix, epoch=0)
    return prefix


KERAS_APP_EXPORT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, spa_keras as spa
from tests.models import randomize_keras
name, size, out, tol = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
spa.convert(randomize_keras(model), out, tolerance=tol)
"""


def keras_app_onnx(name, size, path, tolerance=1e-4):
    """Export keras.applications `name` (random weights, randomised BN) to ONNX in a child process (tf2onnx's
    memory is returned to the system when it exits); return the path."""
    import os
    import subprocess
    import sys

    if not os.path.exists(path):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run([sys.executable, "-c", KERAS_APP_EXPORT, name, str(size), str(path), str(tolerance)],
                              cwd=root, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return str(path)


def image_layers(seed=0):
    """Per-channel Rescaling and Normalization, GroupNorm, Conv2DTranspose, LayerScale-style and nested layers."""
    import keras
    from keras import layers

    inputs = keras.Input((12, 12, 3), name="image")
    x = layers.Rescaling([0.5, 1.0, 2.0], offset=[0.1, 0.0, -0.1], name="rescale")(inputs)
    norm = layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(seed).normal(0, 2, (8, 12, 12, 3)).astype("float32"))
    x = norm(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv")(x)
    x = layers.Normalization(mean=np.linspace(-1, 1, 16), variance=np.linspace(1, 2, 16), name="fixed_norm")(x)
    x = layers.GroupNormalization(groups=4, name="gn")(x)
    x = layers.Conv2DTranspose(12, 3, strides=2, padding="same", name="up")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv3D(6, (1, 3, 3), padding="same", name="conv3d")(layers.Reshape((1, 24, 24, 12), name="to3d")(x))
    x = layers.Reshape((24, 24, 6), name="to2d")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = layers.Conv2D(8, 1, name="pw")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    outputs = layers.Dense(4, name="head")(x)
    return randomize_keras(keras.Model(inputs, outputs, name="image_layers"), seed)


def more_layers(seed=0):
    """Grouped Conv2D (1 < groups < C), Subtract/Maximum/Minimum/Average, ELU and LeakyReLU, SpatialDropout,
    padding/cropping/upsampling, Conv3DTranspose, Permute, a spatial Softmax, Flatten → Dense, and a Dense with a
    built-in softmax (its units mix, so they stay)."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 4), name="image")
    x = layers.ELU(name="elu")(layers.Conv2D(8, 3, padding="same", name="c1")(inputs))
    g = layers.LeakyReLU(name="leaky")(layers.Conv2D(12, 3, padding="same", groups=2, name="grouped")(x))
    a, b, c = (layers.Conv2D(12, 1, name=n)(g) for n in ("a", "b", "c"))
    m = layers.Maximum(name="max")([layers.Subtract(name="sub")([a, b]), c])
    m = layers.Average(name="avg")([layers.Minimum(name="min")([m, g]), g])
    x = layers.SpatialDropout2D(0.1, name="sdrop")(m)
    x = layers.UpSampling2D(2, name="up")(layers.Cropping2D(1, name="crop")(layers.ZeroPadding2D(1, name="pad")(x)))
    x = layers.Conv3DTranspose(6, (1, 3, 3), padding="same", name="convt3d")(layers.Reshape((1, 16, 16, 12),
                                                                                            name="to3d")(x))
    x = layers.Permute((2, 1, 3), name="swap_hw")(layers.Reshape((16, 16, 6), name="to2d")(x))
    x = layers.Softmax(axis=1, name="spatial_softmax")(x)
    x = layers.Conv2D(6, 3, strides=4, name="down")(x)
    x = layers.Dense(10, activation="softmax", name="probs")(layers.Flatten(name="flat")(x))
    outputs = layers.Dense(3, name="head")(x)
    return randomize_keras(keras.Model(inputs, outputs, name="more_layers"), seed)


def sequence_layers(seed=0):
    """Conv1D family, EinsumDense, MultiHeadAttention (self-attention with a residual), LayerNorm."""
    import keras
    from keras import layers

    inputs = keras.Input((10, 6), name="sequence")
    x = layers.Conv1D(16, 3, padding="same", name="conv")(inputs)
    x = layers.DepthwiseConv1D(3, padding="same", name="dw")(x)
    x = layers.SeparableConv1D(12, 3, padding="same", name="sep")(x)
    x = layers.Conv1DTranspose(16, 3, padding="same", name="convt")(x)
    x = layers.EinsumDense("abc,cd->abd", output_shape=(10, 24), bias_axes="d", name="proj")(x)
    attended = layers.MultiHeadAttention(num_heads=4, key_dim=6, value_dim=5, name="mha")(x, x)
    x = layers.Add(name="res")([x, attended])
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.EinsumDense("abc,cde->abde", output_shape=(10, 2, 8), bias_axes="de", name="split_heads")(x)
    x = layers.EinsumDense("abcd,cde->abe", output_shape=(10, 12), bias_axes="e", name="merge_heads")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(3, name="head")(x)
    return randomize_keras(keras.Model(inputs, outputs, name="sequence_layers"), seed)


def nested_models(seed=0):
    """A Sequential block used twice (shared weights) and a Functional backbone inside a Functional model."""
    import keras
    from keras import layers

    block = keras.Sequential([layers.Conv2D(8, 3, padding="same", name="conv"),
                              layers.BatchNormalization(name="bn"), layers.ReLU(name="relu")], name="block")
    inner_in = keras.Input((8, 8, 8), name="inner_in")
    y = layers.Conv2D(12, 3, padding="same", name="conv_a")(inner_in)
    y = layers.Conv2D(8, 1, name="conv_b")(layers.ReLU(name="relu_a")(y))
    backbone = keras.Model(inner_in, layers.Add(name="res")([inner_in, y]), name="backbone")
    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(8, 1, name="stem")(inputs)
    x = block(x)
    x = backbone(x)
    x = block(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, name="head")(x)
    return randomize_keras(keras.Model(inputs, outputs, name="nested"), seed)
