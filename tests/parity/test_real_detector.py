"""A real pretrained detector that a PyPI package ships: NudeNet 3.4.2's `320n.onnx`, an Ultralytics YOLOv8n
(raw head 1 x 22 x anchors: 4 box terms and 18 classes, FACE_FEMALE and FACE_MALE among them; input size left
open; the wheel says MIT in its metadata and carries the AGPL-3.0 text), on scikit-image's astronaut photo.

Its own detector (nudenet.NudeDetector, onnxruntime) finds one face; camserve finds the same one, and Grad-CAM,
Eigen-CAM and D-RISE maps of that detection lie on it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from camserve import Explainer, Model
from camserve.graph_tools import inspect
from camserve.service.images import Preprocessing, to_tensor, unfit_box

FACE_FEMALE = 1
LETTERBOX = Preprocessing(letterbox=320, pad=0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize=None, crop=None)


def nudenet_onnx() -> Path:
    spec = importlib.util.find_spec("nudenet")   # located, not imported
    return Path(spec.submodule_search_locations[0]) / "320n.onnx"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[np.ndarray, Path]:
    rgb = skimage.data.astronaut()
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb, path


@pytest.fixture(scope="module")
def peer():
    # requirements-weights.txt installs it (--no-deps: it needs only onnxruntime and cv2)
    import nudenet.nudenet
    return nudenet.nudenet


@pytest.fixture(scope="module")
def explainer(peer) -> Explainer:
    labels = list(getattr(peer, "__labels"))
    return Explainer(Model(str(nudenet_onnx()), labels=labels, preprocessing=LETTERBOX), threads=2)


@pytest.fixture(scope="module")
def face(peer, photo, explainer):
    """NudeNet's own input for the photo (padded to a square at the bottom right, resized to 320) and the face
    camserve detects there."""
    blob = peer._read_image(str(photo[1]), 320)[0]
    detections = explainer.detect(blob)[0]
    assert detections and detections[0].label == "FACE_FEMALE"
    return blob, detections[0]


def box_mask(box, shape=(320, 320)) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)   # whole pixels, as in_box and pytorch-grad-cam cut boxes
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_it_is_read_as_a_yolov8_detector_of_18_classes():
    info = inspect(nudenet_onnx())
    assert (info.kind, info.head, info.num_classes) == ("detector", "yolov8", 18)
    assert [stride for stride, _, _ in info.scales] == [8, 16, 32]
    assert isinstance(info.spatial[0], str)   # the input size is left open: anchors depend on the image size


def test_its_face_is_the_one_nudenet_finds(peer, photo, explainer, face):
    rgb, path = photo
    theirs = [d for d in peer.NudeDetector().detect(str(path)) if d["class"] == "FACE_FEMALE"]
    assert len(theirs) == 1
    x, y, w, h = theirs[0]["box"]                     # on the photo, truncated to ints
    _, ours = face
    assert ours.score == pytest.approx(theirs[0]["score"], abs=1e-4)
    side = max(rgb.shape[:2]) / 320                   # NudeNet's input is the photo padded to a square, resized
    assert np.allclose(np.array(ours.box) * side, [x, y, x + w, y + h], atol=1.5)
    # camserve's own letterbox (centred padding) of the photo finds the same face, mapped back onto the photo
    mine = explainer.detect(to_tensor(rgb, LETTERBOX))[0][0]
    assert mine.label == "FACE_FEMALE" and mine.score > 0.5
    assert iou(unfit_box(mine.box, rgb.shape[:2], LETTERBOX), (x, y, x + w, y + h)) > 0.95


def test_grad_cam_of_the_face_lies_inside_its_box(explainer, face):
    blob, detection = face
    result = explainer.explain_full(blob, "gradcam", targets=[[detection]])
    inside = box_mask(detection.box)
    cam = result.maps[0]
    assert result.layers == ["/model.18/cv2/act/Mul_output_0"]   # the neck output at stride 16, its own scale
    share = cam[inside].sum() / cam.sum()
    assert share > 0.8, share        # measured 0.99 of the energy on 0.038 of the image


def test_eigen_cam_of_the_face_favours_its_box(explainer, face):
    blob, detection = face
    inside = box_mask(detection.box)
    cam = explainer.explain(blob, "eigencam", targets=[[detection]])[0]
    share = cam[inside].sum() / cam.sum()
    assert share > 3 * inside.mean(), share    # measured 0.25 (6.7x the box's share of the image)
    boxed = explainer.explain(blob, "eigencam", targets=[[detection]], in_box=True)[0]
    assert boxed[~inside].max() == 0.0 and boxed[inside].max() == pytest.approx(1.0, abs=1e-6)


def test_d_rise_of_the_face_peaks_inside_its_box(explainer, face):
    blob, detection = face
    inside = box_mask(detection.box)
    cam = explainer.explain(blob, "drise", targets=[[detection]], masks=1000, seed=0)[0]
    assert inside[np.unravel_index(cam.argmax(), cam.shape)]
    top = cam >= np.quantile(cam, 0.99)
    assert inside[top].mean() > 0.8, inside[top].mean()           # measured 1.0
    assert cam[inside].mean() > 1.5 * cam[~inside].mean()          # measured 1.7x


def test_camserve_evaluate_scores_the_face_against_nudenets_box(peer, photo, tmp_path):
    """The CLI on a folder whose boxes.json holds the face box NudeNet reports (as a user's ground truth)."""
    import json
    import shutil
    import subprocess
    import sys

    rgb, path = photo
    x, y, w, h = next(d["box"] for d in peer.NudeDetector().detect(str(path)) if d["class"] == "FACE_FEMALE")
    model = tmp_path / "nudenet"
    model.mkdir()
    shutil.copy(nudenet_onnx(), model / "model.onnx")
    spec = {"letterbox": 320, "pad": 0, "mean": [0, 0, 0], "std": [1, 1, 1], "resize": None, "crop": None}
    (model / "config.json").write_text(json.dumps({"labels": list(getattr(peer, "__labels")), "preprocessing": spec}))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(path, data / "astronaut.png")
    (data / "boxes.json").write_text(json.dumps({"astronaut.png": {"boxes": [[x, y, x + w, y + h]],
                                                                   "classes": [FACE_FEMALE]}}))
    out = subprocess.run([sys.executable, "-m", "camserve", "evaluate", "--model", str(model), "--dataset", str(data),
                          "--methods", "eigencam,hirescam", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for method, entry in results["methods"].items():
        metrics = {k: v["mean"] for k, v in entry["metrics"].items()}
        assert metrics["matched"] == 100.0 and metrics["pointing_game"] == 100.0, (method, metrics)
        assert metrics["energy_in_box"] > 3 * metrics["box_share"], (method, metrics)
        assert metrics["insertion_auc"] > metrics["deletion_auc"], (method, metrics)


def test_blank_maps_come_back_with_the_reason(explainer, photo):
    """On camserve's letterbox of the photo the face's Grad-CAM is blank (its pooled weights make the sum negative
    everywhere), and at the stride-32 branch a stride-16 detection has no gradient: each map says why."""
    rgb, _ = photo
    x = to_tensor(rgb, LETTERBOX)
    face = explainer.detect(x)[0][0]
    result = explainer.explain_full(x, "gradcam", targets=[[face]])
    assert result.maps.max() == 0 and "nowhere positive" in result.warnings[0] and "hirescam" in result.warnings[0]
    other = explainer.explain_full(x, "gradcam", targets=[[face]], layers=["/model.21/cv2/act/Mul_output_0"])
    assert other.maps.max() == 0 and "gradient is zero at /model.21/cv2/act/Mul_output_0" in other.warnings[0]
    fine = explainer.explain_full(x, "hirescam", targets=[[face]])
    assert fine.maps.max() == pytest.approx(1.0) and fine.warnings == [""]
