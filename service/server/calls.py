"""Every RPC's outcome: exceptions to gRPC statuses with google.rpc details, one metrics sample, one log line."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import BadRequest
from .batching import Cancelled, Overloaded
from .observability import log_call
from .repository import ModelNotFound, ModelUnavailable

log = logging.getLogger("camserve")


class Draining(Exception):
    """The server is shutting down: calls in flight finish, new ones go elsewhere (UNAVAILABLE, retryable)."""

# the caller's mistakes and the server's states, each with the status a gRPC client retries or not on
CODES = ((BadRequest, code_pb2.INVALID_ARGUMENT), (ModelNotFound, code_pb2.NOT_FOUND),
         (ModelUnavailable, code_pb2.FAILED_PRECONDITION), (Overloaded, code_pb2.RESOURCE_EXHAUSTED),
         (Cancelled, code_pb2.CANCELLED), (Draining, code_pb2.UNAVAILABLE))


class _Outcome:
    def __init__(self, context, request=None):
        self.code, self.images, self.began = "OK", 0, time.perf_counter()
        remaining = context.time_remaining()   # after a cancellation it no longer tells; read it now
        self.deadline = None if remaining is None else time.monotonic() + remaining
        self.model = getattr(request, "model", "")
        self.method = getattr(request, "method", "") or ("gradcam" if hasattr(request, "method") else "")
        self.request_id = getattr(request, "request_id", "")
        # a client's retry of a call that failed elsewhere (a replica died or drained) says so
        previous = dict(context.invocation_metadata() or ()).get("grpc-previous-rpc-attempts", "0")
        self.attempt = 1 + int(previous) if previous.isdigit() else 1


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


def _failed(error: Exception, outcome: _Outcome) -> grpc.Status:
    status = status_of(error)
    outcome.code = status.code.name
    if status.code == grpc.StatusCode.INTERNAL:
        log.exception(f"{type(error).__name__} while serving request {outcome.request_id!r}", exc_info=error)
    return status


def _record(servicer, rpc: str, outcome: _Outcome, context) -> None:
    seconds = time.perf_counter() - outcome.began
    if servicer.metrics is not None:
        servicer.metrics.observe(rpc, outcome.model, outcome.method, outcome.code, seconds,
                                 outcome.images if outcome.code == "OK" else 0)
    log_call(log, rpc, outcome.model, outcome.method, outcome.code, seconds, peer=context.peer(),
             request_id=outcome.request_id, images=outcome.images, attempt=outcome.attempt)


@contextlib.asynccontextmanager
async def _accounted(servicer, rpc: str, context, outcome: _Outcome):
    """The block's exception as the call's status (never UNKNOWN), then one metrics sample and log line."""
    servicer.active += 1
    try:
        if servicer.draining:
            raise Draining("the server is shutting down; retry on another replica")
        yield outcome
    except asyncio.CancelledError:   # the client cancelled, or its deadline passed: the work stops
        outcome.code = _gone(outcome)
        raise
    except Exception as error:  # noqa: BLE001 -- no exception may leave as UNKNOWN
        status = _failed(error, outcome)
        await context.abort(status.code, status.details, status.trailing_metadata)
    finally:
        servicer.active -= 1
        _record(servicer, rpc, outcome, context)


def observed(rpc: str):
    """A unary handler whose exceptions become statuses and whose every call is counted and logged."""
    def wrap(call):
        @functools.wraps(call)
        async def wrapper(self, request, context):
            outcome = _Outcome(context, request)
            outcome.images = len(getattr(request, "images", ()))
            async with _accounted(self, rpc, context, outcome):
                return await call(self, request, context)
        return wrapper
    return wrap


def observed_stream(rpc: str):
    """The same for a response-streaming handler; a failed message ends the stream with its status."""
    def wrap(call):
        @functools.wraps(call)
        async def wrapper(self, requests, context):
            outcome = _Outcome(context)
            async with _accounted(self, rpc, context, outcome):
                async for response in call(self, requests, context):
                    outcome.model, outcome.method = response.model, response.method
                    outcome.images += len(response.images)
                    yield response
        return wrapper
    return wrap
