"""timm classifiers against pytorch-grad-cam 1.5.7 on the same random-init models (<= 1e-3 max abs difference),
ConvNeXt among them: its LayerNorms permute to channels-last and back, and those channels-last tensors are not read
as (N, C, h, w) layers (nor is the head's pooled 1 x 1 x C LayerNorm the default)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM

from camserve import Explainer
from zoo import CACHE, layer_for_module, photos

TOL = 1e-3
SIZE = 160
FOLDER = CACHE.parent / "timm"
MODELS = {"convnext_atto": "stages.3", "convnext_tiny": "stages.3", "regnety_002": "s4", "ghostnet_100": "blocks.9"}


@functools.lru_cache(maxsize=None)
def model(name: str):
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False).eval()
    path = FOLDER / f"{name}.onnx"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(net, torch.zeros(1, 3, SIZE, SIZE), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
        tmp.replace(path)
    return net, Explainer(str(path), threads=2)


@pytest.mark.parametrize("name", list(MODELS))
def test_grad_cam_at_the_last_stage_equals_the_peer(name):
    net, explainer = model(name)
    import onnx
    layer = layer_for_module(onnx.load(str(explainer.model.path)), MODELS[name])
    x = photos(SIZE)
    with GradCAM(model=net, target_layers=[net.get_submodule(MODELS[name])]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=None)
    ours = explainer.explain(x, "gradcam", layers=[layer])
    assert peer.max() > 0
    np.testing.assert_allclose(ours, peer, atol=TOL)


@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny"])
def test_convnext_default_layer_is_its_last_stage_and_channels_last_tensors_are_not_layers(name):
    net, explainer = model(name)
    import onnx
    graph = onnx.load(str(explainer.model.path))
    assert explainer.model.default_layer == layer_for_module(graph, "stages.3")
    names = {layer.name for layer in explainer.info.layers}
    channels_last = [n.output[0] for n in graph.graph.node if n.op_type == "Transpose"
                     and [a.ints for a in n.attribute if a.name == "perm"][0] == [0, 2, 3, 1]]
    assert channels_last and not names & set(channels_last)
    assert all(layer.shape[2] * layer.shape[3] > 1 for layer in explainer.info.layers)


@pytest.mark.parametrize("cls, method", [(GradCAMPlusPlus, "gradcam++"), (LayerCAM, "layercam")])
def test_other_gradient_methods_on_convnext(cls, method):
    net, explainer = model("convnext_atto")
    x = photos(SIZE)
    with cls(model=net, target_layers=[net.get_submodule("stages.3")]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=None)
    np.testing.assert_allclose(explainer.explain(x, method), peer, atol=TOL)
