"""The server's observability: Prometheus samples on a private registry, the /metrics exporter, JSON-lines logs."""
from __future__ import annotations

import io
import json
import logging
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from camserve.service.server.observability import JsonFormatter, Metrics, bind_address, configure_logging, log_call


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def call(rpc="Explain", model="resnet", method="gradcam", **more):
    return tuple(sorted({"rpc": rpc, "model": model, "method": method, **more}.items()))


@pytest.fixture
def metrics():
    m = Metrics()
    yield m
    m.close()


def test_observe_counts_requests_times_errors_and_images(metrics):
    metrics.observe("Explain", "resnet", "gradcam", "OK", 0.02, images=4)
    metrics.observe("Explain", "resnet", "gradcam", "OK", 0.5, images=2)
    metrics.observe("Explain", "resnet", "gradcam", "INVALID_ARGUMENT", 0.001)
    metrics.observe("Explain", "resnet", "scorecam", "INTERNAL", 3.0, images=1)
    got = samples(metrics.text())
    assert got["camserve_requests_total", call(code="OK")] == 2
    assert got["camserve_requests_total", call(code="INVALID_ARGUMENT")] == 1
    assert got["camserve_requests_total", call(method="scorecam", code="INTERNAL")] == 1
    assert got["camserve_request_seconds_count", call()] == 3
    assert got["camserve_request_seconds_sum", call()] == pytest.approx(0.521)
    assert got["camserve_request_seconds_bucket", call(le="0.005")] == 1
    assert got["camserve_request_seconds_bucket", call(le="60.0")] == 3
    assert ("camserve_errors_total", call(code="OK")) not in got
    assert got["camserve_errors_total", call(code="INVALID_ARGUMENT")] == 1
    assert got["camserve_errors_total", call(method="scorecam", code="INTERNAL")] == 1
    assert got["camserve_images_total", (("method", "gradcam"), ("model", "resnet"))] == 6
    assert got["camserve_images_total", (("method", "scorecam"), ("model", "resnet"))] == 1


def test_gauges_batches_and_model_loads(metrics):
    metrics.queue_depth.inc(3)
    metrics.queue_depth.dec()
    metrics.in_flight.inc()
    for size in (1, 3, 64):
        metrics.batch(size)
    metrics.model_load("resnet", 1, "loaded")
    metrics.model_load("resnet", "2", "reloaded")
    metrics.model_load("vgg", 1, "failed")
    got = samples(metrics.text())
    assert got["camserve_queue_depth", ()] == 2
    assert got["camserve_in_flight", ()] == 1
    assert got["camserve_batch_size_count", ()] == 3
    assert got["camserve_batch_size_sum", ()] == 68
    assert got["camserve_batch_size_bucket", (("le", "4.0"),)] == 2
    assert got["camserve_batch_size_bucket", (("le", "64.0"),)] == 3
    loads = "camserve_model_loads_total"
    assert got[loads, (("model", "resnet"), ("outcome", "loaded"), ("version", "1"))] == 1
    assert got[loads, (("model", "resnet"), ("outcome", "reloaded"), ("version", "2"))] == 1
    assert got[loads, (("model", "vgg"), ("outcome", "failed"), ("version", "1"))] == 1
    with pytest.raises(ValueError):
        metrics.model_load("vgg", 1, "exploded")


def test_two_metrics_objects_share_nothing():
    a, b = Metrics(), Metrics()
    a.observe("Explain", "resnet", "gradcam", "OK", 0.1, images=1)
    a.in_flight.inc()
    assert samples(a.text())["camserve_requests_total", call(code="OK")] == 1
    got = samples(b.text())
    assert ("camserve_requests_total", call(code="OK")) not in got
    assert got["camserve_in_flight", ()] == 0


def test_serve_exposes_metrics_over_http_until_closed(metrics):
    metrics.observe("Explain", "resnet", "gradcam", "NOT_FOUND", 0.01)
    port = metrics.serve(0, host="127.0.0.1")
    assert port > 0
    assert metrics.serve(0, host="127.0.0.1") == port  # a second call does not start a second exporter
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        got = samples(response.read().decode())
    assert got["camserve_errors_total", call(code="NOT_FOUND")] == 1
    metrics.close()
    with pytest.raises(OSError):  # urllib.error.URLError is an OSError
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    metrics.close()  # closing twice is harmless


