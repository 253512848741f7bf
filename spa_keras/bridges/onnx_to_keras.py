"""ONNX → Keras 3: rebuild an ONNX graph as a trainable functional model of standard Keras layers.

The result saves as `.keras` and loads back with `keras.models.load_model`, and `fit` trains it: weights become
layer weights (Conv → Conv2D / DepthwiseConv2D, Gemm → Dense, BatchNormalization → BatchNormalization, ...), one
converter per ONNX op in `CONVERTERS`, attribute defaults from the op schema, as onnx's reference evaluator does.

Layout. TensorFlow's CPU kernels refuse channels-first Conv2D and DepthwiseConv2D (Keras 3.15 hands them NCHW), so
the model computes channels-last: every tensor carries a layout, the ONNX axis behind each Keras axis. Convolutions
and pooling read NHWC; element-wise ops, Concat, Softmax and BatchNormalization take any layout (axes are mapped);
Flatten, Reshape, Squeeze and Unsqueeze read ONNX order (a Permute first, unless only size-1 axes are out of
place); Transpose only changes the layout. Inputs and outputs keep ONNX's shapes (NCHW), with one Permute where a
channels-last op first reads an input and one where an output leaves channels-last.

Constants: initializers, Constant nodes and whatever is computed from constants alone (shapes included, with a
free batch) are folded by onnx's reference evaluator. `tensor ⊕ constant` becomes the bias of the bias-free
Conv / MatMul / Gemm right before it, a `Rescaling` when the constant is a scalar or varies along channels only,
and otherwise a `ConstantAffine` layer: the module's one custom layer, registered as `spa_keras>ConstantAffine`
(a model holding one loads after `import spa_keras.bridges.onnx_to_keras`). Ops outside `CONVERTERS` and
attributes no Keras layer reproduces raise `ConversionError` naming the op and node.

Example:

>>> model = onnx_to_keras(onnx.load("resnet18.onnx"))               # doctest: +SKIP
>>> model = onnx_to_keras(ppocr, input_shapes={None: (1, 3, 48, 192)})  # doctest: +SKIP
>>> model.save("resnet18.keras")                                     # doctest: +SKIP
"""

import re

import keras
import numpy as np
import onnx
from keras import layers
from onnx import helper, numpy_helper

from spa_keras.bridges import onnx_io
from spa_keras.common.errors import ConversionError, InputError, first_line
from spa_keras.ops.geometry import same_pads
from spa_keras.common.tensors import concrete_shape

NHWC = (0, 2, 3, 1)  # the Keras axes of a 4-D tensor computed channels-last, as ONNX axes
BATCH = 2**31 - 1  # the free batch size inside folded shapes (Shape → Slice → Concat → Reshape)
FALLBACK = "convert to .tflite or a SavedModel instead (onnx2tf)"


@keras.saving.register_keras_serializable(package="spa_keras")
class ConstantAffine(layers.Layer):
    """`x * scale + offset` with constant (non-trainable) arrays that broadcast against the input, batch axis
    excluded: an ONNX `tensor ⊕ constant` that neither a bias nor `Rescaling` expresses.

    >>> tuple(ConstantAffine((1, 1, 4))(np.ones((2, 3, 3, 4), "float32")).shape)
    (2, 3, 3, 4)
    """

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.constant_shape = tuple(shape)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=self.constant_shape, initializer="ones", trainable=False)
        self.offset = self.add_weight(name="offset", shape=self.constant_shape, initializer="zeros",
                                      trainable=False)

    def call(self, x):
        return x * self.scale + self.offset

    def get_config(self):
        return {**super().get_config(), "shape": list(self.constant_shape)}


def onnx_to_keras(model, input_shapes=None, name="onnx_model"):
    """A trainable `keras.Model` computing what the ONNX `model` computes, inputs and outputs in ONNX's shapes.

    `input_shapes` (`{input name or None: shape with batch}`) fills free non-batch input dimensions; the batch
    stays free. Raises `ConversionError` for ops (or attributes) no standard Keras layer reproduces.

    >>> keras_model = onnx_to_keras(onnx_model, {None: (1, 3, 224, 224)})   # doctest: +SKIP
    >>> keras_model.predict(np.zeros((2, 3, 224, 224), "float32")).shape    # doctest: +SKIP
    (2, 1000)
    """
    return _Builder(model, input_shapes or {}).build(name)


# ----------------------------------------------------------------------------------------------- the builder


