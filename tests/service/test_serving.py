"""The server's production behaviour: every method, streams, Evaluate, batching, deadlines, overload, metrics, TLS."""
from __future__ import annotations

import concurrent.futures
import json
import os
import time

import cv2
import grpc
import numpy as np
import psutil
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families
from skimage import data

from camserve.service import images
from camserve.service.client import Client
from camserve.service.evaluation import Settings, evaluate
from camserve.service.explainer import Explainer
from camserve.service.methods import METHODS
from camserve.service.model_config import load_config
from camserve.v1 import explain_pb2 as pb
from serving import ROOT, log_of, metrics_of, serving

MODEL = "mobilenet_v2"
PHOTO = (ROOT / "examples" / "chelsea.png").read_bytes()
CHEAP = {"rise": {"masks": 500}, "sscam": {"samples": 2}, "iscam": {"samples": 2}, "smoothgradcam++": {"samples": 2}}
# the Score-CAM family runs one forward per channel: at a 32-channel block rather than the 1280-channel last
# layer, the same code path costs seconds rather than minutes
NARROW = "/features/features.6/Add_output_0"


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "models" / MODEL)


@pytest.fixture(scope="module")
def local(config):
    return Explainer(config.path, threads=2)


def _png(rgb: np.ndarray) -> bytes:
    return images.encode_png(rgb)


def _x(config, encoded: bytes) -> np.ndarray:
    return images.to_tensor(images.decode(encoded), config.preprocessing)


def _layers(config) -> list[str] | None:
    return [config.default_layer] if config.default_layer else None   # None: the model's own default


def _map(item) -> np.ndarray:
    return np.frombuffer(item.map.data, "<f4").reshape(item.map.shape)


