"""Score-CAM and its smoothed (SS-CAM) and integrated (IS-CAM) forms: channels weighted by masked-input scores."""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..runs import ALL_KINDS, InputMasks, Probed
from .base import class_probability, class_score, count_option, method, minmax_channels, softmax, weighted_sum
from .resample import upsample, upsampling

VARIANTS = ("pytorch-grad-cam", "official", "torchcam", "torchcam_v0_2")
INPUTS = InputMasks()


@method("scorecam", run=INPUTS, options={"variant": "pytorch-grad-cam"}, kinds=ALL_KINDS,
        cost="1 forward + K masked forwards")
def scorecam(ev: Probed, variant: str) -> np.ndarray:
    """Score-CAM: each channel, upsampled and min-max normalised, masks the input; its score weighs the channel.

    Variants (methods.md 3.12): pytorch-grad-cam (align-corners upsampling, normalise after, softmax
    over channels of the target logits), official (probabilities as weights, map built at input
    resolution from the raw upsampled activations, constant channels skipped), torchcam (normalise
    before half-pixel upsampling, softmax of logit gains), torchcam_v0_2 (probabilities as weights,
    summed over the normalised activations).
    """
    acts, probe = ev.acts, ev.probe
    source, size = acts.shape[2:], probe.x.shape[2:]
    if variant != "pytorch-grad-cam" and probe.ctx.model.kind != "classifier" and variant in VARIANTS:
        raise OptionError(f"Score-CAM's {variant} variant weighs class probabilities; on a {probe.ctx.model.kind} "
                          "use variant pytorch-grad-cam (the target's score)")
    if variant == "pytorch-grad-cam":
        scores = _masked(probe, acts, *upsampling(source, size, True), normalise=True, eps=1e-8)
        return weighted_sum(acts, softmax(scores, 1))
    rows, cols = upsampling(source, size, False)
    if variant == "torchcam":
        gains = _masked(probe, minmax_channels(acts, 1e-8), rows, cols) - _baseline(ev)
        return weighted_sum(acts, softmax(gains, 1))
    if variant == "torchcam_v0_2":
        normalised = minmax_channels(acts, 0.0)
        probs = class_probability(_masked(probe, normalised, rows, cols, logits=True), probe.rows)
        return weighted_sum(normalised, probs)
    if variant == "official":
        probs = class_probability(_masked(probe, acts, rows, cols, normalise=True, logits=True), probe.rows)
        probs[acts.max(axis=(2, 3)) == acts.min(axis=(2, 3))] = 0.0
        return upsample(weighted_sum(acts, probs), rows, cols)   # sum_k p_k U(A_k) = U(sum_k p_k A_k)
    raise OptionError(f"unknown Score-CAM variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def _masked(probe, maps: np.ndarray, rows: np.ndarray, cols: np.ndarray, **options) -> np.ndarray:
    """probe.inputs over every channel's map, where maps constant in every image share one run.

    A constant map becomes the all-zero mask (min-max normalised, or already normalised to 0), so
    dead channels, common after a last ReLU, cost one masked forward together instead of one each.
    """
    constant = (maps.max(axis=(2, 3)) == maps.min(axis=(2, 3))).all(axis=0)
    if constant.sum() < 2:
        return probe.inputs(maps, rows, cols, **options)
    live = np.flatnonzero(~constant)
    scores = probe.inputs(np.concatenate([maps[:, live], np.zeros_like(maps[:, :1])], axis=1), rows, cols, **options)
    result = np.repeat(scores[:, -1:], maps.shape[1], axis=1)
    result[:, live] = scores[:, :-1]
    return result


def _baseline(ev: Probed) -> np.ndarray:
    return class_score(ev.logits, ev.class_weights)[:, None]


@method("sscam", run=INPUTS, options={"samples": 35, "std": 2.0, "seed": 0, "noise": None},
        cost="1 forward + samples x K masked forwards", unbatched=True)
def sscam(ev: Probed, samples: int, std: float, seed: int, noise) -> np.ndarray:
    """SS-CAM (torchcam 0.5): Score-CAM gains averaged over Gaussian noise added to the upsampled masks.

    noise: None draws N(0, std^2) per channel from `seed`; an array (samples, N, K, H, W) replays a
    peer's draws.
    """
    acts, probe = ev.acts, ev.probe
    if noise is not None:   # replayed draws: their count is the number of samples
        noise = np.asarray(noise, np.float32)
        want = (acts.shape[0], acts.shape[1], *probe.x.shape[2:])
        if noise.ndim != 5 or noise.shape[1:] != want or not np.isfinite(noise).all():
            raise OptionError(f"noise must be finite, with shape (samples, {', '.join(map(str, want))}); "
                             f"got {noise.shape}")
        count = len(noise)
    else:
        count = count_option(samples, "samples")
        if not 0 <= std < float("inf"):
            raise OptionError(f"std must be a finite number >= 0, got {std!r}")
    masks = minmax_channels(acts, 1e-8)
    rows, cols = upsampling(acts.shape[2:], probe.x.shape[2:], False)
    total = np.zeros(acts.shape[:2], np.float64)
    shape = (len(acts), *probe.x.shape[2:])
    for s in range(count):
        if noise is not None:
            source = lambda a, b, given=noise[s]: given[:, a:b]  # noqa: E731
        else:
            source = _seeded_noise(seed, s, std, shape)
        total += probe.inputs(masks, rows, cols, noise=source)
    return weighted_sum(acts, softmax(total / count - _baseline(ev), 1))


def _seeded_noise(seed: int, sample: int, std: float, shape: tuple):
    """Noise of channels a..b, drawn per channel from (seed, sample, channel): the same whatever the chunking."""
    def draw(start: int, stop: int) -> np.ndarray:
        return np.stack([np.random.default_rng((seed, sample, k)).normal(0.0, std, shape).astype(np.float32)
                         for k in range(start, stop)], axis=1)
    return draw


@method("iscam", run=INPUTS, options={"samples": 10}, cost="1 forward + samples x K masked forwards")
def iscam(ev: Probed, samples: int) -> np.ndarray:
    """IS-CAM (torchcam 0.5): Score-CAM gains averaged over masks scaled by the cumulative sum of i/N."""
    acts, probe = ev.acts, ev.probe
    count = count_option(samples, "samples")
    masks = minmax_channels(acts, 1e-8)
    rows, cols = upsampling(acts.shape[2:], probe.x.shape[2:], False)
    total, coeff = np.zeros(acts.shape[:2], np.float64), 0.0
    for i in range(count):
        coeff += (i + 1) / count
        total += _masked(probe, masks, rows, cols, scale=np.full((1, 1, 1, 1), coeff, np.float32))
    return weighted_sum(acts, softmax(total / count - _baseline(ev), 1))