@pytest.mark.parametrize("host, address", [("[::]", "::"), ("[::1]", "::1"), ("localhost", "127.0.0.1"),
                                           ("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ("", "0.0.0.0"),
                                           ("metrics.internal", "metrics.internal")])
def test_grpc_hosts_become_addresses_the_exporter_binds(host, address):
    assert bind_address(host) == address


@pytest.mark.parametrize("host", ["[::]", "localhost", "127.0.0.1"])
def test_serve_takes_the_grpc_host_forms(metrics, host):
    # prometheus_client's getaddrinfo takes no brackets: `[::]`, the gRPC default, failed to start /metrics
    port = metrics.serve(0, host=host)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200


@pytest.fixture
def capture():
    """A fresh logger under camserve.test with a JsonFormatter handler on a StringIO; yields (logger, stream)."""
    made = []

    def make(name):
        stream, logger = io.StringIO(), logging.getLogger(f"camserve.test.{name}")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        made.append((logger, handler))
        return logger, stream

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)


def test_json_formatter_writes_one_object_per_line_with_extras(capture):
    logger, stream = capture("formatter")
    logger.warning("first %s", "call", extra={"fields": {"rpc": "Explain", "ms": 12.5, "images": 3}})
    logger.warning("second", extra={"fields": {"level": "spoofed", "peer": "ipv4:127.0.0.1:5"}})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["message"] == "first call" and first["level"] == "WARNING"
    assert first["logger"] == "camserve.test.formatter"
    assert first["rpc"] == "Explain" and first["ms"] == 12.5 and first["images"] == 3
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2024-01-02T03:04:05.678Z")
    assert first["ts"][10] == "T" and first["ts"][19] == "."
    assert second["level"] == "WARNING" and second["peer"] == "ipv4:127.0.0.1:5"
    assert "error" not in first


def test_json_formatter_formats_exceptions_and_never_raises_on_odd_extras():
    formatter = JsonFormatter()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("camserve", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(formatter.format(rec))
    assert "RuntimeError: boom" in line["error"] and "Traceback" in line["error"]

    rec = logging.LogRecord("camserve", logging.INFO, __file__, 1, "odd", None, None)
    rec.fields = {"obj": object(), "shape": {1, 2}, "raw": b"\x00"}
    line = json.loads(formatter.format(rec))
    assert line["message"] == "odd" and line["obj"].startswith("<object")

    loop = {}
    loop["self"] = loop
    rec.fields = {"loop": loop, ("tuple", "key"): 1}
    line = json.loads(formatter.format(rec))
    assert line["message"] == "odd" and "loop" in line


def test_configure_logging_is_idempotent():
    logger = logging.getLogger("camserve")
    before, propagate, level = list(logger.handlers), logger.propagate, logger.level
    try:
        first, second = io.StringIO(), io.StringIO()
        assert configure_logging("DEBUG", first) is logger
        configure_logging("INFO", second)
        ours = [h for h in logger.handlers if h not in before]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        assert logger.propagate is False and logger.level == logging.INFO
        logger.info("to the second stream")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "to the second stream"
    finally:
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.mark.parametrize("code, level", [
    ("OK", "INFO"), ("INVALID_ARGUMENT", "INFO"), ("NOT_FOUND", "INFO"), ("CANCELLED", "INFO"),
    ("DEADLINE_EXCEEDED", "INFO"), ("RESOURCE_EXHAUSTED", "WARNING"), ("UNAVAILABLE", "WARNING"),
    ("INTERNAL", "ERROR"), ("UNKNOWN", "ERROR")])
def test_log_call_picks_the_level_by_code(capture, code, level):
    logger, stream = capture(f"log_call.{code}")
    log_call(logger, "Explain", "resnet", "gradcam", code, 0.01234, peer="ipv4:127.0.0.1:1", request_id="r1")
    line = json.loads(stream.getvalue())
    assert line["level"] == level and line["message"] == f"Explain {code}"
    assert (line["rpc"], line["model"], line["method"], line["code"]) == ("Explain", "resnet", "gradcam", code)
    assert line["ms"] == 12.3 and line["peer"] == "ipv4:127.0.0.1:1" and line["request_id"] == "r1"
