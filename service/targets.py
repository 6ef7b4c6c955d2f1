"""Targets: what a map explains, as a linear functional of the model's output, sum(W * output) for one image.

Each target builds its weight tensor W, shaped like one image's output, which seeds the gradient
graph (d sum(W * output) / d activation, one run) and scores perturbed copies. Where W depends on the
output (a default mask, the best-matching box, a cosine similarity), it is taken at the image's own
output, from one forward. The targets a model kind takes:

- classifier: class ids, class-weight rows (as before), or `Class(id)`;
- segmenter: `Region(class_id, mask=None)`: the class's output summed over a mask, by default the pixels
  predicted as that class (pytorch-grad-cam's SemanticSegmentationTarget);
- detector: `Detection` (one of `Explainer.detect`'s) and `Box((x0, y0, x1, y1), class_id)`: the predicted box
  of that class with the best IoU + score (pytorch-grad-cam's FasterRCNNBoxScoreTarget), scored by its class
  score (with `terms`, plus objectness and the box values);
- embedding: `Similarity(vector)`: cosine similarity to a reference embedding (SimilarityToConceptTarget).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detection import Head, iou
from .errors import BadRequest

__all__ = ["Target", "Class", "Region", "Box", "Detection", "Similarity", "KINDS_OF"]


class Target:
    """One image's target. `kinds`: the model kinds it applies to; `needs_output`: whether its weights read the
    output's values (else only its shape)."""
    kinds: tuple[str, ...] = ()
    needs_output = True

    def weights(self, output: np.ndarray, model) -> np.ndarray:
        """W shaped like `output` (one image's), for a `model` (camserve.Model) of one of `kinds`."""
        raise NotImplementedError

    def anchor_in(self, output: np.ndarray, model) -> int | None:
        """The detector anchor (raw head position) this target scores in `output`; None for other targets."""
        return None


@dataclass(frozen=True)
class Class(Target):
    """A classifier's class (or one entry of any vector output)."""
    class_id: int
    kinds = ("classifier", "embedding")
    needs_output = False

    def weights(self, output: np.ndarray, model) -> np.ndarray:
        _class_in_range(self.class_id, output.shape[0])
        w = np.zeros_like(output, np.float32)
        w[self.class_id] = 1.0
        return w


@dataclass(frozen=True, eq=False)
class Region(Target):
    """sum over `mask` of the segmenter's output for `class_id`; mask (H_out, W_out) of booleans or weights,
    default: the pixels whose predicted class is `class_id` (one-channel output: above 0.5 when the output lies
    in [0, 1], a sigmoid's, else above 0)."""
    class_id: int
    mask: np.ndarray | None = None
    kinds = ("segmenter",)

    def weights(self, output: np.ndarray, model) -> np.ndarray:
        _class_in_range(self.class_id, output.shape[0])
        if self.mask is None:
            if output.shape[0] == 1:
                cut = 0.5 if output.min() >= 0 and output.max() <= 1 else 0.0
                mask = output[0] > cut
            else:
                mask = output.argmax(axis=0) == self.class_id
        else:
            mask = np.asarray(self.mask)
            if mask.shape != output.shape[1:]:
                raise BadRequest(f"a region mask must be {output.shape[1]}x{output.shape[2]} (the output's size), "
                                 f"got shape {mask.shape}", "targets")
            if not np.isfinite(mask.astype(np.float64)).all():
                raise BadRequest("a region mask holds NaN or Inf", "targets")
        w = np.zeros_like(output, np.float32)
        w[self.class_id] = mask.astype(np.float32)
        return w


@dataclass(frozen=True, eq=False)
class Similarity(Target):
    """cos(embedding, vector). Its gradient at the image's embedding e is W = v / (|e||v|) - (e.v) e / (|e|^3 |v|),
    the linear functional d cos / d e."""
    vector: np.ndarray
    kinds = ("embedding",)

    def weights(self, output: np.ndarray, model) -> np.ndarray:
        v = np.asarray(self.vector, np.float64).reshape(-1)
        e = output.astype(np.float64).reshape(-1)
        if v.shape != e.shape:
            raise BadRequest(f"a similarity vector must have {e.size} values (the embedding's), got {v.size}",
                             "targets")
        if not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
            raise BadRequest("a similarity vector must be finite and non-zero", "targets")
        ne, nv = np.linalg.norm(e), np.linalg.norm(v)
        if ne == 0:
            return np.zeros_like(output, np.float32)
        return (v / (ne * nv) - (e @ v) * e / (ne ** 3 * nv)).reshape(output.shape).astype(np.float32)


