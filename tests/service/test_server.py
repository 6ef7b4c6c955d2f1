"""The gRPC server on loopback: Explain equals the in-process Explainer; statuses for bad calls; health."""
from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from camserve.v1 import explain_pb2 as pb
from camserve.service import images
from camserve.service.explainer import Explainer
from camserve.service.model_config import load_config
from serving import violation

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
                       images=[pb.Image(encoded=PHOTO.read_bytes())]), grpc.StatusCode.INVALID_ARGUMENT, "targets.class_ids"),
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
        reply = client.explain([PHOTO], "gradcam", targets={"top_k": 2})
        maps = Client.maps(reply)
        assert len(maps[0]) == 2 and maps[0][0].shape == (224, 224) and maps[0][0].dtype == np.float32
    out = tmp_path / "overlay.png"
    assert main(["explain", "--server", f"127.0.0.1:{port}", "--model", MODEL, "--image", str(PHOTO),
                 "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and "Egyptian cat" in capsys.readouterr().out
    assert main(["explain", "--server", f"127.0.0.1:{port}", "--model", "nomodel", "--image", str(PHOTO)]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
