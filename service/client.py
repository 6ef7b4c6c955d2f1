"""A Python client of camserve.v1: explain images on a camserve server and get numpy maps and PNG overlays back."""
from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .targets import Target, has_objects
from .wire import option_value, target_message

SERVICE = "camserve.v1.ExplainService"


def service_config() -> dict:
    """The gRPC service config for camserve replicas: round_robin over every address the target resolves to,
    skipping a replica whose health says NOT_SERVING (it is draining), and sending again a call that a replica
    refused, dropped by dying, or could not queue. camserve calls have no side effects, so a retry is safe."""
    return {"loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": SERVICE},
            # a failure costs a token, a success gives back a tenth of one; below 50 tokens retries stop, so
            # that they cannot swamp a service that is overloaded as a whole
            "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
            "methodConfig": [{"name": [{"service": SERVICE}],
                              # 5 attempts: gRPC allows no more. CANCELLED reaches a client only from a server
                              # that stops as the call arrives (grpc.aio's stop() race); the client's own
                              # cancellation is never retried
                              "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s",
                                              "backoffMultiplier": 2,
                                              "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED",
                                                                       "CANCELLED"]}}]}


def channel_options(max_request_bytes: int = 64 << 20) -> dict:
    """Channel arguments that go with `service_config`."""
    return {"grpc.service_config": json.dumps(service_config()),
            # gRPC retries a call only while its whole request is still buffered, 256 KiB by default: less
            # than many photos. Above it, a call in flight on a replica that dies fails instead.
            "grpc.per_rpc_retry_buffer_size": max_request_bytes,
            "grpc.max_receive_message_length": 1 << 30,
            # a replica that stops answering (hung, or its node cut off) holds its calls until a keepalive ping
            # goes unanswered for 5 s; the connection is then closed and the calls retried on another replica.
            # gRPC 1.85 times a ping out after grpc.http2.ping_timeout_ms (60 s by default), not after
            # grpc.keepalive_timeout_ms: both are set.
            "grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 5_000, "grpc.http2.ping_timeout_ms": 5_000,
            "grpc.keepalive_permit_without_calls": 1,
            # a replica back on the same address is found within seconds, not gRPC's default two minutes
            "grpc.max_reconnect_backoff_ms": 5_000}


def _objects(request: pb.ExplainRequest, rows) -> None:
    for row in rows:
        request.targets.objects.images.add().targets.extend(target_message(t) for t in row)


class Client:
    """`Client("host:50051").explain(["cat.png"], "gradcam")` -> the ExplainResponse; `maps(response)`
    turns its raw maps into (H, W) float32 arrays. With `ca`, the channel is TLS (with `cert` and `key`,
    mutual TLS); with `token`, every call carries `authorization: Bearer <token>`; a call given a `request_id`
    carries it as `x-request-id`, which the server logs and returns (else it makes one). The target may name many
    replicas (`dns:///camserve-headless:50051`, `ipv4:10.0.0.1:50051,10.0.0.2:50051`): calls are balanced
    over them and retried on another when one fails (`channel_options`; `options` add to or override it)."""

    def __init__(self, target: str, timeout: float = 60.0, token: str | None = None, ca: str | Path | None = None,
                 cert: str | Path | None = None, key: str | Path | None = None, options: list | None = None):
        options = list({**channel_options(), **dict(options or ())}.items())
        if ca or cert or key:
            from .server.security import channel_credentials
            self.channel = grpc.secure_channel(target, channel_credentials(ca, cert, key), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = explain_pb2_grpc.ExplainServiceStub(self.channel)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def wait_ready(self, timeout: float = 60.0, alive=lambda: True) -> None:
        """Block until the server's health service says SERVING (raise TimeoutError after `timeout` s, or
        at once when `alive()` turns false: a server process that died will never answer)."""
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or not alive():
                raise TimeoutError(f"no healthy camserve server after {timeout:.0f} s")
            time.sleep(0.2)

    @staticmethod
    def request(images: list, method: str = "gradcam", model: str = "mobilenet_v2", targets=None,
                layers: list[str] | None = None, overlay: bool = False, fusion: str | None = None,
                original_size: bool = False, version: str = "", detect: dict | None = None,
                **options) -> pb.ExplainRequest:
        """images: file paths or encoded bytes. targets: None (the model kind's default), class ids, {"top_k": k},
        {"detections": k} (a detector's k best), camserve.targets objects (one for all images, one per image, or a
        list per image), or {"objects": [[...], ...]} whose ints are detection indices. detect: {"score", "iou",
        "max_detections"} for detectors."""
        encoded = [Path(i).read_bytes() if isinstance(i, (str, Path)) else bytes(i) for i in images]
        request = pb.ExplainRequest(model=model, version=version, method=method, layers=layers or [],
                                    fusion=fusion or "", images=[pb.Image(encoded=data) for data in encoded],
                                    options={k: option_value(v) for k, v in options.items()},
                                    output=pb.OUTPUT_KIND_BOTH if overlay else pb.OUTPUT_KIND_MAP,
                                    size=pb.OUTPUT_SIZE_ORIGINAL if original_size else pb.OUTPUT_SIZE_INPUT)
        if detect:
            request.detect.CopyFrom(pb.DetectOptions(**detect))
        if isinstance(targets, dict) and "top_k" in targets:
            request.targets.top_k = int(targets["top_k"])
        elif isinstance(targets, dict) and "detections" in targets:
            request.targets.detections = int(targets["detections"])
        elif isinstance(targets, dict) and "objects" in targets:
            _objects(request, targets["objects"])
        elif has_objects(targets):
            rows = [targets] if isinstance(targets, Target) else list(targets)
            _objects(request, [row if isinstance(row, (list, tuple)) else [row] for row in rows])
        elif targets is not None:
            request.targets.class_ids.ids.extend(int(t) for t in np.atleast_1d(targets))
        return request

    def explain(self, images: list, method: str = "gradcam", model: str = "mobilenet_v2", targets=None,
                layers: list[str] | None = None, overlay: bool = False, request_id: str | None = None,
                **options) -> pb.ExplainResponse:
        """One Explain call; keyword arguments as `request` takes them."""
        return self.stub.Explain(Client.request(images, method, model, targets, layers, overlay, **options),
                                 timeout=self.timeout, metadata=self._metadata(request_id))

    def explain_stream(self, requests, request_id: str | None = None):
        """ExplainStream: an iterable of ExplainRequest in, the responses out, in order (a response whose
        request names no request_id gets the call's)."""
        return self.stub.ExplainStream(iter(requests), timeout=self.timeout, metadata=self._metadata(request_id))

    def evaluate(self, request: pb.EvaluateRequest, request_id: str | None = None) -> pb.EvaluateResponse:
        return self.stub.Evaluate(request, timeout=self.timeout, metadata=self._metadata(request_id))

    def _metadata(self, request_id: str | None) -> tuple | None:
        if not request_id:
            return self.metadata
        return (*(self.metadata or ()), ("x-request-id", request_id))

    @staticmethod
    def maps(response: pb.ExplainResponse) -> list[list[np.ndarray]]:
        """Per image, per explanation, the (H, W) float32 map."""
        return [[np.frombuffer(e.map.data, "<f4").reshape(e.map.shape) for e in image.explanations]
                for image in response.images]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
