"""Times detector explanations on YOLOv8n at 640 (ONNX Runtime, 2 threads): Grad-CAM for 1 and for 10 detections
against one plain forward, D-RISE against the same masked forwards run one by one, and pytorch-grad-cam's GradCAM
and EigenCAM on the same torch model and targets (Ultralytics runs in a virtualenv of its own, as in the tests).

    python bench/detection.py [--drise-masks 1000]
"""
import argparse
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import skimage
from common import CACHE, ROOT, THREADS, cpu_model, median_ms, plain_session, verdict

sys.path.insert(0, str(ROOT / "tests"))
from camserve import Explainer
from camserve.service.methods.resample import rise_masks
from camserve.targets import Detection
from venvs import env_of, venv_over

SIZE = 640
DETECTIONS = 10


def peer(folder) -> dict:
    """The export and the peer's timings, from bench/detection_peer.py in the Ultralytics virtualenv."""
    venv = ROOT / ".cache" / "ultralytics" / "venv"
    if not (venv / "bin" / "python").exists():
        venv_over(venv, ROOT / "requirements-ultralytics.txt")
    image = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    np.save(folder / "image.npy", np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None] / 255))
    home = folder / "home"
    home.mkdir(exist_ok=True)
    subprocess.run([str(venv / "bin" / "python"), str(ROOT / "bench" / "detection_peer.py"),
                    str(folder / "yolov8n.onnx"), str(folder / "peer.json"), str(folder / "image.npy"),
                    str(DETECTIONS), str(THREADS)],
                   cwd=folder, env=env_of(venv, home, YOLO_CONFIG_DIR=str(home)), check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads((folder / "peer.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drise-masks", type=int, default=1000)
    args = parser.parse_args()
    folder = CACHE / "detection"
    folder.mkdir(parents=True, exist_ok=True)
    theirs = peer(folder)
    path = folder / "yolov8n.onnx"
    x = np.load(folder / "image.npy")
    explainer = Explainer(path, threads=THREADS)
    session = plain_session(path)
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, threads={THREADS}")
    print(f"onnxruntime {ort.__version__} provider: {explainer.provider}; torch {theirs['torch']} (peer side)")
    layer = explainer.info.scales[-1][2]
    targets = [Detection((0, 0, 1, 1), c, 0.0, anchor=a) for a, c in theirs["targets"]]
    one = explainer.explain(x, "gradcam", targets=[targets[0]], layers=[layer])
    eigen = explainer.explain(x, "eigencam", layers=[layer])
    print(f"max |ours - pytorch-grad-cam|: Grad-CAM {np.abs(one[0] - np.array(theirs['gradcam_map'])).max():.2e}, "
          f"Eigen-CAM {np.abs(eigen[0] - np.array(theirs['eigencam_map'])).max():.2e}\n")

    forward = median_ms(lambda: session.run(None, {"images": x}), 5)
    rows = [("plain forward", forward, theirs["torch_forward_ms"]),
            ("gradcam, 1 detection", median_ms(lambda: explainer.explain(x, "gradcam", targets=[targets[0]],
                                                                         layers=[layer]), 5),
             theirs["pgc_gradcam_1_ms"]),
            (f"gradcam, {DETECTIONS} detections", median_ms(lambda: explainer.explain(x, "gradcam", targets=[targets],
                                                                                      layers=[layer]), 3),
             theirs["pgc_gradcam_k_ms"]),
            ("eigencam", median_ms(lambda: explainer.explain(x, "eigencam", layers=[layer]), 5),
             theirs["pgc_eigencam_ms"])]
    masks = args.drise_masks
    drise = median_ms(lambda: explainer.explain(x, "drise", targets=[targets[0]], masks=masks), 1, warmup=0)
    grids, mrows, mcols = rise_masks(masks, 16, 0.5, (SIZE, SIZE), 0)

    def one_by_one():
        for g, r, c in zip(grids, mrows, mcols):
            session.run(None, {"images": x * (r @ g @ c)[None, None]})
    alone = median_ms(one_by_one, 1, warmup=0)

    print("| what | ours ms | pytorch-grad-cam ms (torch) | ours / plain forward | speedup vs peer |")
    print("|---|---:|---:|---:|---:|")
    for name, ours, pgc in rows:
        print(f"| {name} | {ours:.1f} | {pgc:.1f} | {ours / forward:.2f}x | {pgc / ours:.2f}x |")
    print(f"| drise, {masks} masks | {drise:.0f} | - | {drise / forward:.1f}x | "
          f"{alone / drise:.2f}x vs {masks} ORT forwards one by one ({alone:.0f} ms) |")
    k = rows[2][1]
    print(f"\n(pytorch-grad-cam's {DETECTIONS} detections: {theirs['pgc_gradcam_k_how']}, the faster of one call per "
          "detection and one call on stacked copies)")
    print(f"targets: Grad-CAM for {DETECTIONS} detections <= 2.5x one forward: {k / forward:.2f}x "
          f"{verdict(k / forward <= 2.5)}; >= 3x faster than pytorch-grad-cam on the same target: "
          f"{rows[1][2] / rows[1][1]:.2f}x (1 detection) {verdict(rows[1][2] / rows[1][1] >= 3)}, "
          f"{rows[2][2] / k:.2f}x ({DETECTIONS}) {verdict(rows[2][2] / k >= 3)}")


if __name__ == "__main__":
    main()
