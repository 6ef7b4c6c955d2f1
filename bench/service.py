"""Times one Explain call over gRPC on loopback against the same work in process, and throughput under load."""
import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from camserve.service import Explainer, images
from camserve.service.client import Client
from camserve.service.model_config import load_config
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]   # as bench/common.py, which is not imported: it imports torch
THREADS = 2                          # as bench/common.py
MODEL = ROOT / "models" / "mobilenet_v2"
IMAGE = ROOT / "examples" / "chelsea.png"
TARGET = 1.15                        # gRPC Explain / the in-process path, median of a lone call
CLIENTS = (1, 4, 16)
BLOCK = 10                           # latency: gRPC and in-process calls alternate in blocks of this many
CALLS = {False: dict(latency=150, warmup=10, throughput=384, client_warmup=2),
         True: dict(latency=10, warmup=3, throughput=48, client_warmup=1)}
SERVERS = {"off": ("--max-batch", "1"),     # micro-batching off; the others: on
           "batch 8": ("--max-batch", "8", "--max-delay-ms", "0"),      # the default: gathers while slots are busy
           "batch 8, 5 ms": ("--max-batch", "8", "--max-delay-ms", "5")}
LATENCY_SERVERS = ("off", "batch 8")


class Server:
    """`camserve serve` in a child process on loopback, as tests/serving.py starts it, /metrics on; its log goes to
    a file (a pipe nobody reads would fill and stall it)."""

    def __init__(self, flags: tuple[str, ...], threads: int, workers: int):
        self.flags = ("--threads", str(threads), "--workers", str(workers), *flags)

    def __enter__(self) -> "Server":
        port, self.metrics_port = free_port(), free_port()
        self.target = f"127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "camserve", "serve", "--models", str(MODEL.parent), "--host", "127.0.0.1",
             "--port", str(port), "--metrics-port", str(self.metrics_port), *self.flags],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            self.wait_serving()
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_serving(self, timeout: float = 90) -> None:
        try:
            with Client(self.target) as client:
                client.wait_ready(timeout, alive=lambda: self.process.poll() is None)
        except TimeoutError:
            raise RuntimeError(f"the server {' '.join(self.flags)} did not start") from None

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code != 0:
            self.log.seek(0)
            tail = "".join(self.log.readlines()[-20:])
            print(f"server {' '.join(self.flags)} exited {code}; its last log lines:\n{tail}", file=sys.stderr)
        self.log.close()

    def batch_sizes(self) -> tuple[float, float]:
        """(sum, count) of the camserve_batch_size histogram: images and device runs so far."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name == "camserve_batch_size":
                values = {s.name: s.value for s in family.samples}
                return values["camserve_batch_size_sum"], values["camserve_batch_size_count"]
        return 0.0, 0.0


class Local:
    """The in-process path of one Explain: decode, preprocess, Grad-CAM, the map as bytes; each stage timed."""

    def __init__(self, threads: int):
        self.config = load_config(MODEL)
        self.explainer = Explainer(self.config.path, threads=threads)
        self.layers = [self.config.default_layer] if self.config.default_layer else None  # as the server does

    def __call__(self, data: bytes) -> dict:
        t0 = time.perf_counter()
        rgb = images.decode(data)
        t1 = time.perf_counter()
        x = images.normalise(images.fit(rgb, self.config.preprocessing), self.config.preprocessing)
        t2 = time.perf_counter()
        result = self.explainer.explain_full(x, "gradcam", None, self.layers)
        t3 = time.perf_counter()
        np.ascontiguousarray(result.maps[0], "<f4").tobytes()
        t4 = time.perf_counter()
        return dict(decode=t1 - t0, preprocess=t2 - t1, explain=t3 - t2, encode=t4 - t3, total=t4 - t0)


class Meter:
    """What the machine's cores did over a phase: this process, the server, and anything else (other people's
    tests: they slow both sides, not necessarily equally)."""

    def __init__(self, pid: int):
        self.server = psutil.Process(pid)
        self.start = self.read()

    def read(self) -> tuple[float, ...]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq
        return (time.perf_counter(), busy, t.steal, sum(psutil.Process().cpu_times()[:2]),
                sum(self.server.cpu_times()[:2]))

    def report(self) -> str:
        """Since the start or the last report."""
        end = self.read()
        wall, busy, steal, mine, server = (b - a for a, b in zip(self.start, end))
        self.start, cores = end, wall * os.cpu_count()
        self.others = max(0.0, busy - mine - server) / cores   # the counters tick apart: a hair below 0
        return (f"{wall:.0f} s: this process (clients, in-process path) {mine / cores:.0%}, the server "
                f"{server / cores:.0%}, other processes {self.others:.0%} of the "
                f"{os.cpu_count()} cores; hypervisor steal {steal / cores:.0%}; {load()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def channel(target: str) -> grpc.Channel:
    # a subchannel pool of its own: every client gets its own TCP connection, not a shared one
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def remote(stub, request: pb.ExplainRequest) -> tuple[dict, pb.ExplainResponse]:
    t0 = time.perf_counter()
    reply = stub.Explain(request, timeout=120)
    np.frombuffer(reply.images[0].explanations[0].map.data, "<f4").reshape(reply.images[0].explanations[0].map.shape)
    return dict(total=time.perf_counter() - t0, server=reply.seconds), reply


def flags(name: str) -> str:
    return " ".join(SERVERS[name])


def ms(samples: list[dict], key: str, q: float = 50) -> float:
    return float(np.percentile([s[key] for s in samples], q)) * 1e3


def latency(server: Server, local: Local, request: pb.ExplainRequest, counts: dict) -> dict:
    """Lone sequential calls, gRPC and in-process alternating in blocks (either going first in turn)."""
    with channel(server.target) as ch:
        stub = explain_pb2_grpc.ExplainServiceStub(ch)
        for _ in range(counts["warmup"]):
            _, reply = remote(stub, request)
            local(request.images[0].encoded)
        grpc_samples, local_samples = [], []
        for block in range(0, counts["latency"], BLOCK):
            size = min(BLOCK, counts["latency"] - block)
            runs = [lambda: grpc_samples.append(remote(stub, request)[0]),
                    lambda: local_samples.append(local(request.images[0].encoded))]
            for run in runs if block // BLOCK % 2 == 0 else runs[::-1]:
                for _ in range(size):
                    run()
        health = health_pb2_grpc.HealthStub(ch)
        floor = median_ms(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10), counts["latency"])
    return dict(grpc=grpc_samples, local=local_samples, reply=reply, floor=floor)


def client(target: str, request: pb.ExplainRequest, calls: int, warmup: int, ready: threading.Barrier,
           go: threading.Event, out: list, errors: list) -> None:
    try:
        with channel(target) as ch:
            stub = explain_pb2_grpc.ExplainServiceStub(ch)
            for _ in range(warmup):
                stub.Explain(request, timeout=120)
            ready.wait()
            go.wait()
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                stub.Explain(request, timeout=120)
                times.append(time.perf_counter() - start)
            out.extend(times)
    except Exception as error:
        errors.append(error)
        ready.abort()


def throughput(server: Server, request: pb.ExplainRequest, clients: int, counts: dict) -> dict:
    """`clients` threads, one channel each, `throughput // clients` calls each after their warm-up."""
    calls = max(1, counts["throughput"] // clients)
    ready, go, out, errors = threading.Barrier(clients + 1), threading.Event(), [], []
    threads = [threading.Thread(target=client, args=(server.target, request, calls, counts["client_warmup"], ready,
                                                      go, out, errors)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    images_before, runs_before = server.batch_sizes()
    start = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, the first with {errors[0]!r}")
    images_after, runs_after = server.batch_sizes()
    runs = runs_after - runs_before
    return dict(clients=clients, calls=len(out), rate=len(out) / wall, p50=float(np.percentile(out, 50)) * 1e3,
                p99=float(np.percentile(out, 99)) * 1e3, batch=(images_after - images_before) / runs if runs else 0.0)


def latency_table(results: dict) -> None:
    print("| server | path | median ms | p90 ms | gRPC / in-process (median) | (p90) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in results.items():
        g, lo = r["grpc"], r["local"]
        print(f"| {flags(name)} | gRPC Explain | {ms(g, 'total'):.2f} | {ms(g, 'total', 90):.2f} | "
              f"{ms(g, 'total') / ms(lo, 'total'):.2f}x | {ms(g, 'total', 90) / ms(lo, 'total', 90):.2f}x |")
        print(f"| {flags(name)} | in process | {ms(lo, 'total'):.2f} | {ms(lo, 'total', 90):.2f} | | |")


def breakdown(results: dict, request: pb.ExplainRequest, reply: pb.ExplainResponse) -> None:
    """Where a lone call's time goes (medians): the in-process stages, the server's handler, and the rest."""
    print("\n| server | decode | preprocess | explain_full | map to bytes | in-process total | server handler "
          "(reply.seconds) | handler - in-process | client wall - handler (gRPC, proto, loopback) | an empty RPC "
          "(Health.Check) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        g, lo = r["grpc"], r["local"]
        stages = ("decode", "preprocess", "explain", "encode", "total")
        print(f"| {flags(name)} | " + " | ".join(f"{ms(lo, k):.2f}" for k in stages)
              + f" | {ms(g, 'server'):.2f} | {ms(g, 'server') - ms(lo, 'total'):+.2f} | "
              f"{statistics.median(s['total'] - s['server'] for s in g) * 1e3:.2f} | {r['floor']:.2f} |")
    sent, data = request.SerializeToString(), reply.SerializeToString()
    print(f"protobuf alone, in this process ({request.ByteSize() / 1e3:.0f} kB request, {len(data) / 1e3:.0f} kB "
          f"reply): request serialise {median_ms(request.SerializeToString, 50):.3f} ms, parse "
          f"{median_ms(lambda: pb.ExplainRequest.FromString(sent), 50):.3f} ms; reply "
          f"serialise {median_ms(reply.SerializeToString, 50):.3f} ms, parse "
          f"{median_ms(lambda: pb.ExplainResponse.FromString(data), 50):.3f} ms")


def throughput_table(rows: dict) -> None:
    print("| server | clients | calls | calls/s | p50 ms | p99 ms | mean batch (camserve_batch_size) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, cells in rows.items():
        for r in cells:
            print(f"| {flags(name)} | {r['clients']} | {r['calls']} | {r['rate']:.1f} | {r['p50']:.1f} | "
                  f"{r['p99']:.1f} | {r['batch']:.2f} |")
    batched = [name for name in rows if name != "off"]
    print("\n| clients | " + " | ".join(f"{flags(name)} / {flags('off')}, calls/s" for name in batched) + " |")
    print("|---:|" + "---:|" * len(batched))
    for i, clients in enumerate(CLIENTS):
        print(f"| {clients} | " + " | ".join(f"{rows[name][i]['rate'] / rows['off'][i]['rate']:.2f}x"
                                              for name in batched) + " |")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def load() -> str:
    return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few calls: a smoke run, not a measurement")
    parser.add_argument("--threads", type=int, default=THREADS, help="ONNX Runtime threads, server and in process")
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers (runs at once)")
    args = parser.parse_args()
    counts = CALLS[args.quick]
    began = time.perf_counter()
    request = pb.ExplainRequest(model=MODEL.name, method="gradcam", images=[pb.Image(encoded=IMAGE.read_bytes())],
                                output=pb.OUTPUT_KIND_MAP)
    local = Local(args.threads)
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}; {load()} at the start")
    print(f"onnxruntime {ort.__version__}, grpcio {grpc.__version__}; in-process provider {local.explainer.provider}")
    print(f"threads: server --threads {args.threads} --workers {args.workers}, in process Explainer(threads="
          f"{args.threads}); clients: one thread and one channel (own connection) each, in this process; the server "
          f"is a child process on 127.0.0.1")
    print(f"model {MODEL.name} (layer {(local.layers or [local.explainer.info.default_layer])[0]}), gradcam, "
          f"{IMAGE.name} "
          f"({request.images[0].ByteSize() / 1e3:.0f} kB PNG), reply: the (224, 224) float32 map"
          + (" -- QUICK: too few calls to measure anything" if args.quick else ""))
    latencies, rows, reply, use, shared = {}, {}, None, [], 0.0
    for name, server_flags in SERVERS.items():
        with Server(server_flags, args.threads, args.workers) as server:
            meter = Meter(server.process.pid)
            if name in LATENCY_SERVERS:
                latencies[name] = result = latency(server, local, request, counts)
                reply = result["reply"]
                use.append(f"  {flags(name)}, lone calls, {meter.report()}")
                shared = max(shared, meter.others)
            rows[name] = [throughput(server, request, clients, counts) for clients in CLIENTS]
            use.append(f"  {flags(name)}, throughput, {meter.report()}")
        print(use[-1], file=sys.stderr, flush=True)
    print(f"server provider (ExplainResponse.provider): {reply.provider}")
    print("CPU use over each phase:\n" + "\n".join(use) + "\n")
    print(f"## 1. A lone Explain, sequential calls: gRPC on loopback vs in process ({counts['latency']} calls each, "
          f"after {counts['warmup']} warm-up; alternating in blocks of {BLOCK})")
    latency_table(latencies)
    breakdown(latencies, request, reply)
    off = latencies["off"]
    ratio = ms(off["grpc"], "total") / ms(off["local"], "total")
    print(f"\ntarget: gRPC Explain <= {TARGET}x the in-process path (median, --max-batch 1): {ratio:.2f}x "
          f"{verdict(ratio <= TARGET)}"
          + (f" -- but other processes took up to {shared:.0%} of the cores meanwhile: they slow both paths, by "
             "amounts that vary, and inflate the fixed part both share, which shrinks the ratio; only a quiet "
             "machine's ratio counts" if shared > 0.1 else ""))
    print(f"\n## 2. Throughput: concurrent clients, {counts['throughput']} calls in all per row "
          f"({counts['client_warmup']} warm-up calls per client first)")
    throughput_table(rows)
    print(f"\n{load()} at the end; {time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    main()
