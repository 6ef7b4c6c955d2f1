"""Times camserve on ONNX Runtime's CUDA provider against pytorch-grad-cam on torch CUDA; checks CUDA-vs-CPU maps."""
import argparse
import collections
import json
import os
import re
import statistics
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TQDM_DISABLE", "1")   # pytorch-grad-cam's per-batch progress bars; read at tqdm's import

import torch

# isort: split
import common
import numpy as np
import onnxruntime as ort
from export_default_model import mobilenet_v2
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM

from camserve import graph_tools as gt
from camserve.service import Explainer
from camserve.service.images import Preprocessing, read, to_tensor
from camserve.service.methods import METHODS

ROOT, SIZE, cpu_model = common.ROOT, common.SIZE, common.cpu_model
MODEL = ROOT / "models" / "mobilenet_v2" / "1" / "model.onnx"
PHOTO = ROOT / "examples" / "chelsea.png"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
BATCHES = (1, 8)
PEERS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM,
         "scorecam": ScoreCAM, "ablationcam": AblationCAM}
# parity runs every method on CPU too: the K x samples masked forwards of SS-/IS-CAM are cut (same on both sides)
PARITY_OPTIONS = {"sscam": {"samples": 4}, "iscam": {"samples": 4}}
TOLERANCE = 1e-3


def photo() -> np.ndarray:
    """The bundled photo, (1, 3, 224, 224), preprocessed as ImageNet models expect."""
    return to_tensor(read(PHOTO), Preprocessing(resize=round(SIZE * 256 / 224), crop=SIZE))


def inputs(batch: int) -> np.ndarray:
    """The photo and seeded noise images (the work per image does not depend on the content)."""
    noise = np.random.default_rng(batch).standard_normal((batch - 1, 3, SIZE, SIZE)).astype(np.float32)
    return np.concatenate([photo(), noise])


def median_ms(fn, repeats: int, warmup: int) -> float:
    """Median wall time of fn() in ms after warm-up calls, the GPU synchronised after each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def cuda_session(threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL), options, providers=[CUDA, CPU])


class Recording(Explainer):
    """An Explainer that keeps each graph it builds a session for, to report where ORT placed its nodes."""

    def __init__(self, *args, **kwargs):
        self.graphs = {}
        super().__init__(*args, **kwargs)
        session = self.runtime.session

        def recorded(key, build):
            if key not in self.graphs:
                self.graphs[key] = build()
                return session(key, lambda: self.graphs[key])
            return session(key, build)
        self.runtime.session = recorded
        self.graphs[("forward", ())] = gt.expose(self.model, [self.info.logits])   # built before the wrapper


def placements(graphs: dict, providers: list) -> dict:
    """{graph key: Counter of op types ORT put on the CPU provider}, read from ORT's verbose log."""
    found = {}
    for key, graph in graphs.items():
        options = ort.SessionOptions()
        options.log_severity_level = 0
        with tempfile.TemporaryFile("w+") as log:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                ort.InferenceSession(graph.SerializeToString(), options, providers=providers)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            log.seek(0)
            text = log.read()
        lines = [line.split("VerifyEachNodeIsAssignedToAnEp]", 1)[1] for line in text.splitlines()
                 if "VerifyEachNodeIsAssignedToAnEp]" in line]
        cpu, current = collections.Counter(), None
        for line in lines:
            match = re.search(r"placed on \[(\w+)\]", line)
            if match:
                current = match.group(1)
                if "All nodes" in line and current == CPU:
                    cpu["(all)"] += 1
            elif current == CPU and line.startswith("  ") and line.strip():
                cpu[line.split()[0]] += 1
        found[key] = cpu if lines else None
    return found


