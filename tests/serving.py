"""A real camserve server process on a loopback port, for the server tests and the service benchmark."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from camserve.service.client import Client

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(process: subprocess.Popen, target: str, timeout: float = 90, ca=None) -> None:
    """Until the health service says SERVING; fail at once if the process dies."""
    with Client(target, ca=ca) as client:
        try:
            client.wait_ready(timeout, alive=lambda: process.poll() is None)
        except TimeoutError:
            process.kill()
            process.wait()
            raise RuntimeError(f"the server did not start: {log_of(process)}") from None


def launch(models: str | Path, *args: str, port: int | None = None, env: dict | None = None,
           ca=None) -> tuple[subprocess.Popen, int]:
    """`camserve serve` in a child process; returns it and its port once it serves. Its output (JSON log
    lines) goes to a file, `log_of(process)`: a pipe nobody reads would fill and stall the server. Unless
    args name one, /metrics gets a free port, `process.metrics_port`."""
    port = port or free_port()
    if "--metrics-port" not in args:
        args = (*args, "--metrics-port", str(free_port()))
    log = tempfile.NamedTemporaryFile("w+", prefix="camserve-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "camserve", "serve", "--models", str(models),
                                "--port", str(port), "--host", "127.0.0.1", "--threads", "2", *args], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    process.log_path = log.name
    process.metrics_port = int(args[args.index("--metrics-port") + 1])
    log.close()
    wait_serving(process, f"127.0.0.1:{port}", ca=ca)
    return process, port


def log_of(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text()


def metrics_of(process: subprocess.Popen) -> str:
    """The server's /metrics exposition text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def stop(process: subprocess.Popen, timeout: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@contextlib.contextmanager
def serving(models: str | Path = ROOT / "models", *args: str, env: dict | None = None, ca=None):
    """A server for the block; it must exit 0 on SIGTERM at the end."""
    process, port = launch(models, *args, env=env, ca=ca)
    try:
        yield process, port
    finally:
        code = stop(process)
    assert code == 0, log_of(process)


def violation(error: grpc.RpcError) -> str:
    """The field of the BadRequest violation an error carries."""
    status = rpc_status.from_call(error)
    detail = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(detail)
    return detail.field_violations[0].field


@dataclass
class Server:
    """A launched server with its metrics and log at hand."""
    process: subprocess.Popen
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def samples(self) -> list:
        return [s for family in text_string_to_metric_families(metrics_of(self.process)) for s in family.samples]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`."""
        return sum(s.value for s in self.samples()
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def lines(self) -> list[dict]:
        """The server's JSON log lines so far."""
        found = []
        for line in log_of(self.process).splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return [line for line in found if isinstance(line, dict)]


@contextlib.contextmanager
def server(models: str | Path = ROOT / "models", *args: str):
    """`serving` (its /metrics on a free port, its log in a file; exit 0 on SIGTERM at the end) as a Server."""
    with serving(models, *args) as (process, port):
        yield Server(process, port)


def wait_for(what: str, check, timeout: float = 60) -> float:
    """Poll `check` until it is true; the seconds it took."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"no sign after {timeout} s that {what}"
        time.sleep(0.1)
    return time.monotonic() - began


@contextlib.contextmanager
def in_thread(start, timeout: float = 60):
    """A grpc.aio server run on an event loop of its own in a thread, so that tests can call it with the blocking
    client as camserve's own client does. start(): a coroutine that builds and starts it, returning
    (server, *rest); yields rest, and stops the server and the loop after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server, *rest = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout)
        try:
            yield rest
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
