"""The camserve command line: inspect, rewrite, explain (overlay PNG and raw map)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from camserve.service.cli import main

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
    # the names the rewrite adds live under camserve::, where no exported tensor is
    assert [o.name for o in model.graph.output] == ["camserve::logits", layer, "camserve::grad::" + layer]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 3, 224, 224), np.float32)
    logits, acts, grads = session.run(None, {"input": x,
                                             "camserve::class_weights": np.zeros((3, 1000), np.float32)})
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


def test_evaluate_writes_results_and_a_report_chromium_shows(tmp_path, capsys, browser):
    import json

    from selenium.webdriver.common.by import By

    from camserve.service.evaluation import METRICS
    from camserve.service.metrics.summary import adcc_of_means
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(MODEL), "--methods", "gradcam,reciprocam", "--n", "3", "--out", str(out),
                 "--gallery", "2", "--sanity", "2", "--sanity-images", "1", "--batch", "2"]) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err and "3/3" not in captured.err and "6/6" in captured.err   # the progress bar
    assert "reciprocam" in captured.out and "index.html" in captured.out
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 3 and [i["kind"] for i in results["images"]] == ["large", "small", "pair"]
    for method in ("gradcam", "reciprocam"):
        entry = results["methods"][method]
        for metric in METRICS:
            cell = entry["metrics"][metric]
            assert cell["low"] <= cell["mean"] <= cell["high"], (method, metric, cell)
        per_image = entry["per_image"]
        assert all(len(per_image[m]) == 3 for m in METRICS)
        components = np.array([per_image["average_drop"], per_image["coherency"], per_image["complexity"]]).T
        assert entry["metrics"]["adcc"]["mean"] == pytest.approx(adcc_of_means(components))
        assert entry["metrics"]["adcc_per_image"]["mean"] == pytest.approx(np.mean(per_image["adcc"]))
        assert len(entry["curves"]["deletion"]) == len(entry["curves"]["fractions"]) == 29
        assert [s["layers_randomised"] for s in entry["sanity"]] == [1, 53]
        assert all((out / f).is_file() for f in results["gallery"][method])
    assert all((out / i["file"]).is_file() for i in results["images"])

    browser.get((out / "index.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr[data-method]")
    assert [r.get_attribute("data-method") for r in rows] == ["gradcam", "reciprocam"]
    adcc_column = results["metric_order"].index("adcc")
    shown = rows[0].find_elements(By.TAG_NAME, "td")[adcc_column].text.split("\n")[0]
    assert float(shown) == pytest.approx(results["methods"]["gradcam"]["metrics"]["adcc"]["mean"], rel=1e-3)
    for chart in ("deletion", "insertion", "sanity"):
        assert len(browser.find_elements(By.CSS_SELECTOR, f"#{chart}-chart polyline[data-method]")) == 2
    pictures = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert len(pictures) == 2 * 3
    for img in pictures:
        browser.execute_script("arguments[0].scrollIntoView();", img)
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", img) == 224
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery .box")) == 2   # one target box per scene


def test_evaluate_on_a_folder_and_its_errors(tmp_path, capsys):
    import json
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(PHOTO.read_bytes())
    (folder / "boxes.json").write_text(json.dumps({"cat.png": {"boxes": [[60, 20, 330, 280]]}}))
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(MODEL), "--methods", "cam", "--dataset", str(folder),
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "photos" and results["images"][0]["label_name"] == "Egyptian cat"
    assert results["methods"]["cam"]["metrics"]["pointing_game"]["mean"] in (0.0, 100.0)
    capsys.readouterr()
    assert main(["evaluate", "--methods", "gradcam,nocam", "--out", str(out)]) == 2
    assert "unknown method 'nocam'" in capsys.readouterr().err
    assert main(["evaluate", "--methods", "gradcam", "--option", "samples=3", "--out", str(out)]) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err
    for flags, message in ((["--n", "0"], "--n must be at least 1"), (["--batch", "0"], "--batch must be"),
                           (["--methods", ","], "names no method"), (["--sanity", "-1"], "--sanity must be")):
        assert main(["evaluate", "--out", str(out), *flags]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_on_the_benchmark_keeps_what_the_model_gets_right(tmp_path, capsys):
    """--dataset bench: every kept scene is classified as its label by the evaluated model; --no-road leaves
    ROAD and ARCC out (null), every other metric in."""
    import json

    from camserve.service import Explainer, images
    out = tmp_path / "bench"
    assert main(["evaluate", "--model", str(MODEL), "--methods", "gradcam", "--dataset", "bench", "--n", "4",
                 "--no-road", "--out", str(out), "--gallery", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "bench" and results["n"] == 4 and "kept only where" in results["target"]
    metrics = results["methods"]["gradcam"]["metrics"]
    assert metrics["road"]["mean"] is None and metrics["arcc"]["mean"] is None
    assert metrics["insertion_auc"]["mean"] is not None and results["settings"]["road"] is False
    explainer = Explainer(str(MODEL))
    for entry in results["images"]:
        rgb = images.read(str(out / entry["file"]))
        assert int(explainer.predict(images.normalise(rgb, explainer.model.preprocessing)).argmax()) == entry["label"]
    capsys.readouterr()