@dataclass(frozen=True)
class Detection(Target):
    """One detection: its box (x0, y0, x1, y1 in input pixels), class and score, and the anchor (the raw head's
    anchor, or the row of an NMS output) it came from. Its score is that anchor's class score, plus its objectness
    and box values with `terms`. Without an anchor, it is found like a Box."""
    box: tuple[float, float, float, float]
    class_id: int
    score: float = 0.0
    anchor: int | None = None
    terms: tuple[str, ...] = ("class",)
    label: str = ""
    kinds = ("detector",)

    @property
    def needs_output(self) -> bool:   # only to find its anchor
        return self.anchor is None

    def weights(self, output: np.ndarray, model) -> np.ndarray:
        head = model.head
        _class_in_range(self.class_id, head.num_classes)
        return _one_hot(output, head.entries(self.anchor_in(output, model), self.class_id, self.terms))

    def anchor_in(self, output: np.ndarray, model) -> int:
        if self.anchor is None:
            return Box(self.box, self.class_id).anchor_in(output, model)
        if not 0 <= self.anchor < _anchors(output, model.head):
            raise BadRequest(f"detection anchor {self.anchor} out of range [0, {_anchors(output, model.head)})",
                             "targets")
        return self.anchor


@dataclass(frozen=True)
class Box(Target):
    """A reference box (x0, y0, x1, y1 in input pixels) of a class: the model's predicted box of that class that
    overlaps it with IoU >= `iou` and has the highest IoU + score (FasterRCNNBoxScoreTarget's quantity), scored by
    that anchor's class score (plus `terms`). class_id None: the best box of any class."""
    box: tuple[float, float, float, float]
    class_id: int | None = None
    iou: float = 0.5
    terms: tuple[str, ...] = ("class",)
    kinds = ("detector",)

    def anchor_in(self, output: np.ndarray, model) -> int:
        ref = _checked_box(self.box)
        boxes, scores, objectness = model.head.decode(output)
        scores = scores * objectness[:, None]
        if self.class_id is None:
            score = scores.max(axis=1)
        else:
            _class_in_range(self.class_id, scores.shape[1])
            score = scores[:, self.class_id]
        overlap = iou(boxes, ref)
        quality = np.where(overlap >= self.iou, overlap + score, -np.inf)
        if not np.isfinite(quality).any():
            what = "any class" if self.class_id is None else f"class {self.class_id}"
            raise BadRequest(f"no predicted box of {what} overlaps {tuple(self.box)} with IoU >= {self.iou} "
                             f"(the best overlap is {overlap.max():.2f})", "targets")
        return int(quality.argmax())

    def weights(self, output: np.ndarray, model) -> np.ndarray:
        anchor = self.anchor_in(output, model)
        _, scores, _ = model.head.decode(output)
        class_id = self.class_id if self.class_id is not None else int(scores[anchor].argmax())
        return _one_hot(output, model.head.entries(anchor, class_id, self.terms))


# which targets a kind takes (the defaults: classifier top-1; detector its top detection)
KINDS_OF = {kind: tuple(t.__name__ for t in (Class, Region, Box, Detection, Similarity) if kind in t.kinds)
            for kind in ("classifier", "segmenter", "detector", "embedding")}


def has_objects(targets) -> bool:
    """Whether `targets` holds Target objects (one, a list, or a list per image), not class ids or rows."""
    if isinstance(targets, Target):
        return True
    return isinstance(targets, (list, tuple)) and any(
        isinstance(t, Target) or (isinstance(t, (list, tuple)) and any(isinstance(u, Target) for u in t))
        for t in targets)


def check_kind(target: Target, kind: str) -> None:
    if kind not in target.kinds:
        takes = ", ".join(KINDS_OF[kind]) or "none"
        raise BadRequest(f"a {type(target).__name__} target does not apply to a {kind} (it takes: {takes})",
                         "targets")


def _class_in_range(class_id, classes: int | None) -> None:
    if not isinstance(class_id, (int, np.integer)) or isinstance(class_id, bool):
        raise BadRequest(f"a class id is an integer, got {class_id!r}", "targets")
    if classes is not None and not 0 <= class_id < classes:
        raise BadRequest(f"class id {class_id} out of range [0, {classes})", "targets")


def _anchors(output: np.ndarray, head: Head) -> int:
    return output.shape[1] if head.layout == "yolov8" else output.shape[0]


def _checked_box(box) -> np.ndarray:
    ref = np.asarray(box, np.float64)
    if ref.shape != (4,) or not np.isfinite(ref).all() or ref[2] <= ref[0] or ref[3] <= ref[1]:
        raise BadRequest(f"a box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box!r}", "targets")
    return ref


def _one_hot(output: np.ndarray, entries: list[tuple[int, int]]) -> np.ndarray:
    w = np.zeros_like(output, np.float32)
    for entry in entries:
        w[entry] = 1.0
    return w
