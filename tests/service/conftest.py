"""Fixtures of the server tests: one real camserve server on a loopback port per module, and a stub to it."""
from __future__ import annotations

import grpc
import pytest

from camserve.v1 import explain_pb2_grpc
from serving import serving


@pytest.fixture(scope="module")
def server():
    with serving() as (process, port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield process, channel
        channel.close()


@pytest.fixture(scope="module")
def stub(server):
    return explain_pb2_grpc.ExplainServiceStub(server[1])
