"""The CPU image's payload without Docker: only the files it COPYs, installed by its pip line into a fresh venv,
run by its ENTRYPOINT and CMD as its unprivileged user, from outside the repository, serves a real call."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from serving import free_port, metrics_of, stop, wait_serving
from service.client import Client

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.cpu"
CAT = 285


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def image():
    """A folder laid out as the image's filesystem: /app (WORKDIR, the COPYs into it) and /models."""
    root = Path(tempfile.mkdtemp(prefix="camserve-image-"))
    try:
        workdir = None
        for keyword, rest in _instructions():
            if keyword == "WORKDIR":
                workdir = root / rest.strip().lstrip("/")
                workdir.mkdir(parents=True)
            elif keyword == "COPY":
                *sources, destination = shlex.split(rest)
                target = (workdir / destination) if not destination.startswith("/") else root / destination[1:]
                for source in sources:
                    path = ROOT / source
                    into = target / path.name if destination.endswith("/") else target
                    if path.is_dir():
                        shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        into.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, into)
        os.chmod(root, 0o755)
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield root, workdir
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_cpu_image_payload_installs_and_serves_as_its_user(image):
    root, workdir = image
    instructions = _instructions()
    (run,) = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert run.startswith("pip install --no-cache-dir . ")   # what follows only cleans up
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "."], cwd=workdir, check=True)

    env = dict(kv.split("=", 1) for keyword, rest in instructions if keyword == "ENV" for kv in rest.split())
    user = next(rest.strip() for keyword, rest in instructions if keyword == "USER")
    entry = json.loads(next(rest for keyword, rest in instructions if keyword == "ENTRYPOINT"))
    cmd = json.loads(next(rest for keyword, rest in instructions if keyword == "CMD"))
    port, metrics_port = free_port(), free_port()
    cmd = [*cmd, "--host", "127.0.0.1"]
    cmd[cmd.index("--port") + 1], cmd[cmd.index("--metrics-port") + 1] = str(port), str(metrics_port)
    cmd[cmd.index("--models") + 1] = str(root / "models")
    # as the image's user where this test may switch to it (as root); never with the repository importable
    drop = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if os.geteuid() == 0 else []
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*drop, str(venv / "bin" / entry[0]), *entry[1:], *cmd], cwd=root, stdout=out,
                                   stderr=subprocess.STDOUT,
                                   env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(root), **env})
    process.log_path, process.metrics_port = str(log), metrics_port
    wait_serving(process, f"127.0.0.1:{port}")
    try:
        with Client(f"127.0.0.1:{port}") as client:
            reply = client.explain([ROOT / "examples" / "chelsea.png"], "gradcam", "mobilenet_v2")
        assert reply.images[0].explanations[0].class_id == CAT
        assert 'camserve_requests_total{code="OK"' in metrics_of(process)
        if drop:
            owner = subprocess.run(["ps", "-o", "uid=", "-p", str(process.pid)], capture_output=True, text=True)
            assert owner.stdout.strip() == user
    finally:
        assert stop(process) == 0, log.read_text()
