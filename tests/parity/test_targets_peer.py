"""Targets beyond classes against pytorch-grad-cam 1.5.7 on the same torch models: segmentation regions, cosine
similarity to an embedding, and box targets on a YOLOv8-style raw head (<= 1e-3 max abs difference)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from camserve import Explainer, Model
from camserve.graph_tools import GRAD_PREFIX
from camserve.service.errors import BadRequest
from camserve.targets import Box, Detection, Region, Similarity
from zoo import CACHE, TinySSD, TinyYolo, layer_for_module, photos

TOL = 1e-3
FOLDER = CACHE.parent / "targets"    # exported once per machine, like the zoo


class Out(torch.nn.Module):
    """torchvision's segmentation models return a dict; the tensor they are explained by is its 'out'."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m(x)["out"]


def _exported(name: str, model: torch.nn.Module, size: int):
    path = FOLDER / f"{name}.onnx"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
        tmp.replace(path)
    return path


@functools.lru_cache(maxsize=None)
def segmenter(name: str):
    torch.manual_seed(0)
    net = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=21,
                                                         aux_loss=False)
    model = Out(net).eval()
    return model, Explainer(str(_exported(name, model, 96)))


SEGMENTERS = {"fcn_resnet50": "m.backbone.layer4", "deeplabv3_mobilenet_v3_large": "m.backbone.16"}


def _layer(explainer: Explainer, dotted: str) -> str:
    import onnx
    return layer_for_module(onnx.load(str(explainer.model.path)), dotted)


@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_region_target_equals_semantic_segmentation_target(name):
    model, explainer = segmenter(name)
    assert explainer.kind == "segmenter" and explainer.info.num_classes == 21
    x = photos(96, ("chelsea.png",))
    torch_layer = model.get_submodule(SEGMENTERS[name])
    layer = _layer(explainer, SEGMENTERS[name])
    with torch.no_grad():
        predicted = model(torch.from_numpy(x))[0].argmax(0).numpy()
    category = int(np.bincount(predicted.ravel()).argmax())
    default_mask = (predicted == category).astype(np.float32)
    corner = np.zeros_like(default_mask)
    corner[:48, :48] = 1.0
    for mask, target in ((default_mask, Region(category)), (corner, Region(category, mask=corner))):
        with GradCAM(model=model, target_layers=[torch_layer]) as cam:
            peer = cam(input_tensor=torch.from_numpy(x), targets=[SemanticSegmentationTarget(category, mask)])
        ours = explainer.explain(x, "gradcam", targets=[target], layers=[layer])
        assert peer.max() > 0 or target.mask is not None   # random weights: a corner's map may be all negative
        np.testing.assert_allclose(ours, peer, atol=TOL)


@functools.lru_cache(maxsize=None)
def unet():
    """A segmentation-models-pytorch U-Net (ResNet-18 encoder, encoder_weights=None, 4 classes, random init)."""
    import segmentation_models_pytorch as smp
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=4).eval()
    return model, Explainer(str(_exported("unet_resnet18", model, 64)))


@pytest.mark.parametrize("module", ["encoder.layer4", "decoder.blocks.3"])
def test_a_unet_region_equals_semantic_segmentation_target(module):
    model, explainer = unet()
    assert explainer.kind == "segmenter" and explainer.info.num_classes == 4
    x = photos(64, ("chelsea.png",))
    with torch.no_grad():
        predicted = model(torch.from_numpy(x))[0].argmax(0).numpy()
    category = int(np.bincount(predicted.ravel()).argmax())
    mask = (predicted == category).astype(np.float32)
    with GradCAM(model=model, target_layers=[model.get_submodule(module)]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=[SemanticSegmentationTarget(category, mask)])
    ours = explainer.explain(x, "gradcam", targets=[Region(category)], layers=[_layer(explainer, module)])
    assert peer.max() > 0
    np.testing.assert_allclose(ours, peer, atol=TOL)


