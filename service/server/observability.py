"""The server's Prometheus metrics on a registry of its own, and JSON-lines logging with per-call fields."""
from __future__ import annotations

import datetime
import json
import logging
import sys

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# a cached 224px CAM answers in milliseconds; a perturbation method on a large batch on CPU takes tens of seconds
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LOAD_OUTCOMES = ("loaded", "reloaded", "failed", "removed")
# the caller's mistakes or choices, not the server's trouble: no louder than INFO
QUIET_CODES = frozenset({"OK", "INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED", "DEADLINE_EXCEEDED"})
ERROR_CODES = frozenset({"INTERNAL", "UNKNOWN"})


def _code_name(code) -> str:
    # grpc.StatusCode is accepted too, so callers need not remember `.name`
    return getattr(code, "name", code)


class Metrics:
    """The camserve_* series on a private registry, so several servers (or tests) in one process never clash."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        call = ("rpc", "model", "method")
        self.requests = Counter("camserve_requests_total", "RPCs finished, by gRPC status.", call + ("code",),
                                registry=r)
        self.seconds = Histogram("camserve_request_seconds", "RPC wall time in seconds.", call,
                                 buckets=SECONDS_BUCKETS, registry=r)
        self.errors = Counter("camserve_errors_total", "RPCs finished with a status other than OK.",
                              call + ("code",), registry=r)
        self.queue_depth = Gauge("camserve_queue_depth", "Requests admitted and waiting to run.", registry=r)
        self.in_flight = Gauge("camserve_in_flight", "Requests running now.", registry=r)
        self.batch_size = Histogram("camserve_batch_size", "Images per device run of the micro-batcher.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.images = Counter("camserve_images_total", "Images explained.", ("model", "method"), registry=r)
        self.model_loads = Counter("camserve_model_loads_total", "Model repository changes, by outcome.",
                                   ("model", "version", "outcome"), registry=r)
        self._server = self._thread = None

    def observe(self, rpc: str, model: str, method: str, code: str, seconds: float, images: int = 0) -> None:
        code = _code_name(code)
        self.requests.labels(rpc, model, method, code).inc()
        self.seconds.labels(rpc, model, method).observe(seconds)
        if code != "OK":
            self.errors.labels(rpc, model, method, code).inc()
        if images:
            self.images.labels(model, method).inc(images)

    def model_load(self, model: str, version, outcome: str) -> None:
        if outcome not in LOAD_OUTCOMES:
            raise ValueError(f"outcome must be one of {LOAD_OUTCOMES}, not {outcome!r}")
        self.model_loads.labels(model, str(version), outcome).inc()

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Starts the /metrics HTTP exporter on a daemon thread, on `host` as gRPC names hosts (`bind_address`);
        port 0 picks a free port. Returns the bound port."""
        if self._server is None:
            address = bind_address(host)
            try:
                self._server, self._thread = prometheus_client.start_http_server(port, addr=address,
                                                                                 registry=self.registry)
            except OSError:
                if address != "::":
                    raise
                # a machine without IPv6: gRPC's [::] then listens on IPv4's every address, and so does /metrics
                self._server, self._thread = prometheus_client.start_http_server(port, addr="0.0.0.0",
                                                                                 registry=self.registry)
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def text(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode()


def bind_address(host: str) -> str:
    """A gRPC host as prometheus_client's exporter binds it: `[::]` and `[::1]` lose their brackets (its
    getaddrinfo takes none; `::` listens on IPv4 too, as gRPC's does); `localhost`, which gRPC binds on
    both loopbacks and getaddrinfo may resolve to either, is IPv4's loopback; empty is every IPv4 address."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        return "127.0.0.1"
    return host or "0.0.0.0"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the record's extra={"fields": {...}}, and error."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        line = {"ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(str(key), value)  # a field never hides the line's own ts/level/message
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        try:
            return json.dumps(line, default=str)
        except (TypeError, ValueError):  # e.g. a circular extra: the line still goes out, its values as text
            return json.dumps({key: value if isinstance(value, str) else repr(value) for key, value in line.items()})


def configure_logging(level: str = "INFO", stream=None) -> logging.Logger:
    """The "camserve" logger writing JSON lines to stream (stderr); calling again replaces, never adds, its handler."""
    logger = logging.getLogger("camserve")
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    for old in [h for h in logger.handlers if getattr(h, "_camserve", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    handler._camserve = True
    logger.addHandler(handler)
    logger.propagate = False  # the root logger's plain-text handler would print every line twice
    return logger


def log_call(logger: logging.Logger, rpc: str, model: str, method: str, code: str, seconds: float,
             **fields) -> None:
    """One line per finished RPC: INFO for OK and the caller's errors, ERROR for INTERNAL/UNKNOWN, else WARNING."""
    code = _code_name(code)
    level = logging.INFO if code in QUIET_CODES else logging.ERROR if code in ERROR_CODES else logging.WARNING
    logger.log(level, f"{rpc} {code}", extra={"fields": {
        "rpc": rpc, "model": model, "method": method, "code": code, "ms": round(seconds * 1000, 1), **fields}})
