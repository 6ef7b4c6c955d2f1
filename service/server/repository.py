"""A Triton-style model repository: DIR/<name>/config.json and DIR/<name>/<version>/model.onnx."""
from __future__ import annotations

import threading
from pathlib import Path

from ..errors import BadRequest
from ..explainer import Explainer
from ..model_config import ModelConfig, load_config


class ModelNotFound(LookupError):
    """No such model or version in the repository."""


class ModelRepository:
    """Explainers built on first use, one per (model, version), kept for the server's life."""

    def __init__(self, root: str | Path, threads: int | None = None, max_batch: int = 32):
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadRequest(f"model repository {self.root} is not a folder", "models")
        self.threads, self.max_batch = threads, max_batch
        self._loaded: dict[tuple[str, str], tuple[ModelConfig, Explainer]] = {}
        self._lock = threading.Lock()

    def models(self) -> dict[str, list[str]]:
        """name -> its versions, highest first."""
        found = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            versions = sorted((int(v.name) for v in folder.iterdir()
                               if v.is_dir() and v.name.isdigit() and (v / "model.onnx").is_file()), reverse=True)
            if versions:
                found[folder.name] = [str(v) for v in versions]
        return found

    def get(self, name: str, version: str = "") -> tuple[str, ModelConfig, Explainer]:
        versions = self.models().get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}; the repository has {sorted(self.models())}")
        version = version or versions[0]
        if version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has {versions}")
        with self._lock:   # one build per model, however many calls arrive at once
            if (name, version) not in self._loaded:
                config = load_config(self.root / name / version / "model.onnx")
                explainer = Explainer(config.path, threads=self.threads, max_batch=self.max_batch)
                self._loaded[name, version] = config, explainer
            config, explainer = self._loaded[name, version]
        return version, config, explainer
