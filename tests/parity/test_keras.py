"""Keras applications exported by tf2onnx (MobileNetV2, ResNet50, EfficientNetB0; random init, NHWC input, softmax
output) against tf-keras-vis 0.8.7 on the same Keras models: Grad-CAM on each, LayerCAM and a GradientTape
Grad-CAM++ on MobileNetV2 (<= 1e-3 max abs difference).

TensorFlow runs in a virtualenv of its own (its pins clash with ours): tests/parity/keras_peer.py builds, exports
and runs the peer there, and this file compares camserve with what it wrote. The peer's raw (h, w) maps are
post-processed as pytorch-grad-cam post-processes (its own scale_cam_image: min-max, resize, min-max again), the
convention camserve's maps follow."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from pytorch_grad_cam.utils.image import scale_cam_image

from camserve import Explainer
from venvs import fresh_venv, pip_install, run_peer
from zoo import CACHE

ROOT = Path(__file__).resolve().parents[2]
FOLDER = CACHE.parent / "keras"
SIZE = 160
TOL = 1e-3
# model -> its last feature map's Keras layer, and the methods the peer wrote maps of (keras_peer.MODELS)
MODELS = {"MobileNetV2": ("out_relu", ("gradcam", "gradcam++", "layercam")),
          "ResNet50": ("conv5_block3_out", ("gradcam",)),
          "EfficientNetB0": ("top_activation", ("gradcam",))}


@functools.lru_cache(maxsize=None)
def peer() -> Path:
    """The exports and the peer's maps, made once per machine (keyed by the pins and the peer script)."""
    requirements = ROOT / "requirements-keras.txt"

    def make_venv(venv: Path) -> None:
        fresh_venv(venv)
        pip_install(venv, "--no-deps", "-r", str(requirements))
    return run_peer(FOLDER, requirements, Path(__file__).parent / "keras_peer.py", make_venv,
                    photo().transpose(0, 2, 3, 1), [str(SIZE)], 900, OMP_NUM_THREADS="2")


def photo() -> np.ndarray:
    """scikit-image's astronaut at SIZE x SIZE, (1, 3, H, W) in [-1, 1] (MobileNetV2's preprocessing)."""
    import cv2
    import skimage
    image = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)


@functools.lru_cache(maxsize=1)
def explainer(name: str) -> Explainer:
    return Explainer(str(peer() / f"{name}.onnx"), threads=2)


def expected(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(peer() / f"{name}.npz"))


@pytest.mark.parametrize("name", MODELS)
def test_a_keras_export_is_an_nhwc_classifier_explained_at_its_last_feature_map(name):
    explainer_ = explainer(name)
    info, peer_ = explainer_.info, expected(name)
    assert (info.layout, info.kind, info.num_classes, info.softmax_removed) == ("NHWC", "classifier", 1000, True)
    assert f"/{MODELS[name][0]}/" in explainer_.model.default_layer, explainer_.model.default_layer
    logits = explainer_.predict(photo())
    np.testing.assert_allclose(logits, peer_["logits"], atol=1e-4 * np.abs(peer_["logits"]).max())
    assert logits.argmax() == peer_["top"]
    # the input is square, so an (N, C, h, w) feature map has h == w; a channels-last (N, h, w, C) tensor
    # read as one would not
    assert all(layer.shape[2] == layer.shape[3] for layer in info.layers), \
        [layer for layer in info.layers if layer.shape[2] != layer.shape[3]]


@pytest.mark.parametrize("name, method", [(name, method) for name, (_, methods) in MODELS.items()
                                          for method in methods])
def test_maps_equal_the_tf_keras_peer(name, method):
    raw = expected(name)[method]
    assert raw.max() > 0
    peer_ = scale_cam_image(np.maximum(scale_cam_image(raw[None], (SIZE, SIZE)), 0))
    ours = explainer(name).explain(photo(), method, targets=[int(expected(name)["top"])])
    np.testing.assert_allclose(ours, peer_, atol=TOL)
