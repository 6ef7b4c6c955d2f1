"""Every RPC's outcome: exceptions to gRPC statuses with google.rpc details, one metrics sample, one log line."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import BadRequest
from ..methods import DEFAULT, METHODS
from .batching import Cancelled, Overloaded
from .observability import log_call
from .repository import ModelNotFound, ModelUnavailable

log = logging.getLogger("camserve")
REQUEST_ID = "x-request-id"   # the invocation metadata a client (or a proxy) names the call by; sent back
ID_CHARACTERS = 128           # a request id also goes out as metadata: printable ASCII, at most this long
UNKNOWN = "unknown"           # the metric label of a model or method the server does not have


class Draining(Exception):
    """The server is shutting down: calls in flight finish, new ones go elsewhere (UNAVAILABLE, retryable)."""

# the caller's mistakes and the server's states, each with the status a gRPC client retries or not on
CODES = ((BadRequest, code_pb2.INVALID_ARGUMENT), (ModelNotFound, code_pb2.NOT_FOUND),
         (ModelUnavailable, code_pb2.FAILED_PRECONDITION), (Overloaded, code_pb2.RESOURCE_EXHAUSTED),
         (Cancelled, code_pb2.CANCELLED), (Draining, code_pb2.UNAVAILABLE))


class Undecodable:
    """What a request's bytes became when they were no valid message: the handler answers INVALID_ARGUMENT."""

    def __init__(self, message: str):
        self.message = message


def parser(message_type):
    """A request deserializer that hands undecodable bytes on as Undecodable, which `checked` turns into
    BadRequest (unary handlers' requests are checked by `observed`; a stream's, by the handler, in order).
    grpc.aio answers an exception raised while deserializing with UNKNOWN, past the handler, its metrics
    and its log line."""
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except DecodeError as error:
            return Undecodable(f"the request is no valid {message_type.DESCRIPTOR.full_name}: {error}")
    return parse


def checked(request):
    """The request, or BadRequest if its bytes were no valid message."""
    if isinstance(request, Undecodable):
        raise BadRequest(request.message, "request")
    return request


class _Outcome:
    def __init__(self, context, request=None):
        self.code, self.images, self.began = "OK", 0, time.perf_counter()
        remaining = context.time_remaining()   # after a cancellation it no longer tells; read it now
        self.deadline = None if remaining is None else time.monotonic() + remaining
        self.model = getattr(request, "model", "")
        self.method = getattr(request, "method", "") or (DEFAULT if hasattr(request, "method") else "")
        metadata = dict(context.invocation_metadata() or ())
        self.request_id, self.bad_id = _request_id(metadata.get(REQUEST_ID), getattr(request, "request_id", ""))
        self.announced = False   # the id went out as initial metadata
        # a client's retry of a call that failed elsewhere (a replica died or drained) says so
        previous = metadata.get("grpc-previous-rpc-attempts", "0")
        self.attempt = 1 + int(previous) if previous.isdigit() else 1


def _request_id(header: str | None, field: str) -> tuple[str, str | None]:
    """(the call's id, the source that gave an unusable one): the client's `x-request-id` metadata, else the
    request's `request_id`, else a new one. An id that cannot go out as metadata is replaced (and refused)."""
    for given, source in ((header, REQUEST_ID), (field, "request_id")):
        if given:
            usable = len(given) <= ID_CHARACTERS and given.isascii() and given.isprintable()
            return (given, None) if usable else (uuid.uuid4().hex, source)
    return uuid.uuid4().hex, None


def status_of(error: Exception) -> grpc.Status:
    """The status for an exception: a known kind gets its code (bad input with a BadRequest field
    violation, RESOURCE_EXHAUSTED with a RetryInfo hint); anything else is INTERNAL, its text not sent."""
    code = next((c for kind, c in CODES if isinstance(error, kind)), code_pb2.INTERNAL)
    message, details = str(error), []
    if isinstance(error, BadRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field or "request", description=message)
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    elif isinstance(error, Overloaded):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(100)
        details.append(_packed(retry))
    elif code == code_pb2.INTERNAL:
        message = f"internal error ({type(error).__name__}); the server log has the details"
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


