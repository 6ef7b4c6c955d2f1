"""Model folders confined to the repository (their external data watched); bearer auth, TLS and mTLS on grpc.aio."""
from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from onnx import TensorProto, helper, numpy_helper

from camserve.service.server.repository import ModelRepository
from camserve.service.server.security import (
    BearerAuth,
    UnsafeModel,
    channel_credentials,
    check_model_files,
    server_credentials,
)
from serving import in_thread

TIMEOUT = 5.0
TOKEN = "s3cret-token"

# ---------------------------------------------------------------------------------------------- model files


def _matmul_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    return helper.make_model(graph)


def _if_model() -> onnx.ModelProto:
    """The external tensor lives only in the then-branch's initializers."""
    def branch(name, initializers, nodes):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [8])],
                                 initializers)
    then = branch("then", [numpy_helper.from_array(np.ones(8, np.float32), "then_weight")],
                  [helper.make_node("Identity", ["then_weight"], ["out"])])
    other = branch("else", [], [helper.make_node("Constant", [], ["out"], value_floats=[0.0] * 8)])
    graph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "g",
                              [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])])
    return helper.make_model(graph)


def _save(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def _external_tensors(model: onnx.ModelProto):
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                tensors += attribute.g.initializer
    return [t for t in tensors if t.data_location == TensorProto.EXTERNAL]


def _relocate(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    tensors = _external_tensors(model)
    assert tensors, "the test model has no external tensor to relocate"
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


@pytest.fixture
def repository(tmp_path):
    """root/m/1/model.onnx + weights.bin; m/outside.bin is inside the repository yet outside the model's folder."""
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    (root / "m" / "outside.bin").write_bytes(b"\0" * 4096)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    return root


@pytest.mark.parametrize("build", [_matmul_model, _if_model])
def test_external_data_beside_the_model_passes(repository, build):
    path = _save(build(), repository / "m" / "1")
    assert (path.parent / "weights.bin").is_file() and _external_tensors(onnx.load(str(path), load_external_data=False))
    check_model_files(repository, path)


@pytest.mark.parametrize("build", [_matmul_model, _if_model])
@pytest.mark.parametrize("kind", ["absolute", "absolute_inside", "parent", "parent_back_inside", "symlink",
                                  "missing"])
def test_external_data_leaving_the_model_folder_is_refused(repository, build, kind):
    path = _save(build(), repository / "m" / "1")
    secret = repository.parent / "secret.bin"
    if kind == "symlink":
        (path.parent / "link.bin").symlink_to(secret)
    # the *_inside locations do name the real weights: absolute paths and `..` are refused as such
    location = {"absolute": str(secret), "absolute_inside": str(path.parent / "weights.bin"),
                "parent": "../outside.bin", "parent_back_inside": "../1/weights.bin", "symlink": "link.bin",
                "missing": "missing.bin"}[kind]
    _relocate(path, location)
    with pytest.raises(UnsafeModel) as refused:
        check_model_files(repository, path)
    tensor = "weight" if build is _matmul_model else "then_weight"
    assert repr(tensor) in str(refused.value) and repr(location) in str(refused.value)


def test_replacing_only_the_external_data_reloads_the_model(repository):
    bundled = Path(__file__).resolve().parents[2] / "models" / "mobilenet_v2"
    shutil.copy(bundled / "config.json", repository / "m" / "config.json")
    _save(onnx.load(str(bundled / "1" / "model.onnx")), repository / "m" / "1")
    models = ModelRepository(repository, threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    _, _, first = models.get("m")
    before = first.predict(x)

    # the same graph, the classifier's bias shifted, written elsewhere and renamed over
    model = onnx.load(str(bundled / "1" / "model.onnx"))
    (bias,) = [t for t in model.graph.initializer if list(t.dims) == [1000]]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1.0, bias.name))
    staged = _save(model, repository.parent / "staging")
    (staged.parent / "weights.bin").replace(repository / "m" / "1" / "weights.bin")

    _, _, second = models.get("m")
    assert second is not first
    assert np.abs(second.predict(x) - before).max() > 0.5
    assert models.get("m")[2] is second   # and not rebuilt again while nothing changes


def test_a_model_symlinked_from_outside_the_repository_is_refused(repository):
    outside = _save(_matmul_model(), repository.parent / "elsewhere")
    check_model_files(outside.parent, outside)
    (repository / "m" / "1").mkdir()
    link = repository / "m" / "1" / "model.onnx"
    link.symlink_to(outside)
    with pytest.raises(UnsafeModel, match="outside the repository"):
        check_model_files(repository, link)


# ---------------------------------------------------------------------------------------------- gRPC


class _Echo:
    """test.Echo in all four kinds; `reached` records every call that got past the interceptor."""

    def __init__(self):
        self.reached = []

    async def unary(self, request, context):
        self.reached.append("Unary")
        return request

    async def stream(self, requests, context):
        self.reached.append("Stream")
        async for request in requests:
            yield request

    async def server_stream(self, request, context):
        self.reached.append("ServerStream")
        yield request
        yield request

    async def client_stream(self, requests, context):
        self.reached.append("ClientStream")
        return b"".join([r async for r in requests])

    def handler(self):
        return grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Stream": grpc.stream_stream_rpc_method_handler(self.stream),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
        })


