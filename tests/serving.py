"""A real camserve server process on a loopback port, for the server tests and the service benchmark."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(process: subprocess.Popen, target: str, timeout: float = 90, credentials=None) -> None:
    """Until the health service says SERVING; fail at once if the process dies."""
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.time() + timeout
    try:
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"the server did not start: {process.stdout.read()}")
            time.sleep(0.2)
    finally:
        channel.close()


def launch(models: str | Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """`camserve serve` in a child process (output piped); returns it and its port once it serves."""
    port = port or free_port()
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--models", str(models),
                                "--port", str(port), "--host", "127.0.0.1", "--threads", "2", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_serving(process, f"127.0.0.1:{port}")
    return process, port


def stop(process: subprocess.Popen, timeout: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@contextlib.contextmanager
def serving(models: str | Path = ROOT / "models", *args: str):
    """A server for the block; it must exit 0 on SIGTERM at the end."""
    process, port = launch(models, *args)
    try:
        yield process, port
    finally:
        code = stop(process)
    assert code == 0, process.stdout.read()


def violation(error: grpc.RpcError) -> str:
    """The field of the BadRequest violation an error carries."""
    status = rpc_status.from_call(error)
    detail = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(detail)
    return detail.field_violations[0].field
