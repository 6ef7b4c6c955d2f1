"""Times Ablation-, Score-, Recipro- and FD-CAM (ONNX Runtime) on ResNet-18/50 vs pytorch-grad-cam and a forward.

Peers: pytorch-grad-cam's AblationCAM and ScoreCAM on the same torch model and layer (layer4[-1]);
Recipro-CAM and FD-CAM are measured against a plain ONNX Runtime forward of the same model.

The peers run thousands of full forwards per map (ResNet-50: 2048 for each of AblationCAM and ScoreCAM,
minutes on 2 threads), so each peer is timed once; ours is timed as the median after one warm-up.
`--quick` runs ResNet-18 without either Score-CAM, for a smoke test.
"""
import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")   # pytorch-grad-cam's per-batch progress bars; read at tqdm's import

import numpy as np
import onnx
import onnxruntime as ort
import torch
from common import (
    CACHE,
    ROOT,
    SIZE,
    THREADS,
    build_model,
    cached_export,
    cpu_model,
    median_ms,
    peer_cells,
    plain_session,
    verdict,
)
from pytorch_grad_cam import AblationCAM, ScoreCAM

from camserve.service import Explainer
from camserve.service.images import Preprocessing, read, to_tensor

FORWARD_REPEATS = 20
REPEATS = 5                  # ours: Ablation-CAM, Recipro-CAM, FD-CAM
SCORE_REPEATS = 2            # ours: Score-CAM (K full forwards per call)
PHOTO = ROOT / "examples" / "chelsea.png"
MODELS = ("resnet18", "resnet50")
# method: (the ratio checked, its target); peer/ours must reach it, ours/forward must stay under it
TARGETS = {
    "ablationcam": ("peer/ours", 100.0),
    "scorecam": ("peer/ours", 2.0),
    "reciprocam": ("ours/forward", 1.5),
    "fdcam": ("ours/forward", 3.0),
}
PEERS = {"ablationcam": AblationCAM, "scorecam": ScoreCAM}


def once_ms(fn):
    """Wall time of a single fn() call in ms, and its result."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1e3, result


def photo() -> np.ndarray:
    """One real photo, (1, 3, 224, 224), preprocessed as ImageNet models expect."""
    return to_tensor(read(PHOTO), Preprocessing(resize=round(SIZE * 256 / 224), crop=SIZE))


def layer4_output(path: Path, model: torch.nn.Module) -> str:
    """The ONNX tensor `model.layer4[-1]` outputs: the last node in its TorchScript-exporter scope."""
    scope = f"/layer4/layer4.{len(model.layer4) - 1}/"
    nodes = [n for n in onnx.load(str(path)).graph.node if n.name.startswith(scope)]
    if not nodes:
        raise KeyError(f"no ONNX node in scope {scope}")
    return nodes[-1].output[0]


def measure(name: str, quick: bool) -> list[dict]:
    model = build_model(name)
    path = cached_export(model, CACHE / f"{name}.onnx")
    explainer = Explainer(path, threads=THREADS)
    session = plain_session(path)
    layer = layer4_output(path, model)
    default = explainer.info.default_layer
    print(f"{name}: layer {layer} (model.layer4[-1]); Explainer default layer {default} "
          f"{'(same)' if default == layer else '(DIFFERENT: the benchmark uses layer4[-1])'}")
    x = photo()
    forward = median_ms(lambda: session.run(None, {"input": x}), FORWARD_REPEATS)
    with torch.no_grad():
        model(torch.from_numpy(x))  # torch's first call (thread pool, allocator) is not the peer's cost
    methods = ["ablationcam", "reciprocam", "fdcam"] if quick else ["ablationcam", "scorecam", "reciprocam", "fdcam"]
    rows = []
    for method in methods:
        maps = {}

        def ours(maps=maps, method=method):
            maps["ours"] = explainer.explain(x, method, layers=[layer])
        ours_ms = median_ms(ours, SCORE_REPEATS if method == "scorecam" else REPEATS)
        row = dict(model=name, method=method, ours=ours_ms, forward=forward, peer=None, diff=None)
        if method in PEERS:
            with PEERS[method](model=model, target_layers=[model.layer4[-1]]) as cam:
                row["peer"], ref = once_ms(lambda: cam(input_tensor=torch.from_numpy(x), targets=None))
            row["diff"] = float(np.abs(maps["ours"] - ref).max())
        rows.append(row)
        print(f"  {method}: ours {ours_ms:.1f} ms" + (f", pytorch-grad-cam {row['peer']:.1f} ms"
                                                       if row["peer"] is not None else ""), flush=True)
    return rows


def table(rows: list[dict]) -> None:
    print("| model | method | ours ms | plain forward ms | pytorch-grad-cam ms | ours/forward | peer/ours "
          "| max abs(ours - peer) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        peer, speedup, diff = peer_cells(r)
        print(f"| {r['model']} | {r['method']} | {r['ours']:.1f} | {r['forward']:.1f} | {peer} | "
              f"{r['ours'] / r['forward']:.2f}x | {speedup} | {diff} |")


def targets(rows: list[dict]) -> None:
    print("\ntargets: Ablation-CAM >= 100x and Score-CAM >= 2x faster than pytorch-grad-cam; "
          "Recipro-CAM <= 1.5x and FD-CAM <= 3x a plain forward")
    for r in rows:
        kind, target = TARGETS[r["method"]]
        if kind == "peer/ours":
            ratio = r["peer"] / r["ours"]
            print(f"  {r['model']} {r['method']}: {ratio:.1f}x faster than pytorch-grad-cam "
                  f"(target >= {target:g}x) {verdict(ratio >= target)}")
        else:
            ratio = r["ours"] / r["forward"]
            print(f"  {r['model']} {r['method']}: {ratio:.2f}x forward (target <= {target:g}x) "
                  f"{verdict(ratio <= target)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {','.join(MODELS)} (default: both; "
                                         "resnet18 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: resnet18 only (unless --models), no Score-CAM (ours or peer)")
    args = parser.parse_args()
    names = (args.models or ("resnet18" if args.quick else ",".join(MODELS))).split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")

    torch.set_num_threads(THREADS)
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, threads={THREADS}")
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}; input {PHOTO.name} "
          f"1x3x{SIZE}x{SIZE}, random-init weights (torch.manual_seed(0)), same for both sides")
    print(f"timing: ours = median of {REPEATS} runs ({SCORE_REPEATS} for Score-CAM) after 1 warm-up; "
          f"plain forward = median of {FORWARD_REPEATS} after 1 warm-up; pytorch-grad-cam AblationCAM/ScoreCAM "
          "timed ONCE each (no repeats: thousands of forwards per call)")
    if args.quick:
        print("--quick: Score-CAM (ours and pytorch-grad-cam) skipped")
    print()
    rows = []
    for name in names:
        rows += measure(name, args.quick)
    print()
    table(rows)
    targets(rows)


if __name__ == "__main__":
    main()
