"""The grpc.aio server: ExplainService, the standard health service and reflection; SIGTERM drains it."""
from __future__ import annotations

import asyncio
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from camserve.v1 import explain_pb2, explain_pb2_grpc

from .repository import ModelRepository
from .servicer import ExplainServicer

SERVICE = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name


async def serve(models: str, port: int = 50051, host: str = "[::]", threads: int | None = None,
                grace: float = 30.0, ready=None) -> None:
    """Serve until SIGTERM or SIGINT: health turns NOT_SERVING, calls in flight get `grace` seconds."""
    repository = ModelRepository(models, threads)
    server = grpc.aio.server()
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(repository), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(f"camserve: serving {sorted(repository.models())} on {host}:{bound}", flush=True)
    if ready is not None:
        ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace)
