"""A real pretrained dense model that a PyPI package ships: PaddleOCR's PP-OCRv4 text detector (DBNet, exported by
paddle2onnx, in rapidocr-onnxruntime 1.4.4, Apache-2.0) on scikit-image's scanned page. It is read as a
segmenter (N x 1 x H x W text probability), and its maps of the text region lie mostly on the text."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from camserve import Explainer
from camserve.graph_tools import inspect
from camserve.targets import Region

NECK = "p2o.Concat.1"   # the DB neck's fused 1/4-scale pyramid (four 24-channel maps), which the head reads


def dbnet() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")   # located, not imported
    return Path(spec.submodule_search_locations[0]) / "models" / "ch_PP-OCRv4_det_infer.onnx"


def page() -> np.ndarray:
    """The page at 192 x 384 (DBNet wants sides divisible by 32), as rapidocr feeds it: BGR, (x/255 - 0.5)/0.5."""
    gray = cv2.resize(skimage.data.page(), (384, 192), interpolation=cv2.INTER_AREA)
    bgr = np.stack([gray] * 3, -1).astype(np.float32)
    return np.ascontiguousarray(((bgr / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(str(dbnet()), threads=2)


def test_the_text_detector_is_read_as_a_one_class_segmenter():
    info = inspect(dbnet())
    assert (info.kind, info.num_classes, info.output_shape[1]) == ("segmenter", 1, 1)
    assert NECK in {layer.name for layer in info.layers}


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])
def test_maps_of_the_text_region_lie_on_the_text(explainer, method):
    x = page()
    text = explainer.predict(x)[0, 0] > 0.3        # DB's binarisation threshold (rapidocr's det thresh)
    assert 0.05 < text.mean() < 0.5
    cam = explainer.explain(x, method, targets=[Region(0)], layers=[NECK])[0]
    assert np.isfinite(cam).all() and cam.max() == pytest.approx(1.0, abs=1e-6)
    inside = float((cam * text).sum() / cam.sum())
    assert inside > 2 * text.mean(), (inside, float(text.mean()))   # measured: 0.49 of the energy on 0.17 of the page


@pytest.mark.parametrize("method", ["hirescam", "layercam", "scorecam", "eigencam"])
def test_other_methods_map_the_text_region(explainer, method):
    """They run on the region (their energy on the text measured 0.23, 0.28, 0.12 and 0.17 of the map on 0.17
    of the page: no claim beyond a valid map)."""
    cam = explainer.explain(page(), method, targets=[Region(0)], layers=[NECK])[0]
    assert cam.shape == (192, 384) and np.isfinite(cam).all() and cam.max() == pytest.approx(1.0, abs=1e-6)


def test_the_default_target_and_layer_run(explainer):
    result = explainer.explain_full(page(), "gradcam")
    assert result.layers == [explainer.model.default_layer] and np.isfinite(result.maps).all()
    assert isinstance(result.target_objects[0], Region) and result.target_objects[0].class_id == 0
