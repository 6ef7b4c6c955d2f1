"""The camserve command line: inspect, rewrite, explain (overlay PNG and raw map)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mobilenet_v2"
PHOTO = ROOT / "examples" / "chelsea.png"


def test_inspect_prints_the_layer_table(capsys):
    assert main(["inspect", str(MODEL / "1" / "model.onnx")]) == 0
    out = capsys.readouterr().out
    assert "default layer  /features/features.18/features.18.2/Clip_output_0" in out
    assert "97 candidate layers" in out and "[N, 1280, 7, 7]".replace(" ", "") in out.replace(" ", "").replace("'", "")


def test_rewrite_writes_a_runnable_gradient_graph(tmp_path):
    out = tmp_path / "grad.onnx"
    layer = "/features/features.17/conv/conv.2/Conv_output_0"
    assert main(["rewrite", str(MODEL / "1" / "model.onnx"), "--layers", layer, "-o", str(out)]) == 0
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["logits", layer, "grad::" + layer]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 3, 224, 224), np.float32)
    logits, acts, grads = session.run(None, {"input": x, "class_weights": np.zeros((3, 1000), np.float32)})
    assert logits.shape == (3, 1000) and acts.shape == grads.shape == (3, 320, 7, 7)


def test_explain_writes_overlay_and_map(tmp_path, capsys):
    png, npy = tmp_path / "o.png", tmp_path / "m.npy"
    assert main(["explain", "--model", str(MODEL), "--image", str(PHOTO), "--method", "gradcam++",
                 "--out", str(png), "--save-map", str(npy), "--threads", "2"]) == 0
    assert "class 285 'Egyptian cat'" in capsys.readouterr().out
    cam = np.load(npy)
    assert cam.shape == (224, 224) and cam.dtype == np.float32 and 0 <= cam.min() and cam.max() <= 1
    overlay = cv2.imread(str(png))
    assert overlay.shape == (224, 224, 3)


def test_explain_with_options_and_target(tmp_path, capsys):
    npy = tmp_path / "m.npy"
    assert main(["explain", "--image", str(PHOTO), "--method", "integrative", "--target", "281",
                 "--option", "score='softmax'", "--save-map", str(npy)]) == 0
    assert "class 281" in capsys.readouterr().out


def test_errors_exit_2_with_the_reason(capsys):
    assert main(["explain", "--image", str(PHOTO), "--layer", "nope"]) == 2
    assert "unknown layer 'nope'" in capsys.readouterr().err
    assert main(["explain", "--image", str(ROOT / "README.md")]) == 2
    assert "not a decodable image" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([str(Path(sys.executable).parent / "camserve"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "explain" in result.stdout


def test_rewrite_forward_exposes_layers(tmp_path):
    out = tmp_path / "fwd.onnx"
    layer = "/features/features.17/conv/conv.2/Conv_output_0"
    assert main(["rewrite", str(MODEL / "1" / "model.onnx"), "--kind", "forward", "--layers", layer,
                 "-o", str(out)]) == 0
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["logits", layer]
