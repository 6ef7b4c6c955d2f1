"""ROAD equals pytorch-grad-cam 1.5.7's: NoisyLinearImputer (noise 0) on real photos, the removal masks and
ROADCombined on a torch ResNet-18; plus a hand-checked 3x3 imputation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam.metrics import road as peer_road
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from scipy.ndimage import gaussian_filter

from camserve.service.metrics.road import PERCENTILES, combined, impute, perturbed, removal_masks
from zoo import photos

SIZE = 64


def cam_like(seed: int, zero_fraction: float = 0.0) -> np.ndarray:
    """A smooth map in [0, 1] like a normalised CAM; zero_fraction of it clipped to exactly 0 (ties)."""
    m = gaussian_filter(np.random.default_rng(seed).random((SIZE, SIZE)), 4)
    m = np.maximum(m - np.quantile(m, zero_fraction), 0)
    return (m / m.max()).astype(np.float32)


@pytest.mark.parametrize("fraction", [0.2, 0.8])
def test_impute_equals_noisy_linear_imputer(fraction):
    x = photos(SIZE)
    maps = np.stack([cam_like(1), np.random.default_rng(2).random((SIZE, SIZE)).astype(np.float32)])
    removed = maps >= np.quantile(maps, 1 - fraction, axis=(1, 2), keepdims=True)
    ours = impute(x, removed, noise=0.0)
    for image, mask, got in zip(x, removed, ours):
        ref = NoisyLinearImputer(noise=0.0)(torch.from_numpy(image), torch.from_numpy((~mask).astype(np.float32)))
        assert np.abs(got - ref.numpy()).max() <= 1e-4
        assert np.array_equal(got[:, ~mask], image[:, ~mask])


@pytest.mark.parametrize("target", [ClassifierOutputSoftmaxTarget, ClassifierOutputTarget])
def test_combined_equals_road_combined(target, monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = photos(SIZE)
    # The first map is 0 on 30% of its pixels: at MoRF 10 the peer removes every pixel (ties are removed)
    maps = np.stack([cam_like(3, zero_fraction=0.3), cam_like(4)])
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    categories = logits.argmax(1).tolist()

    # The peer's ROAD classes build NoisyLinearImputer() with noise 0.01 and its __call__ looks the class up by
    # name, so the stand-in is a class: noise 0, recording each mask it imputes
    seen = []

    class Recording(NoisyLinearImputer):
        def __init__(self):
            super().__init__(noise=0.0)

        def __call__(self, img, mask):
            seen.append(mask.numpy() == 0)
            return super().__call__(img, mask)

    monkeypatch.setattr(peer_road, "NoisyLinearImputer", Recording)
    ref = ROADCombined(percentiles=list(PERCENTILES))(torch.from_numpy(x), maps, [target(c) for c in categories],
                                                      model)

    masks = removal_masks(maps)
    p = len(PERCENTILES)
    # Peer order: LeRF then MoRF, each percentile over the batch
    peer_masks = np.array(seen).reshape(2, p, len(x), SIZE, SIZE).transpose(2, 0, 1, 3, 4)
    assert np.array_equal(masks, np.concatenate([peer_masks[:, 1], peer_masks[:, 0]], axis=1))
    assert masks[0, 0].all()

    images = perturbed(x, maps, noise=0.0)
    with torch.no_grad():
        out = model(torch.from_numpy(images.reshape(-1, *x.shape[1:]))).reshape(len(x), 2 * p, -1)
        scores = torch.stack([target(c)(o) for c, o in zip(categories, out)]).numpy()
        original = torch.stack([target(c)(o) for c, o in zip(categories, logits)]).numpy()
    ours = combined(original, scores)
    assert ours.shape == (len(x),)
    assert np.abs(ours - ref).max() <= 1e-5


def test_three_by_three_by_hand():
    image = np.arange(18, dtype=np.float32).reshape(2, 3, 3) ** 1.5
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    weights = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    mean = impute(image[None], centre[None], noise=0.0)[0]
    assert np.allclose(mean[:, 1, 1], (image * weights).sum(axis=(1, 2)))
    assert np.array_equal(mean[:, ~centre], image[:, ~centre])

    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True
    got = impute(image[None], corner[None], noise=0.0)[0]
    # Only (0,1), (1,0) at 1/6 and (1,1) at 1/12 lie inside; their weights renormalised by 5/12
    expected = (image[:, 0, 1] / 6 + image[:, 1, 0] / 6 + image[:, 1, 1] / 12) / (5 / 12)
    assert np.allclose(got[:, 0, 0], expected)

    noisy = impute(image[None], centre[None], noise=0.5, rng=np.random.default_rng(0))[0]
    assert np.array_equal(noisy[:, ~centre], image[:, ~centre])
    assert np.all(noisy[:, 1, 1] != mean[:, 1, 1])