@pytest.mark.parametrize("cls, method", [(HiResCAM, "hirescam"), (LayerCAM, "layercam")])
def test_other_gradient_methods_on_a_region(cls, method):
    model, explainer = segmenter("fcn_resnet50")
    x = photos(96, ("coffee.png",))
    mask = np.zeros((96, 96), np.float32)
    mask[20:70, 30:80] = 1.0
    with cls(model=model, target_layers=[model.get_submodule(SEGMENTERS["fcn_resnet50"])]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=[SemanticSegmentationTarget(5, mask)])
    ours = explainer.explain(x, method, targets=[Region(5, mask=mask)],
                             layers=[_layer(explainer, SEGMENTERS["fcn_resnet50"])])
    np.testing.assert_allclose(ours, peer, atol=TOL)


class SimilarityToConceptTarget:
    """pytorch-grad-cam's embedding target, as its tutorial "Pixel Attribution for embeddings" defines it (1.5.7 does
    not ship it in model_targets): the cosine similarity of the model output to a concept embedding."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        return torch.nn.CosineSimilarity(dim=0)(model_output, self.features)


def test_similarity_target_equals_similarity_to_concept_target():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    explainer = Explainer(str(_exported("resnet18_embedding", model, 112)))
    assert explainer.kind == "embedding"
    x = photos(112, ("chelsea.png", "coffee.png"))
    with torch.no_grad():
        concept = model(torch.from_numpy(x[1:]))[0]
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x[:1]), targets=[SimilarityToConceptTarget(concept)])
    ours = explainer.explain(x[:1], "gradcam", targets=[Similarity(concept.numpy())],
                             layers=[_layer(explainer, "layer4")])
    assert peer.max() > 0
    np.testing.assert_allclose(ours, peer, atol=TOL)
    with pytest.raises(BadRequest, match="Similarity"):
        explainer.explain(x[:1], "gradcam")


@functools.lru_cache(maxsize=None)
def tiny_yolo():
    model = TinyYolo()
    return model, Explainer(str(_exported("tiny_yolo", model, 64)))


def test_a_yolov8_head_is_read_as_a_detector_with_its_scales():
    model, explainer = tiny_yolo()
    info = explainer.info
    assert (explainer.kind, info.head, info.num_classes) == ("detector", "yolov8", 3)
    assert [(s, a) for s, a, _ in info.scales] == [(8, 64), (16, 16), (32, 4)]
    # each scale's branch layer is the feature map its box and class branches both read
    assert [layer for _, _, layer in info.scales] == [_layer(explainer, m) for m in ("stem.2", "down4", "down5")]


def _image():
    return np.random.default_rng(0).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)


def test_detect_decodes_and_suppresses_like_the_formula():
    model, explainer = tiny_yolo()
    x = _image()
    found = explainer.detect(x, score=0.0, iou=0.5)[0]
    with torch.no_grad():
        raw = model(torch.from_numpy(x))[0].numpy()
    scores = raw[4:].max(0)
    assert found[0].score == pytest.approx(scores.max(), abs=1e-5)
    assert found[0].anchor == int(scores.argmax())
    cx, cy, w, h = raw[:4, found[0].anchor]
    np.testing.assert_allclose(found[0].box, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), atol=1e-3)
    kept = torchvision.ops.batched_nms(torch.from_numpy(np.stack([raw[0] - raw[2] / 2, raw[1] - raw[3] / 2,
                                                                  raw[0] + raw[2] / 2, raw[1] + raw[3] / 2], 1)),
                                       torch.from_numpy(scores), torch.from_numpy(raw[4:].argmax(0)), 0.5)
    assert [d.anchor for d in found] == kept.tolist()[:len(found)]


def test_box_target_equals_the_peer_on_the_chosen_anchor():
    model, explainer = tiny_yolo()
    x = _image()
    top = explainer.detect(x, score=0.0)[0][0]
    box = tuple(v + 1.0 for v in top.box)
    module = "stem.2" if top.anchor < 64 else "down4" if top.anchor < 80 else "down5"   # the anchor's own scale
    layer = model.get_submodule(module)
    with torch.no_grad():
        raw = model(torch.from_numpy(x))[0].numpy()
    # FasterRCNNBoxScoreTarget's choice, from the formula: the predicted box of the class with the best IoU + score
    corners = np.stack([raw[0] - raw[2] / 2, raw[1] - raw[3] / 2, raw[0] + raw[2] / 2, raw[1] + raw[3] / 2], 1)
    overlap = torchvision.ops.box_iou(torch.from_numpy(corners), torch.tensor([box])).numpy()[:, 0]
    quality = np.where(overlap >= 0.5, overlap + raw[4 + top.class_id], -np.inf)
    anchor = int(quality.argmax())
    with GradCAM(model=model, target_layers=[layer]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=[lambda out: out[4 + top.class_id, anchor]])
    ours = explainer.explain(x, "gradcam", targets=[Box(box, top.class_id)], layers=[_layer(explainer, module)])
    assert peer.max() > 0
    np.testing.assert_allclose(ours, peer, atol=TOL)


@functools.lru_cache(maxsize=None)
def tiny_ssd(normalized: bool = False):
    model = TinySSD(normalized=normalized)
    path = FOLDER / f"tiny_ssd{'_normalized' if normalized else ''}.onnx"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["boxes", "scores"])
    return model, path


def test_a_split_ssd_head_is_joined_into_one_detector_output():
    model, path = tiny_ssd()
    explainer = Explainer(str(path))
    info = explainer.info
    assert (explainer.kind, info.head, info.num_classes, info.output_shape[1:]) == ("detector", "ssd", 3, (160, 7))
    assert info.logits == "camserve::boxes_scores" and info.scales == ()
    # the default layer is the one every scale branches from: the stem's output feeds both heads
    assert info.default_layer == _layer(explainer, "stem")
    x = _image()
    with torch.no_grad():
        boxes, scores = (t[0].numpy() for t in model(torch.from_numpy(x)))
    np.testing.assert_allclose(explainer.predict(x)[0], np.concatenate([boxes, scores], 1), atol=1e-5)
    found = explainer.detect(x, score=0.0, iou=0.5)[0]
    kept = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores.max(1)),
                                       torch.from_numpy(scores.argmax(1)), 0.5)
    assert [d.anchor for d in found] == kept.tolist()[:len(found)]
    np.testing.assert_allclose(found[0].box, boxes[found[0].anchor], atol=1e-5)
    # normalised boxes, declared, come back in input pixels
    _, normalized = tiny_ssd(normalized=True)
    scaled = Explainer(Model(str(normalized), box_units="normalized")).detect(x, score=0.0, iou=0.5)[0]
    assert [d.anchor for d in scaled] == [d.anchor for d in found]
    np.testing.assert_allclose(scaled[0].box, found[0].box, atol=1e-4)


@pytest.mark.parametrize("module", ["stem", "extra"])
def test_ssd_detections_and_boxes_equal_the_peer(module):
    model, path = tiny_ssd()
    explainer = Explainer(str(path))
    x = _image()
    found = explainer.detect(x, score=0.0, iou=0.5)[0][:3]
    layer = model.get_submodule(module)
    ours = explainer.explain(x, "gradcam", targets=[found], layers=[_layer(explainer, module)])[0]
    for k, d in enumerate(found):
        with GradCAM(model=_Scores(model), target_layers=[layer]) as cam:
            peer = cam(input_tensor=torch.from_numpy(x), targets=[lambda out, d=d: out[d.anchor, d.class_id]])
        np.testing.assert_allclose(ours[k], peer[0], atol=TOL)
    # a Box picks the predicted box of its class with the best IoU + score (FasterRCNNBoxScoreTarget's quantity)
    with torch.no_grad():
        boxes, scores = (t[0] for t in model(torch.from_numpy(x)))
    box = tuple(float(v) + 1.0 for v in boxes[found[1].anchor])
    overlap = torchvision.ops.box_iou(boxes, torch.tensor([box]))[:, 0].numpy()
    anchor = int(np.where(overlap >= 0.5, overlap + scores[:, found[1].class_id].numpy(), -np.inf).argmax())
    chosen = explainer.detection_for(explainer.predict(x)[0], Box(box, found[1].class_id))
    assert chosen.anchor == anchor
    with pytest.raises(BadRequest, match="no objectness"):
        explainer.explain(x, "gradcam", targets=[Detection(found[0].box, found[0].class_id, 0.0, found[0].anchor,
                                                           terms=("class", "objectness"))])


class _Scores(torch.nn.Module):
    """pytorch-grad-cam explains one output: the SSD's scores (N, A, K)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[1]