def _packed(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def _gone(outcome: _Outcome) -> str:
    expired = outcome.deadline is not None and time.monotonic() >= outcome.deadline - 0.01
    return "DEADLINE_EXCEEDED" if expired else "CANCELLED"


async def _announce(context, outcome: _Outcome) -> None:
    """The call's id as initial metadata, sent with its first response message and not before: response
    headers commit a call, and a client no longer retries a committed call's UNAVAILABLE or RESOURCE_EXHAUSTED
    on another replica. A call that fails before answering gets the id in its trailing metadata instead."""
    if not outcome.announced:
        outcome.announced = True
        await context.send_initial_metadata(((REQUEST_ID, outcome.request_id),))


def _failed(error: Exception, outcome: _Outcome) -> grpc.Status:
    status = status_of(error)
    outcome.code = status.code.name
    if status.code == grpc.StatusCode.INTERNAL:
        log.exception(f"{type(error).__name__} while serving request {outcome.request_id!r}", exc_info=error)
    return status


def _record(servicer, rpc: str, outcome: _Outcome, context) -> None:
    seconds = time.perf_counter() - outcome.began
    if servicer.metrics is not None:
        model, method = _labels(servicer, outcome)
        images = outcome.images if outcome.code == "OK" else 0
        servicer.metrics.observe(rpc, model, method, outcome.code, seconds, images)
    log_call(log, rpc, outcome.model, outcome.method, outcome.code, seconds, peer=context.peer(),
             request_id=outcome.request_id, images=outcome.images, attempt=outcome.attempt)


def _labels(servicer, outcome: _Outcome) -> tuple[str, str]:
    """The call's model and method as metric labels: a name the server does not have is UNKNOWN, so that
    clients' made-up names (each a new series, kept for good) cannot grow the metrics without bound."""
    model, method = outcome.model, outcome.method
    if model and not servicer.repository.known(model):
        model = UNKNOWN
    if method and method not in METHODS:
        method = UNKNOWN
    return model, method


@contextlib.asynccontextmanager
async def _accounted(servicer, rpc: str, context, outcome: _Outcome):
    """The block's exception as the call's status (never UNKNOWN), then one metrics sample and log line."""
    servicer.active += 1
    try:
        if servicer.draining:
            raise Draining("the server is shutting down; retry on another replica")
        if outcome.bad_id:
            raise BadRequest(f"{outcome.bad_id} must be at most {ID_CHARACTERS} printable ASCII characters",
                             outcome.bad_id)
        yield outcome
    except asyncio.CancelledError:   # the client cancelled, or its deadline passed: the work stops
        outcome.code = _gone(outcome)
        raise
    except Exception as error:
        status = _failed(error, outcome)
        await context.abort(status.code, status.details, (*status.trailing_metadata, (REQUEST_ID, outcome.request_id)))
    finally:
        servicer.active -= 1
        _record(servicer, rpc, outcome, context)


def observed(rpc: str):
    """A unary handler whose exceptions become statuses and whose every call is counted and logged; a
    response with a `request_id` gets the call's."""
    def wrap(call):
        @functools.wraps(call)
        async def wrapper(self, request, context):
            outcome = _Outcome(context, request)
            outcome.images = len(getattr(request, "images", ()))
            async with _accounted(self, rpc, context, outcome):
                response = await call(self, checked(request), context)
                if "request_id" in response.DESCRIPTOR.fields_by_name:
                    response.request_id = outcome.request_id
                await _announce(context, outcome)
                return response
        return wrapper
    return wrap


def observed_stream(rpc: str):
    """The same for a response-streaming handler; a failed message ends the stream with its status. Each
    response keeps its own message's request_id; one without gets the call's (metadata, else a new one)."""
    def wrap(call):
        @functools.wraps(call)
        async def wrapper(self, requests, context):
            outcome = _Outcome(context)
            async with _accounted(self, rpc, context, outcome):
                async for response in call(self, requests, context):
                    outcome.model, outcome.method = response.model, response.method
                    outcome.images += len(response.images)
                    response.request_id = response.request_id or outcome.request_id
                    await _announce(context, outcome)
                    yield response
        return wrapper
    return wrap
