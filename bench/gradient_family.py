"""Times Grad-CAM and Integrative CAM on ResNet-50 (ONNX Runtime) against a plain forward and pytorch-grad-cam."""
import os

import numpy as np
import onnxruntime as ort
import torch
from common import CACHE, SIZE, THREADS, build_model, cached_export, cpu_model, interleaved_ms, plain_session, verdict
from pytorch_grad_cam import GradCAM

from camserve.service import Explainer

REPEATS = {1: 10, 32: 3}
INTEGRATIVE_BUDGET_S = 60.0          # skip integrative at batch 32 when its predicted total (from batch 1) exceeds this


def pgc_maps(cam: GradCAM, x: np.ndarray) -> np.ndarray:
    return cam(input_tensor=torch.from_numpy(x), targets=None)


def measure(batch: int, explainer: Explainer, session: ort.InferenceSession, cam: GradCAM,
            integrative: bool = True) -> list[dict]:
    x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    fns = {"forward": lambda: session.run(None, {"input": x}), "pgc": lambda: pgc_maps(cam, x),
           "gradcam": lambda: explainer.explain(x, "gradcam")}
    if integrative:
        fns["integrative"] = lambda: explainer.explain(x, "integrative")
    else:
        print(f"(integrative at batch {batch} skipped: predicted over {INTEGRATIVE_BUDGET_S:.0f} s)")
    ms = interleaved_ms(fns, REPEATS[batch])
    rows = [dict(batch=batch, method="gradcam", forward=ms["forward"], pgc=ms["pgc"], ours=ms["gradcam"])]
    if integrative:
        rows.append(dict(batch=batch, method="integrative", forward=ms["forward"], pgc=None, ours=ms["integrative"]))
    return rows


def fits_budget(batch1_ms: float, batch: int) -> bool:
    """Whether (warm-up + repeats) calls at this batch, scaled linearly from batch 1, fit the budget."""
    return batch1_ms * batch * (1 + REPEATS[batch]) / 1e3 < INTEGRATIVE_BUDGET_S


def check_equal(explainer: Explainer, cam: GradCAM) -> float:
    x = np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    return float(np.abs(explainer.explain(x, "gradcam") - pgc_maps(cam, x)).max())


def table(rows: list[dict]) -> None:
    print("| batch | method | ours ms | plain forward ms | pytorch-grad-cam ms | ours/forward | speedup vs pgc |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        pgc = f"{r['pgc']:.1f}" if r["pgc"] else "-"
        speedup = f"{r['pgc'] / r['ours']:.2f}x" if r["pgc"] else "-"
        print(f"| {r['batch']} | {r['method']} | {r['ours']:.1f} | {r['forward']:.1f} | {pgc} | "
              f"{r['ours'] / r['forward']:.2f}x | {speedup} |")


def targets(rows: list[dict]) -> None:
    print("\ntargets: Grad-CAM <= 1.3x forward, >= 4x faster than pytorch-grad-cam; Integrative <= 4x forward")
    for r in rows:
        ratio = r["ours"] / r["forward"]
        if r["method"] == "gradcam":
            speedup = r["pgc"] / r["ours"]
            print(f"  batch {r['batch']} gradcam: {ratio:.2f}x forward {verdict(ratio <= 1.3)}, "
                  f"{speedup:.2f}x faster than pytorch-grad-cam {verdict(speedup >= 4)}")
        else:
            print(f"  batch {r['batch']} integrative: {ratio:.2f}x forward {verdict(ratio <= 4)}")


def main() -> None:
    torch.set_num_threads(THREADS)
    model = build_model("resnet50")
    path = cached_export(model, CACHE / "resnet50.onnx")
    explainer = Explainer(path, threads=THREADS)
    session = plain_session(path)
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, threads={THREADS}")
    print(f"onnxruntime provider: {explainer.provider}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        print(f"batch 1 max |ours - pytorch-grad-cam| Grad-CAM: {check_equal(explainer, cam):.2e}\n")
        rows = measure(1, explainer, session, cam)
        rows += measure(32, explainer, session, cam, integrative=fits_budget(rows[-1]["ours"], 32))
    table(rows)
    targets(rows)


if __name__ == "__main__":
    main()
