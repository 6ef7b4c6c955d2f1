"""Explainer behaviour: every method runs, batches equal single calls, class weights, errors for bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camserve.service import BadRequest
from camserve.service.methods import METHODS
from zoo import ZOO, NHWCNet

ALL = ["cam", "gradcam", "hirescam", "gradcam-elementwise", "gradcam++", "xgradcam", "layercam", "eigencam",
       "eigengradcam", "fullgrad", "smoothgradcam++", "integrative"]


def test_the_issue_methods_are_registered():
    assert set(ALL) <= set(METHODS)


@pytest.mark.parametrize("method", ALL)
def test_every_method_gives_normalised_maps_at_input_size(method, get_explainer, get_inputs):
    maps = get_explainer("real_mobilenet_v2").explain(get_inputs("real_mobilenet_v2"), method)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(2, -1).max(1), 1, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "fullgrad", "integrative", "cam", "eigencam"])
def test_a_batch_of_four_equals_four_single_calls(method, get_explainer):
    explainer = get_explainer("resnet18")
    x = np.random.default_rng(3).normal(size=(4, 3, 224, 224)).astype(np.float32)
    batch = explainer.explain(x, method)
    singles = np.concatenate([explainer.explain(x[i:i + 1], method) for i in range(4)])
    assert np.abs(batch - singles).max() <= 1e-4


def test_targets_select_the_class_and_explanations_report_it(get_explainer, get_inputs):
    explainer, x = get_explainer("real_mobilenet_v2"), get_inputs("real_mobilenet_v2")
    top = explainer.explain_full(x, "gradcam")
    assert list(top.targets) == [285, 967]           # Egyptian cat, espresso
    other = explainer.explain_full(x, "gradcam", targets=[281, 504])
    assert list(other.targets) == [281, 504]
    assert np.abs(other.maps - top.maps).max() > 0.05
    same = explainer.explain(x, "gradcam", targets=[285, 967])
    np.testing.assert_array_equal(same, top.maps)


def test_multilabel_weights_are_linear_in_the_raw_maps(get_explainer, get_inputs):
    explainer, x = get_explainer("real_mobilenet_v2"), get_inputs("real_mobilenet_v2")
    rows = lambda ids: np.eye(1000, dtype=np.float32)[ids]  # noqa: E731
    _, a = explainer.explain(x, "gradcam", targets=rows([285, 967]), return_layers=True)
    _, b = explainer.explain(x, "gradcam", targets=rows([281, 504]), return_layers=True)
    _, mix = explainer.explain(x, "gradcam", targets=rows([285, 967]) + rows([281, 504]), return_layers=True)
    (layer,) = mix
    np.testing.assert_allclose(mix[layer], a[layer] + b[layer], rtol=1e-4, atol=1e-4)


def test_fusions_and_per_layer_maps(get_explainer, get_inputs):
    explainer, x = get_explainer("resnet18"), get_inputs("resnet18")
    layers = [layer.name for layer in explainer.layers()][-8::4]
    for fusion in ("mean", "max", "adaptive"):
        maps, per_layer = explainer.explain(x, "layercam", layers=layers, fusion=fusion, return_layers=True)
        assert maps.shape == (2, 224, 224) and list(per_layer) == layers
    with pytest.raises(BadRequest, match="adaptive fusion"):
        explainer.explain(x, "eigencam", fusion="adaptive")


def test_smooth_gradcam_noise_is_seeded_or_passed(get_explainer, get_inputs):
    explainer, x = get_explainer("resnet18"), get_inputs("resnet18")
    a = explainer.explain(x, "smoothgradcam++", seed=1)
    np.testing.assert_array_equal(a, explainer.explain(x, "smoothgradcam++", seed=1))
    assert np.abs(a - explainer.explain(x, "smoothgradcam++", seed=2)).max() > 1e-3
    noise = np.random.default_rng(1).normal(0.0, 0.3, size=(4, *x.shape))
    np.testing.assert_allclose(explainer.explain(x, "smoothgradcam++", noise=noise), a, atol=1e-5)
    with pytest.raises(BadRequest, match="noise must be finite, with shape"):
        explainer.explain(x, "smoothgradcam++", noise=np.zeros((4, 1, 3, 2, 2)))
    for bad, match in (({"samples": 0}, "samples must be"), ({"samples": 2.0}, "takes an integer"),
                       ({"std": -1.0}, "std must be")):
        with pytest.raises(BadRequest, match=match) as error:
            explainer.explain(x, "smoothgradcam++", **bad)
        assert error.value.field == "options"


def test_integrative_options(get_explainer, get_inputs):
    explainer, x = get_explainer("resnet18"), get_inputs("resnet18")
    base = explainer.explain_full(x, "integrative")
    assert base.fusion == "adaptive" and len(base.layers) == 20        # every conv of ResNet-18
    soft = explainer.explain(x, "integrative", score="softmax", tanh=True, temperature=0.5)
    assert soft.shape == base.maps.shape and np.abs(soft - base.maps).max() > 1e-3
    with pytest.raises(BadRequest, match="score must be"):
        explainer.explain(x, "integrative", score="cubic")


def test_nhwc_models_take_nchw_input(tmp_path):
    import torch

    from camserve.service import Explainer
    model = NHWCNet()
    explainer = Explainer(model.export(tmp_path / "nhwc.onnx"))
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    expected = model(torch.from_numpy(x).permute(0, 2, 3, 1)).detach().numpy()
    np.testing.assert_allclose(explainer.predict(x), expected, rtol=1e-4, atol=1e-5)
    assert explainer.explain(x, "fullgrad").shape == (2, 16, 16)


BAD_INPUTS = [
    (np.zeros((2, 3, 224), np.float32), "must be \\(N, C, H, W\\)"),
    (np.zeros((1, 4, 224, 224), np.float32), "4 channels"),
    (np.zeros((1, 3, 100, 224), np.float32), "takes 224x224"),
    (np.full((1, 3, 224, 224), np.nan, np.float32), "NaN or Inf"),
    (np.zeros((1, 3, 224, 224), np.int32), "float32"),
    (np.zeros((0, 3, 224, 224), np.float32), "empty"),
]


@pytest.mark.parametrize("x,match", BAD_INPUTS)
def test_bad_tensors_get_clear_errors(x, match, get_explainer):
    with pytest.raises(BadRequest, match=match) as error:
        get_explainer("real_mobilenet_v2").explain(x, "gradcam")
    assert error.value.field == "input"


@pytest.mark.parametrize("kwargs,field,match", [
    ({"method": "nope"}, "method", "unknown method 'nope'; available: ablationcam, cam"),
    ({"layers": ["nope"]}, "layers", "unknown layer 'nope'; candidates"),
    ({"targets": [1000, 1]}, "targets", "class id 1000 out of range \\[0, 1000\\)"),
    ({"targets": [-1, 1]}, "targets", "class id -1 out of range"),
    ({"targets": [1]}, "targets", "one class id per image"),
    ({"targets": np.zeros((2, 10))}, "targets", "class weights must be \\(2, 1000\\)"),
    ({"targets": np.full((2, 1000), "a")}, "targets", "class weights must be real numbers"),
    ({"method": "gradcam", "alpha": 1}, "options", "has no option 'alpha'"),
    ({"fusion": "median"}, "fusion", "unknown fusion"),
    ({"method": "cam", "layers": ["/features/features.0/features.0.0/Conv_output_0"]}, "layers",
     "global average pooling"),
    ({"method": "cam", "layers": ["/features/features.17/conv/conv.2/Conv_output_0",
                                  "/features/features.18/features.18.2/Clip_output_0"]}, "layers", "one layer"),
])
def test_bad_requests_name_the_problem(kwargs, field, match, get_explainer, get_inputs):
    explainer, x = get_explainer("real_mobilenet_v2"), get_inputs("real_mobilenet_v2")
    with pytest.raises(BadRequest, match=match) as error:
        explainer.explain(x, **kwargs)
    assert error.value.field == field
    assert explainer.explain(x, "gradcam").shape == (2, 224, 224)   # still serving after the error


def test_bad_models_are_refused_with_the_reason(tmp_path):
    from camserve.service import Explainer
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(BadRequest, match="cannot load the model"):
        Explainer(path)
    with pytest.raises(BadRequest, match="cannot load the model"):
        Explainer(tmp_path / "missing.onnx")


def test_provider_is_reported_and_sessions_are_cached(get_explainer, get_inputs):
    explainer = get_explainer("real_mobilenet_v2")
    assert explainer.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    explainer.explain(get_inputs("real_mobilenet_v2"), "gradcam")
    explainer.explain(get_inputs("real_mobilenet_v2"), "layercam")
    keys = explainer.runtime.cached_keys()
    assert len([k for k in keys if k[0] == "gradients"]) == len(set(k for k in keys if k[0] == "gradients"))
    layer = ZOO["real_mobilenet_v2"].onnx_layer()
    assert ("gradients", (layer,), False, (layer,), False) in keys


def test_models_with_symbolic_height_and_width_explain_any_size(tmp_path):
    import torch
    import torchvision

    from camserve.service import Explainer
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    path = tmp_path / "any_size.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 160, 160), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    explainer = Explainer(path)
    for size in (128, 192):
        x = np.random.default_rng(size).normal(size=(2, 3, size, size)).astype(np.float32)
        for method in ("gradcam", "fullgrad"):
            maps = explainer.explain(x, method)
            assert maps.shape == (2, size, size) and np.isfinite(maps).all()
        from pytorch_grad_cam import GradCAM
        with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
            ref = cam(input_tensor=torch.from_numpy(x), targets=None)
        assert np.abs(explainer.explain(x, "gradcam") - ref).max() <= 1e-3


def test_model_config_from_a_version_folder_and_bad_configs(tmp_path):
    import shutil

    from camserve.service.model_config import load_config
    root = Path(__file__).resolve().parents[2] / "models" / "mobilenet_v2"
    config = load_config(root / "1" / "model.onnx")
    assert config.name == "mobilenet_v2" and config.label(285) == "Egyptian cat"
    folder = tmp_path / "broken"
    (folder / "3").mkdir(parents=True)
    shutil.copy(root / "1" / "model.onnx", folder / "3" / "model.onnx")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(BadRequest, match="not a valid model config"):
        load_config(folder)
    (folder / "config.json").write_text('{"preprocessing": {"resise": 256}}')
    with pytest.raises(BadRequest, match="unknown preprocessing key 'resise'"):
        load_config(folder)


def test_duplicate_layers_count_once(get_explainer, get_inputs):
    explainer, x = get_explainer("resnet18"), get_inputs("resnet18")
    layer = explainer.info.default_layer
    twice = explainer.explain_full(x, "gradcam", layers=[layer, layer])
    assert twice.layers == [layer]
    np.testing.assert_array_equal(twice.maps, explainer.explain(x, "gradcam"))


def test_integrative_equals_its_formula(get_explainer, get_inputs):
    """docs/methods/integrative.md, written out here from its formulas: at conv block l with output A, gradient g
    and pre-activation conv output z with (BN-folded) bias b, M_l = sum_k alpha_k ReLU(g_k) A_k + sum_k b_k dS/dz_k
    per position, alpha = g^2 / (2 g^2 + sum_ab A g^3); maps ReLU'd, min-maxed and resized; fused with softmax over
    layers of (sum ReLU(g A) / sum |g A|) / 0.1; min-maxed. Checked at four blocks, two of them linear."""
    import cv2

    from camserve import graph_tools as gt
    explainer, x = get_explainer("real_mobilenet_v2"), get_inputs("real_mobilenet_v2")
    blocks = explainer.model.conv_blocks
    linear = [post for post, (pre, _) in blocks.items() if pre == post][-2:]      # linear-bottleneck convs
    clipped = [post for post, (pre, _) in blocks.items() if pre != post][-2:]     # conv -> BN -> ReLU6
    layers = linear + clipped
    ours = explainer.explain_full(x, "integrative", layers=layers)
    pres = [blocks[layer][0] for layer in layers]
    out = explainer._context.gradients(list(dict.fromkeys(layers + pres)), x, np.zeros((2, 1000), np.float32))
    scaled, evidence = [], []
    for layer, pre in zip(layers, pres):
        a, g, dz = out[layer].astype(np.float64), out[gt.GRAD_PREFIX + layer], out[gt.GRAD_PREFIX + pre]
        alpha = g ** 2 / (2 * g ** 2 + np.maximum(a.sum(axis=(2, 3), keepdims=True), 0) * g ** 3 + 1e-6)
        raw = (alpha * np.maximum(g, 0) * a).sum(axis=1) + np.einsum("k,nkhw->nhw", blocks[layer][1], dz)
        np.testing.assert_allclose(ours.layer_maps[layer], raw, rtol=1e-3, atol=1e-5 * np.abs(raw).max())
        m = np.maximum(raw, 0)
        m = (m - m.min(axis=(1, 2), keepdims=True))
        m = m / (1e-7 + m.max(axis=(1, 2), keepdims=True))
        scaled.append(np.stack([cv2.resize(one.astype(np.float32), (224, 224)) for one in m]))
        product = (g * a).reshape(2, -1)
        evidence.append(np.maximum(product, 0).sum(1) / np.abs(product).sum(1))
    e = np.stack(evidence, axis=1) / 0.1
    weights = np.exp(e - e.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    fused = np.einsum("nl,nlhw->nhw", weights, np.stack(scaled, axis=1))
    fused = fused - fused.min(axis=(1, 2), keepdims=True)
    fused /= 1e-7 + fused.max(axis=(1, 2), keepdims=True)
    assert weights.max() < 0.9 and np.abs(weights[:, 0] - weights[:, -1]).max() > 1e-3   # not one layer, not uniform
    np.testing.assert_allclose(ours.maps, fused, atol=1e-4)


def test_the_explained_output_is_named_on_the_explainer_too():
    """A two-output model (an embedding, then the logits): the first output is read unless one is named."""
    import onnx
    from onnx import helper

    from camserve.service import Explainer
    from camserve.service.model import Model
    graph = onnx.load(str(Path(__file__).resolve().parents[2] / "models" / "mobilenet_v2" / "1" / "model.onnx"))
    pooled = next(n.output[0] for n in graph.graph.node if n.op_type in ("GlobalAveragePool", "ReduceMean"))
    logits = graph.graph.output[0].name
    graph.graph.output.insert(0, helper.make_tensor_value_info(pooled, onnx.TensorProto.FLOAT, None))
    named = Explainer(graph.SerializeToString(), threads=2, output=logits)
    assert named.kind == "classifier" and named.info.logits == logits and named.info.num_classes == 1000
    with pytest.raises(BadRequest, match="matches no model kind.*declare it"):   # the first output: (N, 1280, 1, 1)
        Explainer(graph.SerializeToString(), threads=2)
    with pytest.raises(BadRequest, match="declare output when building the Model"):
        Explainer(Model(graph.SerializeToString(), output=logits), output=logits)
