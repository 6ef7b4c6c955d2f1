"""The Model: one ONNX image CNN with its inspection, its config (labels, preprocessing, default layer) and
the checks of what it is asked, built once from a file, bytes or a Triton-style folder."""
from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import onnx

from camserve import graph_tools as gt
from camserve.graph_tools import masks as gm

from .detection import Head
from .errors import BadRequest
from .images import Preprocessing
from .model_config import ModelConfig, load_config
from .targets import KINDS_OF


class Model:
    """An explainable model: the graph every rewritten graph starts from, what `inspect` found, and config.

    source: a .onnx file (config.json beside it, if any), a folder (DIR/config.json, DIR/<version>/model.onnx,
    the highest version), serialized bytes or a ModelProto. `labels`, `preprocessing` and `default_layer`
    override the config's; so do `kind` (classifier, segmenter, detector, embedding: what the output is read
    as), `output` (the tensor targets weigh), `head` (a detector's layout: yolov8, yolov5, nms, ssd) and
    `box_units` (a detector's boxes in input pixels, or normalized to 0-1).
    """

    def __init__(self, source: str | Path | bytes | onnx.ModelProto, *, name: str | None = None,
                 labels: list[str] | None = None, preprocessing: Preprocessing | None = None,
                 default_layer: str | None = None, kind: str | None = None, output: str | None = None,
                 head: str | None = None, box_units: str | None = None, ste: str | None = None):
        if isinstance(source, (str, Path)):
            try:
                config = load_config(source)
            except BadRequest as error:
                raise BadRequest(f"cannot load the model: {error}", "model") from error
            graph = config.path
        else:
            config, graph = ModelConfig(Path(""), "model"), source
        try:
            kind, output, head = kind or config.kind, output or config.output, head or config.head
            loaded = gt.copy(gt.load(graph))
            # an fp16 export is explained through a float32 copy of itself: ONNX Runtime's CPU provider has few
            # fp16 kernels, and float16 gradients through deep nets underflow (see docs/formats.md)
            self.precision = "float16" if gt.has_float16(loaded) else "float32"
            if self.precision == "float16":
                loaded = gt.to_float32(loaded)
            folded = gt.explainable(gt.fold_constants(loaded), kind, output, head)
            self.info = gt.inspect(folded, kind, output, head)
        except gt.GraphError as error:
            raise BadRequest(str(error), "model") from error
        except Exception as error:  # a corrupt protobuf or a missing file
            raise BadRequest(f"cannot load the model: {error}", "model") from error
        # the only copy kept: every rewritten graph starts from it (weights are large, copies add up)
        self.graph = gt.make_batch_dynamic(folded)
        self.path = config.path if isinstance(source, (str, Path)) else None
        self.name = name or config.name
        self.labels = list(labels if labels is not None else config.labels)
        self.preprocessing = preprocessing or config.preprocessing
        self.default_layer = default_layer or config.default_layer or self.info.default_layer
        self.ste = ste or config.ste   # a QDQ model's gradient through its quantisation (graph_tools.quant)
        if self.ste not in gt.STE:
            raise BadRequest(f"ste must be one of {', '.join(gt.STE)}, got {self.ste!r}", "model")
        self.box_units = box_units or config.box_units
        if self.box_units not in ("pixels", "normalized"):
            raise BadRequest(f'box_units must be "pixels" or "normalized", got {self.box_units!r}', "model")
        if self.box_units == "normalized" and not all(isinstance(d, int) for d in self.info.spatial):
            raise BadRequest(f"normalized boxes are scaled by the input size, and {self.name}'s is not fixed "
                             f"({self.info.spatial}); export it at a fixed size", "model")

    @property
    def kind(self) -> str:
        return self.info.kind

    @cached_property
    def head(self) -> Head | None:
        """A detector's head layout, for decoding its output."""
        if self.info.kind != "detector":
            return None
        scale = tuple(reversed(self.info.spatial)) if self.box_units == "normalized" else None   # (W, H)
        return Head(self.info.head, self.info.num_classes, scale)

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)

    def layers(self) -> list[gt.Layer]:
        return list(self.info.layers)

    def feed(self, x: np.ndarray) -> np.ndarray:
        """A NCHW batch in the layout the model's input takes."""
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.info.layout == "NHWC" else x

    # -- what the graph holds, found once ---------------------------------------------------------
    @cached_property
    def bias_terms(self) -> dict[str, np.ndarray]:
        """Every biased Conv/BN output and its bias (FullGrad)."""
        return dict(gt.bias_terms(self.graph, self.info))

    @cached_property
    def conv_blocks(self) -> dict[str, tuple[str, np.ndarray]]:
        """Every conv block's output -> (its pre-activation conv output, its bias)."""
        return {post: (pre, bias) for pre, post, bias in gt.conv_blocks(self.graph, self.info)}

    @lru_cache(maxsize=8)  # noqa: B019 -- the Model lives as long as its cache should
    def classifier(self, layer: str) -> np.ndarray:
        """(classes, K): the GAP + FC weights after `layer` (CAM)."""
        return gt.classifier_weights(self.graph, layer)

    @lru_cache(maxsize=32)  # noqa: B019
    def tail_inputs(self, layer: str) -> tuple[str, ...]:
        """The tensors a tail graph at `layer` is fed (the layer first)."""
        return tuple(gm.tail_inputs(self.graph, layer, self.info))

    @lru_cache(maxsize=32)  # noqa: B019
    def pooled(self, layer: str) -> bool:
        return gm.pooled_by(self.graph, layer) is not None

    # -- checks of what a caller asks -------------------------------------------------------------
    def target_layers(self, layers: list[str] | None) -> list[str]:
        """The caller's layers, de-duplicated and checked; none given: the default layer."""
        layers = list(dict.fromkeys(layers)) if layers else [self.default_layer]
        self.info.check_layers(layers)
        return layers

    def check_input(self, x) -> np.ndarray:
        """x as a float32 (N, C, H, W) batch this model takes, or BadRequest."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            if not np.issubdtype(x.dtype, np.floating):
                raise BadRequest(f"input must be float32, got {x.dtype}", "input")
            x = x.astype(np.float32)
        if x.ndim != 4:
            raise BadRequest(f"input must be (N, C, H, W), got shape {x.shape}", "input")
        channels, spatial = self.info.channels, self.info.spatial
        if isinstance(channels, int) and x.shape[1] != channels:
            raise BadRequest(f"input has {x.shape[1]} channels; the model takes {channels}", "input")
        for axis, want in zip((2, 3), spatial):
            if isinstance(want, int) and x.shape[axis] != want:
                raise BadRequest(f"input is {x.shape[2]}x{x.shape[3]}; the model takes "
                                 f"{spatial[0]}x{spatial[1]}", "input")
        if len(x) == 0 or min(x.shape[2:]) < 2:
            raise BadRequest(f"input shape {x.shape} is empty", "input")
        if not np.isfinite(x).all():
            raise BadRequest("input holds NaN or Inf values", "input")
        return x

    def class_rows(self, targets, n: int) -> np.ndarray:
        """(N, classes) class-weight rows; an all-zero row means "this image's top-1 class"."""
        if self.kind != "classifier":
            raise BadRequest(f"class-id targets are for classifiers; this model is a {self.kind} (give "
                             f"camserve.targets: {', '.join(KINDS_OF[self.kind])})", "targets")
        classes = self.info.num_classes
        if classes is None:
            raise BadRequest("the model's number of classes is unknown (symbolic logits axis)", "model")
        rows = np.zeros((n, classes), np.float32)
        if targets is None:
            return rows
        array = np.asarray(targets)
        if array.ndim == 2:
            if array.shape != (n, classes):
                raise BadRequest(f"class weights must be ({n}, {classes}), got {array.shape}", "targets")
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise BadRequest(f"class weights must be real numbers, got {array.dtype}", "targets")
            if not np.isfinite(array.astype(np.float64)).all():
                raise BadRequest("class weights hold NaN or Inf", "targets")
            return array.astype(np.float32)
        ids = np.broadcast_to(array, (n,)) if array.ndim == 0 else array
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise BadRequest(f"targets must be one class id per image ({n}) or ({n}, {classes}) weights", "targets")
        bad = ids[(ids < 0) | (ids >= classes)]
        if bad.size:
            raise BadRequest(f"class id {int(bad[0])} out of range [0, {classes})", "targets")
        rows[np.arange(n), ids] = 1.0
        return rows
