"""The servicer on an in-process grpc.aio server: top-k maps count against the image limit, top-k's forward run
takes a run slot and stops with its call, and a refused call stays retryable."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from camserve.service.client import service_config
from camserve.service.runtime import RUN_OPTIONS
from camserve.service.server.app import Limits, add_services
from camserve.service.server.batching import Batcher
from camserve.service.server.observability import Metrics
from camserve.service.server.repository import ModelRepository
from camserve.service.server.servicer import ExplainServicer
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc
from serving import in_thread, violation, wait_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mobilenet_v2"
PHOTO = pb.Image(encoded=(ROOT / "examples" / "chelsea.png").read_bytes())
TIMEOUT = 60
MAPS = 4          # the servicer's limit of maps per request here


@dataclass
class InProcess:
    servicer: ExplainServicer
    batcher: Batcher
    stub: explain_pb2_grpc.ExplainServiceStub
    target: str

    def explainer(self):
        return self.servicer.repository.get(MODEL)[2]


@pytest.fixture(scope="module")
def served():
    """One run slot, room for two waiting calls, at most MAPS maps a request; on an event loop of its own."""
    async def start():
        metrics = Metrics()
        batcher = Batcher(1, 2, 8, 0.0, metrics)
        servicer = ExplainServicer(ModelRepository(ROOT / "models", threads=2), batcher,
                                   Limits(images_per_request=MAPS), metrics)
        server = grpc.aio.server()
        add_services(server, servicer)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, servicer, batcher, port

    with in_thread(start, TIMEOUT) as (servicer, batcher, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield InProcess(servicer, batcher, explain_pb2_grpc.ExplainServiceStub(channel), f"127.0.0.1:{port}")


def _top_k(images: int, k: int) -> pb.ExplainRequest:
    return pb.ExplainRequest(model=MODEL, images=[PHOTO] * images, targets=pb.Targets(top_k=k))


def test_top_k_maps_count_against_the_image_limit(served):
    # 2 images x top_k 3 are 6 maps: one run of 6 images, over the limit of 4 that 2 images alone keep
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.Explain(_top_k(2, 3), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violation(caught.value) == "targets.top_k"
    assert "6 maps" in caught.value.details()
    reply = served.stub.Explain(_top_k(2, 2), timeout=TIMEOUT)
    assert [len(image.explanations) for image in reply.images] == [2, 2]
    with pytest.raises(grpc.RpcError) as caught:   # streamed messages are held to the same limit
        list(served.stub.ExplainStream(iter([_top_k(1, 4), _top_k(1, 5)]), timeout=TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violation(caught.value) == "targets.top_k"


def test_evaluate_is_held_to_the_image_limit(served):
    images = [pb.LabelledImage(image=PHOTO, label=285)] * (MAPS + 1)
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.Evaluate(pb.EvaluateRequest(model=MODEL, images=images), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violation(caught.value) == "images"


class _SlowPredict:
    """Explainer.predict, run again and again until ONNX Runtime itself stops it (the run options' terminate):
    records the run options and whether the batcher's one run slot was held."""

    def __init__(self, explainer, batcher: Batcher):
        self.real, self.batcher = explainer.predict, batcher
        self.seen: list[tuple] = []
        self.started, self.stopped = threading.Event(), threading.Event()

    def __call__(self, x):
        options = RUN_OPTIONS.get()
        self.seen.append((options, self.batcher._slots.locked()))
        self.started.set()
        if options is None:   # nothing could stop it: answer at once (and fail the test)
            return self.real(x)
        for _ in range(3000):   # a minute or more of runs: the call goes away long before
            try:
                self.real(x)
            except Exception:
                if options.terminate:
                    self.stopped.set()
                raise
        return self.real(x)


@pytest.mark.parametrize("ending", ["cancel", "deadline"])
def test_the_top_k_forward_run_takes_a_run_slot_and_stops_with_its_call(served, monkeypatch, ending):
    explainer = served.explainer()
    slow = _SlowPredict(explainer, served.batcher)
    monkeypatch.setattr(explainer, "predict", slow)
    if ending == "cancel":
        call = served.stub.Explain.future(_top_k(1, 2), timeout=TIMEOUT)
        assert slow.started.wait(TIMEOUT), "the top-k forward run never began"
        call.cancel()
        code = grpc.StatusCode.CANCELLED
    else:
        with pytest.raises(grpc.RpcError) as caught:
            served.stub.Explain(_top_k(1, 2), timeout=5)
        code = caught.value.code()
    assert code == (grpc.StatusCode.CANCELLED if ending == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED)
    assert slow.seen, "the top-k forward run never began"
    options, slot_held = slow.seen[0]
    assert options is not None, "the top-k forward run had no run options: nothing could stop it"
    assert slot_held, "the top-k forward run ran outside the batcher's run slots"
    assert slow.stopped.wait(TIMEOUT), f"the top-k forward run went on after its call's {ending}"
    monkeypatch.undo()
    reply = served.stub.Explain(_top_k(1, 1), timeout=TIMEOUT)   # the one run slot is free again
    assert reply.images[0].explanations[0].class_id == 285


def test_a_draining_servers_refusal_leaves_the_call_retryable(served):
    # a call that sent response headers (initial metadata) is committed: gRPC retries it no more, so a refusal
    # must go out as trailers only (its request id among them) for the client to try again, elsewhere
    config = service_config()
    config.pop("healthCheckConfig")   # this server's health service has no statuses set
    options = [("grpc.service_config", json.dumps(config))]
    served.explainer()   # loaded: its name is a label of its own, not "unknown"
    refused = served.servicer.metrics.requests.labels("Explain", MODEL, "gradcam", "UNAVAILABLE")
    before = refused._value.get()
    served.servicer.draining = True
    try:
        with grpc.insecure_channel(served.target, options) as channel, pytest.raises(grpc.RpcError) as caught:
            explain_pb2_grpc.ExplainServiceStub(channel).Explain(_top_k(1, 1), timeout=TIMEOUT)
    finally:
        served.servicer.draining = False
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    attempts = config["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    # each attempt is counted just after its status has gone out
    wait_for(f"{attempts} attempts are counted", lambda: refused._value.get() - before >= attempts, timeout=30)
    assert refused._value.get() - before == attempts
    assert dict(caught.value.trailing_metadata())["x-request-id"]
