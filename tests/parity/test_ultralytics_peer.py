"""Real Ultralytics YOLOv8n and YOLO11n (built from their yaml, random init) against pytorch-grad-cam 1.5.7 on the
same torch model: box targets with FasterRCNNBoxScoreTarget's rule, at each head scale's own branch layer, and
Eigen-CAM; each model exported twice, by torch.onnx.export and by Ultralytics' own exporter (<= 1e-3).

Ultralytics runs in a virtualenv of its own (its pins clash with ours): tests/parity/ultralytics_peer.py builds,
exports and runs the peer there, and this file compares camserve with what it wrote."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from camserve import Explainer
from camserve.targets import Box
from venvs import run_peer, venv_over
from zoo import CACHE

ROOT = Path(__file__).resolve().parents[2]
FOLDER = CACHE.parent / "ultralytics"
SIZE = 320
TOL = 1e-3
MODELS = {"yolov8n": (15, 18, 21), "yolo11n": (16, 19, 22)}   # the neck outputs each Detect head reads
EXPORTS = ("torch", "ultralytics")


@functools.lru_cache(maxsize=None)
def peer() -> Path:
    """The exports and the peer's maps, made once per machine (keyed by the pins and the peer script)."""
    requirements = ROOT / "requirements-ultralytics.txt"
    return run_peer(FOLDER, requirements, Path(__file__).parent / "ultralytics_peer.py",
                    lambda venv: venv_over(venv, requirements), photo(), [str(SIZE), *(f"{m}.yaml" for m in MODELS)],
                    600, YOLO_CONFIG_DIR="{home}", OMP_NUM_THREADS="2",
                    **{k: os.environ[k] for k in ("PIP_INDEX_URL",) if k in os.environ})


def photo() -> np.ndarray:
    """scikit-image's astronaut at 320 x 320, RGB in [0, 1] (YOLO's preprocessing without the letterbox)."""
    import cv2
    import skimage
    image = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None] / 255)


@functools.lru_cache(maxsize=2)
def explainer(name: str, export: str) -> Explainer:
    return Explainer(str(peer() / f"{name}-{export}.onnx"), threads=2)


def expected(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(peer() / f"{name}.npz"))


@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("name", MODELS)
def test_a_real_yolo_is_read_as_a_detector_with_its_head_branches(name, export):
    explainer_ = explainer(name, export)
    info = explainer_.info
    assert (explainer_.kind, info.head, info.num_classes) == ("detector", "yolov8", 80)
    assert [(s, a) for s, a, _ in info.scales] == [(8, 1600), (16, 400), (32, 100)]
    for (_, _, layer), module in zip(info.scales, MODELS[name]):
        assert layer.endswith(f"model.{module}/cv2/act/Mul_output_0"), layer


@pytest.mark.parametrize("stride", (8, 16, 32))
@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("name", MODELS)
def test_box_target_gradcam_at_its_own_scale_equals_the_peer(name, export, stride):
    """The peer's map is taken at the neck output of the scale the chosen anchor belongs to; ours at the default
    layer, which must be that one."""
    explainer_, peer_ = explainer(name, export), expected(name)
    *box, class_id, anchor, _ = peer_[f"box_{stride}"]
    target = Box(tuple(box), int(class_id))
    x = np.load(peer() / "image.npy")
    assert target.anchor_in(explainer_.predict(x)[0], explainer_.model) == int(anchor)
    result = explainer_.explain_full(x, "gradcam", targets=[target])
    assert result.fusion == "own scale"
    assert peer_[f"gradcam_{stride}"].max() > 0.5
    np.testing.assert_allclose(result.maps, peer_[f"gradcam_{stride}"], atol=TOL)


@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("name", MODELS)
def test_eigencam_equals_the_peer(name, export):
    explainer_ = explainer(name, export)
    x = np.load(peer() / "image.npy")
    ours = explainer_.explain(x, "eigencam", layers=[explainer_.info.scales[-1][2]])
    np.testing.assert_allclose(ours, expected(name)["eigencam"], atol=TOL)


def test_the_raw_head_equals_the_torch_model():
    for name in MODELS:
        for export in EXPORTS:
            x = np.load(peer() / "image.npy")
            np.testing.assert_allclose(explainer(name, export).predict(x)[0], expected(name)["raw"], atol=1e-3)


def test_ten_detections_in_one_run_equal_one_call_each():
    explainer_ = explainer("yolov8n", "ultralytics")
    x = np.load(peer() / "image.npy")
    found = explainer_.detect(x, score=0.3, max_det=10)[0]
    assert len(found) == 10
    together = explainer_.explain_full(x, "gradcam", targets=[found])
    assert together.maps.shape == (1, 10, SIZE, SIZE)
    for k in (0, 4, 9):
        alone = explainer_.explain(x, "gradcam", targets=[found[k]])
        np.testing.assert_allclose(together.maps[0, k], alone[0], atol=1e-5)


def test_letterbox_preprocessing_equals_ultralytics():
    from camserve.service import images
    rgb = np.load(peer() / "chelsea.npy")
    spec = images.Preprocessing(letterbox=SIZE, mean=(0, 0, 0), std=(1, 1, 1))
    ours = images.fit(rgb, spec)
    theirs = np.load(peer() / "chelsea-letterboxed.npy")
    assert ours.shape == theirs.shape == (SIZE, SIZE, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    # a map and a box on the fitted image come back on the photo: the padding dropped, the resize undone
    h, w = rgb.shape[:2]
    nh, nw, top, left, _, _ = images.geometry((h, w), spec)
    assert (nh, nw) == (213, 320) and (top, left) == (-53, 0)   # 53 rows of padding above, 54 below
    cam = np.zeros((SIZE, SIZE), np.float32)
    cam[53:53 + 213] = 1.0
    assert images.unfit(cam, (h, w), spec).min() == pytest.approx(1.0)
    np.testing.assert_allclose(images.unfit_box((0, 53, 320, 266), (h, w), spec), (0, 0, w, h), atol=1e-6)
