"""The grpc.aio server: ExplainService, health, reflection, metrics, auth and TLS; SIGTERM drains it."""
from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from camserve.v1 import explain_pb2, explain_pb2_grpc

from .. import images
from .batching import Batcher
from .observability import Metrics, configure_logging
from .repository import ModelRepository
from .security import BearerAuth, server_credentials
from .servicer import ExplainServicer, Limits

SERVICE = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name
log = logging.getLogger("camserve")


@dataclass
class ServerConfig:
    models: str
    port: int = 50051
    host: str = "[::]"
    threads: int | None = None           # ONNX Runtime intra-op threads per run
    workers: int = 2                     # runs at once
    max_queue: int = 64                  # requests waiting beyond those: RESOURCE_EXHAUSTED
    max_batch: int = 8                   # images per micro-batch; 1 turns batching off
    max_delay_ms: float = 0.0            # how long a micro-batch waits for company (0: it still gathers while
                                         # every run slot is busy)
    metrics_port: int | None = 9090      # None: no /metrics
    grace: float = 30.0                  # seconds calls in flight get after SIGTERM
    token: str | None = None             # bearer token every call but health must carry
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None    # mutual TLS: clients need a certificate this CA signed
    max_request_bytes: int = 64 << 20
    limits: Limits = field(default_factory=Limits)
    log_level: str = "INFO"
    max_connection_age: float | None = None   # seconds before a client connection is closed (GOAWAY) and
                                              # reopened: clients then resolve the replicas again and find new ones
    drain_delay: float = 0.0             # seconds a draining server keeps refusing before it stops, so that
                                         # balancers and clients see NOT_SERVING and move away first


async def serve(config: ServerConfig, ready=None) -> None:
    """Serve until SIGTERM or SIGINT: health turns NOT_SERVING, calls in flight get `grace` seconds."""
    configure_logging(config.log_level)
    metrics = Metrics()
    repository = ModelRepository(config.models, config.threads, metrics=metrics)
    batcher = Batcher(config.workers, config.max_queue, config.max_batch, config.max_delay_ms / 1000, metrics)
    server = grpc.aio.server(
        interceptors=[BearerAuth(config.token)] if config.token else None,
        options=[("grpc.max_receive_message_length", config.max_request_bytes),
                 ("grpc.max_send_message_length", 1 << 30),
                 # clients' keepalive pings (service.client pings every 10 s) find replicas that stopped answering
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
                 *connection_age(config.max_connection_age)])
    servicer = ExplainServicer(repository, batcher, config.limits, metrics)
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(servicer, server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{config.host}:{config.port}"
    if config.tls_cert or config.tls_key:
        bound = server.add_secure_port(address, server_credentials(config.tls_cert, config.tls_key,
                                                                   config.tls_client_ca))
    else:
        bound = server.add_insecure_port(address)
    metrics_port = metrics.serve(config.metrics_port) if config.metrics_port is not None else None
    await server.start()
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(f"serving {sorted(repository.models())} on {config.host}:{bound}", extra={"fields": {
        "port": bound, "metrics_port": metrics_port, "tls": bool(config.tls_cert), "auth": bool(config.token),
        "workers": config.workers, "max_queue": config.max_queue, "max_batch": config.max_batch}})
    if ready is not None:
        ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: health NOT_SERVING, new calls refused, calls in flight finishing",
             extra={"fields": {"in_flight": servicer.active, "grace": config.grace, "drain_delay": config.drain_delay}})
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # refuse new calls ourselves (UNAVAILABLE, which clients retry elsewhere) while those in flight
    # finish: grpc.aio's stop(grace) cancels calls that arrived but had not reached a handler yet
    servicer.draining = True
    deadline = loop.time() + config.grace
    refusing = loop.time() + min(config.drain_delay, config.grace)
    while (servicer.active or loop.time() < refusing) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await server.stop(max(deadline - loop.time(), 1.0))
    batcher.cancel_all()
    metrics.close()
    log.info("stopped")


def connection_age(seconds: float | None) -> list[tuple[str, int]]:
    """Channel arguments closing each connection after `seconds`; its calls in flight get as long again."""
    if not seconds:
        return []
    return [("grpc.max_connection_age_ms", int(seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(seconds * 1000))]


def limits(max_image_bytes: int, max_image_pixels: int | None, max_images: int) -> Limits:
    return Limits(max_image_bytes, max_image_pixels or images.MAX_PIXELS, max_images)
