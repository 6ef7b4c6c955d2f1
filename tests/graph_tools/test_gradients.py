"""add_gradients(): one run gives logits, activations and d(score)/d(activation); checked by finite differences."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from camserve import graph_tools as gt
from zoo import ZOO

RNG = np.random.default_rng(0)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _tiny():
    return gt.make_batch_dynamic(onnx.load(str(ZOO["tinynet_batch1"].onnx_path())))


def _finite_difference(model, layer, value, weights, points, eps=3e-3):
    """Central differences of sum(weights * logits) w.r.t. `value` of tensor `layer`, at `points`."""
    inferred = onnx.shape_inference.infer_shapes(model)
    tail = onnx.utils.Extractor(inferred).extract_model([layer], [gt.inspect(model).logits])
    session = _session(tail)
    score = lambda v: float((session.run(None, {layer: v.astype(np.float32)})[0] * weights).sum())  # noqa: E731
    out = []
    for idx in points:
        up, down = value.astype(np.float64), value.astype(np.float64)
        up[idx] += eps
        down[idx] -= eps
        out.append((score(up) - score(down)) / (2 * eps))
    return np.array(out)


def _check(analytic, numeric):
    scale = np.abs(numeric).max()
    close = np.abs(analytic - numeric) <= 1e-2 * scale + 2e-5
    # a handful of points may straddle a ReLU/MaxPool kink within +-eps; a wrong rule fails everywhere
    assert close.mean() >= 0.9 and np.corrcoef(analytic, numeric)[0, 1] > 0.999, (close.mean(), scale)


@pytest.mark.parametrize("layer_index", [2, 5, -1])
def test_activation_gradients_match_finite_differences(layer_index):
    model = _tiny()
    layer = gt.inspect(model).layers[layer_index].name
    graph = gt.add_gradients(model, [layer])
    x = RNG.normal(size=(2, 3, 32, 32)).astype(np.float32)
    weights = np.zeros((2, 10), np.float32)
    weights[0, 3], weights[1, 7], weights[1, 2] = 1.0, 0.6, -0.4
    logits, acts, grads = _session(graph).run(None, {"input": x, gt.CLASS_WEIGHTS: weights})
    points = [tuple(RNG.integers(0, d) for d in acts.shape) for _ in range(60)]
    numeric = _finite_difference(model, layer, acts, weights, points)
    _check(np.array([grads[p] for p in points]), numeric)


def test_input_gradient_and_many_layers_in_one_run():
    model = _tiny()
    layers = [layer.name for layer in gt.inspect(model).layers]
    graph = gt.add_gradients(model, layers, input_gradient=True)
    names = [o.name for o in graph.graph.output]
    assert names[0] == gt.LOGITS and names[1:1 + len(layers)] == layers
    assert names[-1] == gt.GRAD_PREFIX + "input"
    x = RNG.normal(size=(1, 3, 32, 32)).astype(np.float32)
    weights = np.zeros((1, 10), np.float32)
    weights[0, 4] = 1.0
    out = dict(zip(names, _session(graph).run(None, {"input": x, gt.CLASS_WEIGHTS: weights})))
    points = [tuple(RNG.integers(0, d) for d in x.shape) for _ in range(60)]
    numeric = _finite_difference(model, "input", x, weights, points)
    _check(np.array([out[gt.GRAD_PREFIX + "input"][p] for p in points]), numeric)


def test_zero_class_weights_mean_top1_and_weights_are_linear():
    model = _tiny()
    layer = gt.inspect(model).default_layer
    session = _session(gt.add_gradients(model, [layer]))
    x = RNG.normal(size=(3, 3, 32, 32)).astype(np.float32)
    zero = np.zeros((3, 10), np.float32)
    logits, _, g_top = session.run(None, {"input": x, gt.CLASS_WEIGHTS: zero})
    onehot = np.eye(10, dtype=np.float32)[logits.argmax(1)]
    np.testing.assert_array_equal(session.run(None, {"input": x, gt.CLASS_WEIGHTS: onehot})[2], g_top)
    a, b = np.eye(10, dtype=np.float32)[[1, 1, 1]], np.eye(10, dtype=np.float32)[[5, 5, 5]]
    ga, gb, gmix = (session.run(None, {"input": x, gt.CLASS_WEIGHTS: w})[2] for w in (a, b, 0.3 * a - 2 * b))
    np.testing.assert_allclose(gmix, 0.3 * ga - 2 * gb, rtol=1e-4, atol=1e-6)


def test_unknown_tensor_and_empty_request_are_refused():
    model = _tiny()
    with pytest.raises(gt.GraphError, match="not produced"):
        gt.add_gradients(model, ["missing"])
    with pytest.raises(gt.GraphError, match="nothing to differentiate"):
        gt.add_gradients(model, [])


def test_bias_terms_fold_batchnorm():
    model = _tiny()
    terms = dict(gt.bias_terms(model))
    torch_model = ZOO["tinynet_batch1"].torch_model()
    bn = torch_model.features[1]
    conv = torch_model.features[0]
    expected = (conv.bias - bn.running_mean) * bn.weight / (bn.running_var + bn.eps).sqrt() + bn.bias
    first = gt.inspect(model).layers[0].name
    np.testing.assert_allclose(terms[first], expected.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_user_tensors_named_like_ours_work_and_reserved_names_and_dead_tensors_are_refused():
    """An exported model's `logits` and `scores` tensors are its own: the rewrite's names live under camserve::."""
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    f = numpy_helper.from_array(np.ones((5, 4), np.float32), "f")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["side"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["flat"]),
             helper.make_node("Gemm", ["flat", "f"], ["logits"], transB=1),
             helper.make_node("Mul", ["logits", "logits"], ["scores"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5]),
                               helper.make_tensor_value_info("side", TensorProto.FLOAT, None)], [w, f])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    import onnxruntime as ort
    rewritten = gt.add_gradients(model, ["c"])
    session = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 8, 8), np.float32)
    scores, acts, grads = session.run([gt.LOGITS, "c", gt.GRAD_PREFIX + "c"],
                                      {"x": x, gt.CLASS_WEIGHTS: np.eye(5, dtype=np.float32)[:2]})
    assert scores.shape == (2, 5) and grads.shape == acts.shape == (2, 4, 6, 6)
    with pytest.raises(gt.GraphError, match="does not feed the logits"):
        gt.add_gradients(model, ["side"])
    taken = helper.make_model(helper.make_graph(
        nodes[:-1] + [helper.make_node("Mul", ["logits", "logits"], [gt.LOGITS])], "g", list(graph.input),
        [helper.make_tensor_value_info(gt.LOGITS, TensorProto.FLOAT, ["N", 5])], [w, f]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(gt.GraphError, match="reserve"):
        gt.add_gradients(taken, ["c"], info=gt.inspect(taken, output="logits"))
