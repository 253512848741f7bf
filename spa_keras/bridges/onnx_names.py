"""Canonical names and node order for what tf2onnx generates: the same model, the same ONNX bytes in every run.

tf2onnx names what it makes (inserted nodes and their outputs, folded constants, symbolic dimensions such as the
batch's `unk__95`) `name__N`, N from one process-wide counter (`tf2onnx.utils.make_name`), and then orders the
nodes by name. The numbers depend on how many conversions ran before in the process and, because its passes visit
the consumers of a tensor from a set of names (Python's hash seed), they are dealt out in another order in another
process too. A plan records the names of the parameters it cuts and the fingerprint of the graph (`PruningPlan`
group keys, `Analysis.fingerprint`), so with those numbers a plan made on a SavedModel or on a Keras model via ONNX
could not be replayed on the same input. `canonicalize` runs right after tf2onnx (`keras_to_onnx`,
`savedmodel_to_onnx`): nodes in an order read from the graph, counters renumbered in that order, initializers in
the order they are read. (Which of two equal constants tf2onnx keeps is fixed during the conversion:
`keras_to_onnx.stable_merges`.) MXNet's exports (mxnet.onnx) name everything after the symbol and need none of it.

Example:

>>> from onnx import TensorProto, helper
>>> graph = helper.make_graph(
...     [helper.make_node("Mul", ["x", "scale__57"], ["Mul__41:0"], name="Mul__41"),
...      helper.make_node("Relu", ["Mul__41:0"], ["y"], name="Relu__40")], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__60", 3])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__61", 3])],
...     [helper.make_tensor("scale__57", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])])
>>> model = canonicalize(helper.make_model(graph))
>>> [(n.name, list(n.input), list(n.output)) for n in model.graph.node]
[('Mul__2', ['x', 'scale__3'], ['Mul__2:0']), ('Relu__4', ['Mul__2:0'], ['y'])]
>>> model.graph.initializer[0].name, [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
('scale__3', ['unk__1', ''])
"""

import re

import onnx

__all__ = ["canonicalize", "counters_removed", "is_generated"]

# tf2onnx's own test for a name it made (utils.initialize_name_counter): a counter suffix, then maybe an output port
_GENERATED = re.compile(r"__\d+(:\d+)?$")
# every counter a generated name holds ("Conv__42_Erf__99": the Erf was made in the scope of Conv__42)
_COUNTER = re.compile(r"__(\d+)")


def is_generated(name: str) -> bool:
    """Whether `name` ends in a tf2onnx counter (`Conv__42`, `Conv__42:0`, `unk__95`)."""
    return bool(_GENERATED.search(name))


def counters_removed(name: str) -> str:
    """`name` without tf2onnx counters: `Conv__42_Erf__99:0` -> `Conv_Erf:0`."""
    return _COUNTER.sub("", name)


def canonicalize(model: onnx.ModelProto, keep=None) -> onnx.ModelProto:
    """Put, in place, what tf2onnx chose by its counter into a form that follows from the graph alone; return
    `model`.

    - Nodes: in a topological order read from the graph outputs (depth first, inputs in order), because tf2onnx
      orders nodes by name, counters included.
    - Names: the counters of the names tf2onnx generated (nodes, tensors, initializers, value_info, symbolic
      dimensions, in subgraphs too) renumbered 1, 2, ... in the order they first appear. Each counter value
      becomes one number wherever it appears, so a node `Conv__42` and its output `Conv__42:0` stay alike. Names
      without a counter suffix (the TensorFlow op names tf2onnx kept) and the names in `keep` (default: the graph's
      data inputs and its outputs, the model's real interface) are left as they are; the bridges pass the real
      input and output names, so that a graph input or output tf2onnx named itself is renumbered too. A new name
      that would equal one left as it is gets `_1`, `_2`, ... appended, so no two tensors, nodes or dimensions come
      to share a name. (A `__<digits>` the model's own names hold inside a generated name, a layer `block__2`, is
      renumbered with the rest.)
    - Initializers: in the order the nodes first read them (tf2onnx writes them in the order its passes left them).
    """
    graph = model.graph
    if keep is None:
        initializers = {t.name for t in graph.initializer}
        keep = [i.name for i in graph.input if i.name not in initializers] + [o.name for o in graph.output]
    keep = set(keep)
    _order_nodes(graph)
    seen = list(dict.fromkeys(_names(graph)))  # graph order, each name once
    numbers: dict[str, int] = {}  # counter digits -> canonical number
    for name in seen:
        if name not in keep and is_generated(name):
            for digits in _COUNTER.findall(name):
                numbers.setdefault(digits, len(numbers) + 1)
    renamed = {name: _COUNTER.sub(lambda m: f"__{numbers[m.group(1)]}", name) for name in seen
               if name not in keep and is_generated(name)}
    taken = {name for name in seen if name not in renamed}
    for old, new in renamed.items():  # graph order: which one gets a suffix does not depend on the run either
        base, k = new, 0
        while new in taken:
            k += 1
            new = f"{base}_{k}"
        renamed[old] = new
        taken.add(new)
    _rename(graph, renamed)
    _order_initializers(graph)
    return model