def _samples(text: str, name: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


@pytest.mark.parametrize("method", sorted(m for m in METHODS if "classifier" in METHODS[m].kinds))
def test_every_method_over_grpc_equals_the_in_process_explainer(stub, config, local, method):
    options = CHEAP.get(method, {})
    layers = _layers(config) if METHODS[method].run.target_layers else None
    if method in ("scorecam", "sscam", "iscam"):
        layers = [NARROW]
    expected = local.explain_full(_x(config, PHOTO), method, None, layers, **options)
    reply = stub.Explain(Client.request([PHOTO], method, MODEL, layers=layers, **options), timeout=120)
    np.testing.assert_allclose(_map(reply.images[0].explanations[0]), expected.maps[0], atol=1e-5)
    assert reply.images[0].explanations[0].class_id == expected.targets[0]


def test_maps_at_the_original_size_undo_the_resize_and_crop(stub, config):
    reply = stub.Explain(pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO)], output=pb.OUTPUT_KIND_BOTH,
                                           size=pb.OUTPUT_SIZE_ORIGINAL), timeout=60)
    at_input = stub.Explain(pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO)]), timeout=60)
    original = images.decode(PHOTO)
    item = reply.images[0].explanations[0]
    assert _map(item).shape == original.shape[:2] == (300, 451)
    np.testing.assert_allclose(_map(item), images.unfit(_map(at_input.images[0].explanations[0]), original.shape[:2],
                                                        config.preprocessing), atol=1e-6)
    overlay = cv2.imdecode(np.frombuffer(item.overlay_png, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == original.shape
    with pytest.raises(grpc.RpcError) as caught:   # a tensor has no original size
        x = _x(config, PHOTO)[0]
        stub.Explain(pb.ExplainRequest(model=MODEL, size=pb.OUTPUT_SIZE_ORIGINAL, images=[pb.Image(tensor=pb.Tensor(
            shape=list(x.shape), dtype=pb.DATA_TYPE_FLOAT32, data=x.tobytes()))]), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_stream_answers_each_message_in_order_as_explain_would(stub):
    photos = [_png(data.coffee()), PHOTO, _png(data.astronaut())]
    requests = [pb.ExplainRequest(model=MODEL, method=method, images=[pb.Image(encoded=photo)], request_id=f"r{i}")
                for i, (method, photo) in enumerate((m, p) for m in ("gradcam", "layercam", "reciprocam")
                                                    for p in photos)]
    replies = list(stub.ExplainStream(iter(requests), timeout=120))
    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    for request, reply in zip(requests, replies):
        alone = stub.Explain(request, timeout=60)
        assert reply.method == request.method
        np.testing.assert_allclose(_map(reply.images[0].explanations[0]), _map(alone.images[0].explanations[0]),
                                   atol=1e-6)
    bad = [requests[0], pb.ExplainRequest(model=MODEL, method="nocam", images=[pb.Image(encoded=PHOTO)])]
    stream = stub.ExplainStream(iter(bad), timeout=60)
    assert next(stream).request_id == "r0"   # the good message is answered; the bad one ends the stream
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_evaluate_equals_the_in_process_evaluation(stub, config, local):
    photos = [PHOTO, _png(data.coffee())]
    labels = [285, 967]
    box = pb.Box(x0=120, y0=40, x1=330, y1=260)   # the cat's head and body, in the 451x300 photo's pixels
    request = pb.EvaluateRequest(model=MODEL, methods=["gradcam", "ablationcam"], deletion_step=224 * 16,
                                 images=[pb.LabelledImage(image=pb.Image(encoded=photos[0]), label=labels[0],
                                                          boxes=[box]),
                                         pb.LabelledImage(image=pb.Image(encoded=photos[1]), label=labels[1])])
    reply = stub.Evaluate(request, timeout=300)
    assert [m.method for m in reply.methods] == ["gradcam", "ablationcam"]
    x = np.concatenate([_x(config, p) for p in photos])
    from camserve.service.data.folder import map_box
    boxes = [[map_box((120, 40, 330, 260), (300, 451), config.preprocessing)], []]
    for scores in reply.methods:
        local_scores = evaluate(local, x, np.array(labels), boxes, scores.method, _layers(config),
                                Settings(deletion_step=224 * 16))
        for name in ("average_drop", "increase_in_confidence", "coherency", "complexity", "deletion_auc",
                     "insertion_auc"):
            assert scores.metrics[name].mean == pytest.approx(np.nanmean(local_scores.per_image[name]), abs=1e-6), name
        assert scores.metrics["pointing_game"].defined   # only the cat has a box: one image's worth
        assert scores.metrics["pointing_game"].mean == local_scores.per_image["pointing_game"][0]
        assert len(scores.deletion_curve) == len(scores.fractions) > 2
    with pytest.raises(grpc.RpcError) as caught:
        stub.Evaluate(pb.EvaluateRequest(model=MODEL, images=request.images, methods=["gradcam"],
                                         options={"gradcam.nope": pb.OptionValue(integer=1)}), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_concurrent_calls_are_batched_and_each_gets_its_own_map(server, config, local):
    photos = [_png(p) for p in (data.coffee(), data.astronaut(), data.chelsea(), data.rocket())] * 4
    target = f"127.0.0.1:{server[0].args[server[0].args.index('--port') + 1]}"
    before = sum(s.value for s in _samples(metrics_of(server[0]), "camserve_batch_size_count"))

    def call(photo):
        with Client(target) as client:
            return client.explain([photo], "gradcam", MODEL)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(call, photos))
    for photo, reply in zip(photos, replies):
        expected = local.explain(_x(config, photo), "gradcam", None, _layers(config))
        np.testing.assert_allclose(_map(reply.images[0].explanations[0]), expected[0], atol=1e-5)
    text = metrics_of(server[0])
    runs = sum(s.value for s in _samples(text, "camserve_batch_size_count")) - before
    assert runs < len(photos), f"{len(photos)} concurrent calls ran as {runs} runs: nothing was batched"


def test_every_call_is_counted_timed_and_logged(server, stub):
    stub.Explain(pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO)], request_id="logged-1"), timeout=60)
    with pytest.raises(grpc.RpcError):
        stub.Explain(pb.ExplainRequest(model=MODEL, method="nocam", images=[pb.Image(encoded=PHOTO)]), timeout=60)
    with pytest.raises(grpc.RpcError):
        stub.Explain(pb.ExplainRequest(model="nomodel", method="gradcma", images=[pb.Image(encoded=PHOTO)]), timeout=60)
    text = metrics_of(server[0])
    counts = {(s.labels["rpc"], s.labels["model"], s.labels["method"], s.labels["code"]): s.value
              for s in _samples(text, "camserve_requests_total")}
    assert counts[("Explain", MODEL, "gradcam", "OK")] >= 1
    # names the server does not have are one label value, not a new series per name a client makes up
    assert counts[("Explain", MODEL, "unknown", "INVALID_ARGUMENT")] >= 1
    assert counts[("Explain", "unknown", "unknown", "NOT_FOUND")] >= 1
    labelled = {value for family in text_string_to_metric_families(text) for sample in family.samples
                for value in sample.labels.values()}
    assert not labelled & {"nocam", "nomodel", "gradcma"}, labelled
    assert any(s.value >= 1 for s in _samples(text, "camserve_request_seconds_count"))
    assert any(s.labels["outcome"] == "loaded" for s in _samples(text, "camserve_model_loads_total"))
    lines = [json.loads(line) for line in log_of(server[0]).splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("request_id") == "logged-1"]
    assert logged and logged[0]["code"] == "OK" and logged[0]["model"] == MODEL and logged[0]["ms"] > 0