def timings(explainer: Explainer, session: ort.InferenceSession, model: torch.nn.Module, batch: int,
            repeats: int, warmup: int) -> list[dict]:
    x = inputs(batch)
    layer = [model.features[-1]]

    def torch_forward():
        with torch.no_grad():
            return model(torch.from_numpy(x).cuda()).cpu()
    rows = [dict(batch=batch, method="forward", peer=median_ms(torch_forward, repeats, warmup),
                 ours=median_ms(lambda: session.run(None, {"input": x}), repeats, warmup), diff=None)]
    print(f"  batch {batch} forward: torch {rows[0]['peer']:.2f} ms, ORT {rows[0]['ours']:.2f} ms", flush=True)
    for method, peer in PEERS.items():
        maps = {}
        with peer(model=model, target_layers=layer) as cam:
            def theirs(maps=maps):
                maps["peer"] = cam(input_tensor=torch.from_numpy(x), targets=None)
            peer_ms = median_ms(theirs, repeats, warmup)

        def ours(maps=maps, method=method):
            maps["ours"] = explainer.explain(x, method)
        ours_ms = median_ms(ours, repeats, warmup)
        diff = float(np.abs(maps["ours"] - maps["peer"]).max())
        rows.append(dict(batch=batch, method=method, peer=peer_ms, ours=ours_ms, diff=diff))
        print(f"  batch {batch} {method}: pytorch-grad-cam {peer_ms:.2f} ms, ours {ours_ms:.2f} ms, "
              f"max |ours - peer| {diff:.1e}", flush=True)
    return rows


def parity(threads: int) -> tuple[list[dict], dict]:
    """Every method on CUDA (TF32 on, ORT's default, and off) and on CPU: largest map difference to CPU."""
    x = np.concatenate([photo(), photo()[..., ::-1].copy()])   # the photo and its mirror: a batch of 2
    cpu = Explainer(MODEL, providers=[CPU], threads=threads)
    tf32 = Recording(MODEL, providers=[CUDA, CPU], threads=threads)
    fp32 = Explainer(MODEL, providers=[(CUDA, {"use_tf32": 0}), CPU], threads=threads)
    rows = []
    for method in sorted(METHODS):
        options = PARITY_OPTIONS.get(method, {})
        row = dict(method=method, options=options)
        try:
            start = time.perf_counter()
            ref = cpu.explain(x, method, **options)
            row["cpu_ms"] = (time.perf_counter() - start) * 1e3
        except Exception as error:
            row["error"] = f"CPU: {type(error).__name__}: {error}"
            rows.append(row)
            print(f"  {method}: {row['error']}", flush=True)
            continue
        for name, explainer in (("tf32", tf32), ("fp32", fp32)):
            try:
                explainer.explain(x, method, **options)   # first call builds and tunes the sessions
                start = time.perf_counter()
                maps = explainer.explain(x, method, **options)
                row[f"{name}_ms"] = (time.perf_counter() - start) * 1e3
                row[name] = float(np.abs(maps - ref).max())
            except Exception as error:
                row["error"] = f"CUDA {name}: {type(error).__name__}: {error}"
                traceback.print_exc()
        rows.append(row)
        print(f"  {method}: " + ", ".join(f"{k} {row[k]:.1e}" for k in ("tf32", "fp32") if k in row)
              + (f" ERROR {row['error']}" if "error" in row else ""), flush=True)
    providers = {"cpu": cpu.provider, "tf32": tf32.provider, "fp32": fp32.provider}
    return rows, dict(providers=providers, placements=placements(tf32.graphs, [CUDA, CPU]))


def label(key: tuple) -> str:
    """A session-cache key, its tensor lists shortened to their length."""
    parts = [f"[{len(k)} tensors]" if isinstance(k, tuple) and len(k) > 1 else str(k) for k in key]
    return "(" + ", ".join(parts) + ")"


