"""Three camserve replicas on loopback behind one balancing, retrying Client: one killed, one hung, and a rolling
replacement of all three, each under load and without a failed call."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass

import grpc

from camserve.service.client import Client
from serving import ROOT, Server, launch, stop, wait_for

PHOTOS = [ROOT / "examples" / "chelsea.png"] * 2   # 481 kB a call: over gRPC's default 256 KiB retry buffer
THREADS = 4        # callers sharing one Client, as the request handlers of a calling service do
TIMEOUT = 60       # seconds, every call
HELD = 1.0         # a call running this long is held by a stopped replica: one takes about 0.05 s here


@dataclass
class Call:
    started: float
    ended: float = float("inf")
    code: str = ""
    details: str = ""


class Load:
    """THREADS threads calling Explain through one Client until the block ends; every call is kept."""

    def __init__(self, servers: list[Server]):
        self.client = Client("ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers), timeout=TIMEOUT)
        self.calls: list[Call] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]

    def _run(self) -> None:
        while not self.done.is_set():
            call = Call(time.monotonic())
            self.calls.append(call)
            try:
                self.client.explain(PHOTOS)
                call.code = "OK"
            except grpc.RpcError as error:
                call.code, call.details = error.code().name, error.details()
            call.ended = time.monotonic()

    def held(self) -> list[Call]:
        """The calls running for longer than HELD now."""
        now = time.monotonic()
        return [c for c in list(self.calls) if c.ended == float("inf") and now - c.started > HELD]

    def since(self, moment: float) -> list[Call]:
        return [c for c in list(self.calls) if c.started > moment]

    def failures(self) -> list[str]:
        return [f"{c.code}: {c.details}" for c in self.calls if c.code != "OK"]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(TIMEOUT + 10)
        self.client.close()


@contextlib.contextmanager
def replicas(*args: str, count: int = 3):
    """`count` servers on the bundled repository; those still running at the end must drain and exit 0."""
    servers: list[Server] = []
    try:
        for _ in range(count):
            servers.append(Server(*launch(ROOT / "models", *args)))
        yield servers
    finally:
        codes = [stop(s.process) for s in servers if s.process.poll() is None]
        assert codes == [0] * len(codes)


def served(server: Server) -> float:
    return server.metric("camserve_requests_total", rpc="Explain", code="OK")


def retried(servers: list[Server]) -> list[dict]:
    """Log lines of calls a replica got as a retry (the client tried them elsewhere first)."""
    return [line for s in servers for line in s.lines() if line.get("attempt", 1) > 1]


def test_a_replica_killed_mid_load_fails_no_call():
    with replicas() as servers:
        victim, survivors = servers[1], [servers[0], servers[2]]
        with Load(servers) as load:
            wait_for("every replica serves calls", lambda: all(served(s) >= 10 for s in servers))
            before = [served(s) for s in servers]
            # stopped first, it holds the calls round_robin sends it, so that calls are surely in flight as it dies
            victim.process.send_signal(signal.SIGSTOP)
            wait_for("calls are held by the stopped replica", lambda: len(load.held()) >= 2)
            held = load.held()
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            killed = time.monotonic()
            # the load goes on while the channel keeps failing to reconnect to the dead address
            # counted on both sides: `before` was read before the stop, so the servers' counts alone can reach
            # +60 while fewer than 60 calls have completed at the client since the kill
            wait_for("the survivors serve the load", lambda: time.monotonic() - killed > 3 and
                     sum(served(s) for s in survivors) >= before[0] + before[2] + 60 and
                     len(load.since(killed)) >= 60)
            after = [served(s) for s in survivors]
    assert load.failures() == []
    assert all(b >= 10 for b in before), before                              # every replica served before the kill
    assert victim.process.returncode == -signal.SIGKILL
    assert [c.code for c in held] == ["OK"] * len(held)                      # in flight on it, answered elsewhere
    assert len(retried(survivors)) >= 1
    assert len(load.since(killed)) >= 60 and sum(after) - before[0] - before[2] >= 60


def test_a_replica_that_hangs_is_left_and_its_calls_retried_within_seconds():
    """A hung replica (its kernel still accepts and acknowledges) answers nothing: the Client's keepalive
    pings close its connection, and the calls it held go to the others, long before their deadline."""
    with replicas() as servers:
        victim, survivors = servers[1], [servers[0], servers[2]]
        with Load(servers) as load:
            wait_for("every replica serves calls", lambda: all(served(s) >= 10 for s in servers))
            victim.process.send_signal(signal.SIGSTOP)
            hung = time.monotonic()
            try:
                wait_for("calls are held by the hung replica", lambda: len(load.held()) >= 2)
                held = load.held()
                wait_for("the held calls are answered", lambda: all(c.ended < float("inf") for c in held), 40)
                before = [served(s) for s in survivors]
                wait_for("the survivors serve the load", lambda: sum(served(s) for s in survivors) >= sum(before) + 60)
            finally:
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait()
    assert load.failures() == []
    assert [c.code for c in held] == ["OK"] * len(held)
    # keepalive: a ping within 10 s, declared lost after 5 s more; the deadline is 60 s
    assert max(c.ended for c in held) - hung < 25
    assert len(retried(survivors)) >= 1


def test_a_rolling_replacement_under_load_fails_no_call():
    """Each replica in turn gets SIGTERM (NOT_SERVING, then it drains and exits) and a new one starts on its
    port, as a Deployment's rolling update does; the Client's health checks steer calls away from the old one."""
    with replicas("--drain-delay", "1") as servers:
        with Load(servers) as load:
            wait_for("every replica serves calls", lambda: all(served(s) >= 5 for s in servers))
            old = list(servers)
            for i, replica in enumerate(old):
                assert stop(replica.process) == 0
                new = servers[i] = Server(*launch(ROOT / "models", "--drain-delay", "1", port=replica.port))
                wait_for(f"the new replica {i} is in rotation", lambda new=new: served(new) >= 5, 30)
            wait_for("the new replicas serve the load", lambda: all(served(s) >= 20 for s in servers))
    assert load.failures() == []
    for replica in old:
        lines = replica.lines()
        assert any(line.get("message", "").startswith("draining") for line in lines)
        assert lines[-1]["message"] == "stopped"


def test_connections_recycled_by_age_fail_no_call():
    """--max-connection-age closes each connection (GOAWAY) after a while, so that clients balancing over DNS
    resolve again and find replicas added since; the calls on the old connection finish, new ones reconnect."""
    with replicas("--max-connection-age", "1", count=2) as servers:
        with Load(servers) as load:
            wait_for("the clients reconnected several times",
                     lambda: all(len({line.get("peer") for line in s.lines() if "peer" in line}) >= 4 for s in servers))
    assert load.failures() == []
    assert len(load.calls) >= 20
