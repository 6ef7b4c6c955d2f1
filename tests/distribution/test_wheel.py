"""The wheel as a user gets it: `pip wheel .`, installed with its dependencies into a fresh venv outside the
checkout, run from elsewhere. It holds one import name, every module and data file of the checkout, a working
`camserve` command with its bundled model, and the tests that need no torch pass against it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import cv2
import pytest

import camserve
from camserve.service.client import Client
from serving import free_port, stop, wait_serving
from venvs import env_of, fresh_venv, pip_install

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PHOTO = ROOT / "examples" / "chelsea.png"
EGYPTIAN_CAT = 285

# Test files that need neither torch nor anything else of the dev extra but pytest (and cryptography, which
# tests/service/conftest.py imports for its TLS fixtures): hand-built graphs and evidence, and the bundled model.
# A file joins when it no longer imports torch or the zoo (tests/zoo.py exports its models with torch).
TORCHLESS = [
    "tests/methods/test_hand_built.py",       # typed runs, Model, methods on a hand-built graph and evidence
    "tests/graph_tools/test_randomize.py",    # the bundled graph's initializers redrawn
    "tests/service/test_runtime.py",          # a hand-built probe graph on ONNX Runtime
    "tests/service/test_observability.py",    # metrics, the /metrics exporter, JSON logs
    "tests/service/test_data.py",             # synthetic scenes, folders with boxes.json, the bundled model
]
DEV_ONLY = ["torch", "torchvision", "pytorch_grad_cam", "torchcam", "selenium", "hypothesis", "grpc_tools"]


def _pin(name: str) -> str:
    """The dev extra's pin of `name`, so the wheel venv gets the versions .venv has."""
    (pin,) = [r for r in PROJECT["project"]["optional-dependencies"]["dev"] if re.match(rf"{name}==", r)]
    return pin


