"""The server's settings: ServerConfig holds every default `camserve serve` uses, and the repository builds each
Explainer with the server's perturbation budget and session budget."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from camserve.service.cli import main
from camserve.service.server import app
from camserve.service.server.app import Limits, ServerConfig
from camserve.service.server.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mobilenet_v2"


@pytest.fixture
def served(monkeypatch):
    """The ServerConfig that `camserve serve ...` would serve with (the server itself is not started)."""
    configs = []

    async def serve(config, ready=None):
        configs.append(config)

    monkeypatch.setattr(app, "serve", serve)

    def run(*args: str) -> ServerConfig:
        assert main(["serve", "--models", str(ROOT / "models"), *args]) == 0
        return configs.pop()
    return run


def test_serve_without_flags_is_server_configs_defaults(served):
    assert served() == ServerConfig(models=str(ROOT / "models"))
    assert ServerConfig(models="m").limits == Limits()


def test_each_setting_has_its_flag(served):
    config = served("--max-sessions", "3", "--perturbation-budget", "7", "--metrics-host", "0.0.0.0",
                    "--max-images", "9", "--max-image-pixels", "1000", "--max-delay-ms", "2")
    assert (config.max_sessions, config.perturbation_budget, config.metrics_host) == (3, 7, "0.0.0.0")
    assert config.limits == Limits(images_per_request=9, image_pixels=1000) and config.max_delay_ms == 2
    fields = {f.name for f in dataclasses.fields(ServerConfig)} - {"models", "token", "limits"}
    flags = {action.dest for action in _serve_parser()._actions}
    assert fields <= flags, f"settings without a flag: {sorted(fields - flags)}"


def _serve_parser():
    from camserve.service.cli import build_parser
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices["serve"]


@pytest.mark.parametrize("flag", ["--max-sessions", "--perturbation-budget", "--workers", "--max-images"])
def test_budgets_must_be_positive(served, flag, capsys):
    assert main(["serve", "--models", str(ROOT / "models"), flag, "0"]) == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err


def test_the_repository_builds_explainers_with_the_servers_budgets():
    repository = ModelRepository(ROOT / "models", threads=1, perturbation_budget=5, max_sessions=3)
    explainer = repository.get(MODEL)[2]
    assert explainer.perturbation_budget == 5 and explainer.runtime.max_sessions == 3
    assert explainer.runtime.threads == 1
