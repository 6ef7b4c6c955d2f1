"""The gRPC server on loopback: Explain equals the in-process Explainer; statuses for bad calls (undecodable bytes
among them); health; request ids."""
from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from camserve.service import images
from camserve.service.explainer import Explainer
from camserve.service.model_config import load_config
from camserve.v1 import explain_pb2 as pb
from serving import log_of, violation, wait_for

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "chelsea.png"
MODEL = "mobilenet_v2"


@pytest.mark.parametrize("method", ["gradcam", "reciprocam", "ablationcam"])
def test_explain_over_grpc_equals_the_in_process_explainer(stub, method):
    config = load_config(ROOT / "models" / MODEL)
    fitted = images.fit(images.read(PHOTO), config.preprocessing)
    expected = Explainer(config.path, threads=2).explain_full(images.normalise(fitted, config.preprocessing), method,
                                                              None, [config.default_layer] if config.default_layer
                                                              else None)
    reply = stub.Explain(pb.ExplainRequest(model=MODEL, method=method, images=[pb.Image(encoded=PHOTO.read_bytes())],
                                           output=pb.OUTPUT_KIND_BOTH), timeout=60)
    item = reply.images[0].explanations[0]
    served = np.frombuffer(item.map.data, "<f4").reshape(item.map.shape)
    np.testing.assert_allclose(served, expected.maps[0], atol=1e-5)
    assert item.class_id == expected.targets[0] and item.label == "Egyptian cat" and 0 < item.score <= 1
    assert item.overlay_png.startswith(b"\x89PNG") and reply.version == "1" and reply.provider


def test_tensor_inputs_top_k_and_class_weights(stub):
    config = load_config(ROOT / "models" / MODEL)
    x = images.to_tensor(images.read(PHOTO), config.preprocessing)[0]
    tensor = pb.Image(tensor=pb.Tensor(shape=list(x.shape), dtype=pb.DATA_TYPE_FLOAT32, data=x.astype("<f4").tobytes()))
    top = stub.Explain(pb.ExplainRequest(model=MODEL, images=[tensor, tensor], targets=pb.Targets(top_k=3)))
    assert [len(i.explanations) for i in top.images] == [3, 3]
    scores = [e.score for e in top.images[0].explanations]
    assert scores == sorted(scores, reverse=True) and top.images[0].explanations[0].class_id == 285
    weights = np.zeros(1000, np.float32)
    weights[[281, 285]] = 0.5
    mixed = stub.Explain(pb.ExplainRequest(model=MODEL, images=[tensor], targets=pb.Targets(
        weights=pb.ClassWeights(values=weights.tolist(), classes=1000))))
    assert mixed.images[0].explanations[0].class_id in (281, 285)


@pytest.mark.parametrize("request_, code, field", [
    (pb.ExplainRequest(model=MODEL), grpc.StatusCode.INVALID_ARGUMENT, "images"),
    (pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=b"not an image")]), grpc.StatusCode.INVALID_ARGUMENT,
     "images[0].encoded"),
    (pb.ExplainRequest(model=MODEL, method="nocam", images=[pb.Image(encoded=b"x")]),
     grpc.StatusCode.INVALID_ARGUMENT, "method"),
    (pb.ExplainRequest(model=MODEL, images=[pb.Image(tensor=pb.Tensor(shape=[3, 224, 224],
                                                                      dtype=pb.DATA_TYPE_FLOAT32, data=b"12"))]),
     grpc.StatusCode.INVALID_ARGUMENT, "images[0].tensor.data"),
    (pb.ExplainRequest(model=MODEL, layers=["nope"], images=[pb.Image(encoded=PHOTO.read_bytes())]),
     grpc.StatusCode.INVALID_ARGUMENT, "layers"),
    (pb.ExplainRequest(model=MODEL, targets=pb.Targets(class_ids=pb.ClassIds(ids=[5000])),
                       images=[pb.Image(encoded=PHOTO.read_bytes())]), grpc.StatusCode.INVALID_ARGUMENT,
     "targets.class_ids"),
    (pb.ExplainRequest(model="nomodel", images=[pb.Image(encoded=b"x")]), grpc.StatusCode.NOT_FOUND, None),
])
def test_bad_calls_get_the_right_status_and_the_server_keeps_serving(stub, request_, code, field):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request_, timeout=60)
    assert caught.value.code() == code
    if field is not None:
        assert violation(caught.value) == field
    assert stub.Explain(pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO.read_bytes())]), timeout=60)


