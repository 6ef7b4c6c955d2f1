"""The model repository in process: external data files count as the model's files for hot reload."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from service.server.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "models" / "mobilenet_v2"


def _save_external(model: onnx.ModelProto, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.ModelProto.FromString(model.SerializeToString())   # saving moves the data out of the proto
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)


def test_replacing_only_the_external_data_reloads_the_model(tmp_path):
    model = onnx.load(str(BUNDLED / "1" / "model.onnx"))
    repository_root = tmp_path / "models"
    (repository_root / "net").mkdir(parents=True)
    shutil.copy(BUNDLED / "config.json", repository_root / "net" / "config.json")
    _save_external(model, repository_root / "net" / "1")
    repository = ModelRepository(repository_root, threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    _, _, first = repository.get("net")
    before = first.predict(x)

    # the same graph, the classifier's bias shifted, written elsewhere and renamed over
    (bias,) = [t for t in model.graph.initializer if list(t.dims) == [1000]]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1.0, bias.name))
    _save_external(model, tmp_path / "staging")
    (tmp_path / "staging" / "weights.bin").replace(repository_root / "net" / "1" / "weights.bin")

    _, _, second = repository.get("net")
    assert second is not first
    assert np.abs(second.predict(x) - before).max() > 0.5
    assert repository.get("net")[2] is second   # and not rebuilt again while nothing changes
