"""Serving hardening: model folders confined to the repository, bearer-token auth, TLS and mutual TLS."""
from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path

import grpc
import onnx
from onnx import AttributeProto, GraphProto, TensorProto


class UnsafeModel(ValueError):
    """A model file outside the repository, or external data reaching outside the model's own folder."""


def _graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    # onnx.external_data_helper._get_all_tensors skips sparse tensors, yet ONNX Runtime loads their external data
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            yield from _attribute_tensors(attribute)


def _attribute_tensors(attribute: AttributeProto) -> Iterator[TensorProto]:
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    sparse_tensors = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
    for sparse in [*sparse_tensors, *attribute.sparse_tensors]:
        yield from (sparse.values, sparse.indices)
    # If/Loop/Scan bodies carry initializers of their own
    if attribute.HasField("g"):
        yield from _graph_tensors(attribute.g)
    for graph in attribute.graphs:
        yield from _graph_tensors(graph)


def _model_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attribute in node.attribute:
                yield from _attribute_tensors(attribute)


def check_model_files(root: Path, model_path: Path) -> None:
    """Raise UnsafeModel unless model_path and every external-data file it names stay where they belong.

    The model must resolve (symlinks followed) inside root; each external tensor's location must be a relative
    path without `..` naming a regular file that resolves inside the model's own folder.
    """
    root_resolved = Path(root).resolve()
    resolved = Path(model_path).resolve()
    if not resolved.is_relative_to(root_resolved):
        raise UnsafeModel(f"model {model_path} resolves to {resolved}, outside the repository {root_resolved}")
    folder = Path(model_path).parent.resolve()
    # only the references are wanted: loading the data would read whatever the locations point at
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in _model_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), None)
        problem = _location_problem(folder, location)
        if problem:
            raise UnsafeModel(f"tensor {tensor.name!r} of {model_path}: external data location {location!r} {problem}")


def _location_problem(folder: Path, location: str | None) -> str | None:
    if not location:
        return "is missing"
    if Path(location).is_absolute():
        return "is absolute"
    # backslashes too: a model written on Windows may use them as separators
    if ".." in location.replace("\\", "/").split("/"):
        return "contains '..'"
    target = (folder / location).resolve()
    if not target.is_relative_to(folder):
        return f"resolves to {target}, outside the model folder {folder}"
    if not target.is_file():
        return "is not an existing regular file"
    return None


class BearerAuth(grpc.aio.ServerInterceptor):
    """Rejects calls without `authorization: Bearer <token>` metadata; the health service stays open."""

    # Kubernetes probes cannot attach a token
    OPEN_PREFIX = "/grpc.health.v1.Health/"

    def __init__(self, token: str):
        if not token:
            raise ValueError("the bearer token must not be empty")
        self._expected = f"Bearer {token}".encode()

    def _authorised(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self.OPEN_PREFIX) or self._authorised(
                handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        # the refusal must have the real method's kind: a unary-request one would first wait for a request that a
        # streaming client may never send, and the client would see its deadline instead of UNAUTHENTICATED
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        make = HANDLER_KINDS[handler.request_streaming, handler.response_streaming]
        # no deserializer: the request of a refused call is never looked at
        return make(_refuse)


async def _refuse(request_or_iterator, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        "missing or invalid credentials: send metadata `authorization: Bearer <token>`")


# (request streaming, response streaming) -> the handler of that kind
HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key; with client_ca, clients must present a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None)


def channel_credentials(ca: Path | None = None, cert: Path | None = None,
                        key: Path | None = None) -> grpc.ChannelCredentials:
    """Client TLS trusting ca (the system roots without it); cert and key together give mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca else None,
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None)
