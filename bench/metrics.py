"""Times our evaluation metrics (ONNX Runtime) against pytorch-grad-cam's metrics and RISE's deletion/insertion loop.

Same ResNet-18 (random init, torch.manual_seed(0)) on both sides, real photos at 224, targets = each image's
top-1, and the SAME maps fed to both sides: pytorch-grad-cam's GradCAM at model.layer4[-1], so only the metric
differs. Rows:

- ROAD combined, percentiles 10..90: pytorch-grad-cam `ROADCombined` with `ClassifierOutputSoftmaxTarget`
  vs `road.perturbed` + batched class probabilities + `road.combined` (as `score_maps` runs it). The imputation
  noise is random on both sides, so the values differ slightly.
- ARCC, ROAD percentiles 20/40/60/80: pytorch-grad-cam `ARCC(base_method=GradCAM(...))` vs re-explaining
  x * map with our Explainer (Coherency) + Complexity + ROAD + `adcc.arcc`. The peer's targets give the softmax
  probability to ROAD and the logit to its Grad-CAM re-explanation, as our side does:
  with a plain `ClassifierOutputSoftmaxTarget` its Coherency would explain the softmax instead (printed apart).
- Average Drop + Increase in Confidence: one pytorch-grad-cam `CamMultImageConfidenceChange` call (2 forwards;
  its `DropInConfidence`/`IncreaseInConfidence` are that call plus max(-d, 0) / d > 0, checked equal) vs
  `class_probabilities` on x and on x * map. pytorch-grad-cam's drop is the absolute probability drop, ours
  Average Drop is relative (Grad-CAM++), in %: the peer value column divides its drop by y (torch),
  the note below the table gives the absolute drop.
- Deletion + insertion (RISE protocol: step 224 * 8 pixels, deletion to zeros, insertion from RISE's 11x11
  sigma-5 blur): no pytorch-grad-cam equivalent, so the peer is RISE's `CausalMetric.single_run` loop (eclique/RISE
  evaluation.py) in torch: one forward for the class, then one forward per step, batch 1, image by image. Its
  argsort is made stable (as ours) so that tied map values (Grad-CAM's zeros) move in the same order.
  Ours: the curve part of `score_maps` (ranks, `causal.path`, `_grouped_probabilities`, `causal.auc`).

Ours is the median of REPEATS warm runs (after one warm-up); the peer the median of PEER_REPEATS runs without a
warm-up (torch's first call is made beforehand), once where a call is slow. Batch 8 runs ROAD and
deletion/insertion; the peer's ROAD at batch 8 only when its batch-1 time predicts it fits PEER_BUDGET_S.
Both sides run 2 threads; torch's OpenMP waits passively (OMP_WAIT_POLICY=PASSIVE unless set: see below), and
the plain forward of each runtime is printed for scale. `--quick`: batch 1 only, fewer repeats.
"""
import argparse
import os
import statistics
import sys
import time
from importlib.metadata import version

os.environ.setdefault("TQDM_DISABLE", "1")   # pytorch-grad-cam's progress bars; read at tqdm's import
# torch's OpenMP threads spin at their barriers by default; on a loaded 2-core machine a spinning thread holds
# the core its sibling needs and a ResNet-18 forward took ~800 ms instead of ~40 ms at 2 threads. Passive
# waiting keeps the peer's times about its metric, not about the load (set OMP_WAIT_POLICY=ACTIVE to compare).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
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
from perturbation_family import layer4_output
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.arcc import ARCC, Coherency
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange, DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(ROOT / "tests"))
from camserve.service import Explainer
from camserve.service.evaluation import Settings, _grouped_probabilities, class_probabilities
from camserve.service.metrics import adcc, causal, confidence, road
from zoo import photos

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
          "retina.jpg", "ihc.png")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ARCC_PERCENTILES = (20, 40, 60, 80)