class _Builder:
    """Walks the (topologically sorted) graph once; holds constants, Keras tensors and their layouts."""

    def __init__(self, model, input_shapes):
        self.model = model
        self.input_shapes = input_shapes
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 1))
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.tensors = {}  # ONNX name -> {layout: Keras tensor}
        self.layouts = _Layouts()  # ONNX name -> the layout it was computed in
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.consumers = {}
        for node in model.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.used_names = set()

    def build(self, name):
        inputs = [self._input(spec) for spec in onnx_io.input_specs(self.model)]
        self._fold_constants()  # first, so a bias computed after its Conv (Reshape of a Constant) can be fused
        for index, node in enumerate(self.model.graph.node):
            if all(o in self.consts or o in self.tensors for o in node.output if o):
                continue  # folded, or produced by a fused neighbour
            if self._fold_shape(node):
                continue
            self._convert(node, index)
        outputs = []
        for out in self.model.graph.output:
            if out.name not in self.tensors:
                raise ConversionError(f"graph output '{out.name}' is a constant; a Keras model cannot output one")
            outputs.append(self.tensor(out.name, _identity(len(self.layouts[out.name]))))
        return keras.Model(inputs, outputs, name=name)

    def _input(self, spec):
        shape = concrete_shape(spec, self.input_shapes, batch=1)[1:]  # InputError names a free dimension
        if spec.dtype != "float32":
            raise ConversionError(f"input '{spec.name}' is {spec.dtype}; only float32 inputs rebuild in Keras")
        tensor = keras.Input(tuple(int(d) for d in shape), name=self.unique(spec.name))
        self.set(spec.name, tensor, _identity(len(shape) + 1))
        return tensor

    def _fold_constants(self):
        for node in self.model.graph.node:
            if all(i in self.consts for i in node.input if i):
                self.fold(node)

    def _fold_shape(self, node):
        """Shape of a computed tensor (its batch is `BATCH`), and nodes whose inputs became constant that way."""
        if node.op_type == "Shape" and node.input[0] in self.tensors:
            a = attributes(node, self.opset)
            shape = [BATCH if d is None else d for d in self.shape(node.input[0])]
            self.consts[node.output[0]] = np.array(shape, np.int64)[a.get("start", 0):a.get("end")]
            return True
        if all(i in self.consts for i in node.input if i):
            self.fold(node)
            return True
        return False

    def fold(self, node):
        """Evaluate a node on constant inputs (onnx's reference evaluator); its outputs become constants."""
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            return
        from onnx.reference import ReferenceEvaluator

        feeds = {i: self.consts[i] for i in node.input if i}
        try:
            values = ReferenceEvaluator(node, opsets=self.opsets).run(None, feeds)
        except Exception as exc:
            raise ConversionError(f"{_where(node)}: cannot evaluate it on its constant inputs "
                                  f"({first_line(exc)}); {FALLBACK}") from exc
        self.consts.update({o: np.asarray(v) for o, v in zip(node.output, values) if o})

    def _convert(self, node, index):
        converter = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if converter is None:
            raise ConversionError(f"{_where(node)}: no Keras layer for this op; {FALLBACK}")
        if not node.name:
            node = _named(node, f"{node.op_type.lower()}_{index}")
        try:
            converter(self, node, attributes(node, self.opset))
        except (ConversionError, InputError):
            raise
        except Exception as exc:  # a Keras layer refusing shapes the ONNX graph allows
            raise ConversionError(f"{_where(node)}: {first_line(exc)}; {FALLBACK}") from exc

    # --------------------------------------------------------------------------- what converters call

    def set(self, name, tensor, layout):
        self.tensors[name] = {tuple(layout): tensor}
        self.layouts[name] = tuple(layout)

    def tensor(self, name, layout=None):
        """The Keras tensor of ONNX tensor `name`, in `layout` (a Permute the first time another is asked for)."""
        have = self.layouts[name]
        layout = have if layout is None else tuple(layout)
        if layout not in self.tensors[name]:
            dims = tuple(have.index(axis) for axis in layout[1:])
            tag = "nhwc" if layout == NHWC else "nchw" if layout == _identity(4) else "perm"
            permute = layers.Permute(dims, name=self.unique(f"{name}_{tag}"))
            self.tensors[name][layout] = permute(self.tensors[name][have])
        return self.tensors[name][layout]

    def ordered(self, name):
        """A Keras tensor of `name` whose row-major element order is ONNX's (for Flatten and Reshape)."""
        layout = self.layouts[name]
        native = self.tensors[name][layout]
        moved = [axis for axis, size in zip(layout, native.shape) if size != 1]
        return native if moved == sorted(moved) else self.tensor(name, _identity(len(layout)))

    def shape(self, name):
        """The ONNX shape of a computed tensor (batch None)."""
        if name in self.consts:
            return tuple(self.consts[name].shape)
        layout, shape = self.layouts[name], [None] * len(self.layouts[name])
        for keras_axis, axis in enumerate(layout):
            shape[axis] = self.tensors[name][layout].shape[keras_axis]
        return tuple(shape)

    def const(self, node, index, what="input"):
        """Input `index` of `node` as a constant array (None when absent); `ConversionError` when it is computed."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise ConversionError(f"{_where(node)}: its {what} '{name}' is computed, not constant; {FALLBACK}")
        return self.consts[name]

    def unique(self, text):
        """A Keras layer name from an ONNX name: characters TF scopes accept, unique within the model."""
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "layer"
        base = base if base[0].isalpha() else "n" + base
        name, n = base, 1
        while name in self.used_names:
            name, n = f"{base}_{n}", n + 1
        self.used_names.add(name)
        return name

    def sole_consumer(self, name, op_type):
        """The one node reading `name` when it is an `op_type` and `name` is not a graph output, else None."""
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.outputs:
            return users[0]
        return None


class _Layouts(dict):
    """Layouts by tensor name; a name without one is a constant (or unknown) where a layer needs a tensor, which
    the converter's error handler reports with the node."""

    def __missing__(self, name):
        raise ValueError(f"input '{name}' is a constant or unknown where a computed tensor is needed")


