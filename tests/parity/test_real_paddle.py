"""A real non-PyTorch classifier: PaddleOCR's text-direction classifier (PP-OCR mobile v2.0 cls, a MobileNetV3
exported by paddle2onnx, shipped in rapidocr-onnxruntime 1.4.4, Apache-2.0) on text from scikit-image's page: its
0 / 180 degree decisions, its logits behind paddle2onnx's Identity(Softmax), and camserve's gradients through its
ops against finite differences of ONNX Runtime's own forward."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from camserve import Explainer
from camserve.graph_tools import GRAD_PREFIX

LINES = [(3, 37, 0, 150), (62, 84, 0, 100), (80, 102, 100, 200), (42, 64, 100, 190)]   # rows, columns of the page


def classifier() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")   # located, not imported
    return Path(spec.submodule_search_locations[0]) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def crop(rows_cols, flipped: bool = False) -> np.ndarray:
    """A line of the page at 48 x 192, as rapidocr feeds it: 3 channels, (x / 255 - 0.5) / 0.5."""
    r0, r1, c0, c1 = rows_cols
    gray = skimage.data.page()[r0:r1, c0:c1]
    gray = gray[::-1, ::-1] if flipped else gray
    image = cv2.resize(np.stack([gray] * 3, -1), (192, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.ascontiguousarray(((image / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(str(classifier()), threads=2)


def test_it_reads_text_direction_and_its_logits_sit_behind_the_softmax(explainer):
    assert explainer.kind == "classifier" and explainer.info.num_classes == 2 and explainer.info.softmax_removed
    for line in LINES:
        upright, flipped = explainer.predict(crop(line)), explainer.predict(crop(line, flipped=True))
        assert upright.argmax() == 0 and flipped.argmax() == 1, line   # 0 and 180 degrees


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_its_maps_are_valid_for_both_directions(explainer, method):
    x = np.concatenate([crop(LINES[0]), crop(LINES[0], flipped=True)])
    maps = explainer.explain(x, method)
    assert maps.shape == (2, 48, 192) and np.isfinite(maps).all()
    assert np.allclose(maps.reshape(2, -1).max(1), 1, atol=1e-5)


def test_gradients_through_paddle2onnx_ops_equal_finite_differences(explainer):
    """d(logit 0 - logit 1)/d(input) from camserve's gradient graph, against central differences of the same logits
    from ONNX Runtime's forward of the file (its pre-softmax tensor exposed)."""
    x = crop(LINES[1])

    def margin(image: np.ndarray) -> float:
        logits = explainer.predict(image.astype(np.float32))[0].astype(np.float64)
        return float(logits[0] - logits[1])

    rows = np.array([[1.0, -1.0]], np.float32)
    grad = explainer._context.gradients([], x, rows, input_gradient=True)[GRAD_PREFIX + explainer.info.input_name]
    rng = np.random.default_rng(0)
    ours, theirs = [], []
    for _ in range(6):
        direction = rng.standard_normal(x.shape)
        eps = 1e-4   # float32 logits: smaller steps drown in rounding, larger ones cross MaxPool / HardSwish kinks
        theirs.append((margin(x + eps * direction) - margin(x - eps * direction)) / (2 * eps))
        ours.append(float((grad * direction).sum()))
    ours, theirs = np.array(ours), np.array(theirs)
    assert np.abs(ours - theirs).max() <= 0.08 * np.abs(theirs).max(), (ours, theirs)   # measured: <= 4.7%
    assert np.corrcoef(ours, theirs)[0, 1] >= 0.99
