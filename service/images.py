"""Image I/O with OpenCV: decode, preprocess to a model's tensor, and write colour-mapped overlays."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import imagesize
import numpy as np

from .errors import BadRequest

MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: resize of the short side, centre crop, scale, mean/std, colour order; or
    `letterbox` S (YOLO's): the long side resized to S, the short side padded to S with `pad` on both sides
    (resize and crop are then not used)."""
    resize: int | None = 256
    crop: int | None = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color: str = "RGB"
    scale: float = 1 / 255
    letterbox: int | None = None
    pad: int = 114

    @classmethod
    def from_dict(cls, spec: dict | None) -> "Preprocessing":
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(cls.__dataclass_fields__))
        if unknown:
            raise BadRequest(f"unknown preprocessing key {unknown[0]!r}; known: {', '.join(cls.__dataclass_fields__)}",
                             "preprocessing")
        for key in ("mean", "std"):
            if key in spec:
                spec[key] = tuple(spec[key])
        return cls(**spec)


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3); images over max_pixels are refused from their header,
    before any decoding (a 1 kB JPEG can claim 20000x20000 and cost 1.2 GB to decode)."""
    if not data:
        raise BadRequest("image bytes are empty", "image")
    try:
        width, height = imagesize.get(io.BytesIO(data))
    except Exception:  # a header imagesize cannot parse: OpenCV decides below
        width, height = -1, -1
    if width * height > max_pixels:
        raise BadRequest(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}", "image")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV raises, rather than returning None, past its own pixel ceiling
        image = None
    if image is None:
        raise BadRequest("image bytes are not a decodable image (PNG, JPEG, BMP, WebP, TIFF...)", "image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise BadRequest(f"image has {image.shape[0] * image.shape[1]} pixels; the limit is {max_pixels}", "image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read(path: str | Path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadRequest(f"cannot read image {path}: {error.strerror}", "image") from error
    return decode(data)


def geometry(shape: tuple[int, int], spec: Preprocessing) -> tuple[int, int, int, int, int, int]:
    """What `fit` does to an (H, W) image: the resized (h, w), then the window it keeps: top, left, height, width
    in the resized image's pixels (torchvision's rounding: int() on the long side, round() on the crop offsets).
    A letterbox's window is larger than the resized image: negative top/left are its padding (Ultralytics'
    rounding: round(size * S / long side), padding round(d - 0.1) before and the rest after)."""
    h, w = shape
    if spec.letterbox:
        side = spec.letterbox
        ratio = min(side / h, side / w)
        nh, nw = int(round(h * ratio)), int(round(w * ratio))
        top, left = int(round((side - nh) / 2 - 0.1)), int(round((side - nw) / 2 - 0.1))
        return nh, nw, -top, -left, side, side
    nh, nw = h, w
    if spec.resize:
        nh, nw = (spec.resize, int(spec.resize * w / h)) if h <= w else (int(spec.resize * h / w), spec.resize)
    if not spec.crop:
        return nh, nw, 0, 0, nh, nw
    top, left = max(int(round((nh - spec.crop) / 2)), 0), max(int(round((nw - spec.crop) / 2)), 0)
    return nh, nw, top, left, min(spec.crop, nh), min(spec.crop, nw)


def _overlap(top: int, size: int, extent: int) -> tuple[slice, slice]:
    """The rows a window [top, top + size) of an image of `extent` rows shares with it: (in the image, in the
    window)."""
    start, stop = max(top, 0), min(top + size, extent)
    return slice(start, stop), slice(start - top, stop - top)


def fit(rgb: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Resize the short side and centre-crop with torchvision's rounding, or letterbox like Ultralytics (uint8 RGB).

    Shrinking uses area averaging, the closest OpenCV match to the antialiased resize that
    torchvision's PIL path applies; enlarging is bilinear.
    """
    h, w = rgb.shape[:2]
    nh, nw, top, left, ch, cw = geometry((h, w), spec)
    image = rgb
    if (nh, nw) != (h, w):
        shrink = nh * nw < h * w and not spec.letterbox   # Ultralytics' letterbox is bilinear both ways
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if top >= 0 and left >= 0:
        return np.ascontiguousarray(image[top:top + ch, left:left + cw])
    window = np.full((ch, cw, *image.shape[2:]), spec.pad, image.dtype)
    (rows, wrows), (cols, wcols) = _overlap(top, ch, nh), _overlap(left, cw, nw)
    window[wrows, wcols] = image[rows, cols]
    return window


def unfit(cam: np.ndarray, shape: tuple[int, int], spec: Preprocessing) -> np.ndarray:
    """A map of the fitted image back on the original (H, W) image: `fit`'s crop undone (zeros where the
    crop cut the image away; a letterbox's padding dropped), then its resize."""
    h, w = shape
    nh, nw, top, left, ch, cw = geometry(shape, spec)
    canvas = np.zeros((nh, nw), np.float32)
    (rows, wrows), (cols, wcols) = _overlap(top, ch, nh), _overlap(left, cw, nw)
    canvas[rows, cols] = cam[wrows, wcols]
    if (nh, nw) == (h, w):
        return canvas
    return np.clip(cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def unfit_box(box, shape: tuple[int, int], spec: Preprocessing) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1) in the fitted image's pixels on the original (H, W) image: `fit`'s crop offset
    (or letterbox padding) undone, then its resize, clipped to the image."""
    h, w = shape
    nh, nw, top, left, _, _ = geometry(shape, spec)
    x0, y0, x1, y1 = (float(v) for v in box)
    xs = [min(max((x + left) * w / nw, 0.0), float(w)) for x in (x0, x1)]
    ys = [min(max((y + top) * h / nh, 0.0), float(h)) for y in (y0, y1)]
    return xs[0], ys[0], xs[1], ys[1]


def draw_box(rgb: np.ndarray, box, label: str = "", colour=(255, 255, 255)) -> np.ndarray:
    """A copy of an RGB uint8 image with a box (x0, y0, x1, y1 in its pixels) and its label drawn on it."""
    image = np.ascontiguousarray(rgb).copy()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
    if label:
        scale = max(0.35, max(image.shape[:2]) / 900)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y0 - th - base if y0 - th - base >= 0 else y0
        cv2.rectangle(image, (x0, top), (x0 + tw, top + th + base), colour, -1)
        cv2.putText(image, label, (x0, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return image


def to_tensor(rgb: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """RGB uint8 image -> float32 (1, C, H, W) normalised tensor (always NCHW; the Explainer handles NHWC)."""
    return normalise(fit(rgb, spec), spec)


def normalise(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """An already fitted RGB uint8 image -> float32 (1, C, H, W): colour order, scale, mean/std."""
    if spec.color.upper() == "BGR":
        image = image[..., ::-1]
    x = image.astype(np.float32) * np.float32(spec.scale)
    x = (x - np.float32(spec.mean)) / np.float32(spec.std)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend a [0, 1] map over an RGB uint8 image of any size; returns RGB uint8."""
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), colormap)
    heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, heat, alpha, 0)


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(encode_png(rgb))
