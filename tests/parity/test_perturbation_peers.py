"""Perturbation methods equal the peers on the same weights and layer: pytorch-grad-cam 1.5.7 Score-CAM and
Ablation-CAM, torchcam 0.5.0 Score-CAM, SS-CAM (same noise) and IS-CAM; max abs difference <= 1e-3.

The peers run one full forward per channel, so these use small inputs (96 px, or TinyNet's 32 px) except
one ResNet-18 at 224 per peer method; "features.17" layers have a real tail after them (MobileNetV2's last
inverted-residual block, then the 1x1 conv block, pooling and classifier).
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import onnx
import pytest
import torch
from pytorch_grad_cam import AblationCAM, ScoreCAM
from torchcam.methods import ISCAM, SSCAM
from torchcam.methods import ScoreCAM as TorchcamScoreCAM

from test_torchcam import run_torchcam, torchcam_normalise
from zoo import ZOO, layer_for_module

TOL = 1e-3
CASES = [("resnet18", "layer4.1"), ("real_mobilenet_v2_96", "features.17"), ("tinynet_batch1", "features.8")]


def onnx_layer(name: str, module: str) -> str:
    return layer_for_module(onnx.load(str(ZOO[name].onnx_path())), module)


def peer(cls, model, module, x):
    with cls(model=model, target_layers=[model.get_submodule(module)]) as cam:
        return cam(input_tensor=torch.from_numpy(x), targets=None)


@pytest.mark.parametrize("name,module", CASES)
def test_scorecam_equals_pytorch_grad_cam(name, module, get_explainer, get_torch, get_inputs):
    x = get_inputs(name)[:1] if ZOO[name].size == 224 else get_inputs(name)
    ours = get_explainer(name).explain(x, "scorecam", layers=[onnx_layer(name, module)])
    ref = peer(ScoreCAM, get_torch(name), module, x)
    assert np.abs(ours - ref).max() <= TOL


# TinyNet's Tanh and EfficientNet's block outputs go negative, so pytorch-grad-cam ablates with values
# far below the minimum there (fill="pytorch-grad-cam" reproduces them), and with 0 on the ReLU layers
@pytest.mark.parametrize("name,module", CASES + [("efficientnet_b0", "features.7")])
def test_ablationcam_equals_pytorch_grad_cam(name, module, get_explainer, get_torch, get_inputs):
    x = get_inputs(name)[:1] if ZOO[name].size == 224 else get_inputs(name)
    fill = "pytorch-grad-cam" if name in ("tinynet_batch1", "efficientnet_b0") else "min-1e7"
    ours = get_explainer(name).explain(x, "ablationcam", layers=[onnx_layer(name, module)], fill=fill)
    ref = peer(AblationCAM, get_torch(name), module, x)
    assert np.abs(ours - ref).max() <= TOL


TORCHCAM = [("resnet18_96", "layer4.1"), ("real_mobilenet_v2_96", "features.17"), ("tinynet_batch1", "features.8")]


def _layer_map(name, module, method, get_explainer, x, **options):
    layer = onnx_layer(name, module)
    result = get_explainer(name).explain_full(x, method, layers=[layer], **options)
    return torchcam_normalise(result.layer_maps[layer], relu=True), result.targets.tolist()


@pytest.mark.parametrize("name,module", TORCHCAM)
def test_scorecam_torchcam_variant_equals_torchcam(name, module, get_explainer, get_torch, get_inputs):
    x = get_inputs(name)
    ours, targets = _layer_map(name, module, "scorecam", get_explainer, x, variant="torchcam")
    ref = run_torchcam(TorchcamScoreCAM, get_torch(name), module, x, targets, input_shape=x.shape[1:])
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name,module", TORCHCAM[::2])
def test_sscam_equals_torchcam_with_the_same_noise(name, module, get_explainer, get_torch, get_inputs):
    x, model = get_inputs(name), get_torch(name)
    layer = onnx_layer(name, module)
    k = next(entry.shape[1] for entry in get_explainer(name).info.layers if entry.name == layer)
    noise = np.random.default_rng(5).normal(0.0, 2.0, size=(2, len(x), k, *x.shape[2:])).astype(np.float32)
    ours, targets = _layer_map(name, module, "sscam", get_explainer, x, noise=noise)
    samples = iter(torch.from_numpy(n) for n in noise)
    with SSCAM(model, module, num_samples=2, std=2.0, input_shape=x.shape[1:]) as extractor:
        extractor._distrib.sample = lambda shape: next(samples)   # the same noise, in the same order
        scores = model(torch.from_numpy(x))
        ref = extractor(targets, scores)[0].detach().numpy()
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("name,module", TORCHCAM[::2])
def test_iscam_equals_torchcam(name, module, get_explainer, get_torch, get_inputs):
    x = get_inputs(name)
    ours, targets = _layer_map(name, module, "iscam", get_explainer, x, samples=3)
    ref = run_torchcam(ISCAM, get_torch(name), module, x, targets, num_samples=3, input_shape=x.shape[1:])
    assert np.abs(ours - ref).max() <= TOL
