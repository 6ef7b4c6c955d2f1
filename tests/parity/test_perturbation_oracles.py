"""Perturbation CAMs against small torch oracles written from the spec, not from our code.

methods.md §3.17 (Recipro-CAM), §3.19 (FD-CAM, grad-cam 1.3.2 post-processing of §2.6), §3.21 (RISE) and
Group-CAM as the latest official code has it (wofmanaf/Group-CAM cam/groupcam.py, which differs from the
spec's §3.16 text: the score has no ReLU, the group maps are thresholded at their 70th percentile and the
saliency sums the normalised group maps). Each oracle runs the torch twin of the zoo model: the network
after the target layer ("tail") is the torch modules themselves, so no ONNX graph surgery is re-used.

Post-processing (§2.5): per-layer raw map -> ReLU (not for Recipro-CAM and FD-CAM) -> min-max with eps 1e-7
-> cv2.resize INTER_LINEAR to the input size -> the single-layer "fusion" of step 4 (ReLU, mean, min-max with
eps 1e-7 again). The second min-max matters when a raw map's range is small (Recipro-CAM probabilities on a
random-init ResNet span ~1e-4, so eps 1e-7 leaves the first min-max's maximum at ~0.999).
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from skimage.transform import resize

from camserve.service.methods.resample import rise_masks
from zoo import ZOO, layer_for_module

TOL = 1e-3


# --- shared helpers -----------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def onnx_tensor(name: str, module: str) -> str:
    """The ONNX tensor the torch module `module` outputs in zoo model `name`."""
    if module == ZOO[name].target:
        return ZOO[name].onnx_layer()
    return layer_for_module(onnx.load(str(ZOO[name].onnx_path())), module)


def resnet_tail(model):
    return lambda a: model.fc(torch.flatten(model.avgpool(a), 1))


def mobilenet_tail(model, after: int = 17):   # torchvision MobileNetV2.forward after features[after]
    rest = model.features[after + 1:]
    return lambda a: model.classifier(torch.flatten(F.adaptive_avg_pool2d(rest(a), 1), 1))


# (zoo model, torch module of the target layer, tail builder)
TAIL_CASES = [("resnet18", "layer4.1", resnet_tail), ("real_mobilenet_v2_96", "features.17", mobilenet_tail)]
# FD-CAM maps on the two cases above are positive everywhere, where the ReLU grad-cam 1.3.2 leaves out is a
# no-op; at features.16 of the 224 MobileNetV2 the second photo's map goes negative.
FDCAM_SIGNED = ("real_mobilenet_v2", "features.16", lambda model: mobilenet_tail(model, 16))


def head(model, module: str, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations of `module`, logits) for the batch x, without gradients."""
    store = {}
    hook = model.get_submodule(module).register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach()))
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(x))
    finally:
        hook.remove()
    return store["a"], logits


