"""The house on hand-built graphs and evidence, with numpy, onnx and camserve only (no torch): typed runs, one
Model, the method registry, errors, and BLAS threads limited only while a method's math runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_info

from camserve.service import BadRequest, Explainer
from camserve.service.methods import METHODS
from camserve.service.methods.base import method
from camserve.service.model import Model
from camserve.service.numeric import minmax
from camserve.service.runs import Activations, ChannelTail, Forward, Gradients, Probed, WithGradients

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
W_CONV = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
B_CONV = RNG.normal(size=4).astype(np.float32)
W_FC = RNG.normal(size=(5, 4)).astype(np.float32)
B_FC = RNG.normal(size=5).astype(np.float32)


def tiny_graph() -> onnx.ModelProto:
    """x (N, 3, 8, 8) -> Conv 3x3 pad 1 -> Relu ("feat") -> GlobalAveragePool -> Flatten -> Gemm -> 5 logits."""
    init = [numpy_helper.from_array(a, n) for a, n in ((W_CONV, "w"), (B_CONV, "b"), (W_FC, "fw"), (B_FC, "fb"))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["conv"], ["feat"]),
             helper.make_node("GlobalAveragePool", ["feat"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], init)
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 13)])


def features(x: np.ndarray) -> np.ndarray:
    """The Relu output, from the convolution's formula."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((len(x), 4, 8, 8), np.float64)
    for i in range(8):
        for j in range(8):
            out[:, :, i, j] = np.einsum("nchw,kchw->nk", padded[:, :, i:i + 3, j:j + 3], W_CONV)
    return np.maximum(out + B_CONV[None, :, None, None], 0)


@pytest.fixture(scope="module")
def explainer():
    return Explainer(tiny_graph(), threads=1)


@pytest.fixture
def x():
    return np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)


def test_gradcam_and_cam_of_a_gap_fc_head_follow_their_formulas(explainer, x):
    """Behind GAP + FC, dS/dA_k = W[c, k] / (h w) everywhere: Grad-CAM's map is sum_k W[c, k] A_k / (h w),
    and CAM's is sum_k W[c, k] A_k."""
    acts = features(x)
    logits = acts.mean(axis=(2, 3)) @ W_FC.T + B_FC
    target = logits.argmax(1)
    raw = np.einsum("nk,nkhw->nhw", W_FC[target], acts)
    for name, scale in (("gradcam", 1 / 64), ("cam", 1.0)):
        result = explainer.explain_full(x, name)
        np.testing.assert_array_equal(result.targets, target)
        np.testing.assert_allclose(result.layer_maps["feat"], raw * scale, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.maps, minmax(np.maximum(raw, 0)), atol=1e-5)


def test_a_model_is_built_once_from_a_proto_bytes_or_a_file(tmp_path, x):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_graph(), path)
    maps = [Explainer(source, threads=1).explain(x) for source in (tiny_graph(), tiny_graph().SerializeToString(),
                                                                    path, Model(path))]
    for other in maps[1:]:
        np.testing.assert_array_equal(other, maps[0])


def test_a_model_folder_brings_its_labels_preprocessing_and_default_layer(tmp_path, x):
    folder = tmp_path / "tiny"
    (folder / "3").mkdir(parents=True)
    onnx.save(tiny_graph(), folder / "3" / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"labels": list("abcde"), "default_layer": "conv",
                                                     "preprocessing": {"resize": 8, "crop": 8}}))
    explainer = Explainer(str(folder), threads=1)
    assert explainer.model.name == "tiny" and explainer.model.label(2) == "c"
    assert explainer.model.preprocessing.crop == 8
    assert explainer.explain_full(x, "gradcam").layers == ["conv"]          # the config's layer, not inspect's
    assert explainer.explain_full(x, "gradcam", layers=["feat"]).layers == ["feat"]


def test_the_bundled_model_folder_explains_without_any_other_argument():
    explainer = Explainer(ROOT / "models" / "mobilenet_v2", threads=1)
    assert len(explainer.model.labels) == 1000 and explainer.model.label(285) == "Egyptian cat"
    assert explainer.model.default_layer == explainer.info.default_layer   # config.json leaves it to inspection