REPEATS = {False: 5, True: 2}          # ours, by --quick
PEER_REPEATS = {False: 2, True: 1}     # the peer, by --quick
SLOW_PEER_S = 10.0                     # a peer call slower than this is timed once
PEER_BUDGET_S = 90.0                   # skip the peer's ROAD at batch 8 when predicted (from batch 1) to exceed this
STEP = 8 * SIZE                        # RISE's deletion/insertion step at 224


def once_or_median_ms(fn, repeats: int) -> tuple[float, object]:
    """The peer: the first call timed; more (up to `repeats`, median) only if it was fast. Returns ms and the
    first call's result."""
    times, first = [], None
    for i in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
        first = result if i == 0 else first
        if times[-1] > SLOW_PEER_S * 1e3:
            break
    return statistics.median(times), first


class SoftmaxScoreLogitGradient:
    """pytorch-grad-cam target: the softmax probability where scores are read (ROAD's outputs come from
    no_grad forwards) and the logit where Grad-CAM differentiates (an output that requires grad), so ARCC's
    parts see what ours see. (Not torch.is_grad_enabled(): ROAD reads its perturbed scores outside no_grad.)"""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, output):
        if output.requires_grad:
            return ClassifierOutputTarget(self.category)(output)
        return ClassifierOutputSoftmaxTarget(self.category)(output)


