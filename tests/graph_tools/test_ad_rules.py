"""camserve's onnx-ad rules apply to its own add_gradients only: onnx-ad itself stays stock, in any thread."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnx_ad
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_ad import rules
from onnx_ad._build import Context

from camserve import graph_tools as gt
from camserve.graph_tools import ad_rules


def _stock() -> tuple:
    """What camserve used to overwrite process-wide: onnx-ad's registries, pool helpers and tape methods."""
    return (dict(rules.REVERSE), dict(rules.FORWARD), rules._ones_kernel, rules._window_spread,
            Context.unbroadcast, Context.child)


STOCK = _stock()


def _is_stock() -> bool:
    """The state now is the one this module started with, and that is onnx-ad's own code."""
    reverse, forward, ones_kernel, window_spread, unbroadcast, child = _stock()
    own = all(fn.__module__.startswith("onnx_ad.") for fn in [*reverse.values(), *forward.values()])
    return (_stock() == STOCK and own and ones_kernel.__module__ == window_spread.__module__ == "onnx_ad.rules"
            and unbroadcast.__module__ == child.__module__ == "onnx_ad._build")


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(8, 3, 3, 3)), "w2": rng.normal(size=(8, 8, 3, 3)) * 0.2,
            "b": rng.normal(size=(1, 8, 1, 1)), "f": rng.normal(size=(5, 8))}


