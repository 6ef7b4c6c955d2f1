"""Keras applications (random init) exported by tf2onnx, and their maps by tf-keras-vis, in a virtualenv of their own.

Run there by tests/parity/test_keras.py: `python keras_peer.py OUT SIZE IMAGE.npy`. For each model it writes
OUT/<name>.onnx (tf2onnx, the Keras model as built: NHWC input, softmax output) and OUT/<name>.npz: the Keras
logits, the top-1 class, and tf-keras-vis's raw (h, w) maps at the named layer (expand_cam=False,
normalize_cam=False), with ReplaceToLinear taking the softmax off as tf-keras-vis documents for gradient maps.

Grad-CAM++ is written here from its formula with a GradientTape (docs/methods.md): tf-keras-vis's GradcamPlusPlus
also divides each channel's alphas by their spatial sum, a variant pytorch-grad-cam and camserve do not follow.
"""
from __future__ import annotations

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"   # tf-keras-vis is written for tf.keras 2 (the tf-keras package)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tf2onnx
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.layercam import Layercam
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import CategoricalScore

# model -> (its last feature map's Keras layer, the tf-keras-vis methods compared there)
MODELS = {
    "MobileNetV2": ("out_relu", ("gradcam", "gradcam++", "layercam")),
    "ResNet50": ("conv5_block3_out", ("gradcam",)),
    "EfficientNetB0": ("top_activation", ("gradcam",)),
}
PEERS = {"gradcam": Gradcam, "layercam": Layercam}


def grad_cam_plus_plus(model, layer: str, x: np.ndarray, top: int) -> np.ndarray:
    """Chattopadhay et al. 2018 (https://arxiv.org/abs/1710.11063), on the logits: with g = dS/dA,
    alpha = g^2 / (2 g^2 + sum_ab A * g^3), w_k = sum_ij alpha ReLU(g), map = ReLU(sum_k w_k A_k)."""
    dense = model.layers[-1]
    inner = tf.keras.Model(model.inputs, [model.get_layer(layer).output, dense.input])
    with tf.GradientTape() as tape:
        acts, features = inner(x, training=False)
        score = (features @ dense.kernel + dense.bias)[:, top]
    g = tape.gradient(score, acts).numpy().astype(np.float64)
    acts = acts.numpy().astype(np.float64)
    denominator = 2 * g ** 2 + acts.sum(axis=(1, 2), keepdims=True) * g ** 3
    alpha = np.where(g != 0, g ** 2 / (denominator + 1e-6), 0)   # the eps of pytorch-grad-cam's code
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    return np.maximum((weights * acts).sum(axis=-1), 0)[0]


def main(out: str, size: int, image: str) -> None:
    x = np.load(image).astype(np.float32)                        # (1, size, size, 3)
    for name, (layer, methods) in MODELS.items():
        tf.keras.utils.set_random_seed(0)
        model = getattr(tf.keras.applications, name)(weights=None, input_shape=(size, size, 3))
        dense = model.layers[-1]
        features = tf.keras.Model(model.inputs, dense.input)(x).numpy()
        # Keras's initialisation leaves these logits near 1e-11, where float32 products of gradients (Grad-CAM++'s
        # cubes) underflow; a trained model's are O(1), so the classifier's kernel is drawn at that scale
        scale = 1 / (np.sqrt(features.shape[-1]) * np.sqrt(np.mean(features ** 2)))
        dense.kernel.assign(np.random.default_rng(0).normal(0, scale, dense.kernel.shape).astype(np.float32))
        spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=f"{out}/{name}.onnx")
        probabilities = model(x, training=False).numpy()
        logits = features @ dense.kernel.numpy() + dense.bias.numpy()
        top = int(logits[0].argmax())
        maps = {}
        for method in methods:
            if method == "gradcam++":
                maps[method] = grad_cam_plus_plus(model, layer, x, top)
                continue
            peer = PEERS[method](model, model_modifier=ReplaceToLinear(), clone=True)
            maps[method] = np.asarray(peer(CategoricalScore([top]), x, penultimate_layer=layer,
                                           seek_penultimate_conv_layer=False, expand_cam=False,
                                           normalize_cam=False))[0]
        np.savez(f"{out}/{name}.npz", logits=logits, probabilities=probabilities, top=top, **maps)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
