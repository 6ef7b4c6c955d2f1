"""Fresh virtualenvs outside the checkout, for the tests of what an install really holds (the CPU image's payload,
the wheel). pip fills them as `make install` fills .venv, with the machine's pip configuration (its local
indexes and wheels, and PyPI)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the developer's virtualenv and the checkout must not leak into a fresh venv through the environment
_LEAKS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH")


def fresh_venv(folder: Path) -> Path:
    """A new virtualenv at `folder`, with no package of the one running the tests; `folder`."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    return folder


def pip_install(venv: Path, *args: str, cwd: Path | None = None) -> None:
    """`pip install -q ARGS` into `venv`, with pip's configuration (index, find-links) as the machine has it.
    --no-compile: byte-compiling every module of SciPy, scikit-image, ONNX... took 25 of the 60 s a venv took on a
    loaded 2-core machine; Python compiles what a test imports when it imports it."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKS}
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-compile", *args], cwd=cwd, env=env,
                   check=True)


def env_of(venv: Path, home: Path, **more: str) -> dict[str, str]:
    """An environment for the venv's programs: its bin/ first on PATH, a HOME of its own, nothing else inherited."""
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **more}


def venv_over(folder: Path, requirements: Path) -> Path:
    """A virtualenv at `folder` that sees every package of the one running the tests (site.addsitedir, so its
    editable installs too), with `requirements` installed over it without their dependencies: for a package
    whose pins clash with ours (Ultralytics) but which runs on what we have. `folder`."""
    import sysconfig

    fresh_venv(folder)
    site = next((folder / "lib").glob("python*/site-packages"))
    (site / "over.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    pip_install(folder, "--no-deps", "-r", str(requirements))
    return folder


def run_peer(folder: Path, requirements: Path, script: Path, make_venv, image, args: list[str], timeout: int,
             **env: str) -> Path:
    """The folder where `script` (run by the venv `make_venv(folder / "venv")` builds once) wrote its exports and
    maps: `python script OUT ARGS[0] OUT/image.npy ARGS[1:]`, run once per machine, keyed by the pins and the
    script, with `image` saved as image.npy and a HOME of its own."""
    import hashlib

    import numpy as np
    out = folder / hashlib.sha256(requirements.read_bytes() + script.read_bytes()).hexdigest()[:12]
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    venv = folder / "venv"
    if not (venv / "bin" / "python").exists():
        make_venv(venv)
    np.save(out / "image.npy", image)
    home = out / "home"
    home.mkdir(exist_ok=True)
    env = {k: v.replace("{home}", str(home)) for k, v in env.items()}
    subprocess.run([str(venv / "bin" / "python"), str(script), str(out), args[0], str(out / "image.npy"), *args[1:]],
                   cwd=out, env=env_of(venv, home, **env), check=True, capture_output=True, timeout=timeout)
    (out / "done").touch()
    return out