# -- RISE's deletion / insertion, as eclique/RISE evaluation.py's CausalMetric.single_run -------------------------
def rise_blur_kernel(klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's gkern: a blurred delta on the diagonal of a (3, 3, klen, klen) conv weight."""
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    for c in range(3):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_auc(arr: np.ndarray) -> float:
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def rise_single_run(model, kernel, img: torch.Tensor, explanation: np.ndarray, mode: str, step: int) -> float:
    """One image (1, 3, H, W): the class from a forward, then per step the softmax of that class and `step` more
    pixels (most salient first) copied from finish into start."""
    hw = img.shape[-2] * img.shape[-1]
    with torch.no_grad():
        c = int(model(img).argmax(1)[0])
        n_steps = (hw + step - 1) // step
        if mode == "del":
            start, finish = img.clone(), torch.zeros_like(img)
        else:
            start, finish = torch.nn.functional.conv2d(img, kernel, padding=kernel.shape[-1] // 2), img.clone()
        scores = np.empty(n_steps + 1)
        salient_order = np.flip(np.argsort(explanation.reshape(-1), kind="stable"))   # RISE: default kind
        for i in range(n_steps + 1):
            scores[i] = float(torch.softmax(model(start), 1)[0, c])
            if i < n_steps:
                coords = salient_order[step * i:step * (i + 1)]
                start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.numpy().reshape(1, 3, hw)[0, :, coords]
    return rise_auc(scores)


# -- our side -------------------------------------------------------------------------------------------------------
def our_road(explainer, x, labels, maps, percentiles, y=None) -> np.ndarray:
    """ROAD combined as score_maps runs it: per image perturbed (seed + i), probabilities in full batches."""
    y = class_probabilities(explainer, x, labels) if y is None else y
    groups = ((road.perturbed(x[i:i + 1], maps[i:i + 1], percentiles, 0.01, i)[0], labels[i]) for i in range(len(x)))
    return road.combined(y, np.stack(_grouped_probabilities(explainer, groups)))


def our_arcc(explainer, x, labels, maps, layer) -> np.ndarray:
    remaps = explainer.explain(confidence.explanation_images(x, maps), "gradcam", labels, layers=[layer])
    return adcc.arcc(adcc.coherency(maps, remaps), adcc.complexity(maps),
                     our_road(explainer, x, labels, maps, ARCC_PERCENTILES))


def our_confidence(explainer, x, labels, maps) -> tuple[np.ndarray, np.ndarray]:
    y = class_probabilities(explainer, x, labels)
    o = class_probabilities(explainer, confidence.explanation_images(x, maps), labels)
    return confidence.average_drop(y, o), confidence.increase_in_confidence(y, o)


def our_causal(explainer, x, labels, maps) -> tuple[np.ndarray, np.ndarray]:
    """The deletion/insertion part of score_maps: (deletion AUCs, insertion AUCs)."""
    settings = Settings()
    step = settings.step(x.shape[-1])
    ranks = [causal.ranks(m) for m in maps]
    aucs = []
    for start, finish in ((x, causal.baseline(x, settings.deletion_baseline)),
                          (causal.baseline(x, settings.insertion_baseline), x)):
        groups = ((causal.path(start[i], finish[i], ranks[i], step), labels[i]) for i in range(len(x)))
        aucs.append(causal.auc(np.stack(_grouped_probabilities(explainer, groups))))
    return aucs[0], aucs[1]


# -- the rows -------------------------------------------------------------------------------------------------------
def row(metric, batch, ours_ms, peer_ms, ours_value, peer_value, diff=None):
    return dict(metric=metric, batch=batch, ours=ours_ms, peer=peer_ms, ours_value=ours_value,
                peer_value=peer_value, diff=diff)


def road_row(explainer, model, x, labels, maps, quick, peer=True) -> dict:
    xt, batch = torch.from_numpy(x), len(x)
    out = {}

    def ours():
        out["ours"] = our_road(explainer, x, labels, maps, ROAD_PERCENTILES)
    ours_ms = median_ms(ours, REPEATS[quick] if len(x) == 1 else max(2, REPEATS[quick] - 2))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    metric = ROADCombined(percentiles=list(ROAD_PERCENTILES))
    if peer:
        torch.manual_seed(0)
        peer_ms, value = once_or_median_ms(lambda: metric(xt, maps, targets, model), PEER_REPEATS[quick])
    else:
        peer_ms, value = None, None
    ov = float(out["ours"].mean())
    pv = None if value is None else float(np.mean(value))
    return row("ROAD combined (p 10..90)", batch, ours_ms, peer_ms, f"{ov:.4f}", "-" if pv is None else f"{pv:.4f}",
               None if pv is None else abs(ov - pv))


def arcc_row(explainer, model, x, labels, maps, layer, quick) -> tuple[dict, str]:
    xt = torch.from_numpy(x)
    out = {}

    def ours():
        out["ours"] = our_arcc(explainer, x, labels, maps, layer)
    ours_ms = median_ms(ours, REPEATS[quick])
    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        metric = ARCC(base_method=cam, road_percentiles=list(ARCC_PERCENTILES))
        targets = [SoftmaxScoreLogitGradient(int(c)) for c in labels]
        torch.manual_seed(0)
        peer_ms, value = once_or_median_ms(lambda: metric(xt, maps, targets, model), PEER_REPEATS[quick])
        # aside (untimed): pytorch-grad-cam's Coherency with plain softmax targets (Grad-CAM of the probability)
        soft = Coherency()(xt, maps, [ClassifierOutputSoftmaxTarget(int(c)) for c in labels], model, cam)
        logit = Coherency()(xt, maps, targets, model, cam)
    remaps = explainer.explain(confidence.explanation_images(x, maps), "gradcam", labels, layers=[layer])
    note = (f"ARCC Coherency (%): ours {adcc.coherency(maps, remaps).mean():.3f}, pytorch-grad-cam with logit "
            f"Grad-CAM {100 * logit.mean():.3f}, with ClassifierOutputSoftmaxTarget for its Grad-CAM too "
            f"{100 * soft.mean():.3f}")
    ov, pv = float(out["ours"].mean()), 100 * float(np.mean(value))
    return row("ARCC (ROAD p 20/40/60/80), %", len(x), ours_ms, peer_ms, f"{ov:.3f}", f"{pv:.3f}", abs(ov - pv)), note


def confidence_row(explainer, model, x, labels, maps, quick) -> tuple[dict, str]:
    xt = torch.from_numpy(x)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    out = {}

    def ours():
        out["ours"] = our_confidence(explainer, x, labels, maps)
    ours_ms = median_ms(ours, REPEATS[quick])
    metric = CamMultImageConfidenceChange()
    peer_ms = median_ms(lambda: out.__setitem__("peer", metric(xt, maps, targets, model)), PEER_REPEATS[quick] + 3,
                        warmup=0)
    d = out["peer"]
    drop, increase = np.maximum(-d, 0), np.float32(d > 0)
    same = (np.array_equal(drop, DropInConfidence()(xt, maps, targets, model))
            and np.array_equal(increase, IncreaseInConfidence()(xt, maps, targets, model)))
    with torch.no_grad():
        y = torch.softmax(model(xt), 1)[torch.arange(len(x)), torch.from_numpy(labels)].numpy()
    ad, ic = out["ours"]
    peer_ad = 100 * drop / y
    note = (f"pytorch-grad-cam DropInConfidence/IncreaseInConfidence == max(-d, 0) / d > 0 of the timed call: "
            f"{same}; its drop is absolute (mean {drop.mean():.5f} probability), {peer_ad.mean():.4f}% of y")
    return row("Average Drop % / Increase in Confidence %", len(x), ours_ms, peer_ms,
               f"{ad.mean():.4f} / {ic.mean():.1f}", f"{peer_ad.mean():.4f} / {100 * increase.mean():.1f}",
               float(np.abs(ad - peer_ad).max())), note


def causal_row(explainer, model, x, labels, maps, kernel, quick) -> dict:
    out = {}

    def ours():
        out["ours"] = our_causal(explainer, x, labels, maps)
    ours_ms = median_ms(ours, REPEATS[quick] if len(x) == 1 else max(2, REPEATS[quick] - 2))

    def peer():
        return [[rise_single_run(model, kernel, torch.from_numpy(x[i:i + 1]).clone(), maps[i], mode, STEP)
                 for i in range(len(x))] for mode in ("del", "ins")]
    peer_ms, (pdel, pins) = once_or_median_ms(peer, PEER_REPEATS[quick])
    odel, oins = out["ours"]
    diff = float(max(np.abs(odel - pdel).max(), np.abs(oins - pins).max()))
    return row("Deletion / insertion AUC (step 224*8)", len(x), ours_ms, peer_ms,
               f"{odel.mean():.5f} / {oins.mean():.5f}", f"{np.mean(pdel):.5f} / {np.mean(pins):.5f}", diff)


def table(rows: list[dict]) -> None:
    print("| metric | batch | ours ms | peer ms | speed-up | our value | peer value | max abs diff |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        peer, speedup, diff = peer_cells(r)
        print(f"| {r['metric']} | {r['batch']} | {r['ours']:.1f} | {peer} | {speedup} | {r['ours_value']} | "
              f"{r['peer_value']} | {diff} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 1 only, fewer repeats")
    args = parser.parse_args()
    began = time.perf_counter()

    torch.set_num_threads(THREADS)
    model = build_model("resnet18")
    path = cached_export(model, CACHE / "resnet18.onnx")
    explainer = Explainer(path, threads=THREADS)
    layer = layer4_output(path, model)
    x_all = photos(SIZE, PHOTOS if not args.quick else PHOTOS[:1])
    with torch.no_grad():
        labels = model(torch.from_numpy(x_all)).argmax(1).numpy()
    ours_top1 = explainer.predict(x_all).argmax(1)
    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        maps = cam(input_tensor=torch.from_numpy(x_all), targets=[ClassifierOutputTarget(int(c)) for c in labels])
    maps = maps.astype(np.float32)
    our_maps = explainer.explain(x_all, "gradcam", labels, layers=[layer])

    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, threads={THREADS} (ONNX Runtime and torch); "
          f"load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"onnxruntime {ort.__version__} ({explainer.provider}), torch {torch.__version__}, "
          f"grad-cam {version('grad-cam')}; ResNet-18 random init (torch.manual_seed(0)), same weights both sides")
    print(f"images: {', '.join(PHOTOS[:len(x_all)])} at {SIZE}; targets = top-1 {labels.tolist()} "
          f"(ONNX Runtime top-1 agrees: {bool((ours_top1 == labels).all())}); maps = pytorch-grad-cam GradCAM at "
          f"layer4[-1] for both sides (ours at {layer} differs by max {np.abs(our_maps - maps).max():.1e})")
    print(f"timing: ours = median of {REPEATS[args.quick]} after 1 warm-up (batch 8: "
          f"{max(2, REPEATS[args.quick] - 2)}); peer = median of up to {PEER_REPEATS[args.quick]} "
          f"(once where a call exceeds {SLOW_PEER_S:.0f} s; confidence {PEER_REPEATS[args.quick] + 3})")
    session = plain_session(path)
    with torch.no_grad():   # torch's first call (thread pool, allocator) is not the peer's cost
        torch_forward = median_ms(lambda: model(torch.from_numpy(x_all[:1])), 5)
    ort_forward = median_ms(lambda: session.run(None, {"input": x_all[:1]}), 5)
    print(f"plain ResNet-18 forward, batch 1 (median of 5): torch {torch_forward:.1f} ms, ONNX Runtime "
          f"{ort_forward:.1f} ms (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})\n")

    kernel = rise_blur_kernel()
    rows, notes = [], []
    x1, l1, m1 = x_all[:1], labels[:1], maps[:1]
    rows.append(road_row(explainer, model, x1, l1, m1, args.quick))
    print(f"  ROAD batch 1: ours {rows[-1]['ours']:.0f} ms, peer {rows[-1]['peer']:.0f} ms", flush=True)
    r, note = arcc_row(explainer, model, x1, l1, m1, layer, args.quick)
    rows.append(r)
    notes.append(note)
    print(f"  ARCC batch 1: ours {r['ours']:.0f} ms, peer {r['peer']:.0f} ms", flush=True)
    r, note = confidence_row(explainer, model, x1, l1, m1, args.quick)
    rows.append(r)
    notes.append(note)
    print(f"  confidence batch 1: ours {r['ours']:.1f} ms, peer {r['peer']:.1f} ms", flush=True)
    rows.append(causal_row(explainer, model, x1, l1, m1, kernel, args.quick))
    print(f"  deletion/insertion batch 1: ours {rows[-1]['ours']:.0f} ms, peer {rows[-1]['peer']:.0f} ms", flush=True)
    if not args.quick:
        n = len(x_all)
        road_peer = rows[0]["peer"] * n / 1e3 < PEER_BUDGET_S
        if not road_peer:
            notes.append(f"peer ROAD at batch {n} skipped: predicted {rows[0]['peer'] * n / 1e3:.0f} s "
                         f"> {PEER_BUDGET_S:.0f} s")
        rows.append(road_row(explainer, model, x_all, labels, maps, args.quick, peer=road_peer))
        print(f"  ROAD batch {n}: ours {rows[-1]['ours']:.0f} ms", flush=True)
        rows.append(causal_row(explainer, model, x_all, labels, maps, kernel, args.quick))
        print(f"  deletion/insertion batch {n}: ours {rows[-1]['ours']:.0f} ms, peer {rows[-1]['peer']:.0f} ms",
              flush=True)
    rows.sort(key=lambda r: (r["metric"], r["batch"]))

    print()
    table(rows)
    print()
    for note in notes:
        print(f"- {note}")
    for r in rows:
        if r["metric"].startswith("Deletion"):
            print(f"- deletion/insertion batch {r['batch']}: max |AUC ours - RISE| {r['diff']:.1e} "
                  f"(<= 1e-4) {verdict(r['diff'] <= 1e-4)}")
    print(f"- load average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
