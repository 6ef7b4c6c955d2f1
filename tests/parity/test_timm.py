"""timm classifiers against pytorch-grad-cam 1.5.7 on the same random-init models (<= 1e-3 max abs difference),
ConvNeXt among them: its LayerNorms permute to channels-last and back; those channels-last tensors are listed apart
(never read as (N, C, h, w), never the default, nor is the head's pooled 1 x 1 x C LayerNorm) and explained as
pytorch-grad-cam explains them with a reshape_transform that turns them channels-first."""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM

from camserve import BadRequest, Explainer
from zoo import CACHE, layer_for_module, photos

TOL = 1e-3
SIZE = 160
FOLDER = CACHE.parent / "timm"
MODELS = {"convnext_atto": "stages.3", "convnext_tiny": "stages.3", "regnety_002": "s4", "ghostnet_100": "blocks.9",
          "repvgg_a0": "stages.3", "hrnet_w18_small": "final_layer"}


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
    graph = onnx.load(str(explainer.model.path))
    assert explainer.model.default_layer == layer_for_module(graph, "stages.3")
    names = {layer.name for layer in explainer.info.layers}
    channels_last = [n.output[0] for n in graph.graph.node if n.op_type == "Transpose"
                     and [a.ints for a in n.attribute if a.name == "perm"][0] == [0, 2, 3, 1]]
    assert channels_last and not names & set(channels_last)
    assert all(layer.shape[2] * layer.shape[3] > 1 for layer in explainer.info.layers)
    listed = {layer.name: layer for layer in explainer.info.channels_last}
    head = {name for name in channels_last if name.startswith("/head/")}   # the pooled 1 x 1 x C LayerNorm
    assert head and set(channels_last) - head <= set(listed) and not head & set(listed)
    for layer in listed.values():   # (N, h, w, C) with a map's spatial size, the pooled head's 1 x 1 left out
        assert layer.layout == "NHWC" and layer.shape[1] == layer.shape[2] > 1 and layer.shape[3] >= 40


def _channels_last_norm(graph, block: str) -> str:
    """The LayerNormalization output of a ConvNeXt block's norm: channels-last in both ConvNeXt kinds (atto's
    LayerNorm2d permutes around it and back, tiny's block stays channels-last through its MLP)."""
    scope = f"/{block.replace('.blocks.', '/blocks/blocks.')}/norm/"
    scope = "/" + block.replace(".blocks.", "/blocks/blocks.") + "/norm/"
    return next(n.output[0] for n in graph.graph.node if n.op_type == "LayerNormalization" and scope in n.name)

@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny"])
@pytest.mark.parametrize("cls, method", [(GradCAM, "gradcam"), (LayerCAM, "layercam")])
def test_a_channels_last_layer_equals_the_peer_with_its_reshape(name, cls, method):
    net, explainer = model(name)
    layer = _channels_last_norm(onnx.load(str(explainer.model.path)), "stages.3.blocks.1")
    assert explainer.info.is_channels_last(layer)
    module = net.get_submodule("stages.3.blocks.1.norm")
    x = torch.from_numpy(photos(SIZE))
    shapes = []
    hook = module.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        net(x)
    hook.remove()
    # tiny's norm outputs (N, h, w, C): the peer needs it turned; atto's LayerNorm2d turns it back itself
    turn = (lambda t: t.permute(0, 3, 1, 2)) if shapes[0][-1] == module.weight.shape[0] else None
    with cls(model=net, target_layers=[module], reshape_transform=turn) as cam:
        peer = cam(input_tensor=x, targets=None)
    ours = explainer.explain(x.numpy(), method, layers=[layer])
    assert peer.max() > 0 and (turn is not None) == (name == "convnext_tiny")
    np.testing.assert_allclose(ours, peer, atol=TOL)


def test_inspect_lists_channels_last_layers_apart(capsys):
    from camserve.service.cli import main
    net, explainer = model("convnext_atto")
    assert main(["inspect", str(explainer.model.path)]) == 0
    shown = capsys.readouterr().out
    table = shown.split("channels-last layers (N, h, w, C; gradient methods only):")[1]
    layer = _channels_last_norm(onnx.load(str(explainer.model.path)), "stages.3.blocks.1")
    assert f"{len(explainer.info.channels_last)} channels-last" in shown and layer in table
    assert "['N', 5, 5, 320]" in table


def test_a_tail_at_a_channels_last_layer_is_refused_naming_an_nchw_one():
    net, explainer = model("convnext_atto")
    layer = _channels_last_norm(onnx.load(str(explainer.model.path)), "stages.3.blocks.1")
    with pytest.raises(BadRequest, match=r"channels-last .* name '.*stages\.3.*', the nearest one before it"):
        explainer.explain(photos(SIZE)[:1], "ablationcam", layers=[layer])


def test_score_cam_on_convnext_equals_the_peer():
    net, explainer = model("convnext_atto")
    x = photos(SIZE)[:1]
    with ScoreCAM(model=net, target_layers=[net.get_submodule("stages.3")]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=None)
    assert peer.max() > 0
    np.testing.assert_allclose(explainer.explain(x, "scorecam"), peer, atol=TOL)


@pytest.mark.parametrize("cls, method", [(GradCAMPlusPlus, "gradcam++"), (LayerCAM, "layercam")])
def test_other_gradient_methods_on_convnext(cls, method):
    net, explainer = model("convnext_atto")
    x = photos(SIZE)
    with cls(model=net, target_layers=[net.get_submodule("stages.3")]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=None)
    np.testing.assert_allclose(explainer.explain(x, method), peer, atol=TOL)


def test_score_cam_at_a_channels_last_layer_equals_the_peer():
    """Score-CAM masks the image with each channel's map, so a channels-last layer only needs its maps turned."""
    net, explainer = model("convnext_atto")
    layer = _channels_last_norm(onnx.load(str(explainer.model.path)), "stages.3.blocks.1")
    x = photos(SIZE)[:1]
    with ScoreCAM(model=net, target_layers=[net.get_submodule("stages.3.blocks.1.norm")]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=None)
    assert peer.max() > 0
    np.testing.assert_allclose(explainer.explain(x, "scorecam", layers=[layer]), peer, atol=TOL)