def test_model_and_method_listings(stub):
    assert [(m.name, list(m.versions)) for m in stub.ListModels(pb.ListModelsRequest()).models] == [(MODEL, ["1"])]
    model = stub.GetModel(pb.GetModelRequest(model=MODEL))
    assert model.num_classes == 1000 and model.layout == "NCHW" and model.labels[285] == "Egyptian cat"
    assert model.default_layer in [layer.name for layer in model.layers] and model.preprocessing.crop == 224
    assert {layer.layout for layer in model.layers} == {"NCHW"}
    methods = {m.name: m for m in stub.ListMethods(pb.ListMethodsRequest()).methods}
    assert {"gradcam", "scorecam", "reciprocam", "randomcam"} <= set(methods)
    assert methods["scorecam"].cost_class == pb.COST_CLASS_PER_CHANNEL
    assert methods["scorecam"].options["variant"].text == "pytorch-grad-cam"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model=MODEL, version="7"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server):
    reflector = reflection_pb2_grpc.ServerReflectionStub(server[1])
    replies = reflector.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"camserve.v1.ExplainService", "grpc.health.v1.Health"} <= names


def test_client_and_cli_against_the_server(server, tmp_path, capsys):
    from camserve.service.cli import main
    from camserve.service.client import Client
    port = server[0].args[server[0].args.index("--port") + 1]
    with Client(f"127.0.0.1:{port}") as client:
        client.wait_ready(10)
        reply = client.explain([PHOTO], "gradcam", targets={"top_k": 2}, request_id="client-1")
        assert reply.request_id == "client-1"
        maps = Client.maps(reply)
        assert len(maps[0]) == 2 and maps[0][0].shape == (224, 224) and maps[0][0].dtype == np.float32
    out = tmp_path / "overlay.png"
    assert main(["explain", "--server", f"127.0.0.1:{port}", "--model", MODEL, "--image", str(PHOTO),
                 "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and "Egyptian cat" in capsys.readouterr().out
    assert main(["explain", "--server", f"127.0.0.1:{port}", "--model", "nomodel", "--image", str(PHOTO)]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


# no valid message of any type: a cut varint, a cut string, a string longer than the bytes, wire type 7, text
GARBAGE = [b"\xff", b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\x0f", b"\x07", b"garbage, not a protobuf message"]


@pytest.mark.parametrize("method", ["Explain", "Evaluate", "GetModel", "ListModels", "ListMethods"])
def test_undecodable_request_bytes_are_invalid_argument(server, method):
    # a raw channel with identity serializers sends the bytes as they are; grpc.aio itself answered UNKNOWN
    call = server[1].unary_unary(f"/camserve.v1.ExplainService/{method}")
    for data in GARBAGE:
        with pytest.raises(grpc.RpcError) as caught:
            call(data, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (data, caught.value.details())
        assert violation(caught.value) == "request"
    reply = pb.ModelDescription.FromString(
        server[1].unary_unary("/camserve.v1.ExplainService/GetModel")(pb.GetModelRequest(model=MODEL)
                                                                       .SerializeToString(), timeout=60))
    assert reply.name == MODEL


def test_an_undecodable_stream_message_ends_the_stream_in_its_turn(server):
    call = server[1].stream_stream("/camserve.v1.ExplainService/ExplainStream")
    good = pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO.read_bytes())], request_id="good")
    replies = call(iter([good.SerializeToString(), b"\xff", good.SerializeToString()]), timeout=60)
    assert pb.ExplainResponse.FromString(next(replies)).request_id == "good"
    with pytest.raises(grpc.RpcError) as caught:
        next(replies)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violation(caught.value) == "request"
    health = health_pb2_grpc.HealthStub(server[1]).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def _logged(process, request_id: str) -> list[dict]:
    lines = [json.loads(line) for line in log_of(process).splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("request_id") == request_id and "rpc" in line]


def _sent_id(call) -> str:
    """The id an answered call's initial metadata carries."""
    return dict(call.initial_metadata())["x-request-id"]


def _failed_id(error: grpc.RpcError) -> str:
    """The id a failed call's trailing metadata carries: no initial metadata, which would make the call
    committed, and a client would not retry its UNAVAILABLE or RESOURCE_EXHAUSTED on another replica."""
    assert "x-request-id" not in dict(error.initial_metadata())
    return dict(error.trailing_metadata())["x-request-id"]


def test_each_call_has_a_request_id_in_its_reply_metadata_and_log_line(server, stub):
    photo = [pb.Image(encoded=PHOTO.read_bytes())]
    # the client's x-request-id metadata first, then the request's own field, else a new one
    reply, call = stub.Explain.with_call(pb.ExplainRequest(model=MODEL, images=photo, request_id="field-1"),
                                         metadata=[("x-request-id", "header-1")], timeout=60)
    assert reply.request_id == _sent_id(call) == "header-1"
    reply, call = stub.Explain.with_call(pb.ExplainRequest(model=MODEL, images=photo, request_id="field-2"),
                                         timeout=60)
    assert reply.request_id == _sent_id(call) == "field-2"
    reply, call = stub.Explain.with_call(pb.ExplainRequest(model=MODEL, images=photo), timeout=60)
    made = reply.request_id
    assert re.fullmatch("[0-9a-f]{32}", made) and _sent_id(call) == made
    listed, call = stub.ListModels.with_call(pb.ListModelsRequest(), metadata=[("x-request-id", "list-1")],
                                             timeout=60)
    assert _sent_id(call) == "list-1"
    evaluated = stub.Evaluate(pb.EvaluateRequest(model=MODEL, deletion_step=224 * 56, images=[
        pb.LabelledImage(image=photo[0], label=285)]), metadata=[("x-request-id", "evaluate-1")], timeout=120)
    assert evaluated.request_id == "evaluate-1"
    with pytest.raises(grpc.RpcError) as caught:   # a failed call has one too
        stub.Explain(pb.ExplainRequest(model=MODEL, method="nocam", images=photo, request_id="failed-1"), timeout=60)
    assert _failed_id(caught.value) == "failed-1"
    for request_id, rpc, code in (("header-1", "Explain", "OK"), ("field-2", "Explain", "OK"), (made, "Explain", "OK"),
                                  ("list-1", "ListModels", "OK"), ("evaluate-1", "Evaluate", "OK"),
                                  ("failed-1", "Explain", "INVALID_ARGUMENT")):
        # a failed call's line is written just after its status has gone out
        wait_for(f"{request_id} is logged", lambda: _logged(server[0], request_id))  # noqa: B023 -- called at once
        assert [(line["rpc"], line["code"]) for line in _logged(server[0], request_id)] == [(rpc, code)], request_id


def test_a_stream_keeps_each_messages_request_id_and_gives_the_rest_the_calls(server, stub):
    photo = [pb.Image(encoded=PHOTO.read_bytes())]
    requests = [pb.ExplainRequest(model=MODEL, images=photo, request_id="own-1"),
                pb.ExplainRequest(model=MODEL, images=photo)]
    replies = stub.ExplainStream(iter(requests), metadata=[("x-request-id", "stream-1")], timeout=60)
    assert [reply.request_id for reply in replies] == ["own-1", "stream-1"]
    assert _sent_id(replies) == "stream-1"
    wait_for("the stream is logged", lambda: _logged(server[0], "stream-1"))
    assert [line["code"] for line in _logged(server[0], "stream-1")] == ["OK"]


@pytest.mark.parametrize("where", ["metadata", "field"])
def test_a_request_id_that_cannot_go_out_as_metadata_is_refused(stub, where):
    request = pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO.read_bytes())])
    metadata = None
    if where == "field":
        request.request_id = "caf\u00e9\nid"
    else:
        metadata = [("x-request-id", "x" * 129)]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, metadata=metadata, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation(caught.value) == ("x-request-id" if where == "metadata" else "request_id")
    assert re.fullmatch("[0-9a-f]{32}", _failed_id(caught.value))
