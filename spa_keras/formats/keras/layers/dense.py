"""Dense (any input rank), Embedding (output dim), EinsumDense (projections of the form `...c,cf->...f` with several c
and f letters).

An EinsumDense that contracts the input's trailing axes with the kernel's leading axes is a MatMul between the input
with those axes merged and the kernel seen as a matrix [contracted, free]; Reshapes around it let the engine's
position tracing split the merged axes again (attention heads × key dims). Surgery writes the new `units`,
`output_dim` or `output_shape`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import math
import re
import string

from spa_keras.formats.keras.registry import counts, describes, elements, resizes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, KerasShape, Weights


@describes("Dense")
def dense(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    kernel = b.param(layer, layer.kernel)
    if not layer.use_bias:
        b.node(layer, "MatMul", [x, kernel], [y])
        return True
    mm = b.fresh(layer, "matmul", ys)
    b.node(layer, "MatMul", [x, kernel], [mm])
    b.node(layer, "Add", [mm, b.param(layer, layer.bias)], [y])
    return True


def einsum_parts(equation: str, rank: int) -> tuple[str, str, str] | None:
    """(input, kernel, output) letter strings with '...' spelled out, or None for a form not covered."""
    match = re.fullmatch(r"\s*([\w.]+)\s*,\s*([\w.]+)\s*->\s*([\w.]+)\s*", equation)
    if not match:
        return None
    x, k, out = match.groups()
    if "..." in x:
        free = [c for c in string.ascii_uppercase if c not in equation][: rank - (len(x) - 3)]
        x, out = x.replace("...", "".join(free)), out.replace("...", "".join(free))
    if "..." in k or len(x) != rank:
        return None
    contracted = [c for c in x if c not in out]
    n = len(contracted)
    if n == 0 or x[-n:] != "".join(contracted) or k[:n] != x[-n:] or out != x[:-n] + k[n:]:
        return None
    return x, k, out


def describe_einsum(b: GraphBuilder, layer: Any, sub: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    """Describe the EinsumDense `sub` (a layer or an attention projection) applied to x → y; False if not covered."""
    parts = einsum_parts(sub.equation, len(xs))
    if parts is None:
        return False
    xl, kl, out = parts
    n = len([c for c in xl if c not in out])
    kshape = tuple(sub.kernel.shape)
    matrix = (math.prod(kshape[:n]), math.prod(kshape[n:]))
    kernel = b.param(sub, sub.kernel, shape=matrix)
    t = x
    if n > 1:
        t = b.fresh(layer, "merge", list(xs[:-n]) + [matrix[0]])
        b.node(layer, "Reshape", [x], [t])
    free_out = len(kl) - n
    flat = list(ys[: len(ys) - free_out]) + [matrix[1]]
    bias_axes = getattr(sub, "bias_axes", None) or ""
    steps = []
    if bias_axes:
        if bias_axes != kl[n:]:
            return False  # a bias over only some of the output axes is not a vector along the matrix's columns
        steps.append(("Add", b.param(sub, sub.bias, shape=(matrix[1],))))
    ops = [("MatMul", kernel)] + steps
    for i, (op, p) in enumerate(ops):
        last = i == len(ops) - 1
        target = y if last and free_out == 1 else b.fresh(layer, op.lower(), flat)
        b.node(layer, op, [t, p], [target])
        t = target
    if free_out != 1:
        b.node(layer, "Reshape", [t], [y])
    return True


@describes("EinsumDense")
def einsum_dense(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    return describe_einsum(b, layer, layer, x, y, xs, ys)


@describes("Embedding")
def embedding(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    b.node(layer, "Gather", [b.param(layer, layer.embeddings), x], [y], axis=0)
    return True


# ---- surgery: the slim layer's config --------------------------------------------------------------------------

@resizes("Dense")
def dense_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["units"] = int(weights[0].shape[-1])
    return config


@resizes("EinsumDense")
def einsum_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    parts = einsum_parts(layer.equation, layer.input_spec.ndim)  # the rank it was built for (any call)
    assert parts is not None  # a form the description covered
    xl, kl, out = parts
    n = len([c for c in xl if c not in out])
    new = dict(zip(kl[n:], weights[0].shape[n:]))
    partial = config["output_shape"]
    scalar = not isinstance(partial, (list, tuple))
    partial = [partial] if scalar else list(partial)
    letters = out[1:]  # output_shape leaves out the first (batch) axis
    partial = [int(new[c]) if c in new and d is not None else d for c, d in zip(letters[-len(partial):], partial)]
    config["output_shape"] = partial[0] if scalar else partial
    return config


@resizes("Embedding", "ReversibleEmbedding")
def embedding_width(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["output_dim"] = int(weights[0].shape[-1])
    return config


# ---- spa.count -------------------------------------------------------------------------------------------------

@counts("Dense")
def dense_macs(layer: Any, xs: KerasShape, ys: KerasShape) -> int:
    return elements(ys) * layer.kernel.shape[0]


def einsum_macs(equation: str, x_shape: KerasShape, kernel_shape: Sequence[int]) -> int:
    """MACs of a two-operand einsum: the product of the sizes of all its distinct indices (batch and free
    dimensions as 1)."""
    x, rest = equation.replace(" ", "").split(",")
    k = rest.split("->")[0]
    if "..." in x:
        x = x.replace("...", "#" * (len(x_shape) - len(x) + 3))
    sizes = {c: d or 1 for c, d in zip(x[1:], x_shape[1:]) if c != "#"}
    sizes.update(zip(k, kernel_shape))
    return math.prod(sizes.values()) * math.prod(d or 1 for c, d in zip(x, x_shape) if c == "#")


@counts("EinsumDense")
def einsum_dense_macs(layer: Any, xs: KerasShape, ys: KerasShape) -> int:
    return einsum_macs(layer.equation, xs, layer.kernel.shape)
