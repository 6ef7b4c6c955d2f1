"""Parity of ShapleyCAM with pytorch-grad-cam 1.5.7 on the same weights and layer: max abs difference <= 1e-3 on
the final maps, as test_pytorch_grad_cam.py compares the gradient family.

On resnet18, MobileNetV2 (ReLU6) and densenet121 the network after the layer is piecewise linear, so the peer's
Hessian-vector product is 0 and ShapleyCAM is Grad-CAM. Where it matters, a small net with SiLU, a sigmoid
squeeze-excitation, a residual add, a max-pool and a tanh GELU after the layer (exported here, with symbolic
height and width) has maps far from Grad-CAM's; ours must follow the peer's there, alone and over two layers.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from pytorch_grad_cam import GradCAM, ShapleyCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_pytorch_grad_cam import TOL, peer
from torch import nn

from camserve.service import Explainer
from zoo import ZOO, layer_for_module

MODELS = ["resnet18", "real_mobilenet_v2", "densenet121"]


@pytest.mark.parametrize("name", MODELS)
def test_shapleycam_equals_pytorch_grad_cam(name, get_explainer, get_torch, get_inputs):
    zoo, model, x = ZOO[name], get_torch(name), get_inputs(name)
    ours = get_explainer(name).explain(x, "shapleycam", layers=[zoo.onnx_layer()])
    ref = peer(ShapleyCAM, model, [zoo.module(model)], x)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert (ref.reshape(len(ref), -1).max(axis=1) > 0.99).all(), "the peer's map is degenerate: a vacuous test"
    assert float(np.abs(ours - ref).max()) <= TOL


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(x.mean((2, 3), keepdim=True)))))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.SiLU())


class SmoothNet(nn.Module):
    """Curved after its target layer `features`: SiLU, sigmoid SE, a residual add, a max-pool, a strided conv and a
    tanh GELU. Weights x2 so the curvature is well used: the peer's ShapleyCAM maps are then 0.06 from its
    Grad-CAM's."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(_block(3, 16, 2), _block(16, 32))
        self.tail1 = nn.Sequential(_block(32, 32), _SqueezeExcite(32))
        self.pool = nn.MaxPool2d(2)
        self.tail2 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(approximate="tanh"))
        self.fc = nn.Linear(64, 10)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(2.0)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        self.eval()

    def forward(self, x):
        a = self.features(x)
        return self.fc(self.tail2(self.pool(self.tail1(a) + a)).mean((2, 3)))


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    """The torch net, an Explainer on its ONNX export (symbolic N, H, W) and its ONNX layer names by module."""
    net = SmoothNet()
    path = tmp_path_factory.mktemp("smooth") / "smooth.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(path), dynamo=False, input_names=["input"],
                      output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "output": {0: "N"}})
    graph = onnx.load(str(path))
    layers = {module: layer_for_module(graph, module) for module in ("features", "tail1.0")}
    return net, Explainer(path, threads=2), layers


def _images(size: int) -> np.ndarray:
    return np.random.default_rng(size).normal(size=(2, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("size", [32, 48])
def test_shapleycam_where_the_hessian_matters_equals_the_peer_and_is_not_gradcam(smooth, size):
    net, explainer, layers = smooth
    x = _images(size)
    ours = explainer.explain(x, "shapleycam", layers=[layers["features"]])
    ref = peer(ShapleyCAM, net, [net.features], x)
    gradcam = peer(GradCAM, net, [net.features], x)
    assert ours.shape == ref.shape == (2, size, size)
    assert (ref.reshape(2, -1).max(axis=1) > 0.99).all()
    assert float(np.abs(ours - ref).max()) <= TOL
    # the second-order term is what is tested: Grad-CAM's maps are far from both
    assert float(np.abs(ref - gradcam).max()) > 30 * TOL
    assert float(np.abs(ours - explainer.explain(x, "gradcam", layers=[layers["features"]])).max()) > 30 * TOL


class _OneLayer(ShapleyCAM):
    """The peer's scaled map of its one layer, as it enters aggregate_multi_layers (not min-maxed again)."""

    def aggregate_multi_layers(self, cam_per_target_layer):
        return cam_per_target_layer


def test_shapleycam_over_two_layers_and_a_given_target_equals_the_peer(smooth):
    """Each layer's Hessian product alone, mean-fused, for the class given rather than the top-1.

    The peer cannot take two layers itself (its second autograd.grad runs over a graph the first one freed: it
    passes retain_graph=False), so the reference is its own aggregate_multi_layers over the maps it makes of
    each layer alone. A layer's product taken in every layer's direction at once (cross terms) would differ."""
    net, explainer, layers = smooth
    x = _images(32)
    targets = [ClassifierOutputTarget(3), ClassifierOutputTarget(7)]
    ours = explainer.explain(x, "shapleycam", layers=[layers["features"], layers["tail1.0"]], targets=[3, 7])
    alone = [peer(_OneLayer, net, [module], x, targets)[0] for module in (net.features, net.tail1[0])]
    ref = ShapleyCAM.aggregate_multi_layers(None, alone)
    assert ours.shape == ref.shape and float(np.abs(ours - ref).max()) <= TOL
    top1 = peer(ShapleyCAM, net, [net.features], x)
    assert float(np.abs(peer(ShapleyCAM, net, [net.features], x, targets) - top1).max()) > 30 * TOL


def test_shapleycam_batches_and_caches_one_graph_per_input_size(smooth):
    """Batchable: four images in one run equal four single calls; with symbolic H and W, one Hessian graph per
    input size (the static-size copy transposed convolutions need), cached under its own key."""
    net, explainer, layers = smooth
    x = np.random.default_rng(3).normal(size=(4, 3, 40, 40)).astype(np.float32)
    batch = explainer.explain(x, "shapleycam", layers=[layers["features"]])
    singles = np.concatenate([explainer.explain(x[i:i + 1], "shapleycam", layers=[layers["features"]])
                              for i in range(4)])
    assert batch.shape == (4, 40, 40) and np.abs(batch - singles).max() <= 1e-4
    assert ("hessian", (layers["features"],), (40, 40)) in explainer.runtime.cached_keys()


def test_shapleycam_gives_normalised_maps_at_input_size(get_explainer, get_inputs):
    maps = get_explainer("real_mobilenet_v2").explain(get_inputs("real_mobilenet_v2"), "shapleycam")
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(2, -1).max(1), 1, atol=1e-5)
