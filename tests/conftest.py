"""Shared fixtures: zoo models (ONNX + torch twins), cached Explainers, real input photos.

torch, the zoo and Selenium are imported only by the fixtures that need them, so that the tests of hand-built
graphs and evidence also run where only camserve and pytest are installed (tests/distribution/test_wheel.py
runs them in a venv holding the wheel, without the dev extra)."""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

# tests/ for the helper modules (zoo, serving, venvs); never the repository root, whose camserve/ folder would
# shadow an installed camserve (its service/ and graph_tools/ are mapped into it only by the install)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from camserve.service import Explainer

TORCH_THREADS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """torch's intra-op threads kept to 2 wherever a test module (or the zoo) has imported torch."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


# Small caches: an Explainer holds its graph and one session per graph kind, VGG-16 alone is 0.5 GB
# per copy; keeping the whole zoo alive would take more memory than a CI machine may have.
@lru_cache(maxsize=3)
def explainer(name: str) -> Explainer:
    from zoo import ZOO
    return Explainer(ZOO[name].onnx_path(), threads=2)


@lru_cache(maxsize=3)
def torch_model(name: str):
    from zoo import ZOO
    return ZOO[name].torch_model()


@lru_cache(maxsize=None)
def inputs(name: str) -> np.ndarray:
    from zoo import ZOO, photos
    size = ZOO[name].size
    if size >= 64:
        return photos(size)
    return np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install them with `apt-get install -y chromium chromium-driver`")
    options = webdriver.ChromeOptions()
    # both paths given, so Selenium Manager never looks for (or downloads) a browser or a driver
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def get_explainer():
    return explainer


@pytest.fixture(scope="session")
def get_torch():
    return torch_model


@pytest.fixture(scope="session")
def get_inputs():
    return inputs