def _order_nodes(graph):
    """Reorder `graph.node` (and its subgraphs' nodes) depth first from the graph outputs, each node after the
    producers of its inputs (explicit, then those its subgraphs read), in input order; nodes no output depends on
    follow in the order they had."""
    nodes = list(graph.node)
    for node in nodes:
        for sub in _subgraphs(node):
            _order_nodes(sub)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [[producer[name] for name in list(node.input) + [n for sub in _subgraphs(node) for n in _read(sub)]
             if name in producer] for node in nodes]
    state = [0] * len(nodes)  # 0 new, 1 on the stack, 2 placed
    order = []
    for root in [producer[o.name] for o in graph.output if o.name in producer] + list(range(len(nodes))):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(deps[root]))]
        while stack:
            index, pending = stack[-1]
            for dep in pending:
                if not state[dep]:  # (a dependency on the stack is a cycle: left for onnx.checker to report)
                    state[dep] = 1
                    stack.append((dep, iter(deps[dep])))
                    break
            else:
                stack.pop()
                state[index] = 2
                order.append(index)
    if order != list(range(len(nodes))):
        ordered = [nodes[i] for i in order]
        del graph.node[:]
        graph.node.extend(ordered)


def _read(graph):
    """Every tensor name the nodes of `graph` and of its subgraphs read."""
    for node in graph.node:
        yield from node.input
        for sub in _subgraphs(node):
            yield from _read(sub)


def _order_initializers(graph):
    first = {}
    for position, name in enumerate(_read(graph)):
        first.setdefault(name, position)
    for g in (sub for node in graph.node for sub in _subgraphs(node)):
        _order_initializers(g)
    if len(graph.initializer) > 1:
        ordered = sorted(graph.initializer, key=lambda t: first.get(t.name, len(first)))
        if [t.name for t in ordered] != [t.name for t in graph.initializer]:
            del graph.initializer[:]
            graph.initializer.extend(ordered)


def _dim_params(type_proto):
    """The `dim_param`s of a TypeProto (tensors, and what sequences, optionals and maps hold)."""
    which = type_proto.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        for dim in getattr(type_proto, which).shape.dim:
            if dim.HasField("dim_param"):
                yield dim
    elif which in ("sequence_type", "optional_type"):
        yield from _dim_params(getattr(type_proto, which).elem_type)
    elif which == "map_type":
        yield from _dim_params(type_proto.map_type.value_type)


def _subgraphs(node):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def _tensors(node):
    """TensorProtos held in a node's attributes (a Constant's value); they carry a name."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors


def _names(graph):
    """Every name in `graph` in graph order: the inputs (with their symbolic dimensions), node by node (name,
    inputs, outputs, attribute tensors, subgraphs), the outputs and value_info (with theirs), then initializers."""
    for info in graph.input:
        yield from _info_names(info)
    for node in graph.node:
        yield node.name
        yield from node.input
        yield from node.output
        for tensor in _tensors(node):
            yield tensor.name
        for sub in _subgraphs(node):
            yield from _names(sub)
    for info in list(graph.output) + list(graph.value_info):
        yield from _info_names(info)
    for tensor in graph.initializer:
        yield tensor.name
    for sparse in graph.sparse_initializer:
        yield sparse.values.name
        yield sparse.indices.name
    for annotation in graph.quantization_annotation:
        yield annotation.tensor_name


def _info_names(info):
    yield info.name
    for dim in _dim_params(info.type):
        yield dim.dim_param


def _rename(graph, renamed):
    def new(name):
        return renamed.get(name, name)

    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        info.name = new(info.name)
        for dim in _dim_params(info.type):
            dim.dim_param = new(dim.dim_param)
    for node in graph.node:
        node.name = new(node.name)
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
        for tensor in _tensors(node):
            tensor.name = new(tensor.name)
        for sub in _subgraphs(node):
            _rename(sub, renamed)
    for tensor in graph.initializer:
        tensor.name = new(tensor.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = new(sparse.values.name)
        sparse.indices.name = new(sparse.indices.name)
    for annotation in graph.quantization_annotation:
        annotation.tensor_name = new(annotation.tensor_name)