def timing_table(rows: list[dict]) -> None:
    print("| batch | method | pytorch-grad-cam (torch CUDA) ms | ours (ORT CUDA) ms | peer/ours | "
          "max abs(ours - peer) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        diff = "-" if r["diff"] is None else f"{r['diff']:.1e}"
        peer = "torch " if r["method"] == "forward" else ""
        print(f"| {r['batch']} | {r['method']} | {peer}{r['peer']:.2f} | {r['ours']:.2f} | "
              f"{r['peer'] / r['ours']:.2f}x | {diff} |")


def parity_table(rows: list[dict]) -> None:
    print(f"| method | options | CPU ms | CUDA ms | max abs(CUDA - CPU), TF32 on (default) | CUDA ms, TF32 off | "
          f"max abs(CUDA - CPU), TF32 off | within {TOLERANCE:g} |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cell = lambda key, fmt, r=r: fmt.format(r[key]) if key in r else "-"  # noqa: E731
        ok = "ERROR" if "error" in r else ("yes" if r["tf32"] <= TOLERANCE and r["fp32"] <= TOLERANCE
                                            else "TF32 off only" if r["fp32"] <= TOLERANCE else "NO")
        print(f"| {r['method']} | {r['options'] or '-'} | {cell('cpu_ms', '{:.0f}')} | {cell('tf32_ms', '{:.1f}')} | "
              f"{cell('tf32', '{:.1e}')} | {cell('fp32_ms', '{:.1f}')} | {cell('fp32', '{:.1e}')} | {ok} |")
    for r in rows:
        if "error" in r:
            print(f"  {r['method']}: {r['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="ORT intra-op threads and torch threads (default: os.cpu_count())")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device for torch")
    torch.set_num_threads(args.threads)

    session = cuda_session(args.threads)
    if session.get_providers()[0] != CUDA:
        sys.exit(f"ONNX Runtime did not start its CUDA provider: {session.get_providers()} "
                 f"(available: {ort.get_available_providers()})")
    explainer = Explainer(MODEL, providers=[CUDA, CPU], threads=args.threads)
    model = mobilenet_v2().cuda()
    props = torch.cuda.get_device_properties(0)
    print(f"device: {torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, "
          f"{props.multi_processor_count} SMs); host {cpu_model()}, os.cpu_count()={os.cpu_count()}")
    print(f"threads: ORT intra_op={args.threads} inter_op=1, torch.set_num_threads({args.threads})")
    print(f"onnxruntime {ort.__version__} ({ort.__file__}), session providers {session.get_providers()}, "
          f"Explainer provider {explainer.provider}; torch {torch.__version__} (CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark={torch.backends.cudnn.benchmark}, "
          f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, matmul.allow_tf32="
          f"{torch.backends.cuda.matmul.allow_tf32})")
    x = photo()
    with torch.no_grad():
        twin = model(torch.from_numpy(x).cuda()).cpu().numpy()
    print(f"model: {MODEL.relative_to(ROOT)} and torchvision mobilenet_v2 with the same weights "
          f"(mobilenet_v2-b0353104.pth); max |logits ORT CUDA - torch CUDA| on {PHOTO.name}: "
          f"{np.abs(session.run(None, {'input': x})[0] - twin).max():.1e}")
    print(f"layer: {explainer.info.default_layer} (Explainer default) = model.features[-1] (pytorch-grad-cam)")
    print(f"timing: median of {args.repeats} after {args.warmup} warm-ups, torch.cuda.synchronize() after each "
          "call; numpy in, numpy maps out on both sides (host<->device copies included)\n")
    results = {}
    if not args.skip_timing:
        rows = []
        for batch in BATCHES:
            rows += timings(explainer, session, model, batch, args.repeats, args.warmup)
        print()
        timing_table(rows)
        results["timings"] = rows
    if not args.skip_parity:
        print(f"\nparity: the photo and its mirror (batch 2), Explainer(providers=[CUDA, CPU]) vs [CPU]; "
              f"options {PARITY_OPTIONS} on both sides")
        rows, info = parity(args.threads)
        print(f"providers: {info['providers']}\n")
        parity_table(rows)
        print("\nnodes ORT placed on the CPU provider in each CUDA graph (shape ops there are ORT's choice):")
        for key, cpu in info["placements"].items():
            print(f"  {label(key)}: " + ("no placement log" if cpu is None else
                                 (", ".join(f"{op} x{n}" for op, n in cpu.most_common()) or "none")))
        results["parity"] = rows
        results["placements"] = {repr(k): v for k, v in info["placements"].items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