def minmax(m: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    m = m - m.min()
    return m / (eps + m.max())


def pipeline(raw: np.ndarray, size: tuple[int, int], relu: bool) -> np.ndarray:
    """§2.5 on one layer's (N, h, w) raw maps: [ReLU] -> min-max (eps 1e-7) per image -> cv2 bilinear resize
    to size -> (step 4, one layer) ReLU, mean over the layers, final min-max (eps 1e-7)."""
    out = []
    for m in raw.astype(np.float32):
        if relu:
            m = np.maximum(m, 0)
        m = cv2.resize(minmax(m), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out.append(minmax(np.maximum(m, 0)))
    return np.stack(out)


def relative(ours: np.ndarray, ref: np.ndarray) -> float:
    """Max abs difference per image over the reference map's range, the worst image."""
    return max(float(np.abs(o - r).max() / (r.max() - r.min())) for o, r in zip(ours, ref))


# --- Recipro-CAM (§3.17) ---------------------------------------------------------------------------------------

def recipro_oracle(a: torch.Tensor, tail, gaussian: bool) -> torch.Tensor:
    """(classes, h, w) softmax probabilities of the h*w masked copies of one (K, h, w) feature map."""
    K, h, w = a.shape
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    copies = torch.zeros(h * w, K, h, w)
    for i in range(h):
        for j in range(w):
            n = i * w + j
            if not gaussian:
                copies[n, :, i, j] = a[:, i, j]
                continue
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:   # kernel cropped at the borders
                        copies[n, :, i + di, j + dj] = a[:, i, j] * kernel[1 + di, 1 + dj]
    with torch.no_grad():
        probs = torch.softmax(tail(copies), dim=1)              # (h*w, classes)
    return probs.T.reshape(-1, h, w)


@pytest.mark.parametrize("gaussian", [False, True], ids=["plain", "gaussian"])
@pytest.mark.parametrize("name,module,tail_of", TAIL_CASES, ids=[c[0] for c in TAIL_CASES])
def test_reciprocam_equals_torch_oracle(name, module, tail_of, gaussian, get_explainer, get_torch, get_inputs):
    model, x = get_torch(name), get_inputs(name)
    layer = onnx_tensor(name, module)
    acts, logits = head(model, module, x)
    tail = tail_of(model)
    with torch.no_grad():
        assert torch.allclose(tail(acts), logits, atol=1e-4)   # the oracle's tail is the real rest of the net
    top1 = logits.argmax(1).numpy()

    result = get_explainer(name).explain_full(x, "reciprocam", layers=[layer], gaussian=gaussian)
    assert np.array_equal(result.targets, top1)
    probs = torch.stack([recipro_oracle(a, tail, gaussian) for a in acts]).numpy()   # (N, classes, h, w)
    ref = probs[np.arange(len(x)), top1]                                              # (N, h, w)

    raw = result.layer_maps[layer]
    assert raw.shape == ref.shape
    raw_abs, raw_rel = float(np.abs(raw - ref).max()), relative(raw, ref)
    final = float(np.abs(result.maps - pipeline(ref, x.shape[-2:], relu=False)).max())
    # every class comes out of the same tail run; check the whole (N, classes, h, w) block, and one other class
    assert result.class_maps is not None and result.class_maps.shape == probs.shape
    classes_abs = float(np.abs(result.class_maps - probs).max())
    other = np.argsort(logits.numpy(), axis=1)[:, -2]                                 # the runner-up class
    other_rel = relative(result.class_maps[np.arange(len(x)), other], probs[np.arange(len(x)), other])
    errors = dict(raw_abs=raw_abs, raw_rel=raw_rel, final=final, classes_abs=classes_abs, other_rel=other_rel)
    print(name, "gaussian" if gaussian else "plain", errors)
    assert raw_abs <= 1e-5 and raw_rel <= 1e-3 and classes_abs <= 1e-5 and other_rel <= 1e-3, errors
    assert final <= TOL, errors


# --- FD-CAM (§3.19, grad-cam 1.3.2 post-processing) -----------------------------------------------------------

def fdcam_oracle(a: torch.Tensor, tail, threshold: float = 0.95) -> torch.Tensor:
    """The (h, w) map sum_k w_k A_k of one (K, h, w) feature map, for its top-1 class."""
    K = a.shape[0]
    a = a.detach().clone().requires_grad_(True)
    logits = tail(a[None])[0]
    c = int(logits.argmax())
    grad, = torch.autograd.grad(logits[c], a)                   # d logit_c / dA
    a = a.detach()
    g = grad.mean((1, 2))                                       # Grad-CAM weights
    v = a.reshape(K, -1)
    norms = v.norm(dim=1)
    cos = torch.nan_to_num((v @ v.T) / (norms[:, None] * norms[None, :]), nan=0.0)
    on = (cos > torch.quantile(cos, threshold, dim=1, keepdim=True)).to(a.dtype)   # (K, K), strict >
    with torch.no_grad():
        s0 = logits[c].detach()
        s_on = tail(a[None] * on[:, :, None, None])[:, c]
        s_off = s0 - tail(a[None] * (1 - on)[:, :, None, None])[:, c]
    s = s_on + s_off
    unit = lambda t: (t - t.min()) / (t.max() - t.min())        # noqa: E731
    weights = torch.exp(unit(s)) * unit(g) - 0.5
    return (weights[:, None, None] * a).sum(0)


@pytest.mark.parametrize("name,module,tail_of", TAIL_CASES + [FDCAM_SIGNED],
                         ids=[c[0] for c in TAIL_CASES] + ["real_mobilenet_v2-signed"])
def test_fdcam_equals_torch_oracle(name, module, tail_of, get_explainer, get_torch, get_inputs):
    model, x = get_torch(name), get_inputs(name)
    layer = onnx_tensor(name, module)
    acts, logits = head(model, module, x)
    tail = tail_of(model)
    with torch.no_grad():
        assert torch.allclose(tail(acts), logits, atol=1e-4)
    ref = torch.stack([fdcam_oracle(a, tail) for a in acts]).numpy()
    if (name, module) == FDCAM_SIGNED[:2]:   # keeps this case able to tell "no ReLU before min-max" apart
        with_relu, without = pipeline(ref, x.shape[-2:], True), pipeline(ref, x.shape[-2:], False)
        assert ref.min() < 0 and np.abs(with_relu - without).max() > 0.01

    result = get_explainer(name).explain_full(x, "fdcam", layers=[layer])
    assert np.array_equal(result.targets, logits.argmax(1).numpy())
    raw = result.layer_maps[layer]
    assert raw.shape == ref.shape
    raw_rel = relative(raw, ref)
    final = float(np.abs(result.maps - pipeline(ref, x.shape[-2:], relu=False)).max())
    print(name, dict(raw_rel=raw_rel, final=final))
    assert raw_rel <= 1e-3 and final <= TOL, dict(raw_rel=raw_rel, final=final)


# --- Group-CAM (official code, wofmanaf/Group-CAM cam/groupcam.py) ---------------------------------------------

def gaussian_blur(x: torch.Tensor, kernel: int = 51, sigma: float = 50.0) -> torch.Tensor:
    """kornia gaussian_blur2d: separable normalised Gaussian, reflect-101 borders (F.pad "reflect")."""
    t = torch.arange(kernel, dtype=torch.float32) - kernel // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    channels, pad = x.shape[1], kernel // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), g.view(1, 1, 1, kernel).repeat(channels, 1, 1, 1),
                 groups=channels)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), g.view(1, 1, kernel, 1).repeat(channels, 1, 1, 1),
                    groups=channels)


