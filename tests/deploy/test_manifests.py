"""deploy/: the manifests validate against Kubernetes 1.37 (base and overlays); the images run what exists."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.37.0"


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _merged(base, patch):
    """A strategic merge as kustomize does it for these patches: maps merge, lists of named items
    merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merged(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i
                                                                    for i in base + patch):
        by_name = {item["name"]: item for item in base}
        for item in patch:
            by_name[item["name"]] = _merged(by_name[item["name"]], item) if item["name"] in by_name else item
        return list(by_name.values())
    return patch


def _build(folder: Path) -> list[dict]:
    """The resources `kustomize build folder` would emit (resources, images, patches)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    resources = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        resources += _build(path) if path.is_dir() else _documents(path)
    for patch_entry in spec.get("patches", []):
        for patch in _documents(folder / patch_entry["path"]):
            target = [r for r in resources if (r["kind"], r["metadata"]["name"]) ==
                      (patch["kind"], patch["metadata"]["name"])]
            assert len(target) == 1, f"patch {patch_entry['path']} matches {len(target)} resources"
            resources[resources.index(target[0])] = _merged(target[0], patch)
    for image in spec.get("images", []):
        for resource in resources:
            for container in resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return resources


def _deployment(resources: list[dict]) -> dict:
    return next(r for r in resources if r["kind"] == "Deployment")


@pytest.mark.parametrize("folder", ["base", "overlays/cpu", "overlays/gpu"])
def test_every_resource_validates_strictly(folder):
    resources = _build(K8S / folder)
    assert {r["kind"] for r in resources} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                               "PodDisruptionBudget"}
    for resource in resources:
        kubernetes_validate.validate(resource, VERSION, strict=True)


@pytest.mark.parametrize("folder, tag, gpus", [("overlays/cpu", "cpu", None), ("overlays/gpu", "gpu", "1")])
def test_the_deployment_is_probed_over_grpc_locked_down_and_sized(folder, tag, gpus):
    resources = _build(K8S / folder)
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


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_the_images_run_the_packaged_server_as_a_user(name):
    lines = [line for line in (ROOT / "deploy" / "docker" / name).read_text().splitlines()
             if line and not line.startswith("#")]
    instructions = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.split()[0].isupper()}
    assert instructions["USER"] == "10001" and set(instructions["EXPOSE"].split()) == {"50051", "9090"}
    entry, cmd = yaml.safe_load(instructions["ENTRYPOINT"]), yaml.safe_load(instructions["CMD"])
    assert entry == ["camserve", "serve"]
    assert 'camserve = "service.cli:main"' in (ROOT / "pyproject.toml").read_text()
    build_parser().parse_args(["serve", *cmd])
    for line in lines:
        if line.startswith("COPY"):
            source = shlex.split(line)[1]
            assert (ROOT / source).exists(), f"{name} copies {source}, which the repository lacks"
    # a build context holding the virtualenv and the model zoo's cache would be gigabytes
    assert {".git", ".venv", ".cache"} <= set((ROOT / ".dockerignore").read_text().split())


def test_the_service_monitor_scrapes_the_metrics_port_of_the_service():
    """A ServiceMonitor is the Prometheus Operator's, outside the Kubernetes schemas: checked by hand."""
    (monitor,) = _build(K8S / "monitoring")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    services = [r for r in _build(K8S / "base") if r["kind"] == "Service"
                and monitor["spec"]["selector"]["matchLabels"].items() <= r["metadata"]["labels"].items()]
    scraped = [s for s in services if any(p["name"] == "metrics" for p in s["spec"]["ports"])]
    assert [s["metadata"]["name"] for s in scraped] == ["camserve"]
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]


def test_the_manifests_in_docs_deploy_validate_strictly():
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        kubernetes_validate.validate(yaml.safe_load(block), VERSION, strict=True)