def test_a_declared_ssd_head_without_two_outputs_is_refused():
    with pytest.raises(BadRequest, match="an ssd head has two outputs.*'output'"):
        Model(str(tiny_yolo()[1].model.path), head="ssd")


def test_gradients_through_the_detector_head_equal_finite_differences():
    model, explainer = tiny_yolo()
    x = _image()
    top = explainer.detect(x, score=0.0)[0][0]
    layer = _layer(explainer, "down4")
    out = explainer._context.gradients([layer], x, explainer._weights(explainer.predict(x), [[top]])[:, 0])
    grad, acts = out[GRAD_PREFIX + layer], out[layer]
    # f(A) = the detection's class score as a function of the layer: the torch tail after down4
    def score(a: np.ndarray) -> float:
        with torch.no_grad():
            p4 = torch.from_numpy(a)
            p3 = model.stem(torch.from_numpy(x))
            p5 = model.down5(p4)
            outs = [torch.cat([model.box[i](p), model.cls[i](p)], 1).flatten(2) for i, p in enumerate((p3, p4, p5))]
            return float(torch.cat(outs, 2)[0, 4 * model.bins + top.class_id, top.anchor].sigmoid())
    rng = np.random.default_rng(1)
    for _ in range(3):
        direction = rng.standard_normal(acts.shape).astype(np.float64)
        eps = 1e-3
        fd = (score((acts + eps * direction).astype(np.float32)) - score((acts - eps * direction).astype(np.float32)))
        assert (grad * direction).sum() == pytest.approx(fd / (2 * eps), rel=2e-2, abs=1e-5)


