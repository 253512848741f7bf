"""The one registry of mask-propagation rules, keyed by ONNX op type.

A rule is `rule(ctx, node)`: it reads the channel labels of the node's inputs from `ctx` (a
`spa_keras.propagation.Propagation`), binds parameters to labels, unions labels that must go together and sets the
labels of the outputs. A rewriter is `rewrite(surgery, node, proto)`: it fixes attributes and shape constants of one
op after channels were removed. Ops without a rule are barriers (see `spa_keras.propagation`).

Example:

>>> @register("Relu")
... def passthrough(ctx, node):
...     ctx.set(node.outputs[0], ctx.get(node.inputs[0]))
"""

RULES = {}
REWRITERS = {}
CREATORS = set()  # ops whose rule runs even without labelled inputs: they make channels from constants


def register(*op_types, creates_channels=False):
    def wrap(fn):
        for op in op_types:
            RULES[op] = fn
            if creates_channels:
                CREATORS.add(op)
        return fn

    return wrap


def rewriter(*op_types):
    def wrap(fn):
        for op in op_types:
            REWRITERS[op] = fn
        return fn

    return wrap


def rule_for(op_type):
    _load()
    return RULES.get(op_type)


def creates_channels(op_type):
    _load()
    return op_type in CREATORS


def rewriter_for(op_type):
    _load()
    return REWRITERS.get(op_type)


def _load():
    # importing the rule modules fills the registry
    from spa_keras.rules import conv, elementwise, linear, normalization, pooling, shape, slicing, tie  # noqa: F401
