"""inspect(): image input, layout, logits (Softmax skipped), candidate layers and the default layer."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from camserve import graph_tools as gt
from zoo import ZOO, NHWCNet


def test_resnet_layers_and_default():
    info = gt.inspect(ZOO["resnet18"].onnx_path())
    assert info.input_name == "input" and info.layout == "NCHW" and info.num_classes == 1000
    assert info.default_layer == "/layer4/layer4.1/relu_1/Relu_output_0"
    shapes = {layer.name: layer.shape for layer in info.layers}
    assert shapes[info.default_layer][1:] == (512, 7, 7)
    assert all(len(s) == 4 and s[2] * s[3] > 1 for s in shapes.values())
    assert info.layers[0].op == "Conv"


def test_vgg_default_is_last_spatial_tensor_before_the_classifier():
    info = gt.inspect(ZOO["vgg16"].onnx_path())
    last = info.layers[-1]
    assert last.name == info.default_layer and last.shape[1:] == (512, 7, 7)


def _softmax_tiny(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5), torch.nn.Softmax(dim=1)).eval()
    path = tmp_path / "softmax.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), str(path), dynamo=False, input_names=["x"],
                      output_names=["probs"], dynamic_axes={"x": {0: "N"}, "probs": {0: "N"}})
    return path


def test_softmax_output_is_skipped_for_logits(tmp_path):
    info = gt.inspect(_softmax_tiny(tmp_path))
    assert info.softmax_removed and info.logits != "probs" and info.num_classes == 5


def test_nhwc_input_is_detected(tmp_path):
    assert gt.inspect(NHWCNet().export(tmp_path / "nhwc.onnx")).layout == "NHWC"


def _tensor_model(inputs, nodes, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_graph_without_spatial_activations_is_refused():
    w = numpy_helper.from_array(np.ones((5, 48), np.float32), "w")
    model = _tensor_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_node("Flatten", ["x"], ["f"]),
                           helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)], [w])
    with pytest.raises(gt.GraphError, match="no 4-D float activations"):
        gt.inspect(model)


@pytest.mark.parametrize("shape,dtype,match", [(["N", 10], TensorProto.FLOAT, "rank 2"),
                                               (["N", 3, 8, 8], TensorProto.INT64, "not a float tensor")])
def test_non_image_input_is_refused(shape, dtype, match):
    model = _tensor_model([helper.make_tensor_value_info("x", dtype, shape)],
                          [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(gt.GraphError, match=match):
        gt.inspect(model)


def test_classifier_weights_of_a_gap_fc_head():
    model = onnx.load(str(ZOO["resnet18"].onnx_path()))
    weights = gt.classifier_weights(model, gt.inspect(model).default_layer)
    fc = ZOO["resnet18"].torch_model().fc.weight.detach().numpy()
    np.testing.assert_array_equal(weights, fc)
    with pytest.raises(gt.GraphError, match="global average pooling"):
        gt.classifier_weights(model, gt.inspect(model).layers[0].name)
