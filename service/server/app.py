"""The grpc.aio server: ExplainService, health, reflection, metrics, auth and TLS; SIGTERM drains it."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from camserve.v1 import explain_pb2

from .. import images
from ..runtime import MAX_SESSIONS

# This module is the one place the server's defaults are written, and `camserve serve` builds its parser
# from them: grpc and the servicer (which loads scipy) are imported only when a server starts, so that
# reading the defaults does not cost every `camserve inspect` 1.5 s.
SERVICE = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name
log = logging.getLogger("camserve")


@dataclass
class Limits:
    image_bytes: int = 32 << 20                # encoded bytes per image
    image_pixels: int = images.MAX_PIXELS      # decoded pixels per image, checked before decoding
    images_per_request: int = 256              # maps per request: images, times k for top_k targets


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
    metrics_host: str | None = None      # where /metrics listens; None: the gRPC host
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
    max_sessions: int = MAX_SESSIONS     # ONNX Runtime sessions kept per model, least recently used evicted:
                                         # layer sets and input sizes are the client's choice
    perturbation_budget: int = 32        # perturbation methods: images' worth of perturbed copies per run


def default(name: str):
    """The default of ServerConfig's field `name`, or of its Limits' (what `camserve serve` takes unless told)."""
    for kind in (ServerConfig, Limits):
        for entry in dataclasses.fields(kind):
            if entry.name == name and entry.default is not dataclasses.MISSING:
                return entry.default
    raise KeyError(f"ServerConfig and Limits have no field {name!r} with a default")


async def serve(config: ServerConfig, ready=None) -> None:
    """Serve until SIGTERM or SIGINT: health turns NOT_SERVING, calls in flight get `grace` seconds."""
    import grpc
    from grpc_health.v1 import health_pb2

    from .batching import Batcher
    from .observability import Metrics, configure_logging
    from .repository import ModelRepository
    from .security import BearerAuth, server_credentials
    from .servicer import ExplainServicer

    configure_logging(config.log_level)
    metrics = Metrics()
    repository = ModelRepository(config.models, config.threads, config.perturbation_budget, config.max_sessions,
                                 metrics=metrics)
    batcher = Batcher(config.workers, config.max_queue, config.max_batch, config.max_delay_ms / 1000, metrics)
    server = grpc.aio.server(
        interceptors=[BearerAuth(config.token)] if config.token else None,
        options=[("grpc.max_receive_message_length", config.max_request_bytes),
                 ("grpc.max_send_message_length", 1 << 30),
                 # clients' keepalive pings (service.client pings every 10 s) find replicas that stopped answering
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
                 *connection_age(config.max_connection_age, config.grace)])
    servicer = ExplainServicer(repository, batcher, config.limits, metrics)
    checker = add_services(server, servicer)
    address = f"{config.host}:{config.port}"
    if config.tls_cert or config.tls_key:
        bound = server.add_secure_port(address, server_credentials(config.tls_cert, config.tls_key,
                                                                   config.tls_client_ca))
    else:
        bound = server.add_insecure_port(address)
    metrics_host = config.metrics_host or config.host
    metrics_port = metrics.serve(config.metrics_port, metrics_host) if config.metrics_port is not None else None
    await server.start()
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(f"serving {sorted(repository.models())} on {config.host}:{bound}", extra={"fields": {
        "port": bound, "metrics_port": metrics_port, "metrics_host": metrics_host, "tls": bool(config.tls_cert),
        "auth": bool(config.token), "workers": config.workers, "max_queue": config.max_queue,
        "max_batch": config.max_batch, "max_sessions": config.max_sessions}})
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


def connection_age(seconds: float | None, grace: float = 0.0) -> list[tuple[str, int]]:
    """Channel arguments closing each connection after `seconds`; its calls in flight then get as long again, and
    at least `grace` (the server's shutdown grace: a call slower than the age, on a loaded machine, must finish
    rather than fail UNAVAILABLE, which the client cannot retry once the call has started)."""
    if not seconds:
        return []
    return [("grpc.max_connection_age_ms", int(seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(max(seconds, grace) * 1000))]


def add_services(server, servicer):
    """ExplainService, health and reflection on `server`; returns the health servicer.

    ExplainService's requests are parsed by `calls.parser`: bytes that are no valid message reach the
    handler as a marker it answers with INVALID_ARGUMENT (grpc.aio answers a deserializer's exception
    with UNKNOWN). Health and reflection keep their own deserializers."""
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from .calls import parser
    from .security import HANDLER_KINDS

    service = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"]   # the handlers' kinds and types
    handlers = {}
    for method in service.methods:
        request, response = (getattr(explain_pb2, kind.name) for kind in (method.input_type, method.output_type))
        make = HANDLER_KINDS[method.client_streaming, method.server_streaming]
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=parser(request),
                                     response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection([service.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return checker
