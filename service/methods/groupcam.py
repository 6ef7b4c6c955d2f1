"""Group-CAM: gradient-weighted channel groups mask the image over a blurred copy; probability gains weigh them."""
from __future__ import annotations

import math

import numpy as np

from ..errors import OptionError
from ..runs import InputMasks, ProbedGradients
from .base import class_probability, count_option, method, minmax_channels
from .resample import gaussian_blur, upsample, upsampling


@method("groupcam", run=InputMasks(with_gradients=True), cost_class="few_forwards",
        options={"groups": 32, "percentile": 70.0, "blur_kernel": 51, "blur_sigma": 50.0},
        cost="1 forward + 1 backward + (groups + 1) forwards")
def groupcam(ev: ProbedGradients, groups: int, percentile: float, blur_kernel: int, blur_sigma: float) -> np.ndarray:
    """Group-CAM (official code, wofmanaf/Group-CAM cam/groupcam.py).

    Groups are torch.chunk's contiguous runs of channels of alpha_k * A_k; each group map is ReLU'd,
    cut below its `percentile`, upsampled (half-pixel) and min-max normalised to m_g; the score is
    p(x*m_g + blur(x)*(1-m_g)) - p(blur(x)); the map is ReLU(sum_g score_g * m_g) at input size.
    """
    groups = count_option(groups, "groups")
    if not 0 <= percentile <= 100:
        raise OptionError(f"percentile must be in [0, 100], got {percentile!r}")
    if count_option(blur_kernel, "blur_kernel") % 2 == 0 or not 0 < blur_sigma < float("inf"):
        raise OptionError(f"blur_kernel must be odd and blur_sigma a finite number > 0, got {blur_kernel!r} "
                         f"and {blur_sigma!r}")
    acts, probe = ev.acts, ev.probe
    weighted = ev.grads.mean(axis=(2, 3), keepdims=True) * acts
    step = math.ceil(acts.shape[1] / groups)
    maps = np.stack([weighted[:, a:a + step].sum(axis=1) for a in range(0, acts.shape[1], step)], axis=1)
    maps = np.maximum(maps, 0)
    cut = np.percentile(maps, percentile, axis=(2, 3), keepdims=True)
    maps = np.where(maps > cut, maps, 0).astype(np.float32)
    rows, cols = upsampling(acts.shape[2:], probe.x.shape[2:], False)
    blurred = gaussian_blur(probe.x, blur_kernel, float(blur_sigma))
    probs = class_probability(probe.inputs(maps, rows, cols, normalise=True, baseline=blurred, logits=True), probe.rows)
    base = class_probability(probe.forward(blurred), probe.rows)[:, None]
    gains = np.where(maps.max(axis=(2, 3)) > maps.min(axis=(2, 3)), probs - base, 0.0)   # constant maps are skipped
    masks = minmax_channels(upsample(maps, rows, cols), 0.0)
    return np.maximum(np.einsum("ng,nghw->nhw", gains.astype(np.float32), masks), 0)
