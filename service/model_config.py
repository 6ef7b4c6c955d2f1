"""Locate a model and its config: a bare .onnx file, or a folder laid out like a Triton repository entry."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadRequest
from .images import Preprocessing


@dataclass
class ModelConfig:
    path: Path                                  # the .onnx file
    name: str
    labels: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    default_layer: str | None = None
    kind: str | None = None                     # classifier, segmenter, detector or embedding; None: read the graph
    output: str | None = None                   # the tensor targets weigh; None: the first output
    head: str | None = None                     # a detector's head layout (yolov8, yolov5, nms, ssd)
    box_units: str = "pixels"                   # a detector's boxes: "pixels" of the input, or "normalized" to 0-1
    ste: str = "straight"                       # a QDQ model's gradient estimator: "straight" or "clipped"

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


def load_config(location: str | Path) -> ModelConfig:
    """`model.onnx` (config.json beside it, if any) or `DIR` with `DIR/config.json` and `DIR/<version>/model.onnx`.

    A folder resolves to its highest numeric version.
    """
    path = Path(location)
    if path.is_dir():
        versions = sorted((int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()))
        candidates = [path / str(v) / "model.onnx" for v in reversed(versions)] + [path / "model.onnx"]
        onnx_path = next((c for c in candidates if c.is_file()), None)
        if onnx_path is None:
            raise BadRequest(f"no model.onnx under {path} (expected {path}/<version>/model.onnx)", "model")
        config_file, name = path / "config.json", path.name
    elif path.is_file():
        # DIR/<version>/model.onnx keeps its config in DIR
        folder = path.parent.parent if path.parent.name.isdigit() else path.parent
        onnx_path, config_file = path, folder / "config.json"
        name = folder.name if path.parent.name.isdigit() else path.stem
    else:
        raise BadRequest(f"model {path} does not exist", "model")
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if not isinstance(config, dict):
            raise ValueError("the top level is not an object")
    except ValueError as error:  # JSONDecodeError is a ValueError
        raise BadRequest(f"{config_file} is not a valid model config: {error}", "model") from error
    return ModelConfig(onnx_path, config.get("name", name), list(config.get("labels", [])),
                       Preprocessing.from_dict(config.get("preprocessing")), config.get("default_layer"),
                       config.get("kind"), config.get("output"), config.get("head"),
                       config.get("box_units", "pixels"), config.get("ste", "straight"))