def test_several_detections_in_one_run_equal_one_call_each():
    model, explainer = tiny_yolo()
    x = _image()
    found = explainer.detect(x, score=0.0, iou=0.3)[0][:3]
    together = explainer.explain(x, "gradcam", targets=[found])
    assert together.shape == (1, len(found), 64, 64)
    for k, d in enumerate(found):
        np.testing.assert_allclose(together[0, k], explainer.explain(x, "gradcam", targets=[d])[0], atol=1e-5)
    # a method built on class probabilities is refused on a detector, with the methods that apply
    with pytest.raises(BadRequest, match="scores classes only.*ablationcam.*gradcam.*scorecam"):
        explainer.explain(x, "reciprocam", targets=[found[0]])


def test_bad_detector_targets_are_refused_clearly():
    model, explainer = tiny_yolo()
    x = _image()
    with pytest.raises(BadRequest, match="no predicted box"):
        explainer.explain(x, "gradcam", targets=[Box((200, 200, 260, 260), 0)])
    with pytest.raises(BadRequest, match="out of range"):
        explainer.explain(x, "gradcam", targets=[Box((0, 0, 30, 30), 7)])
    with pytest.raises(BadRequest, match="x1 > x0"):
        explainer.explain(x, "gradcam", targets=[Box((30, 0, 10, 30), 0)])
    with pytest.raises(BadRequest, match="does not apply to a detector"):
        explainer.explain(x, "gradcam", targets=[Region(0)])
    with pytest.raises(BadRequest, match="targets are camserve.targets objects"):
        explainer.explain(x, "gradcam", targets=[1])


# -- perturbation methods score their copies with the same target functional -------------------------------------
@functools.lru_cache(maxsize=None)
def tiny_segmenter():
    from zoo import TinySegmenter
    model = TinySegmenter()
    return model, Explainer(str(_exported("tiny_segmenter", model, 64)))


