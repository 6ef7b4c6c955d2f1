"""Model kinds read off the output (classifier, segmenter, detector, embedding), declared overrides, and the
refusal of an output that matches none, on hand-built graphs (no torch)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from camserve import Model
from camserve import graph_tools as gt
from camserve.service.errors import BadRequest


def _graph(tail: list, out_shape: list, extra: list | None = None, size: int = 64):
    """image (N, 3, size, size) -> Conv 3x3 stride 8 (8 channels) -> `tail` nodes -> output `y`."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")] + (extra or [])
    nodes = [helper.make_node("Conv", ["x", "w"], ["f"], pads=[1, 1, 1, 1], strides=[8, 8]),
             helper.make_node("Relu", ["f"], ["a"])] + tail
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def test_a_per_pixel_output_is_a_segmenter():
    model = _graph([helper.make_node("Resize", ["a", "", "s"], ["y"], mode="linear")], ["N", 8, 64, 64],
                   [_const("s", np.array([1, 1, 8, 8], np.float32))])
    info = gt.inspect(model)
    assert (info.kind, info.num_classes, info.logits) == ("segmenter", 8, "y")
    assert "y" not in info.layer_names()    # the output itself is no layer to explain


def test_pooled_features_are_an_embedding_and_a_linear_layer_a_classifier():
    pooled = [helper.make_node("GlobalAveragePool", ["a"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    assert gt.inspect(_graph(pooled, ["N", 8])).kind == "classifier"   # a conv right before the pool: a 1x1 head
    residual = [helper.make_node("Add", ["a", "f"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
                helper.make_node("Flatten", ["p"], ["y"])]
    assert gt.inspect(_graph(residual, ["N", 8])).kind == "embedding"
    linear = residual[:-1] + [helper.make_node("Flatten", ["p"], ["q"]), helper.make_node("Gemm", ["q", "fc"], ["y"])]
    info = gt.inspect(_graph(linear, ["N", 5], [_const("fc", np.ones((8, 5), np.float32))]))
    assert (info.kind, info.num_classes) == ("classifier", 5)


def test_a_yolov8_shaped_output_is_a_detector_and_an_unknown_one_is_refused():
    # 64 x 64 at strides 8, 16, 32: 64 + 16 + 4 = 84 anchors; (N, 4 + 2, 84) is a YOLOv8 head with 2 classes
    head = [helper.make_node("Reshape", ["a", "shape"], ["r"]),
            helper.make_node("Slice", ["r", "st", "en", "ax"], ["y"])]
    extra = [_const("shape", np.array([-1, 8, 64], np.int64)), _const("st", np.array([0], np.int64)),
             _const("en", np.array([6], np.int64)), _const("ax", np.array([1], np.int64))]
    model = _graph(head, ["N", 6, 64], extra)
    with pytest.raises(gt.GraphError, match=r"matches no model kind.*declare it.*\"kind\""):
        gt.inspect(model)                    # 64 columns are no anchor count at 64 x 64
    with pytest.raises(gt.GraphError, match="not a detector head"):
        gt.inspect(model, kind="detector")
    info = gt.inspect(model, kind="detector", head="yolov8")
    assert (info.kind, info.head, info.num_classes) == ("detector", "yolov8", 2)
    with pytest.raises(gt.GraphError, match="unknown model kind"):
        gt.inspect(model, kind="regressor")


def test_config_json_declares_the_kind_and_the_output(tmp_path):
    pooled = [helper.make_node("Add", ["a", "f"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["y"])]
    folder = tmp_path / "embedder"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(_graph(pooled, ["N", 8]).SerializeToString())
    assert Model(folder).kind == "embedding"
    (folder / "config.json").write_text(json.dumps({"kind": "classifier"}))
    assert Model(folder).kind == "classifier"
    (folder / "config.json").write_text(json.dumps({"kind": "segmenter"}))
    with pytest.raises(BadRequest, match="a segmenter has an output of rank 4"):
        Model(folder)
    (folder / "config.json").write_text(json.dumps({"output": "nope"}))
    with pytest.raises(BadRequest, match="no tensor 'nope'"):
        Model(folder)
