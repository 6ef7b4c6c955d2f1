"""The torch side of bench/detection.py, run in the Ultralytics virtualenv: YOLOv8n from its yaml (seed 0, class
biases at 0 so scores are not saturated), exported to ONNX, and pytorch-grad-cam's GradCAM / EigenCAM timed on the
same model and targets. Writes a JSON file for the parent.

    python detection_peer.py OUT.onnx OUT.json IMAGE.npy DETECTIONS THREADS
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from common import median_ms
from pytorch_grad_cam import EigenCAM, GradCAM
from ultralytics import YOLO

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "parity"))
from ultralytics_peer import Raw


def main(onnx_path: str, json_path: str, image: str, detections: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Raw(YOLO("yolov8n.yaml").model.float().eval()).eval()
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.zero_()
    for p in model.parameters():
        p.requires_grad_(True)
    x = torch.from_numpy(np.load(image))
    torch.onnx.export(model, torch.zeros_like(x), onnx_path, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["output0"])
    with torch.no_grad():
        raw = model(x)[0].numpy()
    scores = raw[4:]
    coarsest = (x.shape[-1] // 32) ** 2   # the stride-32 anchors, last: their own scale is the layer explained
    start = scores.shape[1] - coarsest
    anchors = start + np.argsort(-scores[:, start:].max(0), kind="stable")[:detections]
    picked = [(int(a), int(scores[:, a].argmax())) for a in anchors]
    layer = model.model.model[model.model.model[-1].f[-1]]   # the coarsest scale's neck output
    target = lambda a, c: (lambda out: out[4 + c, a])  # noqa: E731
    result = {"targets": picked, "layer_module": int(model.model.model[-1].f[-1]), "torch": torch.__version__}
    with torch.no_grad():
        result["torch_forward_ms"] = median_ms(lambda: model(x), 5)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        one = cam(input_tensor=x, targets=[target(*picked[0])])
        result["gradcam_map"] = one[0].tolist()
        result["pgc_gradcam_1_ms"] = median_ms(lambda: cam(input_tensor=x, targets=[target(*picked[0])]), 3)
        # k detections: k calls, or one call on k copies of the image; the faster is the peer's figure
        calls = median_ms(lambda: [cam(input_tensor=x, targets=[target(a, c)]) for a, c in picked], 1)
        batch = median_ms(lambda: cam(input_tensor=x.repeat(len(picked), 1, 1, 1),
                                      targets=[target(a, c) for a, c in picked]), 1)
        result["pgc_gradcam_k_ms"], result["pgc_gradcam_k_how"] = min((calls, "calls"), (batch, "batched"))
    with EigenCAM(model=model, target_layers=[layer]) as cam:
        result["eigencam_map"] = cam(input_tensor=x, targets=None)[0].tolist()
        result["pgc_eigencam_ms"] = median_ms(lambda: cam(input_tensor=x, targets=None), 3)
    with open(json_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
