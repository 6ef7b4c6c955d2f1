"""Parity with pytorch-grad-cam 1.5.7 on the same weights and layer: max abs difference <= 1e-3."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)

from zoo import ZOO

PEERS = {"gradcam": GradCAM, "hirescam": HiResCAM, "gradcam-elementwise": GradCAMElementWise,
         "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM, "eigencam": EigenCAM,
         "eigengradcam": EigenGradCAM}
MODELS = ["resnet18", "resnet50", "vgg16", "mobilenet_v2", "efficientnet_b0", "densenet121",
          "real_mobilenet_v2", "real_efficientnet_lite0", "resnet18_dynamo", "resnet18_batch1", "resnet18_opset11"]
TOL = 1e-3


def peer(cls, model, layers, x, targets=None):
    with cls(model=model, target_layers=layers) as cam:
        return cam(input_tensor=torch.from_numpy(x), targets=targets)


@pytest.mark.parametrize("name", MODELS)
def test_gradient_family_equals_pytorch_grad_cam(name, get_explainer, get_torch, get_inputs):
    zoo, model, x = ZOO[name], get_torch(name), get_inputs(name)
    explainer = get_explainer(name)
    errors = {}
    for method, cls in PEERS.items():
        ours = explainer.explain(x, method, layers=[zoo.onnx_layer()])
        ref = peer(cls, model, [zoo.module(model)], x)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        errors[method] = float(np.abs(ours - ref).max())
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("name", ["real_mobilenet_v2", "efficientnet_b0"])
def test_fullgrad_equals_pytorch_grad_cam(name, get_explainer, get_torch, get_inputs):
    model, x = get_torch(name), get_inputs(name)
    ours = get_explainer(name).explain(x, "fullgrad")
    ref = peer(FullGrad, model, [], x)
    assert np.abs(ours - ref).max() <= TOL


# Not the random-init MobileNetV2: its logits are ~4e-9 and every folded bias is exactly 0, so its
# FullGrad is the input-gradient term alone, at the float32 rounding floor (1.5% relative here).
@pytest.mark.parametrize("name", ["real_efficientnet_lite0", "resnet18", "resnet50", "vgg16", "densenet121"])
def test_fullgrad_within_the_peers_own_float32_noise(name, get_explainer, get_torch, get_inputs):
    """FullGrad min-maxes every channel of |bias x grad|, so a ReLU mask flipping where |z| < 3e-5
    (float32 convolutions of torch and ONNX Runtime round differently) moves the map by up to 3e-2 on
    random-init nets. On these models the reference is the peer run in float64, and the bound is the
    peer's own float32-vs-float64 difference (x 2, and >= 1e-3)."""
    model, x = get_torch(name), get_inputs(name)
    ours = get_explainer(name).explain(x, "fullgrad")
    ref32 = peer(FullGrad, model, [], x)
    ref64 = peer(FullGrad, copy.deepcopy(model).double(), [], x.astype(np.float64))
    own_noise = float(np.abs(ref32 - ref64).max())
    assert np.abs(ours - ref64).max() <= max(TOL, 2 * own_noise), own_noise


def test_multilayer_mean_fusion_equals_pytorch_grad_cam(get_explainer, get_torch, get_inputs):
    import onnx

    from zoo import layer_for_module
    model, x = get_torch("resnet18"), get_inputs("resnet18")
    graph = onnx.load(str(ZOO["resnet18"].onnx_path()))
    modules = ["layer3.1", "layer4.1"]
    ours = get_explainer("resnet18").explain(x, "gradcam", layers=[layer_for_module(graph, m) for m in modules])
    ref = peer(GradCAM, model, [model.get_submodule(m) for m in modules], x)
    assert np.abs(ours - ref).max() <= TOL


def test_multilabel_class_weights_equal_a_weighted_peer_target(get_explainer, get_torch, get_inputs):
    """A class mix costs one run and equals pytorch-grad-cam with a target summing the same logits."""
    model, x = get_torch("real_mobilenet_v2"), get_inputs("real_mobilenet_v2")
    weights = np.zeros((len(x), 1000), np.float32)
    weights[:, 285], weights[:, 281] = 0.7, 0.3          # Egyptian cat + tabby
    weights[1, :] = 0
    weights[1, 967], weights[1, 504] = 1.0, 0.5          # espresso + coffee mug
    ours = get_explainer("real_mobilenet_v2").explain(x, "gradcam", targets=weights,
                                                      layers=[ZOO["real_mobilenet_v2"].onnx_layer()])
    targets = [_weighted(torch.from_numpy(row)) for row in weights]
    ref = peer(GradCAM, model, [model.features[18]], x, targets)
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name", ["resnet18", "real_mobilenet_v2"])
def test_randomcam_equals_pytorch_grad_cam_after_the_same_seed(name, get_explainer, get_torch, get_inputs):
    from pytorch_grad_cam import RandomCAM
    zoo, model, x = ZOO[name], get_torch(name), get_inputs(name)
    ours = get_explainer(name).explain(x, "randomcam", layers=[zoo.onnx_layer()], seed=3)
    np.random.seed(3)
    ref = peer(RandomCAM, model, [zoo.module(model)], x)
    assert np.abs(ours - ref).max() <= TOL
    other = get_explainer(name).explain(x, "randomcam", layers=[zoo.onnx_layer()], seed=4)
    assert np.abs(ours - other).max() > 0.1


def _weighted(w: torch.Tensor):
    """A pytorch-grad-cam target: the class-weighted sum of the logits."""
    return lambda out: (out * w).sum()
