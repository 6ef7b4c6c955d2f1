"""The metrics' numpy definitions: hand-checkable cases, the published ADCC table, RISE's blur and AUC."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from camserve.service.metrics import adcc, causal, confidence, localization, sanity
from camserve.service.metrics.summary import adcc_of_means, interval

# ReciproCAM CVPRW'24 Table 1, (Drop, Coherency, Complexity, ADCC) in %
TABLE_1 = [
    (66.42, 69.20, 15.65, 53.52), (32.88, 89.34, 26.33, 75.65), (36.72, 82.68, 28.09, 71.72),
    (26.13, 93.83, 20.27, 81.66), (21.51, 92.24, 27.48, 80.27),
    (42.90, 81.03, 23.04, 69.98), (17.85, 98.18, 44.63, 74.24), (20.67, 97.53, 43.11, 74.20),
    (12.81, 98.35, 41.78, 77.30), (20.68, 97.38, 33.60, 79.08),
    (32.99, 82.80, 22.24, 75.27), (12.82, 97.84, 43.99, 75.86), (15.21, 97.47, 42.25, 76.19),
    (8.61, 98.12, 42.05, 78.14), (15.69, 96.68, 32.90, 80.84),
    (29.38, 81.97, 22.51, 76.40), (11.38, 98.28, 43.94, 76.34), (13.37, 97.76, 42.61, 76.54),
    (7.20, 98.37, 42.04, 78.55), (15.07, 97.21, 32.45, 81.38),
    (28.06, 82.72, 25.57, 76.09), (11.12, 97.30, 48.66, 73.16), (12.70, 97.32, 47.48, 73.58),
    (7.20, 98.00, 46.86, 75.38), (13.70, 96.37, 37.36, 79.10),
    (24.12, 82.94, 25.45, 77.62), (9.74, 95.05, 46.27, 74.61), (9.49, 96.81, 49.24, 73.03),
    (5.37, 97.03, 46.83, 75.60), (12.03, 97.50, 35.62, 80.74)]


@pytest.mark.parametrize("drop, coh, compl, published", TABLE_1)
def test_adcc_reproduces_the_reciprocam_table_from_its_components(drop, coh, compl, published):
    assert abs(float(adcc.adcc(drop, coh, compl)) - published) <= 0.05


def test_adcc_of_averaged_components_is_not_the_mean_of_per_image_adcc():
    components = np.array([[10.0, 90.0, 20.0], [60.0, 50.0, 70.0]])
    of_means = adcc_of_means(components)
    assert of_means == pytest.approx(float(adcc.adcc(35.0, 70.0, 45.0)))
    assert of_means != pytest.approx(float(adcc.adcc(components[:, 0], components[:, 1], components[:, 2]).mean()))
    assert float(adcc.adcc(100.0, 90.0, 10.0)) == 0.0   # a total drop zeroes the harmonic mean


def test_confidence_metrics_by_hand():
    y, o = np.array([0.5, 0.5, 0.2]), np.array([0.25, 0.75, 0.2])
    np.testing.assert_allclose(confidence.average_drop(y, o), [50.0, 0.0, 0.0])
    np.testing.assert_allclose(confidence.increase_in_confidence(y, o), [0.0, 100.0, 0.0])
    np.testing.assert_allclose(confidence.average_gain(y, o), [0.0, 50.0, 0.0], atol=1e-4)
    x, maps = np.ones((1, 3, 2, 2), np.float32), np.array([[[0.0, 0.5], [1.0, 0.25]]], np.float32)
    np.testing.assert_array_equal(confidence.explanation_images(x, maps)[0, 2], maps[0])


def test_coherency_and_complexity_by_hand():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8))
    others = np.stack([maps[0], 1 - maps[1], np.full((8, 8), 0.3)])
    np.testing.assert_allclose(adcc.coherency(maps, others), [100.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(adcc.complexity(np.stack([np.zeros((4, 4)), np.full((4, 4), 0.25)])), [0.0, 25.0])


def test_causal_path_moves_step_pixels_at_a_time_most_salient_first():
    saliency = np.arange(12, dtype=np.float32).reshape(3, 4)
    start, finish = np.zeros((2, 3, 4), np.float32), np.ones((2, 3, 4), np.float32)
    images = causal.path(start, finish, causal.ranks(saliency), step=5)
    assert images.shape == (4, 2, 3, 4)                      # ceil(12 / 5) + 1 scores
    assert [int(im[0].sum()) for im in images] == [0, 5, 10, 12]
    assert images[1, 0].reshape(-1)[-5:].sum() == 5          # the five largest values went first
    np.testing.assert_allclose(causal.fractions(12, 5), [0, 5 / 12, 10 / 12, 1])


def test_auc_is_rise_trapezoid():
    scores = np.array([1.0, 0.5, 0.25, 0.0])
    assert causal.auc(scores) == pytest.approx((1.75 - 0.5) / 3)
    assert causal.auc(np.full(7, 0.4)) == pytest.approx(0.4)


def test_blur_equals_rise_gaussian_kernel_convolution():
    from scipy.ndimage import gaussian_filter
    x = np.random.default_rng(1).normal(size=(2, 3, 20, 24)).astype(np.float32)
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    kernel = torch.zeros(3, 3, 11, 11)
    for c in range(3):  # RISE's gkern: one Gaussian per channel, no channel mixing
        kernel[c, c] = torch.from_numpy(gaussian_filter(delta, 5))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), kernel, padding=5).numpy()
    np.testing.assert_allclose(causal.blur(x), expected, atol=1e-5)


def test_baselines():
    x = np.random.default_rng(2).normal(size=(1, 3, 6, 6)).astype(np.float32)
    assert not causal.baseline(x, "zeros").any()
    np.testing.assert_allclose(causal.baseline(x, "mean")[0, :, 3, 3], x[0].mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown baseline"):
        causal.baseline(x, "noise")


def test_pointing_game_tolerance_is_15_pixels():
    maps = np.zeros((4, 100, 100))
    maps[:, 50, 50] = 1
    boxes = [[(60, 40, 70, 60)],          # 10 px to the right of the point: hit
             [(65, 50, 70, 51)],          # exactly 15 px away: hit
             [(66, 50, 70, 51)],          # 16 px: miss
             []]                          # no ground truth: not counted
    hits = localization.pointing_game(maps, boxes)
    np.testing.assert_array_equal(hits[:3], [100.0, 100.0, 0.0])
    assert np.isnan(hits[3])
    assert localization.pointing_game(maps[:1], [[(66, 50, 70, 51)]], tolerance=16)[0] == 100.0
    assert localization.pointing_game(np.zeros((1, 100, 100)), [[(0, 0, 10, 10)]])[0] == 0.0   # no maximum


def test_energy_pointing_game():
    maps = np.zeros((3, 10, 10))
    maps[0, 2:4, 2:4] = 1
    maps[1] = 1 + np.zeros((10, 10))
    maps[2, 0, 0], maps[2, 5, 5] = 1, 1
    energy = localization.energy_pointing_game(maps, [[(2, 2, 4, 4)], [(0, 0, 5, 5)], [(5, 5, 6, 6)]])
    np.testing.assert_allclose(energy, [100.0, 0.0, 50.0])   # a constant map has no energy to point with


def test_spearman_rank_correlation():
    rng = np.random.default_rng(3)
    maps = rng.random((2, 6, 6))
    np.testing.assert_allclose(sanity.spearman(maps, np.stack([maps[0] ** 3, 1 - maps[1]])), [1.0, -1.0])
    np.testing.assert_allclose(sanity.spearman(maps[:1], np.zeros((1, 6, 6))), [0.0])
    np.testing.assert_allclose(sanity.spearman(np.zeros((2, 6, 6)), np.stack([np.zeros((6, 6)), np.ones((6, 6))])),
                               [1.0, 0.0])   # an unchanged blank map is unchanged; another constant is not
    from scipy.stats import spearmanr
    other = rng.random((1, 6, 6))
    assert sanity.spearman(maps[:1], other)[0] == pytest.approx(spearmanr(maps[0].ravel(), other[0].ravel())[0])
    big = rng.random((1, 16, 16))
    assert sanity.ssim(big, big)[0] == pytest.approx(1.0)
    assert sanity.ssim(big, 1 - big)[0] < 0


def test_bootstrap_interval_brackets_the_mean_and_skips_missing_rows():
    values = np.random.default_rng(4).normal(10, 2, 200)
    summary = interval(values)
    assert summary["low"] < summary["mean"] < summary["high"]
    assert summary["mean"] == pytest.approx(values.mean())
    assert 0.3 < summary["high"] - summary["low"] < 0.8       # ~ 2 * 1.96 * 2 / sqrt(200) = 0.55
    with_gaps = interval(np.array([1.0, np.nan, 3.0]))
    assert with_gaps["mean"] == 2.0
    assert interval(np.array([np.nan]))["mean"] is None


def test_arcc_equals_pytorch_grad_cams_formula(monkeypatch):
    """pytorch-grad-cam's ARCC with its three components stubbed to known values."""
    from pytorch_grad_cam.metrics.arcc import ARCC
    coh, compl, road = np.array([0.9, 0.6, 0.8]), np.array([0.3, 0.5, 0.2]), np.array([0.2, -0.1, 0.7])
    peer = ARCC(base_method=None)
    monkeypatch.setattr(peer, "complexity", lambda cams: compl)
    monkeypatch.setattr(peer, "coherency", lambda *args: coh)
    monkeypatch.setattr(peer, "road", lambda *args: road)
    expected = peer(None, None, None, None)
    np.testing.assert_allclose(adcc.arcc(100 * coh, 100 * compl, road), 100 * expected, rtol=1e-12)
