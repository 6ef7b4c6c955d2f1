"""Run inside the Ultralytics virtualenv (see test_ultralytics_peer.py): build YOLO detectors from their yaml
(random init, seed 0), export each with torch.onnx.export and with Ultralytics' own exporter, and write what
pytorch-grad-cam 1.5.7 computes for box targets on the same torch model, for the test to compare with camserve.

    python ultralytics_peer.py OUT_FOLDER SIZE IMAGE.npy [yaml ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from pytorch_grad_cam import EigenCAM, GradCAM
from ultralytics import YOLO

torch.set_num_threads(2)


class Raw(torch.nn.Module):
    """The detection model with its head in export mode: one tensor (N, 4 + K, anchors), boxes as cx, cy, w, h in
    input pixels and class scores after the sigmoid: what an exported YOLOv8/YOLO11 ONNX file outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        head = model.model[-1]
        head.export, head.format, head.dynamic = True, "onnx", False

    def forward(self, x):
        y = self.model(x)
        return y[0] if isinstance(y, (list, tuple)) else y


def box_target(raw: np.ndarray, box, class_id: int):
    """FasterRCNNBoxScoreTarget's rule on a raw head, from the formula: among the predicted boxes with IoU >= 0.5,
    the one of best IoU + class score; the target is that anchor's class score."""
    cx, cy, w, h = raw[:4]
    corners = torch.from_numpy(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1))
    overlap = torchvision.ops.box_iou(corners, torch.tensor([box], dtype=corners.dtype)).numpy()[:, 0]
    quality = np.where(overlap >= 0.5, overlap + raw[4 + class_id], -np.inf)
    anchor = int(quality.argmax())
    return anchor, (lambda out: out[4 + class_id, anchor])


def letterboxed(out: Path, size: int) -> None:
    """Ultralytics' own LetterBox (as its predictor applies it) on a non-square photo, for the preprocessing test."""
    import cv2
    import skimage
    from ultralytics.data.augment import LetterBox

    rgb = skimage.data.chelsea()   # 300 x 451
    np.save(out / "chelsea.npy", rgb)
    bgr = LetterBox(new_shape=(size, size), auto=False)(image=cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.save(out / "chelsea-letterboxed.npy", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def main(out: Path, size: int, image: Path, yamls: list[str]) -> None:
    letterboxed(out, size)
    x = torch.from_numpy(np.load(image))
    for yaml in yamls:
        name = Path(yaml).stem
        torch.manual_seed(0)
        model = Raw(YOLO(yaml).model.float().eval()).eval()
        with torch.no_grad():   # Ultralytics' prior puts every class score near 1e-5 (sigmoid(-11)), where the
            for branch in model.model.model[-1].cv3:   # gradients underflow the comparison: 0 puts them at 0.5
                branch[-1].bias.zero_()
        for p in model.parameters():
            p.requires_grad_(True)
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(out / f"{name}-torch.onnx"), dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["output0"])
        with torch.no_grad():
            raw = model(x)[0].numpy()
        scores = raw[4:]
        results = {"raw": raw}
        # the best-scoring anchor of each head scale: a box target there (shifted 2 px, so it is not that box)
        strides = [int(s) for s in model.model.model[-1].stride]
        start = 0
        for stride, branch in zip(strides, model.model.model[-1].f):   # the neck output each scale reads
            count = (size // stride) ** 2
            anchor = start + int(scores[:, start:start + count].max(0).argmax())
            class_id = int(scores[:, anchor].argmax())
            cx, cy, w, h = raw[:4, anchor]
            box = (float(cx - w / 2 + 2), float(cy - h / 2 + 2), float(cx + w / 2 + 2), float(cy + h / 2 + 2))
            chosen, target = box_target(raw, box, class_id)
            layer = model.model.model[branch]
            with GradCAM(model=model, target_layers=[layer]) as cam:
                results[f"gradcam_{stride}"] = cam(input_tensor=x, targets=[target])
            results[f"box_{stride}"] = np.array([*box, class_id, chosen, branch], np.float64)
            start += count
        with EigenCAM(model=model, target_layers=[model.model.model[model.model.model[-1].f[-1]]]) as cam:
            results["eigencam"] = cam(input_tensor=x, targets=None)
        np.savez(out / f"{name}.npz", **results)
        # Ultralytics' own exporter, on the same weights
        exported = YOLO(yaml)
        exported.model.load_state_dict(model.model.state_dict())
        path = exported.export(format="onnx", imgsz=size, opset=17, simplify=False, dynamic=False)
        Path(path).replace(out / f"{name}-ultralytics.onnx")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
