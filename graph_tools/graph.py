"""Small helpers over a GraphProto: producers, consumers, name checks, constants, shapes, opset-aware nodes."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import GraphError


def opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def set_input_dims(model: onnx.ModelProto, name: str, dims: dict[int, int], only_symbolic: bool) -> None:
    """Set axes of graph input `name` to static sizes, in place; `only_symbolic` keeps static ones."""
    for value in model.graph.input:
        if value.name != name:
            continue
        for axis, size in dims.items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.HasField("dim_value") and (only_symbolic or dim.dim_value == size):
                continue
            if dim.HasField("dim_value"):
                raise ValueError(f"input {name!r} is fixed at {dim.dim_value} on axis {axis}, not {size}")
            dim.Clear()
            dim.dim_value = size


def symbolic_unknown_dims(model: onnx.ModelProto) -> None:
    """Input sizes written as -1 or 0 (paddle2onnx's unknown batch) made symbolic, in place: shape inference reads
    a -1 as a size and derives wrong shapes from it."""
    for value in real_inputs(model.graph):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()
                dim.dim_param = "N" if axis == 0 else f"unknown_{axis}"


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (IR < 4 exporters list weights as inputs too)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    result: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                result.setdefault(name, []).append(node)
    return result


def tensor_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name the graph defines: node outputs, graph inputs and initializers."""
    return set(producers(graph)) | {i.name for i in graph.input} | {t.name for t in graph.initializer}


def check_produced(graph: onnx.GraphProto, names: list[str], inputs_too: bool = False) -> None:
    """Refuse the first of `names` that no node of `graph` outputs (nor, with `inputs_too`, is a graph input)."""
    made = set(producers(graph)) | ({i.name for i in graph.input} if inputs_too else set())
    for name in names:
        if name not in made:
            raise GraphError(f"tensor {name!r} is not produced by this graph")


def check_feeds(graph: onnx.GraphProto, names: list[str], logits: str, consequence: str = "") -> None:
    """Refuse the first of `names` that `logits` is not computed from; `consequence` ends the message."""
    feeding = ancestors(graph, [logits])
    for name in names:
        if name not in feeding:
            raise GraphError(f"tensor {name!r} does not feed the logits {logits!r}{consequence}")


def check_free(graph: onnx.GraphProto, reserved: set[str], kind: str) -> None:
    """Refuse a graph that already has a tensor named like one `kind` graphs add (one would shadow the other)."""
    clash = sorted(set(reserved) & tensor_names(graph))
    if clash:
        raise GraphError(f"the graph already has a tensor named {clash[0]!r}, a name {kind} graphs reserve")


def constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of an initializer or a Constant node's output, else None."""
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return constant_node_value(node)
    return None


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value a Constant node holds, whichever attribute (value, value_ints, value_float, ...) holds it."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int"):
            return np.array(attr.f if attr.name == "value_float" else attr.i,
                            np.float32 if attr.name == "value_float" else np.int64)
        if attr.name in ("value_floats", "value_ints"):
            return np.array(list(attr.floats) if attr.name == "value_floats" else list(attr.ints),
                            np.float32 if attr.name == "value_floats" else np.int64)
    return None


def dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Shape of a value as ints (static), strings (symbolic) or None (unknown); [] when rank unknown."""
    ttype = value.type.tensor_type
    if not ttype.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim]


def infer(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """name -> ValueInfo for every tensor whose type shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    values = {v.name: v for v in list(graph.value_info) + list(graph.output) + list(graph.input)}
    return values


def ancestors(graph: onnx.GraphProto, targets: list[str]) -> set[str]:
    """Every tensor name the targets depend on (the targets included)."""
    made_by = producers(graph)
    seen: set[str] = set()
    stack = list(targets)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = made_by.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return seen


def descendants(graph: onnx.GraphProto, source: str) -> set[str]:
    """Every tensor computed from `source` (itself included)."""
    reached = {source}
    for node in graph.node:  # nodes are in topological order
        if any(i in reached for i in node.input):
            reached.update(node.output)
    return reached


def prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes and initializers no graph output needs."""
    graph = model.graph
    needed = ancestors(graph, [o.name for o in graph.output])
    for index in reversed([k for k, n in enumerate(graph.node) if not any(o in needed for o in n.output)]):
        del graph.node[index]
    keep = graph.node
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    dropped = {t.name for t in graph.initializer} - used
    # deleting in place: rebuilding the list would copy every (possibly huge) kept tensor
    for index in reversed([k for k, t in enumerate(graph.initializer) if t.name in dropped]):
        del graph.initializer[index]
    for index in reversed([k for k, i in enumerate(graph.input) if i.name in dropped]):
        del graph.input[index]   # IR < 4 lists weights as inputs too
    return model


def reduce_node(op: str, model: onnx.ModelProto, inp: str, out: str, axes: list[int],
                keepdims: int = 1) -> list[onnx.NodeProto]:
    """A Reduce* node whatever the opset (axes moved from attribute to input at 13/18)."""
    version = opset(model)
    moved = 13 if op == "ReduceSum" else 18
    if version >= moved:
        axes_name = out + "__axes"
        const = helper.make_node("Constant", [], [axes_name],
                                 value=numpy_helper.from_array(np.array(axes, np.int64), axes_name))
        return [const, helper.make_node(op, [inp, axes_name], [out], keepdims=keepdims)]
    return [helper.make_node(op, [inp], [out], axes=axes, keepdims=keepdims)]


def constant_node(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder graph.node in place so every node follows the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in available})[:5]
            raise ValueError(f"graph has a cycle or undefined inputs: {missing}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def fold_constant_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace Transpose nodes of constant tensors by transposed initializers.

    Reverse-mode rules transpose weight matrices (Gemm/MatMul adjoints); ONNX Runtime leaves
    those in the run, where a 1000 x 2048 transpose costs more than the whole backward pass.
    """
    graph = model.graph
    inits, made_by = initializers(graph), producers(graph)
    keep = []
    for node in graph.node:
        source = node.input[0] if node.op_type == "Transpose" else None
        if source in inits:
            value = numpy_helper.to_array(inits[source])
        else:
            constant = made_by.get(source)
            value = constant_node_value(constant) if constant is not None and constant.op_type == "Constant" else None
        if value is None:
            keep.append(node)
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(value, perm)),
                                                         node.output[0]))
        inits[node.output[0]] = graph.initializer[-1]   # a transpose of this transpose folds too
    del graph.node[:]
    graph.node.extend(keep)
    return model


FOLD_LIMIT = 1 << 16   # elements; folding is for shape arithmetic, not for materialising weights
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate nodes whose inputs are all constants into initializers (in place; returns the model).

    Exporters compute "same" padding and reshape targets from constants at run time; shape
    inference cannot see through that, so without folding every later shape is unknown.
    """
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    small = {name for name, value in known.items() if value.size <= FOLD_LIMIT}
    keep = []
    for node in graph.node:
        if node.op_type == "Constant":
            value = constant_node_value(node)
            if value is not None:
                known[node.output[0]] = value
                small.add(node.output[0])
                graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
                continue
        inputs = [i for i in node.input if i]
        if node.domain not in ("", "ai.onnx") or not inputs or not all(i in small for i in inputs) \
                or node.op_type in RANDOM_OPS:
            keep.append(node)
            continue
        try:
            single = helper.make_model(
                helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output],
                                  [numpy_helper.from_array(known[i], i) for i in set(inputs)]),
                opset_imports=list(model.opset_import))
            values = ReferenceEvaluator(single).run(None, {})
        except Exception:  # an op the reference runtime lacks: leave it to ONNX Runtime
            keep.append(node)
            continue
        values = [np.asarray(v) for v in values]
        if any(v.size > FOLD_LIMIT for v in values):  # e.g. a large ConstantOfShape: keep it lazy
            keep.append(node)
            continue
        for name, value in zip(node.output, values):
            known[name] = value
            small.add(name)
            graph.initializer.append(numpy_helper.from_array(value, name))
    del graph.node[:]
    graph.node.extend(keep)
    return model


def cancel_transposes(graph: onnx.GraphProto) -> None:
    """Bypass Transpose(Transpose(x)) pairs whose permutations cancel (reverse rules emit W^T^T)."""
    made_by = producers(graph)
    outputs = {o.name for o in graph.output}
    replace = {}
    for node in graph.node:
        first = made_by.get(node.input[0]) if node.op_type == "Transpose" else None
        if first is None or first.op_type != "Transpose" or node.output[0] in outputs:
            continue
        outer = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        inner = next((list(a.ints) for a in first.attribute if a.name == "perm"), None)
        if outer is not None and inner is not None and all(inner[p] == i for i, p in enumerate(outer)):
            replace[node.output[0]] = first.input[0]
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in replace:
                node.input[k] = replace[name]


def upgrade(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """The model converted to at least `version`, or unchanged if the converter lacks an adapter."""
    try:
        return onnx.version_converter.convert_version(model, version)
    except Exception:
        return model


def rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor `old` everywhere it is produced, read or listed as an output, in place."""
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
    for value in graph.output:
        if value.name == old:
            value.name = new