@contextlib.contextmanager
def _serving(echo: _Echo, interceptors=(), credentials=None):
    """A grpc.aio server on its own event loop in a thread, so the tests can use the blocking client as camserve's
    own client does (grpc.aio's client can report INTERNAL in place of the server's status when a streaming write
    races an early status, grpc/grpc#36066)."""
    async def start():
        server = grpc.aio.server(interceptors=list(interceptors))
        server.add_generic_rpc_handlers([echo.handler()])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = (server.add_secure_port("127.0.0.1:0", credentials) if credentials
                else server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        return server, port

    with in_thread(start, TIMEOUT) as (port,):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def _channel(target, credentials=None):
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        yield channel


def _calls(channel, metadata=None):
    """What each kind of call answers: its replies, or the status code it failed with."""
    def outcome(call):
        try:
            return call()
        except grpc.RpcError as error:
            return error.code()

    kw = {"timeout": TIMEOUT, "metadata": metadata}
    return {
        "Unary": outcome(lambda: channel.unary_unary("/test.Echo/Unary")(b"hi", **kw)),
        "Stream": outcome(lambda: list(channel.stream_stream("/test.Echo/Stream")(iter([b"a", b"b"]), **kw))),
        "ServerStream": outcome(lambda: list(channel.unary_stream("/test.Echo/ServerStream")(b"s", **kw))),
        "ClientStream": outcome(lambda: channel.stream_unary("/test.Echo/ClientStream")(iter([b"c", b"d"]), **kw)),
    }


ANSWERS = {"Unary": b"hi", "Stream": [b"a", b"b"], "ServerStream": [b"s", b"s"], "ClientStream": b"cd"}
SERVING = health_pb2.HealthCheckResponse.SERVING


def _health(channel, metadata=None):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT,
                                                     metadata=metadata).status


def _refused(code):
    return dict.fromkeys(ANSWERS, code)


def test_bearer_auth_admits_the_token_and_refuses_the_rest_before_the_servicer():
    echo = _Echo()
    with _serving(echo, [BearerAuth(TOKEN)]) as target, _channel(target) as channel:
        assert _calls(channel, [("authorization", f"Bearer {TOKEN}")]) == ANSWERS
        assert sorted(echo.reached) == sorted(ANSWERS)
        echo.reached.clear()
        for metadata in (None, [("authorization", "Bearer not-the-token")],
                         [("authorization", f"Bearer {TOKEN[:-1]}")], [("authorization", TOKEN)]):
            assert _calls(channel, metadata) == _refused(grpc.StatusCode.UNAUTHENTICATED), metadata
        with pytest.raises(grpc.RpcError) as denied:
            channel.unary_unary("/test.Echo/Unary")(b"hi", timeout=TIMEOUT)
        assert "authorization: Bearer" in denied.value.details()
        with pytest.raises(grpc.RpcError) as unknown:
            channel.unary_unary("/test.Echo/Nope")(b"", timeout=TIMEOUT)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert _health(channel) == SERVING, "the health service must answer without a token"
    assert echo.reached == [], "a refused call reached the servicer"


@pytest.mark.parametrize("method", ["Stream", "ClientStream"])
def test_a_refused_stream_ends_before_the_client_sends_anything(method):
    """A refusal of the wrong kind would wait for a first request that a waiting client never sends."""
    released = threading.Event()

    def silent():
        released.wait(TIMEOUT)
        yield from ()

    with _serving(_Echo(), [BearerAuth(TOKEN)]) as target, _channel(target) as channel:
        try:
            with pytest.raises(grpc.RpcError) as refused:
                if method == "Stream":
                    list(channel.stream_stream("/test.Echo/Stream")(silent(), timeout=TIMEOUT))
                else:
                    channel.stream_unary("/test.Echo/ClientStream")(silent(), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert not released.is_set(), "the refusal waited for the client"
        finally:
            released.set()


def test_bearer_auth_needs_a_token():
    with pytest.raises(ValueError):
        BearerAuth("")


def test_tls_needs_a_client_that_trusts_the_ca(pki):
    with _serving(_Echo(), credentials=server_credentials(pki / "server.pem", pki / "server.key")) as target:
        with _channel(target, channel_credentials(pki / "ca.pem")) as channel:
            assert _calls(channel) == ANSWERS and _health(channel) == SERVING
        with _channel(target, grpc.ssl_channel_credentials()) as channel:
            assert _calls(channel) == _refused(grpc.StatusCode.UNAVAILABLE)
        with _channel(target) as channel:
            assert _calls(channel) == _refused(grpc.StatusCode.UNAVAILABLE)


def test_mutual_tls_needs_a_client_certificate_and_combines_with_the_token(pki):
    echo = _Echo()
    credentials = server_credentials(pki / "server.pem", pki / "server.key", client_ca=pki / "ca.pem")
    token = [("authorization", f"Bearer {TOKEN}")]
    with _serving(echo, [BearerAuth(TOKEN)], credentials) as target:
        with _channel(target, channel_credentials(pki / "ca.pem")) as channel:
            assert _calls(channel, token) == _refused(grpc.StatusCode.UNAVAILABLE)
        assert echo.reached == []
        with _channel(target, channel_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key")) as channel:
            assert _calls(channel, token) == ANSWERS
            assert _calls(channel) == _refused(grpc.StatusCode.UNAUTHENTICATED)
    assert sorted(echo.reached) == sorted(ANSWERS)


def test_channel_credentials_want_a_certificate_and_its_key_together(pki):
    with pytest.raises(ValueError):
        channel_credentials(pki / "ca.pem", cert=pki / "client.pem")
    with pytest.raises(ValueError):
        channel_credentials(pki / "ca.pem", key=pki / "client.key")