def test_metrics_listen_where_grpc_does_unless_told(server):
    # the server fixture's --host 127.0.0.1: /metrics listened on 0.0.0.0 whatever --host said
    listening = {c.laddr.port: c.laddr.ip for c in psutil.Process(server[0].pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening[server[0].metrics_port] == "127.0.0.1", listening
    with serving(ROOT / "models", "--metrics-host", "0.0.0.0") as (process, port):
        listening = {c.laddr.port: c.laddr.ip for c in psutil.Process(process.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening[process.metrics_port] == "0.0.0.0", listening
        assert "camserve_requests_total" in metrics_of(process)


def test_a_deadline_stops_the_work_and_frees_the_device(tmp_path):
    with serving(ROOT / "models", "--workers", "1") as (process, port), Client(f"127.0.0.1:{port}") as client:
        client.explain([PHOTO], "gradcam", MODEL)   # warm
        slow = client.request([PHOTO], "scorecam", MODEL)
        began = time.perf_counter()
        with pytest.raises(grpc.RpcError) as caught:
            client.stub.Explain(slow, timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        client.explain([PHOTO], "gradcam", MODEL)   # the one run slot is free again
        waited = time.perf_counter() - began
        # Score-CAM runs 1280 masked forwards (about 10-25 s here); had it run on, the call would wait for it
        assert waited < 5, f"the Grad-CAM call waited {waited:.1f} s behind an abandoned Score-CAM"
        time.sleep(0.5)
        codes = [json.loads(line).get("code") for line in log_of(process).splitlines() if line.startswith("{")]
        assert "DEADLINE_EXCEEDED" in codes


def test_overload_is_resource_exhausted_with_a_retry_hint():
    with serving(ROOT / "models", "--workers", "1", "--max-queue", "1") as (process, port):
        target = f"127.0.0.1:{port}"

        def call(_):   # without the Client's retries, which would send the refused calls again
            with Client(target, timeout=120, options=[("grpc.enable_retries", 0)]) as client:
                try:
                    client.explain([PHOTO], "ablationcam", MODEL)
                    return None
                except grpc.RpcError as error:
                    return error
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            errors = [e for e in pool.map(call, range(8)) if e is not None]
        assert errors and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in errors)
        assert len(errors) <= 6   # one ran, one waited
        retry = error_details_pb2.RetryInfo()
        assert rpc_status.from_call(errors[0]).details[0].Unpack(retry) and retry.retry_delay.ToMilliseconds() > 0
        with Client(target) as client:
            assert client.explain([PHOTO], "gradcam", MODEL).images[0].explanations[0].class_id == 285


def test_tls_and_a_bearer_token_guard_every_call_but_health(pki):
    env = {"CAMSERVE_TEST_TOKEN": "t0ken"}
    with serving(ROOT / "models", "--token-env", "CAMSERVE_TEST_TOKEN", "--tls-cert", str(pki / "server.pem"),
                 "--tls-key", str(pki / "server.key"), env=env, ca=pki / "ca.pem") as (process, port):
        target = f"127.0.0.1:{port}"
        with Client(target, token="t0ken", ca=pki / "ca.pem") as client:
            client.wait_ready(10)   # health needs no token
            assert client.explain([PHOTO]).images[0].explanations[0].class_id == 285
        with Client(target, token="wrong", ca=pki / "ca.pem") as client, pytest.raises(grpc.RpcError) as caught:
            client.explain([PHOTO])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with Client(target, token="t0ken") as plain, pytest.raises(grpc.RpcError) as caught:
            plain.explain([PHOTO])   # no TLS: the handshake fails
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert os.environ.get("CAMSERVE_TEST_TOKEN") is None