def _sources() -> dict[str, str]:
    """{repository folder: the package it is installed as}, from pyproject's package-dir (camserve/ as itself)."""
    return {"camserve": "camserve", **{folder: package
                                       for package, folder in PROJECT["tool"]["setuptools"]["package-dir"].items()}}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the tree it was built from). Built from a copy of the checkout: setuptools builds in the
    source tree, and a build/ left there (or one another run is writing) would put stale files in the wheel."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "out",
                                                                "*.egg-info", "__pycache__", ".pytest_cache",
                                                                ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(work / "dist")],
                   cwd=source, check=True)
    (wheel,) = (work / "dist").glob("camserve-*.whl")
    return wheel, source


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout holding the wheel and its runtime dependencies, nothing of the dev extra."""
    venv = fresh_venv(tmp_path_factory.mktemp("wheel-venv") / "venv")
    pip_install(venv, str(built[0]))
    return venv


@pytest.fixture
def outside(tmp_path, venv):
    """Runs a command of the venv in a folder outside the checkout, with the venv's environment only."""
    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(args, cwd=tmp_path, env=env_of(venv, tmp_path), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{args} failed ({done.returncode}): {done.stdout}{done.stderr}"
        return done
    return run


def _python(venv: Path, code: str, run) -> str:
    return run(str(venv / "bin" / "python"), "-c", code).stdout.strip()


def test_the_wheel_holds_one_import_name_and_every_file_of_its_folders(built):
    wheel, source = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"camserve-{camserve.__version__}.dist-info"
        assert archive.read(f"{info}/top_level.txt").decode().split() == ["camserve"]
        record = [line.split(",")[0] for line in archive.read(f"{info}/RECORD").decode().splitlines() if line]
    assert {path.split("/")[0] for path in record} == {"camserve", info}
    assert set(record) == names
    # every module, stub and data file of the mapped folders: a subpackage missing from pyproject's
    # `packages`, or a data file from its package-data, would be absent from every install
    missing = []
    for folder, package in _sources().items():
        for path in (source / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith("."):
                inside = f"{package.replace('.', '/')}/{path.relative_to(source / folder).as_posix()}"
                missing += [] if inside in names else [f"{path.relative_to(source)} (as {inside})"]
    assert not missing, f"the wheel lacks {sorted(missing)}: pyproject's [tool.setuptools] packages or package-data"


def test_the_installed_distribution_has_no_other_top_level_name(venv, outside):
    files = json.loads(_python(venv, "import importlib.metadata as m, json; "
                                     "print(json.dumps([str(f) for f in m.distribution('camserve').files]))", outside))
    assert {f.split("/")[0] for f in files if not f.startswith("..")} == \
        {"camserve", f"camserve-{camserve.__version__}.dist-info"}
    assert [f for f in files if f.startswith("..")] == ["../../../bin/camserve"]   # the console script
    where = _python(venv, "import camserve.service, camserve.graph_tools, camserve.v1, camserve.bundled as b; "
                          "print(b.__path__[0])", outside)
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT)


def test_camserve_version_prints_the_package_version(venv, outside):
    installed = _python(venv, "import camserve; print(camserve.__version__)", outside)
    assert installed == camserve.__version__
    assert outside(str(venv / "bin" / "camserve"), "--version").stdout.strip() == f"camserve {installed}"


def test_the_public_names_import(venv, outside):
    names = ["Explainer", "Client", "Model", "BadRequest"]
    out = _python(venv, f"from camserve import {', '.join(names)}; print({', '.join(names)})", outside)
    assert out.count("<class 'camserve.service.") == len(names), out


def test_explain_with_the_bundled_model_writes_an_overlay_png(venv, outside, tmp_path):
    shutil.copy(PHOTO, tmp_path / "photo.png")
    done = outside(str(venv / "bin" / "camserve"), "explain", "--image", "photo.png", "--out", "overlay.png",
                   "--threads", "2")
    assert f"class {EGYPTIAN_CAT} " in done.stdout and "wrote overlay.png" in done.stdout, done.stdout
    overlay = (tmp_path / "overlay.png").read_bytes()
    assert overlay.startswith(b"\x89PNG\r\n\x1a\n")
    assert cv2.imread(str(tmp_path / "overlay.png")).shape == (224, 224, 3)


def test_serve_with_the_bundled_repository_answers_and_exits_0_on_sigterm(venv, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(venv / "bin" / "camserve"), "serve", "--port", str(port), "--host",
                                    "127.0.0.1", "--metrics-port", "-1", "--threads", "2"], cwd=tmp_path,
                                   stdout=out, stderr=subprocess.STDOUT, env=env_of(venv, tmp_path))
    process.log_path = str(log)
    try:
        wait_serving(process, f"127.0.0.1:{port}")
        with Client(f"127.0.0.1:{port}") as client:   # camserve's Client, from the tests' own environment
            reply = client.explain([PHOTO], "gradcam", "mobilenet_v2")
        assert reply.images[0].explanations[0].class_id == EGYPTIAN_CAT
    finally:
        code = stop(process)
    assert code == 0, log.read_text()


def test_the_tests_that_need_no_torch_pass_against_the_wheel(venv, built):
    """They run in the wheel's venv, from the checkout (their models/ paths are relative to it) but with `-P`, so
    the checkout's camserve/ folder is not importable: what they import is the installed camserve."""
    found = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u, sys; "
                            "print(*[m for m in sys.argv[1:] if u.find_spec(m)])", *DEV_ONLY],
                           env=env_of(venv, built[1].parent), capture_output=True, text=True, check=True)
    assert found.stdout.split() == [], "the wheel's dependencies bring in the dev extra's"
    pip_install(venv, _pin("pytest"), _pin("cryptography"))
    done = subprocess.run([str(venv / "bin" / "python"), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *TORCHLESS], cwd=ROOT, env=env_of(venv, built[1].parent, PYTHONDONTWRITEBYTECODE="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \(.*\))?", summary), summary   # nothing skipped, failed or erred
