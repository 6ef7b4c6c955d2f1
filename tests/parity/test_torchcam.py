"""Parity with torchcam 0.5.0 (CAM, Smooth Grad-CAM++ with the same noise) on the same weights and layer.

torchcam returns maps at feature resolution normalised in place ((x - min) / (max + 1e-8), ReLU for
gradient methods, none for CAM); our per-layer raw maps go through that same normalisation here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchcam.methods import CAM, LayerCAM, SmoothGradCAMpp

from zoo import ZOO

TOL = 1e-3
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "real_mobilenet_v2",
          "real_efficientnet_lite0"]
FC = {"resnet18": "fc", "resnet50": "fc", "mobilenet_v2": "classifier.1", "real_mobilenet_v2": "classifier.1",
      "efficientnet_b0": "classifier.1", "densenet121": "classifier", "real_efficientnet_lite0": "_fc"}


# CAM needs the tensor that feeds global pooling: EfficientNet-Lite applies its shared ReLU6 `_swish`
# after `_bn1`; torchcam keeps the last call of a shared module, which is that head activation.
# DenseNet's forward applies an in-place ReLU to `features`, which torchcam's stored activation sees.
CAM_TARGET = {"real_efficientnet_lite0": "_swish", "densenet121": "features"}


def torchcam_normalise(maps: np.ndarray, relu: bool) -> np.ndarray:
    if relu:
        maps = np.maximum(maps, 0)
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / (maps.max(axis=(1, 2), keepdims=True) + 1e-8)


def run_torchcam(extractor_cls, model, target, x, class_idx, **kwargs):
    with extractor_cls(model, target, **kwargs) as extractor:
        scores = model(torch.from_numpy(x))
        return extractor(class_idx, scores)[0].detach().numpy()


@pytest.mark.parametrize("name", MODELS)
def test_cam_equals_torchcam(name, get_explainer, get_torch, get_inputs):
    zoo, model, x, explainer = ZOO[name], get_torch(name), get_inputs(name), get_explainer(name)
    layer = explainer.info.default_layer if name in CAM_TARGET else zoo.onnx_layer()
    result = explainer.explain_full(x, "cam", layers=[layer])
    ours = torchcam_normalise(result.layer_maps[layer], relu=False)
    ref = run_torchcam(CAM, model, CAM_TARGET.get(name, zoo.target), x, result.targets.tolist(), fc_layer=FC[name])
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "real_mobilenet_v2", "real_efficientnet_lite0"])
def test_smooth_gradcam_plusplus_equals_torchcam_with_the_same_noise(name, get_explainer, get_torch, get_inputs):
    zoo, model, x = ZOO[name], get_torch(name), get_inputs(name)
    noise = np.random.default_rng(7).normal(0.0, 0.3, size=(4, *x.shape)).astype(np.float32)
    result = get_explainer(name).explain_full(x, "smoothgradcam++", layers=[zoo.onnx_layer()], noise=noise)
    ours = torchcam_normalise(result.layer_maps[zoo.onnx_layer()], relu=True)
    samples = iter(torch.from_numpy(n) for n in noise)
    with SmoothGradCAMpp(model, zoo.target, num_samples=4, std=0.3, input_shape=x.shape[1:]) as extractor:
        extractor._distrib.sample = lambda shape: next(samples)   # the same noise, in the same order
        scores = model(torch.from_numpy(x))
        ref = extractor(result.targets.tolist(), scores)[0].detach().numpy()
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name", ["resnet18", "real_mobilenet_v2"])
def test_layercam_equals_torchcam(name, get_explainer, get_torch, get_inputs):
    zoo, model, x = ZOO[name], get_torch(name), get_inputs(name)
    result = get_explainer(name).explain_full(x, "layercam", layers=[zoo.onnx_layer()])
    ours = torchcam_normalise(result.layer_maps[zoo.onnx_layer()], relu=True)
    ref = run_torchcam(LayerCAM, model, zoo.target, x, result.targets.tolist())
    assert np.abs(ours - ref).max() <= TOL