def attributes(node, opset):
    """The node's attributes over its schema's defaults (strings decoded), as onnx's reference evaluator reads
    them.

    >>> sorted(attributes(helper.make_node("HardSigmoid", ["x"], ["y"]), 13).items())
    [('alpha', 0.2...), ('beta', 0.5)]
    """
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    values = {name: helper.get_attribute_value(a.default_value) for name, a in schema.attributes.items()
              if a.default_value.type != onnx.AttributeProto.UNDEFINED}
    values.update({a.name: helper.get_attribute_value(a) for a in node.attribute})
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _identity(rank):
    return tuple(range(rank))


def _named(node, name):
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    return copy


def _where(node):
    return f"ONNX op {node.op_type} (node '{node.name or '?'}')"


def _refuse(node, why):
    return ConversionError(f"{_where(node)}: {why}; {FALLBACK}")


def _shape_text(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _constant_in_layout(builder, node, value, name):
    """A constant broadcast against tensor `name`, as an array in the tensor's Keras layout (batch axis kept)."""
    rank = len(builder.layouts[name])
    value = np.asarray(value, np.float32)
    if value.ndim > rank:
        raise _refuse(node, f"constant of shape {value.shape} has more axes than its tensor")
    value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if value.shape[0] != 1:
        raise _refuse(node, "constant varies along the batch axis")
    return np.transpose(value, builder.layouts[name])


def _along_channels(value, units, rank, axis):
    """`value` as a vector of `units` when, broadcast to `rank` axes, it varies along `axis` only (else None)."""
    if value is None or value.size not in (1, units) or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(units, value.reshape(()), np.float32)
    shape = (1,) * (rank - value.ndim) + value.shape
    return value.reshape(units).astype(np.float32) if shape[axis] == units else None


def _fused_bias(builder, node, units, rank, channel_axis):
    """(bias, output name) when the node's only consumer adds a constant along its output channels: that Add
    becomes this layer's bias (exporters such as Paddle2ONNX write Conv without bias and Add after it)."""
    add = builder.sole_consumer(node.output[0], "Add")
    if add is None or len(add.input) != 2:
        return None, node.output[0]
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    bias = _along_channels(builder.consts.get(other), units, rank, channel_axis)
    return (None, node.output[0]) if bias is None else (bias, add.output[0])


def _weighted(builder, layer, x, weights, output, layout):
    """Call `layer` on `x` (building it), load `weights`, register the output."""
    y = layer(x)
    layer.set_weights([np.asarray(w, np.float32) for w in weights])
    builder.set(output, y, layout)


# ------------------------------------------------------------------------------------- spatial geometry


def _explicit_pads(node, a, sizes, kernel, strides, dilations):
    """ONNX pads as ((top, bottom), (left, right)), auto_pad resolved for the static input size."""
    auto = a.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return ((0, 0), (0, 0))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [same_pads(n, k, s, d)[0] for n, k, s, d in zip(sizes, kernel, strides, dilations)]
        return tuple(p if auto == "SAME_UPPER" else p[::-1] for p in pads)
    p = list(a.get("pads") or [0] * 4)
    if len(p) != 4:
        raise _refuse(node, f"pads {p} are not 2-D")
    return ((p[0], p[2]), (p[1], p[3]))


def _pool_geometry(size, k, s, pad, ceil_mode):
    """ONNX's pooled size for one axis and the end padding that gives it with 'valid' pooling."""
    span = size + pad[0] + pad[1] - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pad[0]:
        out -= 1  # the last window would start in the end padding; onnxruntime drops it
    return out, max((out - 1) * s + k - size - pad[0], 0)


def _zero_pad(builder, node, x, pads):
    if pads == ((0, 0), (0, 0)):
        return x
    return layers.ZeroPadding2D(pads, name=builder.unique(f"{node.name}_pad"))(x)


def _edge_pad(builder, node, x, pads):
    """Pad H and W by repeating the edge rows and columns: what max pooling sees as ONNX's -inf padding, since
    every window holding a padded cell holds the edge cell it copies (pads are smaller than the kernel)."""
    for axis, (begin, end) in ((1, pads[0]), (2, pads[1])):
        if begin == end == 0:
            continue
        size = x.shape[axis]
        crop = (lambda lo, hi: ((lo, hi), (0, 0))) if axis == 1 else (lambda lo, hi: ((0, 0), (lo, hi)))
        tag = "hw"[axis - 1]
        parts = []
        if begin:
            first = layers.Cropping2D(crop(0, size - 1), name=builder.unique(f"{node.name}_{tag}first"))(x)
            parts += [first] * begin
        parts.append(x)
        if end:
            last = layers.Cropping2D(crop(size - 1, 0), name=builder.unique(f"{node.name}_{tag}last"))(x)
            parts += [last] * end
        x = layers.Concatenate(axis=axis, name=builder.unique(f"{node.name}_{tag}edge"))(parts)
    return x


def _non_negative(builder, name):
    """Whether `name` comes straight from a Relu (or a Clip at ≥ 0): zero padding is then -inf padding for max."""
    node = builder.producers.get(name)
    if node is None:
        return False
    if node.op_type == "Relu":
        return True
    if node.op_type == "Clip":
        low = attributes(node, builder.opset).get("min") if builder.opset < 11 else (
            builder.consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
        return low is not None and float(np.asarray(low)) >= 0
    return False


# ------------------------------------------------------------------------------------------- converters


def _conv(b, node, a):
    w = b.const(node, 1, "weight")
    if w.ndim != 4:
        raise _refuse(node, f"only 2-D convolutions rebuild (weight of rank {w.ndim})")
    x = b.tensor(node.input[0], NHWC)
    out_ch, _, kh, kw = w.shape
    cin = x.shape[-1]
    strides, dilations = tuple(a.get("strides") or (1, 1)), tuple(a.get("dilations") or (1, 1))
    if max(strides) > 1 and max(dilations) > 1:
        raise _refuse(node, "Keras convolutions take strides or dilations, not both")
    group = a.get("group", 1)
    depthwise = group == cin and group > 1
    # TF's depthwise kernel takes equal strides only: stride 1 on the padded input, then keep every s-th pixel
    subsample = strides if depthwise and strides[0] != strides[1] else None
    pads = _explicit_pads(node, a, x.shape[1:3], (kh, kw), strides, dilations)
    strides = (1, 1) if subsample else strides
    padding = "valid"
    if pads != ((0, 0), (0, 0)):
        same = tuple(same_pads(n, k, s, d)[0] for n, k, s, d in zip(x.shape[1:3], (kh, kw), strides, dilations))
        padding = "same" if pads == same and not subsample else "valid"
        x = x if padding == "same" else _zero_pad(b, node, x, pads)
    bias = b.const(node, 2, "bias")
    extra, output = _fused_bias(b, node, out_ch, 4, 1)
    if extra is not None:
        bias = extra if bias is None else bias + extra
    common = dict(strides=strides, padding=padding, dilation_rate=dilations, use_bias=bias is not None,
                  name=b.unique(node.name))
    if depthwise:  # ONNX output channel c*m + j is Keras (c, j)
        mult = out_ch // cin
        layer = layers.DepthwiseConv2D((kh, kw), depth_multiplier=mult, **common)
        kernel = w.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)
    else:
        layer = layers.Conv2D(out_ch, (kh, kw), groups=group, **common)
        kernel = w.transpose(2, 3, 1, 0)
    _weighted(b, layer, x, [kernel] + ([bias] if bias is not None else []), output, NHWC)
    if subsample:
        pick = layers.MaxPooling2D((1, 1), subsample, name=b.unique(f"{node.name}_stride"))
        b.set(output, pick(b.tensor(output)), NHWC)


def _conv_transpose(b, node, a):
    w = b.const(node, 1, "weight")
    if w.ndim != 4 or a.get("group", 1) != 1:
        raise _refuse(node, "only 2-D, ungrouped transposed convolutions rebuild")
    if a.get("output_shape"):
        raise _refuse(node, "output_shape is not supported (give pads)")
    x = b.tensor(node.input[0], NHWC)
    _, out_ch, kh, kw = w.shape
    strides, dilations = tuple(a.get("strides") or (1, 1)), tuple(a.get("dilations") or (1, 1))
    if max(strides) > 1 and max(dilations) > 1:
        raise _refuse(node, "Keras transposed convolutions take strides or dilations, not both")
    extra = tuple(a.get("output_padding") or (0, 0))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):  # output = input * stride
        totals = [s * (n - 1) + e + (k - 1) * d + 1 - n * s
                  for n, s, e, k, d in zip(x.shape[1:3], strides, extra, (kh, kw), dilations)]
        pads = tuple((t // 2, t - t // 2) if auto == "SAME_UPPER" else (t - t // 2, t // 2) for t in totals)
    else:
        pads = _explicit_pads(node, a, x.shape[1:3], (kh, kw), strides, dilations)
    bias = b.const(node, 2, "bias")
    layer = layers.Conv2DTranspose(out_ch, (kh, kw), strides=strides, padding="valid", output_padding=extra,
                                   dilation_rate=dilations, use_bias=bias is not None, name=b.unique(node.name))
    y = layer(x)
    layer.set_weights([w.transpose(2, 3, 1, 0)] + ([bias] if bias is not None else []))
    if pads != ((0, 0), (0, 0)):
        y = layers.Cropping2D(pads, name=b.unique(f"{node.name}_crop"))(y)
    b.set(node.output[0], y, NHWC)


def _pool_args(node, a, rank):
    if rank != 4:
        raise _refuse(node, "only 2-D pooling rebuilds")
    if any(d != 1 for d in a.get("dilations") or ()):
        raise _refuse(node, "dilated pooling is not supported")
    if len(node.output) > 1 and node.output[1]:
        raise _refuse(node, "the Indices output is not supported")
    kernel = tuple(a["kernel_shape"])
    return kernel, tuple(a.get("strides") or (1, 1))


def _max_pool(b, node, a):
    x = b.tensor(node.input[0], NHWC)
    kernel, strides = _pool_args(node, a, len(x.shape))
    pads = _explicit_pads(node, a, x.shape[1:3], kernel, strides, (1, 1))
    geometry = [_pool_geometry(n, k, s, p, a.get("ceil_mode", 0))
                for n, k, s, p in zip(x.shape[1:3], kernel, strides, pads)]
    pads = tuple((p[0], end) for p, (_, end) in zip(pads, geometry))
    same = [same_pads(n, k, s) for n, k, s in zip(x.shape[1:3], kernel, strides)]
    padding = "valid"
    if pads != ((0, 0), (0, 0)):
        if all(p == sp and out == so for p, (sp, so), (out, _) in zip(pads, same, geometry)):
            padding = "same"  # TF's 'same' max pooling ignores the padding, as ONNX's -inf padding does
        elif _non_negative(b, node.input[0]):
            x = _zero_pad(b, node, x, pads)
        else:
            x = _edge_pad(b, node, x, pads)
    y = layers.MaxPooling2D(kernel, strides, padding=padding, name=b.unique(node.name))(x)
    b.set(node.output[0], y, NHWC)


def _average_pool(b, node, a):
    x = b.tensor(node.input[0], NHWC)
    kernel, strides = _pool_args(node, a, len(x.shape))
    pads = _explicit_pads(node, a, x.shape[1:3], kernel, strides, (1, 1))
    floor = [_pool_geometry(n, k, s, p, 0) for n, k, s, p in zip(x.shape[1:3], kernel, strides, pads)]
    if a.get("ceil_mode", 0) and [_pool_geometry(n, k, s, p, 1)[0] for n, k, s, p in
                                  zip(x.shape[1:3], kernel, strides, pads)] != [out for out, _ in floor]:
        raise _refuse(node, "ceil_mode adds windows whose divisor no Keras pooling reproduces")
    pads = tuple((p[0], end) for p, (_, end) in zip(pads, floor))
    padding = "valid"
    if pads != ((0, 0), (0, 0)):
        same = [same_pads(n, k, s) for n, k, s in zip(x.shape[1:3], kernel, strides)]
        if a.get("count_include_pad", 0):
            x = _zero_pad(b, node, x, pads)
        elif all(p == sp and out == so for p, (sp, so), (out, _) in zip(pads, same, floor)):
            padding = "same"  # TF's 'same' average pooling divides by the cells inside, as count_include_pad=0
        else:
            raise _refuse(node, "count_include_pad=0 with pads other than TF's 'same' padding")
    y = layers.AveragePooling2D(kernel, strides, padding=padding, name=b.unique(node.name))(x)
    b.set(node.output[0], y, NHWC)


def _global_pool(keras_layer):
    def convert(b, node, a):
        if len(b.layouts[node.input[0]]) != 4:
            raise _refuse(node, "only 2-D global pooling rebuilds")
        x = b.tensor(node.input[0], NHWC)
        b.set(node.output[0], keras_layer(keepdims=True, name=b.unique(node.name))(x), NHWC)
    return convert


def _reduce(keras_layer):
    """ReduceMean / ReduceMax over H and W of a 4-D tensor: global pooling."""
    def convert(b, node, a):
        rank = len(b.layouts[node.input[0]])
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = b.const(node, 1, "axes")
        if rank != 4 or axes is None or sorted(int(i) % rank for i in axes) != [2, 3]:
            raise _refuse(node, f"only a reduction over the spatial axes (2, 3) of a 4-D tensor rebuilds (axes "
                                f"{None if axes is None else list(axes)})")
        keep = bool(a.get("keepdims", 1))
        y = keras_layer(keepdims=keep, name=b.unique(node.name))(b.tensor(node.input[0], NHWC))
        b.set(node.output[0], y, NHWC if keep else (0, 1))
    return convert


def _batch_norm(b, node, a):
    scale, bias, mean, var = (b.const(node, i, what) for i, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    layout = b.layouts[node.input[0]]
    layer = layers.BatchNormalization(axis=layout.index(1), epsilon=a.get("epsilon", 1e-5),
                                      momentum=a.get("momentum", 0.9), name=b.unique(node.name))
    _weighted(b, layer, b.tensor(node.input[0]), [scale, bias, mean, var], node.output[0], layout)


def _dense(b, node, kernel, bias):
    """A Dense over the last ONNX axis (the input in ONNX order), bias fused from a following Add."""
    rank = len(b.layouts[node.input[0]])
    extra, output = _fused_bias(b, node, kernel.shape[1], rank, rank - 1)
    if extra is not None:
        bias = extra if bias is None else bias + extra
    x = b.tensor(node.input[0], _identity(len(b.layouts[node.input[0]])))
    layer = layers.Dense(kernel.shape[1], use_bias=bias is not None, name=b.unique(node.name))
    _weighted(b, layer, x, [kernel] + ([bias] if bias is not None else []), output, _identity(len(x.shape)))


def _gemm(b, node, a):
    if a.get("transA", 0):
        raise _refuse(node, "transA=1 is not supported")
    if len(b.layouts[node.input[0]]) != 2:
        raise _refuse(node, "Gemm needs a 2-D input")
    weight = b.const(node, 1, "B")
    kernel = (weight.T if a.get("transB", 0) else weight) * a.get("alpha", 1.0)
    c = b.const(node, 2, "C")
    bias = None
    if c is not None:
        bias = _along_channels(c, kernel.shape[1], 2, 1)
        if bias is None:
            raise _refuse(node, f"C of shape {c.shape} varies along the batch")
        bias = bias * a.get("beta", 1.0)
    _dense(b, node, kernel, bias)


def _matmul(b, node, a):
    weight = b.const(node, 1, "second input")
    if weight.ndim != 2:
        raise _refuse(node, "only a constant 2-D second input rebuilds (as Dense)")
    _dense(b, node, weight, None)


def _activation(make):
    def convert(b, node, a):
        layout = b.layouts[node.input[0]]
        b.set(node.output[0], make(a, b.unique(node.name))(b.tensor(node.input[0])), layout)
    return convert


def _chain(b, node, x, steps):
    """Apply small layers in sequence, named after the node (the last takes the node's own name)."""
    for i, (suffix, layer) in enumerate(steps):
        name = node.name if i == len(steps) - 1 else f"{node.name}_{suffix}"
        x = layer(name=b.unique(name))(x)
    return x


def _hard_sigmoid(b, node, a):
    steps = [("affine", lambda name: layers.Rescaling(a.get("alpha", 0.2), a.get("beta", 0.5), name=name)),
             ("clip", lambda name: layers.ReLU(max_value=1.0, name=name))]
    b.set(node.output[0], _chain(b, node, b.tensor(node.input[0]), steps), b.layouts[node.input[0]])


def _clip(b, node, a):
    if b.opset < 11:
        low, high = a.get("min"), a.get("max")
    else:
        low, high = b.const(node, 1, "min"), b.const(node, 2, "max")
    low = None if low is None or float(np.asarray(low)) <= np.finfo(np.float32).min else float(np.asarray(low))
    high = None if high is None or float(np.asarray(high)) >= np.finfo(np.float32).max else float(np.asarray(high))
    x = b.tensor(node.input[0])
    if low is None and high is None:
        steps = []
    elif low is None:  # min(x, high) = high - relu(high - x)
        steps = [("flip", lambda name: layers.Rescaling(-1.0, high, name=name)), ("relu", layers.ReLU),
                 ("back", lambda name: layers.Rescaling(-1.0, high, name=name))]
    elif low == 0:
        steps = [("relu", lambda name: layers.ReLU(max_value=high, name=name))]
    else:  # low + relu(x - low) capped at high - low
        cap = None if high is None else high - low
        steps = [("shift", lambda name: layers.Rescaling(1.0, -low, name=name)),
                 ("relu", lambda name: layers.ReLU(max_value=cap, name=name)),
                 ("back", lambda name: layers.Rescaling(1.0, low, name=name))]
    b.set(node.output[0], _chain(b, node, x, steps) if steps else x, b.layouts[node.input[0]])


def _softmax(b, node, a):
    layout = b.layouts[node.input[0]]
    rank = len(layout)
    axis = a.get("axis", -1 if b.opset >= 13 else 1) % rank
    if b.opset < 13 and any(d != 1 for d in b.shape(node.input[0])[axis + 1:]):
        raise _refuse(node, "Softmax before opset 13 normalises over all axes from `axis` on")
    y = layers.Softmax(axis=layout.index(axis), name=b.unique(node.name))(b.tensor(node.input[0]))
    b.set(node.output[0], y, layout)


def _prelu(b, node, a):
    layout = b.layouts[node.input[0]]
    x = b.tensor(node.input[0])
    slope = _constant_in_layout(b, node, b.const(node, 1, "slope"), node.input[0])[0]
    shared = [i + 1 for i, d in enumerate(slope.shape) if d == 1 and x.shape[i + 1] != 1]
    layer = layers.PReLU(shared_axes=shared or None, name=b.unique(node.name))
    y = layer(x)
    layer.set_weights([np.broadcast_to(slope, layer.alpha.shape).astype(np.float32)])
    b.set(node.output[0], y, layout)


MERGE = {"Add": layers.Add, "Sub": layers.Subtract, "Mul": layers.Multiply}


def _binary(b, node, a):
    names = list(node.input)
    constant = [n in b.consts for n in names]
    if not any(constant):
        return _merge(b, node, names)
    if all(constant):
        return b.fold(node)
    tensor = names[constant.index(False)]
    value = _constant_in_layout(b, node, b.consts[names[constant.index(True)]], tensor)
    reverse = constant[0]  # constant ∘ tensor
    op = node.op_type
    if op == "Div" and reverse:
        raise _refuse(node, "dividing a constant by a tensor has no Keras layer")
    ones, zeros = np.ones_like(value), np.zeros_like(value)
    scale, offset = {"Add": (ones, value), "Mul": (value, zeros), "Div": (1.0 / value, zeros),
                     "Sub": (-ones, value) if reverse else (ones, -value)}[op]
    _affine(b, node, tensor, np.broadcast_to(scale, np.broadcast_shapes(scale.shape, offset.shape)), offset)


def _affine(b, node, tensor, scale, offset):
    """`x * scale + offset` (constants in x's Keras layout, batch axis kept): Rescaling when the constants are
    scalars or vary along the last Keras axis only, ConstantAffine otherwise."""
    x = b.tensor(tensor)
    rank = len(x.shape)
    scale, offset = scale.reshape(scale.shape[1:]), offset.reshape(offset.shape[1:])
    name = b.unique(node.name)
    if scale.size == 1 and offset.size == 1:
        layer = layers.Rescaling(float(scale.reshape(())), float(offset.reshape(())), name=name)
    elif all(d == 1 for d in scale.shape[:-1] + offset.shape[:-1]):  # full rank: robust to channels_first config
        shape = (1,) * (rank - 2) + (max(scale.shape[-1], offset.shape[-1]),)
        layer = layers.Rescaling(np.broadcast_to(scale, shape).tolist(), np.broadcast_to(offset, shape).tolist(),
                                 name=name)
    else:
        shape = np.broadcast_shapes(scale.shape, offset.shape)
        layer = ConstantAffine(shape, name=name)
        _weighted(b, layer, x, [np.broadcast_to(scale, shape), np.broadcast_to(offset, shape)], node.output[0],
                  b.layouts[tensor])
        return
    b.set(node.output[0], layer(x), b.layouts[tensor])


def _merge(b, node, names):
    if node.op_type not in MERGE:
        raise _refuse(node, f"{node.op_type} of two computed tensors has no Keras layer")
    layout = _common_layout(b, node, names)
    y = MERGE[node.op_type](name=b.unique(node.name))([b.tensor(n, layout) for n in names])
    b.set(node.output[0], y, layout)


def _common_layout(b, node, names):
    """The layout most inputs already have (the first input's on a tie); inputs must share one rank."""
    layouts = [b.layouts[n] for n in names]
    if len({len(layout) for layout in layouts}) != 1:
        raise _refuse(node, "inputs of different ranks (implicit broadcasting) are not supported")
    return max(layouts, key=layouts.count)


def _concat(b, node, a):
    if any(n in b.consts for n in node.input):
        raise _refuse(node, "a constant input next to computed ones has no Keras layer")
    layout = _common_layout(b, node, list(node.input))
    axis = a["axis"] % len(layout)
    if axis == 0:
        raise _refuse(node, "concatenating along the batch axis is not supported")
    inputs = [b.tensor(n, layout) for n in node.input]
    y = inputs[0] if len(inputs) == 1 else layers.Concatenate(axis=layout.index(axis),
                                                             name=b.unique(node.name))(inputs)
    b.set(node.output[0], y, layout)


def _reshape_to(b, node, shape):
    """Reshape the input (in ONNX element order) to `shape` (non-batch dims); the output is in ONNX layout."""
    x = b.ordered(node.input[0])
    shape = tuple(int(d) for d in shape)
    y = x if tuple(x.shape[1:]) == shape and b.layouts[node.input[0]] == _identity(len(x.shape)) else \
        layers.Reshape(shape, name=b.unique(node.name))(x)
    b.set(node.output[0], y, _identity(len(shape) + 1))


def _flatten(b, node, a):
    rank = len(b.layouts[node.input[0]])
    if a.get("axis", 1) % rank != 1:
        raise _refuse(node, "only Flatten with axis=1 keeps the batch axis")
    size = int(np.prod(b.shape(node.input[0])[1:]))
    _reshape_to(b, node, (size,))


def _reshape(b, node, a):
    target = [int(d) for d in b.const(node, 1, "shape")]
    source = b.shape(node.input[0])
    copy_zero = not a.get("allowzero", 0)
    if target and (target[0] == BATCH or (target[0] == 0 and copy_zero)):
        rest = target[1:]
    elif target and target[0] == -1 and -1 not in target[1:]:
        rest = target[1:]
    else:
        raise _refuse(node, f"the target shape {target} does not keep the batch axis first")
    rest = [source[i + 1] if d == 0 and copy_zero else d for i, d in enumerate(rest)]
    size = int(np.prod(source[1:]))
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest)) != size:
        raise _refuse(node, f"cannot reshape {_shape_text(source)} to {target}")
    _reshape_to(b, node, rest)


def _axes(b, node, a):
    axes = a.get("axes")
    if axes is None and len(node.input) > 1:
        axes = b.const(node, 1, "axes")
    return None if axes is None else [int(i) for i in axes]


def _squeeze(b, node, a):
    source = b.shape(node.input[0])
    axes = _axes(b, node, a)
    axes = [i for i in range(1, len(source)) if source[i] == 1] if axes is None else \
        [i % len(source) for i in axes]
    if 0 in axes or any(source[i] != 1 for i in axes):
        raise _refuse(node, f"cannot squeeze axes {axes} of {_shape_text(source)}")
    _reshape_to(b, node, [d for i, d in enumerate(source) if i and i not in axes])


def _unsqueeze(b, node, a):
    shape = list(b.shape(node.input[0]))
    rank = len(shape) + len(_axes(b, node, a))
    axes = sorted(i % rank for i in _axes(b, node, a))
    if 0 in axes:
        raise _refuse(node, "a new batch axis is not supported")
    for i in axes:
        shape.insert(i, 1)
    _reshape_to(b, node, shape[1:])


def _transpose(b, node, a):
    """No layer: the output is the same Keras tensor seen through another layout."""
    layout = b.layouts[node.input[0]]
    perm = list(a.get("perm") or reversed(range(len(layout))))
    if perm[0] != 0:
        raise _refuse(node, "moving the batch axis is not supported")
    inverse = np.argsort(perm)
    b.set(node.output[0], b.tensor(node.input[0]), tuple(int(inverse[i]) for i in layout))


def _identity_op(b, node, a):
    b.set(node.output[0], b.tensor(node.input[0]), b.layouts[node.input[0]])


def _cast(b, node, a):
    if a["to"] != onnx.TensorProto.FLOAT:
        raise _refuse(node, "only casts to float32 of computed tensors rebuild")
    _identity_op(b, node, a)


def _pad(b, node, a):
    if a.get("mode", "constant") != "constant":
        raise _refuse(node, f"mode '{a['mode']}' is not supported (constant only)")
    if b.opset < 11:
        pads, value = list(a["pads"]), a.get("value", 0.0)
    else:
        pads = [int(p) for p in b.const(node, 1, "pads")]
        value = b.const(node, 2, "constant_value")
        value = 0.0 if value is None or value.size == 0 else float(value.reshape(()))
        if len(node.input) > 3 and node.input[3]:
            raise _refuse(node, "the axes input is not supported")
    rank = len(b.layouts[node.input[0]])
    if rank != 4 or any(pads[i] or pads[i + rank] for i in (0, 1)):
        raise _refuse(node, f"only padding H and W of a 4-D tensor rebuilds (pads {pads})")
    hw = ((pads[2], pads[6]), (pads[3], pads[7]))
    grow = tuple(tuple(max(p, 0) for p in pair) for pair in hw)
    shrink = tuple(tuple(max(-p, 0) for p in pair) for pair in hw)
    steps = [("shift", lambda name: layers.Rescaling(1.0, -value, name=name))] if value else []
    if grow != ((0, 0), (0, 0)):
        steps.append(("pad", lambda name: layers.ZeroPadding2D(grow, name=name)))
    if shrink != ((0, 0), (0, 0)):
        steps.append(("crop", lambda name: layers.Cropping2D(shrink, name=name)))
    if value:  # zero padding of x - value, shifted back: constant padding with `value`
        steps.append(("back", lambda name: layers.Rescaling(1.0, value, name=name)))
    x = b.tensor(node.input[0], NHWC)
    b.set(node.output[0], _chain(b, node, x, steps) if steps else x, NHWC)


def _resize(b, node, a):
    """Resize / Upsample by integer factors on H and W: UpSampling2D (nearest, or bilinear with half-pixel
    coordinates, which is what tf.image.resize computes)."""
    source = b.shape(node.input[0])
    if len(source) != 4:
        raise _refuse(node, "only 4-D inputs rebuild")
    if node.op_type == "Upsample":
        scales = a.get("scales") if b.opset < 9 else b.const(node, 1, "scales")
    else:
        if a.get("antialias", 0):
            raise _refuse(node, "antialias is not supported")
        scales = b.const(node, 1 if b.opset < 11 else 2, "scales")
        sizes = b.const(node, 3, "sizes") if b.opset >= 11 else None
        axes = [i % 4 for i in a.get("axes") or range(4)]
        given = sizes if scales is None or scales.size == 0 else scales
        scales = [1.0] * 4
        for axis, value in zip(axes, [float(v) for v in given]):
            # sizes give the batch as the batch itself (a Shape of it) or, from batch-1 exports, as 1
            scales[axis] = 1.0 if axis == 0 and given is sizes and value in (BATCH, 1) else \
                value / source[axis] if given is sizes else value
    scales = [float(s) for s in scales]
    factors = [int(round(s)) for s in scales[2:]]
    if scales[:2] != [1.0, 1.0] or any(f < 1 or abs(f - s) > 1e-6 for f, s in zip(factors, scales[2:])):
        raise _refuse(node, f"only integer scales on H and W rebuild (scales {scales})")
    mode = a.get("mode", "nearest")
    if mode == "nearest":
        if node.op_type == "Resize" and not _nearest_repeats(b, node, source[2:], factors):
            raise _refuse(node, "this coordinate_transformation_mode / nearest_mode does not repeat pixels")
        interpolation = "nearest"
    elif mode in ("linear", "bilinear") and node.op_type == "Resize" and \
            a.get("coordinate_transformation_mode", "half_pixel") in ("half_pixel", "pytorch_half_pixel"):
        interpolation = "bilinear"
    else:
        raise _refuse(node, f"mode '{mode}' with these coordinates has no UpSampling2D equivalent")
    y = layers.UpSampling2D(tuple(factors), interpolation=interpolation, name=b.unique(node.name))(
        b.tensor(node.input[0], NHWC))
    b.set(node.output[0], y, NHWC)


def _nearest_repeats(b, node, size, factors):
    """Whether ONNX's nearest resize of this node repeats each pixel: evaluated on pixel indices."""
    from onnx.reference import ReferenceEvaluator

    attrs = {k: v for k, v in attributes(node, b.opset).items()
             if k in ("coordinate_transformation_mode", "nearest_mode", "mode")}
    probe = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    index = np.arange(size[0] * size[1], dtype=np.float32).reshape(1, 1, *size)
    scales = np.array([1, 1] + factors, np.float32)
    got = ReferenceEvaluator(probe, opsets={"": max(b.opset, 11)}).run(None, {"x": index, "scales": scales})[0]
    return np.array_equal(got, index.repeat(factors[0], 2).repeat(factors[1], 3))


CONVERTERS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_pool(layers.GlobalAveragePooling2D),
    "GlobalMaxPool": _global_pool(layers.GlobalMaxPooling2D),
    "ReduceMean": _reduce(layers.GlobalAveragePooling2D),
    "ReduceMax": _reduce(layers.GlobalMaxPooling2D),
    "Relu": _activation(lambda a, name: layers.ReLU(name=name)),
    "LeakyRelu": _activation(lambda a, name: layers.LeakyReLU(negative_slope=a.get("alpha", 0.01), name=name)),
    "Elu": _activation(lambda a, name: layers.ELU(alpha=a.get("alpha", 1.0), name=name)),
    "Sigmoid": _activation(lambda a, name: layers.Activation("sigmoid", name=name)),
    "Tanh": _activation(lambda a, name: layers.Activation("tanh", name=name)),
    "HardSwish": _activation(lambda a, name: layers.Activation("hard_swish", name=name)),
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip,
    "Softmax": _softmax,
    "PRelu": _prelu,
    "Add": _binary,
    "Sub": _binary,
    "Mul": _binary,
    "Div": _binary,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Identity": _identity_op,
    "Dropout": _identity_op,
    "Cast": _cast,
    "Pad": _pad,
    "Resize": _resize,
    "Upsample": _resize,
}
