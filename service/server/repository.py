"""A Triton-style model repository, DIR/<name>/config.json and DIR/<name>/<version>/model.onnx, read live."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadRequest
from ..explainer import Explainer
from ..model import Model
from .security import check_model_files

log = logging.getLogger("camserve")


class ModelNotFound(LookupError):
    """No such model or version in the repository (NOT_FOUND)."""


class ModelUnavailable(RuntimeError):
    """The model is on disk but cannot be loaded: corrupt, unsafe, or not a classifier (FAILED_PRECONDITION)."""


@dataclass
class _Loaded:
    explainer: Explainer   # its Model: explainer.model
    signature: tuple


class ModelRepository:
    """Explainers built on first use, one per (model, version), rebuilt when the files change on disk.

    Every call stats the model's files: a replaced model.onnx, config.json or external data file (any
    other file of the version folder) is loaded afresh while calls keep getting the previous Explainer
    until the new one is ready (calls in flight hold theirs), a new version folder is served from the
    next call, a removed model is NOT_FOUND. A model that
    fails to load is logged and not retried until its files change; a replaced model that fails
    leaves the last good one serving.
    """

    def __init__(self, root: str | Path, threads: int | None = None, perturbation_budget: int | None = None,
                 max_sessions: int | None = None, providers: list[str] | None = None, metrics=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadRequest(f"model repository {self.root} is not a folder", "models")
        self.providers, self.metrics = providers, metrics
        # what each Explainer is built with; a setting left None is the Explainer's own default
        self.settings = {name: value for name, value in (("threads", threads), ("perturbation_budget",
                         perturbation_budget), ("max_sessions", max_sessions)) if value is not None}
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._failed: dict[tuple[str, str], tuple[tuple, str]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def models(self) -> dict[str, list[str]]:
        """name -> its versions, highest first; forgets loaded models whose files are gone."""
        found = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            versions = sorted((int(v.name) for v in folder.iterdir()
                               if v.is_dir() and v.name.isdigit() and (v / "model.onnx").is_file()), reverse=True)
            if versions:
                found[folder.name] = [str(v) for v in versions]
        with self._lock:
            for key in [k for k in self._loaded if k[1] not in found.get(k[0], ())]:
                del self._loaded[key]
                self._count(key, "removed")
        return found

    def known(self, name: str) -> bool:
        """Whether `name` is a model of this repository that has been asked for (loaded, or failed to load):
        a folder on disk, not a name a client made up."""
        with self._lock:
            return any(key[0] == name for key in (*self._loaded, *self._failed))

    def get(self, name: str, version: str = "") -> tuple[str, Model, Explainer]:
        """The model's config and Explainer; no version: the highest that loads."""
        versions = self.models().get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}; the repository has {sorted(self.models())}")
        if version and version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has {versions}")
        failure = None
        for candidate in [version] if version else versions:
            try:
                return (candidate, *self._current(name, candidate))
            except (ModelUnavailable, ModelNotFound) as error:
                failure = failure or error
        raise failure

    def _current(self, name: str, version: str) -> tuple[Model, Explainer]:
        key, path = (name, version), self.root / name / version / "model.onnx"
        signature = _signature(path, self.root / name / "config.json", *_data_files(path.parent))
        if signature[0] is None:   # removed since the listing
            raise ModelNotFound(f"model {name!r} version {version} was removed")
        loaded = self._loaded.get(key)
        if loaded is not None and loaded.signature == signature:
            return loaded.explainer.model, loaded.explainer
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        if loaded is not None and not lock.acquire(blocking=False):
            return loaded.explainer.model, loaded.explainer   # another call is loading the new files: serve the old
        if loaded is None:
            lock.acquire()
        try:
            loaded = self._loaded.get(key)
            if loaded is not None and loaded.signature == signature:
                return loaded.explainer.model, loaded.explainer
            failed = self._failed.get(key)
            if failed is not None and failed[0] == signature:
                if loaded is not None:
                    return loaded.explainer.model, loaded.explainer
                raise ModelUnavailable(failed[1])
            try:
                check_model_files(self.root, path)
                explainer = Explainer(Model(path), self.providers, **self.settings)
            except Exception as error:
                message = f"model {name!r} version {version} cannot be loaded: {error}"
                self._failed[key] = signature, message
                self._count(key, "failed")
                log.warning(message, extra={"fields": {"model": name, "version": version}})
                if loaded is not None:
                    return loaded.explainer.model, loaded.explainer
                raise ModelUnavailable(message) from error
            self._count(key, "reloaded" if loaded is not None else "loaded")
            log.info(f"model {name} version {version} {'reloaded' if loaded else 'loaded'} on {explainer.provider}",
                     extra={"fields": {"model": name, "version": version, "provider": explainer.provider}})
            self._loaded[key] = _Loaded(explainer, signature)
            self._failed.pop(key, None)
            return explainer.model, explainer
        finally:
            lock.release()

    def _count(self, key: tuple[str, str], outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.model_load(key[0], key[1], outcome)


def _data_files(folder: Path) -> list[Path]:
    """The version folder's other files: external data, which a model may keep beside model.onnx."""
    try:
        return sorted(p for p in folder.rglob("*") if p.name != "model.onnx")   # _signature stats them
    except OSError:   # the folder went away meanwhile: model.onnx's stat says so
        return []


def _signature(*paths: Path) -> tuple:
    """What changes when a file is replaced or rewritten (a rename swaps the inode, an edit the mtime)."""
    stats = []
    for path in paths:
        try:
            stat = path.stat()
            stats.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError:
            stats.append(None)
    return tuple(stats)