def _pools_model() -> onnx.ModelProto:
    """Dynamic-batch Conv (strided: the ConvTranspose adjoint), AveragePool excluding its pads, Conv, LpPool
    and a broadcast bias: every rule of ours is on the path, and stock onnx-ad refuses the symbolic batch."""
    weights = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in _weights().items()]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("LpPool", ["c2"], ["lp"], kernel_shape=[2, 2], strides=[2, 2], p=2),
             helper.make_node("Add", ["lp", "b"], ["biased"]),
             helper.make_node("GlobalAveragePool", ["biased"], ["g"]), helper.make_node("Flatten", ["g"], ["flat"]),
             helper.make_node("Gemm", ["flat", "f"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _torch_input_gradient(x: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """d sum(class_weights * logits) / dx of the same network, by torch autograd."""
    w = {k: torch.tensor(v, dtype=torch.float64) for k, v in _weights().items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    r = torch.relu(torch.nn.functional.conv2d(xt, w["w"], stride=2, padding=1))
    a = torch.nn.functional.avg_pool2d(r, 3, stride=1, padding=1, count_include_pad=False)
    c2 = torch.nn.functional.conv2d(a, w["w2"], padding=1)
    lp = torch.nn.functional.lp_pool2d(c2, 2, 2, stride=2)
    logits = (lp + w["b"]).mean(dim=(2, 3)) @ w["f"].T
    (logits * torch.tensor(class_weights, dtype=torch.float64)).sum().backward()
    return xt.grad.numpy()


def _stock_refuses(model: onnx.ModelProto) -> str:
    with pytest.raises(onnx_ad.UnsupportedOperator) as refused:
        onnx_ad.reverse(model, inputs=["x"], outputs=["logits"], layout="onnx")
    return str(refused.value)


def test_importing_camserve_leaves_onnx_ad_stock():
    code = textwrap.dedent("""
        import contextvars
        import onnx_ad
        from onnx_ad import rules
        from onnx_ad._build import Context
        state = lambda: (dict(rules.REVERSE), dict(rules.FORWARD), rules._ones_kernel, rules._window_spread,
                         Context.unbroadcast, Context.child)
        before = state()
        import camserve.graph_tools
        from camserve.graph_tools import ad_rules, gradients
        assert state() == before, "importing camserve.graph_tools changed onnx-ad"
        assert rules.REVERSE["Conv"].__module__ == "onnx_ad.rules"
        assert rules._ones_kernel.__module__ == rules._window_spread.__module__ == "onnx_ad.rules"
        assert Context.unbroadcast.__module__ == "onnx_ad._build"
        hidden = [k for m in (ad_rules, gradients) for k, v in vars(m).items() if isinstance(v, contextvars.ContextVar)]
        assert not hidden, hidden
        print("stock")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "stock", run.stderr


def test_other_threads_get_stock_onnx_ad_while_camserve_differentiates(monkeypatch):
    model = _pools_model()
    seen = {}
    conv_rule = ad_rules._conv_reverse

    def spying(ctx, node, grads):
        # mid-differentiation: another thread's onnx-ad must see (and behave as) the stock package
        if not seen:
            seen["stock"] = _is_stock()
            with ThreadPoolExecutor(1) as other:
                seen["refusal"] = other.submit(_stock_refuses, model).result()
        return conv_rule(ctx, node, grads)

    monkeypatch.setattr(ad_rules, "_conv_reverse", spying)
    graph = gt.add_gradients(model, ["r"], input_gradient=True)
    assert seen, "camserve's Conv rule never ran"
    assert seen["stock"], "onnx-ad's globals were replaced during add_gradients"
    assert "needs" in seen["refusal"]
    assert _is_stock()
    assert "needs" in _stock_refuses(model)
    assert [o.name for o in graph.graph.output] == [gt.LOGITS, "r", gt.GRAD_PREFIX + "r", gt.GRAD_PREFIX + "x"]


def test_scoped_rules_give_the_true_gradient_through_every_override():
    x = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    class_weights = np.array([[1, 0, 0, -0.5, 0], [0, 0, 2, 0, 0]], np.float32)
    graph = gt.add_gradients(_pools_model(), [], input_gradient=True)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x, gt.CLASS_WEIGHTS: class_weights})
    got = dict(zip([o.name for o in session.get_outputs()], outputs))
    expected = _torch_input_gradient(x, class_weights)
    np.testing.assert_allclose(got[gt.GRAD_PREFIX + "x"], expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_concurrent_add_gradients_match_one_at_a_time():
    model = _pools_model()
    alone = gt.add_gradients(model, ["r", "a", "c2"], input_gradient=True).SerializeToString()
    start = threading.Barrier(4)

    def differentiate(_):
        start.wait()
        return gt.add_gradients(model, ["r", "a", "c2"], input_gradient=True).SerializeToString()

    with ThreadPoolExecutor(4) as pool:
        assert all(result == alone for result in pool.map(differentiate, range(4)))
    assert _is_stock()


def test_an_override_onnx_ad_no_longer_reads_fails_loudly():
    with pytest.raises(RuntimeError, match="no longer reads"):
        ad_rules._rebound(rules.REVERSE["LpPool"], _ones_kernel=ad_rules._ones_kernel)


def test_a_conv_inside_an_if_body_gets_camserves_rule_too():
    # a data-dependent If (onnx-ad inlines constant ones): its body is walked over the same private table
    w = np.random.default_rng(2).normal(size=(4, 3, 3, 3)).astype(np.float32)

    def branch(name):
        conv = helper.make_node("Conv", ["x", "w"], [name], strides=[2, 2], pads=[1, 1, 1, 1])
        return helper.make_graph([conv], name, [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)])

    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
             helper.make_node("ReduceSum", ["y"], ["logits"], keepdims=0)]
    constants = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0, np.float32), "zero")]
    graph = helper.make_graph(nodes, "if_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert "needs" in _stock_refuses(model)
    reversed_ = ad_rules.reverse(model, {}, inputs=["x"], outputs=["logits"])
    session = ort.InferenceSession(reversed_.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)
    got = session.run(None, {"x": x, "adj_logits": np.ones(1, np.float32)})[-1]
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.conv2d(xt, torch.tensor(w), stride=2, padding=1).sum().backward()
    np.testing.assert_allclose(got.reshape(x.shape), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert _is_stock()
