"""Evaluation on the bundled real MobileNetV2: RISE's curves, batched forwards, the metrics' wiring, sanity."""
from __future__ import annotations

import numpy as np
import pytest

from camserve.service import images
from camserve.service.data.synthetic import synthetic_scenes
from camserve.service.errors import BadRequest
from camserve.service.evaluation import Settings, class_probabilities, evaluate, sanity_check, score_maps
from camserve.service.explainer import Explainer
from camserve.service.methods.base import softmax
from camserve.service.metrics import adcc, causal, confidence, road
from camserve.service.model_config import load_config

CONFIG = load_config("models/mobilenet_v2")


@pytest.fixture(scope="module")
def explainer():
    return Explainer(CONFIG.path, threads=2, perturbation_budget=8)


@pytest.fixture(scope="module")
def scenes(explainer):
    found = synthetic_scenes(3, lambda rgb: int(explainer.predict(
        images.to_tensor(rgb, CONFIG.preprocessing)).argmax()))
    x = np.concatenate([images.normalise(s.image, CONFIG.preprocessing) for s in found])
    return x, np.array([s.label for s in found]), [s.boxes for s in found]


def _rise_curve(explainer, image, saliency, label, start, finish, step):
    """eclique/RISE CausalMetric.single_run, one forward per step, as the reference code runs it."""
    order = np.flip(np.argsort(saliency.reshape(-1), kind="stable"))
    start, finish = start.copy().reshape(3, -1), finish.reshape(3, -1)
    scores = []
    for i in range(causal.steps(saliency.size, step) + 1):
        logits = explainer.predict(start.reshape(1, *image.shape))
        scores.append(softmax(logits)[0, label])
        coords = order[step * i: step * (i + 1)]
        start[:, coords] = finish[:, coords]
    return np.array(scores)


def test_deletion_and_insertion_equal_rises_step_by_step_loop(explainer, scenes):
    x, labels, boxes = scenes
    step = 224 * 16
    scores = evaluate(explainer, x[:2], labels[:2], boxes[:2], "gradcam", settings=Settings(deletion_step=step))
    for i in range(2):
        deletion = _rise_curve(explainer, x[i], scores.maps[i], labels[i], x[i], np.zeros_like(x[i]), step)
        blurred = causal.blur(x[i:i + 1])[0]
        insertion = _rise_curve(explainer, x[i], scores.maps[i], labels[i], blurred, x[i], step)
        np.testing.assert_allclose(scores.curves["deletion"][i], deletion, atol=2e-5)
        np.testing.assert_allclose(scores.curves["insertion"][i], insertion, atol=2e-5)
        assert scores.per_image["deletion_auc"][i] == pytest.approx(causal.auc(deletion), abs=2e-5)
    assert len(scores.curves["fractions"]) == 15 and scores.curves["fractions"][-1] == 1.0


def test_every_perturbation_forward_runs_in_full_batches(explainer, scenes, monkeypatch):
    x, labels, boxes = scenes
    sizes = []
    predict = explainer.predict
    monkeypatch.setattr(explainer, "predict", lambda images: sizes.append(len(images)) or predict(images))
    evaluate(explainer, x, labels, boxes, "gradcam", settings=Settings(forward_batch=8))
    # x and the explanation images (3 each), deletion and insertion (3 x 29 each), ROAD (3 x 18)
    expected = [3, 3] + [8] * 10 + [7] + [8] * 10 + [7] + [8] * 6 + [6]
    assert sizes == expected


def test_scores_follow_their_definitions(explainer, scenes):
    x, labels, boxes = scenes
    scores = evaluate(explainer, x, labels, boxes, "gradcam")
    y = class_probabilities(explainer, x, labels)
    o = softmax(explainer.predict(confidence.explanation_images(x, scores.maps)))[np.arange(3), labels]
    np.testing.assert_allclose(scores.per_image["average_drop"], 100 * np.maximum(0, y - o) / y, rtol=1e-4)
    np.testing.assert_array_equal(scores.per_image["increase_in_confidence"], 100.0 * (o > y))
    remaps = explainer.explain(x * scores.maps[:, None], "gradcam", labels)
    np.testing.assert_allclose(scores.per_image["coherency"], adcc.coherency(scores.maps, remaps), atol=1e-6)
    assert np.all((scores.per_image["adcc"] >= 0) & (scores.per_image["adcc"] <= 100))
    imputed = np.stack([road.perturbed(x[i:i + 1], scores.maps[i:i + 1], seed=i)[0] for i in range(3)])
    after = softmax(explainer.predict(imputed.reshape(-1, *x.shape[1:]))).reshape(3, 18, -1)
    np.testing.assert_allclose(scores.per_image["road"],
                               road.combined(y, after[np.arange(3), :, labels]), atol=1e-6)
    assert set(scores.per_image["pointing_game"]) <= {0.0, 100.0}
    assert scores.layers and scores.per_image["seconds_per_image"][0] > 0


def test_a_class_map_scores_better_than_its_inverse(explainer, scenes):
    """What the metrics are for: deletion falls faster, insertion rises faster, ROAD separates MoRF from
    LeRF more, and more energy lies in the object's box for Grad-CAM's map than for 1 - map."""
    x, labels, boxes = scenes
    maps = explainer.explain(x, "gradcam", labels)
    good, _ = score_maps(explainer, x, labels, boxes, maps)
    bad, _ = score_maps(explainer, x, labels, boxes, 1 - maps)
    assert good["deletion_auc"].mean() < bad["deletion_auc"].mean()
    assert good["insertion_auc"].mean() > bad["insertion_auc"].mean()
    assert good["road"].mean() > bad["road"].mean()
    assert good["energy_pointing_game"].mean() > bad["energy_pointing_game"].mean()
    assert np.isnan(good["coherency"]).all() and np.isnan(good["adcc"]).all()   # no re-explained maps given


def test_settings_are_checked():
    with pytest.raises(BadRequest, match="insertion_baseline"):
        Settings(insertion_baseline="noise")
    with pytest.raises(BadRequest, match="deletion_step"):
        Settings(deletion_step=0)
    with pytest.raises(BadRequest, match="percentiles"):
        Settings(road_percentiles=(0, 50))


def test_sanity_cascade_destroys_gradcam_similarity(explainer, scenes):
    x, labels, _ = scenes
    curve = sanity_check(explainer, x[:2], labels[:2], "gradcam", stages=3)
    assert [c["layers_randomised"] for c in curve] == [1, 27, 53]
    assert curve[0]["layer"] == "logits"
    assert curve[-1]["spearman"] < 0.5 and curve[-1]["spearman"] < curve[0]["spearman"] + 0.3
    assert all(-1 <= c["spearman"] <= 1 and -1 <= c["ssim"] <= 1 for c in curve)