@pytest.mark.parametrize("method, cls", [("scorecam", "ScoreCAM"), ("ablationcam", "AblationCAM")])
def test_perturbation_methods_on_a_region_and_a_box_equal_the_peer(method, cls):
    import pytorch_grad_cam
    peer_cls = getattr(pytorch_grad_cam, cls)
    x = photos(64)[:1]
    model, explainer = tiny_segmenter()
    region, mask = 1, np.zeros((64, 64), np.float32)
    mask[8:40, 16:56] = 1.0   # a region of class 1 given by its mask
    with peer_cls(model=model, target_layers=[model.encoder[2]]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=[SemanticSegmentationTarget(region, mask)])
    ours = explainer.explain(x, method, targets=[Region(region, mask)], layers=[_layer(explainer, "encoder.2")])
    assert peer.max() > 0.5
    np.testing.assert_allclose(ours, peer, atol=TOL)

    model, explainer = tiny_yolo()
    x = _image()
    top = explainer.detect(x, score=0.0)[0][0]
    with torch.no_grad():
        raw = model(torch.from_numpy(x))[0].numpy()
    module = "stem.2" if top.anchor < 64 else "down4" if top.anchor < 80 else "down5"
    with peer_cls(model=model, target_layers=[model.get_submodule(module)]) as cam:
        peer = cam(input_tensor=torch.from_numpy(x), targets=[lambda out: out[4 + top.class_id, top.anchor]])
    ours = explainer.explain(x, method, targets=[top])
    assert raw[4 + top.class_id, top.anchor] == pytest.approx(top.score, abs=1e-5)
    np.testing.assert_allclose(ours, peer, atol=TOL)


def test_score_cam_variants_that_weigh_probabilities_refuse_other_kinds():
    _, explainer = tiny_segmenter()
    with pytest.raises(BadRequest, match="variant pytorch-grad-cam"):
        explainer.explain(_image(), "scorecam", targets=[Region(2)], variant="official")


def test_detection_metrics_equal_their_formulas():
    """Pointing game, energy in the box, and deletion / insertion of the detection's own score (its anchor's class
    score on each path image, scored by the torch model), for each of three detections."""
    from camserve.service.detection_metrics import evaluate_detections
    from camserve.service.metrics.causal import blur
    model, explainer = tiny_yolo()
    x = photos(64)[:1]
    found = explainer.detect(x, score=0.0, iou=0.3)[0][:3]
    scores = evaluate_detections(explainer, x, "gradcam", found, step=256)
    maps = explainer.explain(x, "gradcam", targets=[found])[0]
    for d, s, cam in zip(found, scores, maps):
        assert s.detection == d
        box = (int(np.floor(max(d.box[0], 0))), int(np.floor(max(d.box[1], 0))),
               int(np.ceil(min(d.box[2], 64))), int(np.ceil(min(d.box[3], 64))))
        inside = np.zeros((64, 64), bool)
        inside[box[1]:box[3], box[0]:box[2]] = True
        norm = (cam - cam.min()) / (cam.max() - cam.min())
        assert s.energy_in_box == pytest.approx(100 * norm[inside].sum() / norm.sum(), abs=1e-3)
        py, px = np.unravel_index(cam.argmax(), cam.shape)
        ys, xs = np.nonzero(inside)
        assert s.pointing_game == 100.0 * bool((((ys - py) ** 2 + (xs - px) ** 2) <= 15 ** 2).any())
        assert s.box_share == pytest.approx(100 * inside.mean())
        order = np.flip(np.argsort(cam.reshape(-1), kind="stable"))   # RISE's order: most salient first
        for kind, start, finish, auc in (("deletion", x[0], np.zeros_like(x[0]), s.deletion_auc),
                                         ("insertion", blur(x)[0], x[0], s.insertion_auc)):
            curve = []
            for k in range(0, 64 * 64 + 1, 256):
                moved = np.zeros(64 * 64, bool)
                moved[order[:k]] = True
                image = np.where(moved.reshape(64, 64)[None], finish, start)[None].astype(np.float32)
                with torch.no_grad():
                    curve.append(float(model(torch.from_numpy(image))[0, 4 + d.class_id, d.anchor]))
            np.testing.assert_allclose(getattr(s, f"{kind}_curve"), curve, atol=1e-4)
            assert auc == pytest.approx(np.trapezoid(curve, dx=1 / (len(curve) - 1)), abs=1e-5)


