"""Mask-injection graphs against single copies made by editing the plain model (one Mul after the layer)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from camserve import graph_tools as gt
from camserve.graph_tools import masks as gm
from zoo import ZOO, NHWCNet

RNG = np.random.default_rng(0)
RESNET = "resnet18"
POOLED = "/layer4/layer4.1/relu_1/Relu_output_0"   # feeds GlobalAveragePool only
INSIDE = "/layer4/layer4.1/relu/Relu_output_0"     # inside the last block: the skip tensor is fed too


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(model, feeds):
    session = _session(model)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _prepared(name):
    model = gt.make_batch_dynamic(gt.fold_constants(gt.load(ZOO[name].onnx_path())))
    return model, gt.inspect(model)


def _scaled_at(model, tensor, factor):
    """The plain model with `tensor` multiplied by a constant: one perturbed copy, made independently."""
    edited = gt.copy(model)
    graph = edited.graph
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == tensor:
                node.input[k] = tensor + "::scaled"
    graph.initializer.append(numpy_helper.from_array(factor.astype(np.float32), "factor"))
    graph.node.append(helper.make_node("Mul", [tensor, "factor"], [tensor + "::scaled"]))
    gt.graph.toposort(graph)
    return edited


@pytest.fixture(scope="module")
def resnet():
    model, info = _prepared(RESNET)
    x = RNG.normal(size=(2, 3, 224, 224)).astype(np.float32)
    return model, info, x


def _head(model, info, layer, x):
    fed = gm.tail_inputs(model, layer, info)
    out = _run(gt.expose(model, [info.logits, *fed]), {info.input_name: x})
    return fed, out


@pytest.mark.parametrize("layer", [POOLED, INSIDE])
def test_channel_tail_equals_the_edited_model(resnet, layer):
    model, info, x = resnet
    fed, out = _head(model, info, layer, x)
    assert gm.pooled_by(model, layer) is not None if layer == POOLED else len(fed) == 2
    k = out[layer].shape[1]
    keep = (RNG.random((2, 3, k)) > 0.3).astype(np.float32)              # per image, 3 copies each
    rows = np.zeros((2, info.num_classes), np.float32)
    rows[0, 7], rows[1, 100], rows[1, 3] = 1.0, 0.5, 0.5
    feeds = {**{name: out[name] for name in fed}, gm.MASKS: keep, gm.FILL: np.zeros((1, 1, 1), np.float32),
             gt.CLASS_WEIGHTS: rows}
    full = _run(gm.channel_tail(model, layer, True, info), feeds)
    fast = _run(gm.channel_tail(model, layer, False, info), feeds)
    for n in range(2):
        for m in range(3):
            edited = _scaled_at(model, layer, keep[n, m][None, :, None, None])
            want = _run(edited, {info.input_name: x[n:n + 1]})[info.logits][0]
            np.testing.assert_allclose(full[gm.LOGITS][n, m], want, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(fast[gm.SCORES][n, m], rows[n] @ want, rtol=1e-4, atol=1e-4)


def test_the_score_only_tail_drops_the_classifier_gemm(resnet):
    model, info, _ = resnet
    ops = [node.op_type for node in gm.channel_tail(model, POOLED, False, info).graph.node]
    assert "Gemm" not in ops and "GlobalAveragePool" in ops
    assert "Gemm" in [node.op_type for node in gm.channel_tail(model, POOLED, True, info).graph.node]


def test_channel_fill_replaces_ablated_channels_exactly(resnet):
    """A*m + fill*(1-m): a fill of -1e7 must not round the kept activations away (A - fill would)."""
    model, info, x = resnet
    fed, out = _head(model, info, INSIDE, x[:1])
    k = out[INSIDE].shape[1]
    keep = np.ones((1, 1, k), np.float32)
    feeds = {**{name: out[name] for name in fed}, gm.MASKS: keep, gm.FILL: np.full((1, 1, 1), -1e7, np.float32),
             gt.CLASS_WEIGHTS: np.eye(1, info.num_classes, dtype=np.float32)}
    got = _run(gm.channel_tail(model, INSIDE, True, info), feeds)[gm.LOGITS][0, 0]
    np.testing.assert_allclose(got, out[info.logits][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [POOLED, INSIDE])
def test_plain_mosaic_copies_equal_single_position_masks(resnet, layer):
    model, info, x = resnet
    fed, out = _head(model, info, layer, x)
    h, w = out[layer].shape[2:]
    positions = np.array([0, 9, h * w - 1], np.int64)
    feeds = {**{name: out[name] for name in fed}, gm.POSITIONS: positions,
             gm.SPREAD: np.eye(h * w, dtype=np.float32)[positions], gt.CLASS_WEIGHTS: np.zeros((2, 1000), np.float32)}
    got = _run(gm.mosaic_tail(model, layer, True, info), feeds)[gm.LOGITS]
    for m, p in enumerate(positions):
        only = np.zeros((1, 1, h * w), np.float32)
        only[0, 0, p] = 1.0
        want = _run(_scaled_at(model, layer, only.reshape(1, 1, h, w)), {info.input_name: x})[info.logits]
        np.testing.assert_allclose(got[:, m], want, rtol=1e-4, atol=1e-4)


def test_pooled_mosaic_spreads_by_the_mean_of_its_weight_row(resnet):
    """Through a global average pool, a copy holding F[:, p] * s[q] everywhere pools to F[:, p] * mean(s)."""
    model, info, x = resnet
    fed, out = _head(model, info, POOLED, x[:1])
    hw = np.prod(out[POOLED].shape[2:])
    spread = RNG.random((2, hw)).astype(np.float32)
    feeds = {POOLED: out[POOLED], gm.POSITIONS: np.array([4, 20]), gm.SPREAD: spread,
             gt.CLASS_WEIGHTS: np.zeros((1, 1000), np.float32)}
    got = _run(gm.mosaic_tail(model, POOLED, True, info), feeds)[gm.LOGITS][0]
    weights, bias = (gt.graph.constant_value(model.graph, name) for name in ("fc.weight", "fc.bias"))
    flat = out[POOLED][0].reshape(len(weights[0]), -1)
    for m, p in enumerate([4, 20]):
        np.testing.assert_allclose(got[m], weights @ (flat[:, p] * spread[m].mean()) + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "tinynet_batch1", "resnet18_opset11"])
def test_masked_inputs_equal_masked_images_through_the_plain_model(name):
    model, info = _prepared(name)
    size = ZOO[name].size
    x = RNG.normal(size=(2, 3, size, size)).astype(np.float32)
    maps = RNG.random((1, 3, 4, 5)).astype(np.float32)
    rows, cols = RNG.random((size, 4)).astype(np.float32), RNG.random((5, size)).astype(np.float32)
    baseline = RNG.normal(size=(2, 3, size, size)).astype(np.float32)
    noise = RNG.normal(size=(2, 3, size, size)).astype(np.float32)
    scale = np.float32([0.5, 1.0, 2.0]).reshape(1, 3, 1, 1)
    feeds = {info.input_name: x, gm.MAPS: maps, gm.ROWS: rows, gm.COLS: cols, gm.EPS: np.array(1e-8, np.float32),
             gm.SCALE: scale, gm.NOISE: noise, gm.BASELINE: baseline,
             gt.CLASS_WEIGHTS: np.eye(2, info.num_classes, dtype=np.float32)}
    got = _run(gm.masked_inputs(model, True, True, True, info), feeds)
    up = rows @ maps @ cols
    up = (up - up.min((2, 3), keepdims=True)) / (up.max((2, 3), keepdims=True) - up.min((2, 3), keepdims=True) + 1e-8)
    m = (up * scale + noise)[:, :, None]
    images = (x[:, None] * m + baseline[:, None] * (1 - m)).reshape(-1, 3, size, size)
    plain = _session(model)
    want = np.concatenate([plain.run(None, {info.input_name: images[i:i + 1]})[0] for i in range(len(images))])
    np.testing.assert_allclose(got[gm.LOGITS], want.reshape(2, 3, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[gm.SCORES], want.reshape(2, 3, -1)[:, :, :2].diagonal(axis1=0, axis2=2).T,
                               rtol=1e-4, atol=1e-4)


def test_masked_inputs_follow_a_channels_last_model(tmp_path):
    model = gt.make_batch_dynamic(gt.load(NHWCNet().export(tmp_path / "nhwc.onnx")))
    info = gt.inspect(model)
    x = RNG.normal(size=(1, 16, 16, 3)).astype(np.float32)
    maps = RNG.random((1, 2, 16, 16)).astype(np.float32)
    eye = np.eye(16, dtype=np.float32)
    feeds = {info.input_name: x, gm.MAPS: maps, gm.ROWS: eye, gm.COLS: eye, gm.EPS: np.array(0, np.float32),
             gm.SCALE: np.ones((1, 1, 1, 1), np.float32), gm.NOISE: np.zeros((1, 1, 1, 1), np.float32),
             gt.CLASS_WEIGHTS: np.ones((1, 5), np.float32)}
    got = _run(gm.masked_inputs(model, False, True, False, info), feeds)[gm.LOGITS][0]
    plain = _session(model)
    for m in range(2):
        want = plain.run(None, {info.input_name: x * maps[0, m][None, :, :, None]})[0][0]
        np.testing.assert_allclose(got[m], want, rtol=1e-5, atol=1e-5)


def test_a_model_whose_logits_are_named_logits_keeps_working(tmp_path):
    model, info = _prepared("tinynet_batch1")
    gt.graph.rename(model.graph, info.logits, "logits")
    renamed = gt.inspect(model)
    assert renamed.logits == "logits"
    feeds = {renamed.input_name: RNG.normal(size=(1, 3, 32, 32)).astype(np.float32),
             gm.MAPS: np.ones((1, 1, 32, 32), np.float32), gm.ROWS: np.eye(32, dtype=np.float32),
             gm.COLS: np.eye(32, dtype=np.float32), gm.EPS: np.array(0, np.float32),
             gm.SCALE: np.ones((1, 1, 1, 1), np.float32), gm.NOISE: np.zeros((1, 1, 1, 1), np.float32),
             gt.CLASS_WEIGHTS: np.eye(1, 10, dtype=np.float32)}
    got = _run(gm.masked_inputs(model, False, True, False, renamed), feeds)[gm.LOGITS][0, 0]
    np.testing.assert_allclose(got, _run(model, {renamed.input_name: feeds[renamed.input_name]})["logits"][0],
                               rtol=1e-5, atol=1e-5)


def test_reserved_names_and_dead_layers_are_refused():
    model, info = _prepared("tinynet_batch1")
    clash = gt.copy(model)
    gt.graph.rename(clash.graph, info.layers[0].name, gm.MASKS)
    with pytest.raises(gt.GraphError, match="reserve"):
        gm.masked_inputs(clash, True, info=gt.inspect(clash))
    weight = gt.copy(model)   # a weight named like an input of ours would be silently overridden by it
    gt.graph.rename(weight.graph, weight.graph.initializer[0].name, gm.SCALE)
    weight.graph.initializer[0].name = gm.SCALE
    with pytest.raises(gt.GraphError, match="reserve"):
        gm.masked_inputs(weight, True, info=info)
    with pytest.raises(gt.GraphError, match="not produced"):
        gm.channel_tail(model, "no-such-tensor", info=info)
    dead = gt.copy(model)
    dead.graph.node.append(helper.make_node("Relu", [info.layers[0].name], ["dead"]))
    with pytest.raises(gt.GraphError, match="does not feed"):
        gm.tail_inputs(dead, "dead", gt.inspect(dead))


def _batch_reshape_model(index: int, regrouped: bool = False):
    """x -> Relu -> Reshape(., [Shape(x)[index], -1]): a flatten whose target comes from before the layer
    (regrouped: the Shape reads x reshaped to (N * 12, 4), whose axis 0 is no longer the batch)."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    read = "x"
    before = []
    if regrouped:
        read = "rows"
        before = [helper.make_node("Reshape", ["x", "four"], ["rows"])]
    nodes = before + [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Shape", [read], ["s"]),
             helper.make_node("Gather", ["s", "index"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["a", "target"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.array([index], np.int64), "index"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([-1, 4], np.int64), "four"),
             numpy_helper.from_array(RNG.normal(size=(48, 5)).astype(np.float32), "w")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    info = gt.ModelInfo("x", ("N", 3, 4, 4), "NCHW", "y", 5, False, (gt.Layer("a", ("N", 3, 4, 4), "Relu"),), "a")
    return model, info


def test_a_tail_reading_the_batch_size_from_before_the_layer_recomputes_it():
    """Reshape(a, [Shape(x)[0], -1]) after the layer (EfficientNet-Lite's flatten): the tail takes its
    batch from the masked copies, images x masks, and equals the edited model."""
    model, info = _batch_reshape_model(0)
    assert gm.tail_inputs(model, "a", info) == ["a"]
    x = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    keep = (RNG.random((2, 4, 3)) > 0.4).astype(np.float32)
    rows = np.eye(5, dtype=np.float32)[[1, 3]]
    acts = np.maximum(x, 0)
    out = _run(gm.channel_tail(model, "a", True, info), {"a": acts, gm.MASKS: keep, gm.FILL: np.zeros((1, 1, 1),
               np.float32), gt.CLASS_WEIGHTS: rows})
    for n in range(2):
        for m in range(4):
            want = _run(_scaled_at(model, "a", keep[n, m][None, :, None, None]), {"x": x[n:n + 1]})["y"][0]
            np.testing.assert_allclose(out[gm.LOGITS][n, m], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index, regrouped", [(1, False), (0, True)])
def test_a_tail_reading_another_dimension_from_before_the_layer_is_refused(index, regrouped):
    """The channel count, or axis 0 of a tensor whose axis 0 is no longer the batch, cannot follow the copies."""
    model, info = _batch_reshape_model(index, regrouped)
    with pytest.raises(gt.GraphError, match="shape"):
        gm.tail_inputs(model, "a", info)


def test_efficientnet_lite_channel_tail_equals_the_edited_model():
    model, info = _prepared("real_efficientnet_lite0")
    layer = info.default_layer
    x = RNG.normal(size=(1, 3, 224, 224)).astype(np.float32)
    fed, out = _head(model, info, layer, x)
    keep = (RNG.random((1, 2, out[layer].shape[1])) > 0.5).astype(np.float32)
    feeds = {**{name: out[name] for name in fed}, gm.MASKS: keep, gm.FILL: np.zeros((1, 1, 1), np.float32),
             gt.CLASS_WEIGHTS: np.eye(info.num_classes, dtype=np.float32)[[285]]}
    full = _run(gm.channel_tail(model, layer, True, info), feeds)
    for m in range(2):
        want = _run(_scaled_at(model, layer, keep[0, m][None, :, None, None]), {info.input_name: x})[info.logits][0]
        np.testing.assert_allclose(full[gm.LOGITS][0, m], want, rtol=1e-4, atol=1e-4)