def test_a_new_method_is_one_registration_over_a_run_kind(explainer, x):
    """A method added from outside the package: a function and the run kind it reads; the Explainer, the
    batcher and the servicer need no change to serve it."""
    @method("test-sum-of-gradients", run=Gradients(), options={"power": 1}, cost="1 forward + 1 backward")
    def _sum(ev: WithGradients, power: int) -> np.ndarray:
        """Test: channel sums of grad x act."""
        return ((ev.grads * ev.acts) ** power).sum(axis=1)
    try:
        spec = METHODS["test-sum-of-gradients"]
        assert spec.batchable and spec.gradients and spec.cost_class == "forward"
        np.testing.assert_allclose(explainer.explain(x, "test-sum-of-gradients"), explainer.explain(x, "hirescam"),
                                   atol=1e-6)
    finally:
        del METHODS["test-sum-of-gradients"]


def test_a_new_perturbation_method_is_one_registration_too(explainer, x):
    """Channel occlusion through the tail run kind: one file's worth of code, no change elsewhere; on a ReLU
    layer it is Ablation-CAM (whose fill is 0 where the layer's minimum is 0)."""
    @method("test-occlusion", run=ChannelTail(), cost="1 forward + K tail runs")
    def _occlusion(ev: Probed) -> np.ndarray:
        """Test: the relative score drop when a channel is zeroed."""
        k = ev.acts.shape[1]
        score = (ev.logits * ev.class_weights).sum(axis=1, keepdims=True)
        dropped = ev.probe.channels((1.0 - np.eye(k, dtype=np.float32))[None])
        return np.einsum("nk,nkhw->nhw", (score - dropped) / score, ev.acts)
    try:
        assert METHODS["test-occlusion"].cost_class == "few_forwards"
        np.testing.assert_allclose(explainer.explain(x, "test-occlusion"), explainer.explain(x, "ablationcam"),
                                   atol=1e-6)
    finally:
        del METHODS["test-occlusion"]


def test_a_bug_in_method_math_is_not_reported_as_bad_input(explainer, x):
    """A ValueError from a method's numpy code is the server's fault (INTERNAL), not the caller's."""
    @method("test-broken", run=Forward(), cost="1 forward")
    def _broken(ev: Activations) -> np.ndarray:
        """Test: a method whose math fails."""
        return np.reshape(ev.acts, (7, 7))
    try:
        with pytest.raises(ValueError) as caught:
            explainer.explain(x, "test-broken")
        assert not isinstance(caught.value, BadRequest)
    finally:
        del METHODS["test-broken"]


def test_option_errors_are_bad_requests_on_options(explainer, x):
    for options in ({"nope": 1}, {"seed": "zero"}):
        with pytest.raises(BadRequest) as caught:
            explainer.explain(x, "randomcam", **options)
        assert caught.value.field == "options"
    with pytest.raises(BadRequest, match="perturbation_budget"):
        Explainer(tiny_graph(), perturbation_budget=0)


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_is_held_to_one_thread_only_while_a_methods_math_runs(x):
    before = _blas_threads()
    assert before, "numpy links no BLAS threadpoolctl can see"
    seen = []

    @method("test-blas", run=Forward(), cost="1 forward")
    def _record(ev: Activations) -> np.ndarray:
        """Test: records BLAS threads."""
        seen.append(_blas_threads())
        return ev.acts.sum(axis=1)
    try:
        explainer = Explainer(tiny_graph(), threads=1)
        assert _blas_threads() == before          # building an Explainer changes nothing process-wide
        explainer.explain(x, "test-blas")
    finally:
        del METHODS["test-blas"]
    assert seen and all(n == 1 for n in seen[0])
    assert _blas_threads() == before


def test_importing_camserve_adds_one_name_and_patches_nothing():
    script = ("import sys, camserve, camserve.service, camserve.graph_tools, onnx_ad.rules as r;"
              "from camserve import Explainer, Model, Client, __version__;"
              "print(__version__, sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'graph_tools')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/")
    version, names = out.stdout.split(" ", 1)
    assert version.count(".") == 2 and names.strip() == "[]"


def test_the_runs_never_see_the_explainer():
    """Arrows go down: the run kinds import the model and the runtime, never the Explainer or an adapter."""
    for folder in ("runs", "methods"):
        for path in (ROOT / "service" / folder).glob("*.py"):
            text = path.read_text()
            for upward in ("explainer", "server", "cli", "client", "evaluation", "study"):
                assert f"from ..{upward}" not in text and f"camserve.service.{upward}" not in text, (path, upward)


def test_importing_camserve_leaves_the_bundled_repository_as_it_is():
    """models/ is package data, not a Python package: importing never writes a __pycache__ there, which the
    server would list as a model."""
    subprocess.run([sys.executable, "-c", "import camserve.service.cli"], check=True, cwd="/")
    assert sorted(p.name for p in (ROOT / "models").iterdir()) == ["mobilenet_v2"]
