"""Parity of KPCA-CAM, FEM and Finer-CAM with pytorch-grad-cam 1.5.7 on the same weights and layer: max abs
difference <= 1e-3 on the final maps, as test_pytorch_grad_cam.py compares the gradient family.

Three architectures: a residual net (resnet18, random weights), inverted residuals with ReLU6 (MobileNetV2,
ImageNet weights) and dense concatenation (densenet121, random weights). Not the random EfficientNet-B0: its
last feature map is ~1e-13, so the peer's KPCA maps are exactly 0 and its Finer-CAM maps peak at 0.13 and 0.25.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from pytorch_grad_cam import FEM, KPCA_CAM, FinerCAM
from test_pytorch_grad_cam import TOL, peer

from zoo import ZOO, layer_for_module

MODELS = ["resnet18", "real_mobilenet_v2", "densenet121"]


def finer(**call):
    """FinerCAM with its call arguments (alpha, comparison_categories, target_idx) bound, for `peer`."""
    class Bound(FinerCAM):
        def __call__(self, input_tensor, targets=None):
            return self.forward(input_tensor, targets, **call)
    return Bound


PEERS = {"kpcacam": KPCA_CAM, "fem": FEM, "finercam": FinerCAM}


def compare(name, method, cls, get_explainer, get_torch, get_inputs, module=None, **options):
    zoo, model, x = ZOO[name], get_torch(name), get_inputs(name)
    layer = zoo.onnx_layer() if module is None else layer_for_module(onnx.load(str(zoo.onnx_path())), module)
    ours = get_explainer(name).explain(x, method, layers=[layer], **options)
    ref = peer(cls, model, [model.get_submodule(module or zoo.target)], x)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert (ref.reshape(len(ref), -1).max(axis=1) > 0.99).all(), "the peer's map is degenerate: a vacuous test"
    return float(np.abs(ours - ref).max())


@pytest.mark.parametrize("method", PEERS)
@pytest.mark.parametrize("name", MODELS)
def test_new_method_equals_pytorch_grad_cam(name, method, get_explainer, get_torch, get_inputs):
    error = compare(name, method, PEERS[method], get_explainer, get_torch, get_inputs)
    assert error <= TOL, error


@pytest.mark.parametrize("kernel, gamma", [("rbf", None), ("poly", 1e-3), ("linear", None), ("cosine", None)])
def test_kpcacam_kernels_equal_the_peer(kernel, gamma, get_explainer, get_torch, get_inputs):
    cls = functools.partial(KPCA_CAM, kernel=kernel, gamma=gamma)
    error = compare("real_mobilenet_v2", "kpcacam", cls, get_explainer, get_torch, get_inputs, kernel=kernel,
                    gamma=gamma)
    assert error <= TOL, error


def test_kpcacam_over_200_positions_equals_the_peers_arpack(get_explainer, get_torch, get_inputs):
    """28 x 28 = 784 positions: scikit-learn switches to ARPACK above 200 samples; one dense eigh stands for it."""
    error = compare("resnet18", "kpcacam", KPCA_CAM, get_explainer, get_torch, get_inputs, module="layer2.1")
    assert error <= TOL, error


def test_fem_k_equals_the_peer(get_explainer, get_torch, get_inputs):
    cls = functools.partial(FEM, k=1)
    assert compare("densenet121", "fem", cls, get_explainer, get_torch, get_inputs, k=1.0) <= TOL


@pytest.mark.parametrize("call, options", [
    ({"alpha": 0.6, "comparison_categories": [1, 2]}, {"alpha": 0.6, "comparisons": 2}),
    ({"target_idx": 281}, {"targets": 281}),
], ids=["alpha-comparisons", "target"])
def test_finercam_options_and_target_equal_the_peer(call, options, get_explainer, get_torch, get_inputs):
    """alpha, the number of compared classes (the peer's comparison_categories [1..n]) and a given target
    class (the peer's target_idx)."""
    error = compare("real_mobilenet_v2", "finercam", finer(**call), get_explainer, get_torch, get_inputs, **options)
    assert error <= TOL, error


def test_finercam_reports_its_target_and_batches(get_explainer, get_inputs):
    explainer, x = get_explainer("real_mobilenet_v2"), get_inputs("real_mobilenet_v2")
    full = explainer.explain_full(x, "finercam")
    assert list(full.targets) == list(explainer.predict(x).argmax(1))
    singles = np.concatenate([explainer.explain(x[i:i + 1], "finercam") for i in range(len(x))])
    assert np.abs(full.maps - singles).max() <= 1e-4