# -- a graph with NonMaxSuppression inside: (1, D, 6) detections ----------------------------------------------------
class NmsYolo(torch.nn.Module):
    """TinyYolo's raw head, decoded and suppressed in the graph (torchvision's nms -> ONNX NonMaxSuppression):
    rows x0, y0, x1, y1, score, class."""

    def __init__(self):
        super().__init__()
        self.yolo = TinyYolo()

    def forward(self, x):
        raw = self.yolo(x)[0]
        boxes = torch.stack([raw[0] - raw[2] / 2, raw[1] - raw[3] / 2, raw[0] + raw[2] / 2, raw[1] + raw[3] / 2], 1)
        score, label = raw[4:].t().max(1)
        keep = torchvision.ops.nms(boxes, score, 0.5)
        return torch.cat([boxes[keep], score[keep, None], label[keep, None].float()], 1)[None]


def test_gradients_through_an_in_graph_nms_equal_finite_differences_and_the_raw_head():
    model = NmsYolo().eval()
    x = _image()
    path = FOLDER / "nms_yolo.onnx"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(model, torch.from_numpy(x), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], dynamic_axes={"output": {1: "D"}})
    explainer = Explainer(str(path))
    assert (explainer.kind, explainer.info.head) == ("detector", "nms")
    found = explainer.detect(x, score=0.0)[0]
    with torch.no_grad():
        rows = model(torch.from_numpy(x))[0].numpy()
    assert len(found) == len(rows) and found[0].score == pytest.approx(rows[:, 4].max(), abs=1e-6)
    # d(score of detection 0)/d(input) through Gather-after-NonMaxSuppression, against central differences
    weights = explainer._weights(explainer.predict(x), [[found[0]]])[:, 0]
    grad = explainer._context.gradients([explainer.model.default_layer], x, weights, input_gradient=True)
    direction = np.random.default_rng(1).standard_normal(x.shape)
    eps = 1e-2
    with torch.no_grad():
        score = lambda z: float(model(torch.from_numpy(z.astype(np.float32)))[0, 0, 4].double())  # noqa: E731
        fd = (score(x + eps * direction) - score(x - eps * direction)) / (2 * eps)
    assert (grad[GRAD_PREFIX + "input"] * direction).sum() == pytest.approx(fd, rel=2e-2)
    # its map (every scale fused: the others' gradients are 0) equals the raw head's at that detection's anchor
    _, raw_explainer = tiny_yolo()
    anchor = next(d.anchor for d in raw_explainer.detect(x, score=0.0, iou=1.0)[0]
                  if np.allclose(d.box, found[0].box, atol=1e-4) and d.class_id == found[0].class_id)
    ours = explainer.explain(x, "gradcam", targets=[found[0]])
    raw = raw_explainer.explain(x, "gradcam", targets=[Detection(found[0].box, found[0].class_id, anchor=anchor)])
    assert ours.max() > 0.5
    np.testing.assert_allclose(ours, raw, atol=1e-4)


def test_maps_renormalised_in_their_boxes_follow_the_recipe():
    """pytorch-grad-cam's renormalize_cam_in_bounding_boxes (its YOLO Eigen-CAM tutorial), one box per map: the
    map min-maxed inside the integer box, 0 outside, then min-maxed again."""
    _, explainer = tiny_yolo()
    x = photos(64)[:1]
    found = explainer.detect(x, score=0.0, iou=0.3)[0][:2]
    plain = explainer.explain(x, "eigencam", targets=[found])[0]
    boxed = explainer.explain(x, "eigencam", targets=[found], in_box=True)[0]

    def scale(img):
        img = img - img.min()
        return img / (1e-7 + img.max())
    for cam, ours, d in zip(plain, boxed, found):
        x0, y0, x1, y1 = (int(v) for v in d.box)
        expected = np.zeros_like(cam)
        expected[max(y0, 0):y1, max(x0, 0):x1] = scale(cam[max(y0, 0):y1, max(x0, 0):x1])
        np.testing.assert_allclose(ours, scale(expected), atol=1e-6)
        assert ours.max() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(BadRequest, match="in_box"):
        tiny_segmenter()[1].explain(x, "gradcam", in_box=True)