def groupcam_oracle(model, module: str, x: torch.Tensor, groups: int = 32, percentile: float = 70.0):
    """(raw saliency before ReLU, final map, group scores) at input resolution for one (1, 3, H, W) image and
    its top-1 class."""
    H, W = x.shape[-2:]
    store = {}
    hook = model.get_submodule(module).register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
    finally:
        hook.remove()
    c = int(logits[0].argmax())
    grad, = torch.autograd.grad(logits[0, c], store["a"])
    with torch.no_grad():
        weighted = grad.mean((2, 3), keepdim=True) * store["a"]          # alpha_k A_k
        blurred = gaussian_blur(x)
        base = torch.softmax(model(blurred), dim=-1)[0, c]
        masks = []
        for chunk in weighted.chunk(groups, 1):
            m = F.relu(chunk.sum(1, keepdim=True))
            threshold = np.percentile(m.numpy(), percentile)
            m = torch.where(m > threshold, m, torch.zeros_like(m))
            m = F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)
            if m.max() == m.min():
                continue
            masks.append((m - m.min()) / (m.max() - m.min()))
        masks = torch.cat(masks)                                          # (G', 1, H, W)
        scores = torch.softmax(model(x * masks + blurred * (1 - masks)), dim=-1)[:, c] - base   # no ReLU
        saliency = (scores[:, None, None, None] * masks).sum(0)[0]
    return saliency.numpy(), minmax(np.maximum(saliency.numpy(), 0)), scores.numpy()


# resnet18_96 (random init): every group's score is positive. The pretrained MobileNetV2 (features.18)
# gives negative scores too, which the latest official code keeps (no ReLU on the score).
@pytest.mark.parametrize("name", ["resnet18_96", "real_mobilenet_v2_96"])
def test_groupcam_equals_torch_oracle(name, get_explainer, get_torch, get_inputs):
    model, x, layer = get_torch(name), get_inputs(name), ZOO[name].onnx_layer()
    refs = [groupcam_oracle(model, ZOO[name].target, torch.from_numpy(xi[None])) for xi in x]
    raw_ref, final_ref = np.stack([r[0] for r in refs]), np.stack([r[1] for r in refs])
    if name == "real_mobilenet_v2_96":
        assert min(r[2].min() for r in refs) < 0

    result = get_explainer(name).explain_full(x, "groupcam", layers=[layer])
    # our raw layer map is the saliency after the official code's ReLU (before its min-max)
    raw_rel = relative(result.layer_maps[layer], np.maximum(raw_ref, 0))
    final = float(np.abs(result.maps - final_ref).max())
    print(name, dict(raw_rel=raw_rel, final=final))
    assert raw_rel <= 1e-3 and final <= TOL, dict(raw_rel=raw_rel, final=final)


# --- RISE (§3.21, official eclique/RISE recipe) ----------------------------------------------------------------

def official_masks(count: int, cells: int, probability: float, size: tuple[int, int], seed: int):
    """Bernoulli grids upsampled with skimage (order 1, mode reflect) to (s+1)*cell, cropped at a random shift.

    The random draws come in rise_masks' documented order: grids, then the row shifts, then the column shifts.
    For non-square inputs each axis uses its own cell (ceil(H/s), ceil(W/s)).
    """
    height, width = size
    rng = np.random.default_rng(seed)
    grids = (rng.random((count, cells, cells)) < probability).astype(np.float32)
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    dy, dx = rng.integers(0, cell_h, count), rng.integers(0, cell_w, count)
    up = ((cells + 1) * cell_h, (cells + 1) * cell_w)
    masks = np.stack([resize(g, up, order=1, mode="reflect", anti_aliasing=False)[y:y + height, x:x + width]
                      for g, y, x in zip(grids, dy, dx)])
    return grids, masks.astype(np.float32)


