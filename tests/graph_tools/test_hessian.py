"""add_hessian(): d score / dA and (d2 score / dA2) A from one graph, checked against torch's double backward."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_ad import rules

from camserve import graph_tools as gt


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w1": rng.normal(size=(4, 3, 3, 3)) * 0.5, "w2": rng.normal(size=(6, 4, 3, 3)) * 0.5,
            "f": rng.normal(size=(5, 6))}


def _model() -> onnx.ModelProto:
    """Curved after both layers: Tanh -> a -> strided Conv (a ConvTranspose adjoint), Sigmoid -> b -> a sigmoid
    gate of b's mean (squeeze-excitation), MaxPool, average pool, Gemm. Symbolic batch."""
    weights = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in _weights().items()]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["c1"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["b"]),
             helper.make_node("GlobalAveragePool", ["b"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["gate"]),
             helper.make_node("Mul", ["b", "gate"], ["se"]),
             helper.make_node("MaxPool", ["se"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["flat"]),
             helper.make_node("Gemm", ["flat", "f"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "curved", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _torch(x: np.ndarray, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The same network in float64: each layer's gradient of rows . logits and its Hessian times the layer,
    as pytorch-grad-cam's ShapleyCAM takes them (autograd.grad(grads, A, grad_outputs=A))."""
    w = {k: torch.tensor(v, dtype=torch.float64) for k, v in _weights().items()}
    image = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    a = torch.tanh(torch.nn.functional.conv2d(image, w["w1"], padding=1))
    b = torch.sigmoid(torch.nn.functional.conv2d(a, w["w2"], stride=2, padding=1))
    se = b * torch.sigmoid(b.mean((2, 3), keepdim=True))
    logits = torch.nn.functional.max_pool2d(se, 2).mean((2, 3)) @ w["f"].T
    score = (logits * torch.tensor(rows, dtype=torch.float64)).sum()
    out = {"logits": logits}
    for name, value in (("a", a), ("b", b)):
        grad, = torch.autograd.grad(score, value, create_graph=True)
        hvp, = torch.autograd.grad(grad, value, grad_outputs=value, retain_graph=True)
        out[gt.GRAD_PREFIX + name], out[gt.HVP_PREFIX + name] = grad, hvp
    return out


def _run(model: onnx.ModelProto, x: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x, gt.CLASS_WEIGHTS: rows})))


X = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
ROWS = np.array([[1, 0, 0, -0.5, 0], [0, 0, 2, 0, 0]], np.float32)


@pytest.mark.parametrize("layers", [["a"], ["b"], ["a", "b"]], ids=["a", "b", "both"])
def test_hessian_times_the_activation_equals_torchs_double_backward(layers):
    """Alone or together, each layer's product follows every path to the logits (a's through b too) and
    never takes another layer's direction."""
    model = gt.add_hessian(_model(), layers)
    names = [o.name for o in model.graph.output]
    assert names == [gt.LOGITS, *layers, *[gt.GRAD_PREFIX + n for n in layers], *[gt.HVP_PREFIX + n for n in layers]]
    assert [i.name for i in model.graph.input] == ["x", gt.CLASS_WEIGHTS]
    got, expected = _run(model, X, ROWS), _torch(X, ROWS)
    for name in layers:
        for kind in (gt.GRAD_PREFIX, gt.HVP_PREFIX):
            want = expected[kind + name].detach().numpy()
            assert got[kind + name].shape == want.shape
            np.testing.assert_allclose(got[kind + name], want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    assert np.abs(expected[gt.HVP_PREFIX + layers[0]].detach().numpy()).max() > 1e-2  # curvature is really there
    assert _stock_forward_rules()


def test_a_zero_row_is_the_top1_class():
    rows = ROWS.copy()
    rows[1] = 0
    got = _run(gt.add_hessian(_model(), ["a"]), X, rows)
    top = np.eye(5, dtype=np.float32)[got[gt.LOGITS][1].argmax()]
    expected = _torch(X, np.stack([ROWS[0], top]))
    np.testing.assert_allclose(got[gt.HVP_PREFIX + "a"], expected[gt.HVP_PREFIX + "a"].detach().numpy(),
                               rtol=1e-3, atol=1e-6)


def test_a_piecewise_linear_tail_has_no_curvature():
    """After the layer ReLUs and a residual-like Add instead of the curved ops and the gate's product: zero."""
    model = _model()
    for node in model.graph.node:
        if node.op_type == "Sigmoid":
            node.op_type = "Relu"
        elif node.op_type == "Mul":
            node.op_type = "Add"
    got = _run(gt.add_hessian(model, ["a"]), X, ROWS)
    assert np.abs(got[gt.GRAD_PREFIX + "a"]).max() > 0
    assert not got[gt.HVP_PREFIX + "a"].any()


FORWARD = dict(rules.FORWARD)


def _stock_forward_rules() -> bool:
    """onnx-ad's forward-mode registry is still its own (add_hessian uses it as it comes)."""
    return all(fn.__module__.startswith("onnx_ad.") for fn in rules.FORWARD.values()) and FORWARD == rules.FORWARD


def test_refusals():
    with pytest.raises(gt.GraphError, match="nothing to differentiate"):
        gt.add_hessian(_model(), [])
    with pytest.raises(gt.GraphError):
        gt.add_hessian(_model(), ["not_a_tensor"])
