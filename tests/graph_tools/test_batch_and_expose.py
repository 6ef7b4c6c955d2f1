"""make_batch_dynamic on fixed-batch exports, and expose() of intermediate tensors."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from camserve import graph_tools as gt
from zoo import ZOO


def _run(model, x, outputs=None):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {session.get_inputs()[0].name: x})


@pytest.mark.parametrize("name", ["tinynet_batch1", "resnet18_batch1"])
def test_fixed_batch_export_becomes_dynamic(name):
    model = onnx.load(str(ZOO[name].onnx_path()))
    size = ZOO[name].size
    x = np.random.default_rng(0).normal(size=(3, 3, size, size)).astype(np.float32)
    if name == "tinynet_batch1":  # its view(1, -1) baked the batch into a Reshape constant
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):  # ONNX Runtime's own error types are private
            _run(model, x)
    dynamic = gt.make_batch_dynamic(model)
    batched = _run(dynamic, x)[0]
    singles = np.concatenate([_run(model, x[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_dynamic_model_is_left_equal():
    model = onnx.load(str(ZOO["resnet18"].onnx_path()))
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(_run(gt.make_batch_dynamic(model), x)[0], _run(model, x)[0])


def test_expose_returns_intermediate_tensors():
    model = onnx.load(str(ZOO["resnet18"].onnx_path()))
    layer = gt.inspect(model).default_layer
    exposed = gt.expose(model, [layer])
    assert [o.name for o in exposed.graph.output] == ["output", layer]
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    logits, acts = _run(exposed, x)
    assert acts.shape == (1, 512, 7, 7)
    np.testing.assert_allclose(logits, _run(model, x)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(gt.GraphError, match="not produced"):
        gt.expose(model, ["nope"])



def test_graph_inputs_can_be_exposed_but_not_differentiated_as_layers():
    # the one "not produced by this graph" check: expose counts graph inputs, a gradient layer must be computed
    model = gt.make_batch_dynamic(onnx.load(str(ZOO["tinynet_batch1"].onnx_path())))
    name = gt.inspect(model).input_name
    assert [o.name for o in gt.expose(model, [name]).graph.output][-1] == name
    with pytest.raises(gt.GraphError, match=f"tensor '{name}' is not produced by this graph"):
        gt.add_gradients(model, [name])

def _normalising_model(initializers_as_inputs: bool) -> onnx.ModelProto:
    """x (1,3,4,4) - mean.reshape(1,3,1,1), then view(1, 48): one batch-shaped Reshape, one that is not."""
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.arange(3, dtype=np.float32), "mean"),
             numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "mean_shape"),
             numpy_helper.from_array(np.array([1, 48], np.int64), "flat_shape")]
    nodes = [helper.make_node("Reshape", ["mean", "mean_shape"], ["mean4"]),
             helper.make_node("Sub", ["x", "mean4"], ["centred"]),
             helper.make_node("Reshape", ["centred", "flat_shape"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    if initializers_as_inputs:  # how IR < 4 exporters wrote weights
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


@pytest.mark.parametrize("initializers_as_inputs", [False, True])
def test_only_batch_carrying_reshapes_change(initializers_as_inputs):
    model = _normalising_model(initializers_as_inputs)
    dynamic = gt.make_batch_dynamic(model)
    assert [i.name for i in gt.graph.real_inputs(dynamic.graph)] == ["x"]
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    out = session.run(None, feeds)[0]
    expected = (x - np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1)).reshape(2, 48)
    np.testing.assert_allclose(out, expected)