@pytest.mark.parametrize("height,width,cells", [(224, 224, 8), (96, 96, 7), (64, 80, 6), (32, 32, 4)])
def test_rise_masks_equal_the_official_skimage_recipe(height, width, cells):
    grids, rows, cols = rise_masks(12, cells, 0.5, (height, width), seed=5)
    ref_grids, ref = official_masks(12, cells, 0.5, (height, width), seed=5)
    assert np.array_equal(grids, ref_grids)
    ours = np.stack([r @ g @ c for g, r, c in zip(grids, rows, cols)])
    assert ours.shape == ref.shape == (12, height, width)
    error = float(np.abs(ours - ref).max())
    print(height, width, cells, error)
    assert error <= 1e-5


def test_rise_equals_torch_oracle(get_explainer, get_torch, get_inputs):
    name, count, cells, probability, seed = "tinynet_batch1", 64, 4, 0.5, 3
    model, x = get_torch(name), get_inputs(name)
    _, masks = official_masks(count, cells, probability, x.shape[-2:], seed)
    masks_t = torch.from_numpy(masks)[:, None]                             # (M, 1, H, W)
    refs, targets = [], []
    with torch.no_grad():
        for xi in torch.from_numpy(x):
            c = int(model(xi[None])[0].argmax())
            targets.append(c)
            p = torch.softmax(model(xi[None] * masks_t), dim=1)[:, c]      # (M,)
            saliency = (p[:, None, None] * masks_t[:, 0]).sum(0) / (count * probability)
            refs.append(minmax(saliency.numpy()))
    ref = np.stack(refs)

    result = get_explainer(name).explain_full(x, "rise", masks=count, cells=cells, probability=probability,
                                              seed=seed)
    assert result.targets.tolist() == targets
    error = float(np.abs(result.maps - ref).max())
    print(name, error)
    assert error <= TOL


# --- D-RISE (Petsiuk et al., CVPR 2021) ---------------------------------------------------------------------------

def test_drise_equals_the_paper_on_a_yolov8_style_head(tmp_path):
    """H = sum_i w_i M_i, w_i = max_j IoU(L_t, L_j) cos(P_t, P_j) O_j over the masked image's proposals (every
    anchor; O_j = 1 for a head without objectness), d_t the detection explained."""
    import torchvision

    from camserve import Explainer
    from zoo import TinyYolo

    model = TinyYolo()
    with torch.no_grad():   # sharper heads, so that masking moves the boxes and class scores
        for branch in (*model.box, *model.cls):
            branch[-1].weight.mul_(20)
    path = tmp_path / "yolo.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    explainer = Explainer(str(path), threads=2)
    from zoo import photos
    x = photos(64)[:1]
    count, cells, probability, seed = 96, 4, 0.5, 2
    _, masks = official_masks(count, cells, probability, (64, 64), seed)
    with torch.no_grad():
        raw = model(torch.from_numpy(x))[0]                                   # (4 + K, A)
        scores = raw[4:]
        anchor = int(scores.max(0).values.argmax())
        c = int(scores[:, anchor].argmax())
        corners = lambda r: torch.stack([r[0] - r[2] / 2, r[1] - r[3] / 2, r[0] + r[2] / 2,  # noqa: E731
                                         r[1] + r[3] / 2], 1)
        target = corners(raw)[anchor:anchor + 1]
        weights = []
        for mask in torch.from_numpy(masks):
            out = model(torch.from_numpy(x) * mask)[0]
            cls = out[4:].double()
            cosine = cls[c] / cls.norm(dim=0)
            weights.append(float((torchvision.ops.box_iou(target, corners(out))[0].double() * cosine).max()))
    ref = minmax((torch.tensor(weights)[:, None, None].numpy() * masks).sum(0))
    detection = next(d for d in explainer.detect(x, score=0.0)[0] if d.anchor == anchor)
    ours = explainer.explain(x, "drise", targets=[detection], masks=count, cells=cells, probability=probability,
                             seed=seed)
    assert np.std(weights) > 0.01   # the masks matter: the map is not min-maxed noise
    np.testing.assert_allclose(ours[0], ref, atol=TOL)
