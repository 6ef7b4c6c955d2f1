"""ExplainService: request messages to arrays, the batcher and Explainer, arrays back to messages."""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

import numpy as np

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .. import detection_study, images, wire
from ..data.folder import map_box
from ..errors import BadRequest
from ..evaluation import Settings, evaluate
from ..methods import DEFAULT, METHODS, lookup
from ..metrics.summary import summarise
from ..numeric import softmax
from ..wire import option, option_value
from .app import Limits
from .batching import Batcher
from .calls import checked, observed, observed_stream
from .repository import ModelRepository

COST_CLASSES = {"forward": pb.COST_CLASS_FORWARD, "few_forwards": pb.COST_CLASS_FEW_FORWARDS,
                "per_channel": pb.COST_CLASS_PER_CHANNEL}
STREAM_WINDOW = 8      # stream messages explained at once (in order); more could batch, but would hold memory


@dataclass
class _Inputs:
    x: np.ndarray                  # (N, C, H, W) float32
    shown: list                    # per image: the fitted RGB (overlays), None for tensors
    originals: list                # per image: the decoded RGB, None for tensors


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(self, repository: ModelRepository, batcher: Batcher, limits: Limits, metrics=None):
        self.repository, self.batcher, self.limits, self.metrics = repository, batcher, limits, metrics
        self.draining = False   # set on SIGTERM: new calls are refused, those in flight finish
        self.active = 0         # calls inside a handler now

    # -- Explain --------------------------------------------------------------------------------
    @observed("Explain")
    async def Explain(self, request: pb.ExplainRequest, context) -> pb.ExplainResponse:
        return await self._explain(request, context)

    @observed_stream("ExplainStream")
    async def ExplainStream(self, requests, context):
        pending: collections.deque[asyncio.Task] = collections.deque()
        try:
            async for request in requests:
                pending.append(asyncio.ensure_future(self._explain(request, context)))
                while len(pending) >= STREAM_WINDOW or (pending and pending[0].done()):
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()

    async def _explain(self, request: pb.ExplainRequest, context) -> pb.ExplainResponse:
        began = time.perf_counter()
        request = checked(request)   # a stream's undecodable message fails in its turn, after those before it
        _check_request(request, self.limits)
        # one hop to a worker thread for everything before the run: each hop costs 0.15-0.3 ms
        version, model, explainer, inputs, rows, repeat = await asyncio.to_thread(self._prepare, request)
        method = request.method or DEFAULT
        options = {name: option(value) for name, value in request.options.items()}
        layers = list(request.layers) or None   # none: the Model's default layer
        if isinstance(rows, _Objects):   # targets beyond classes: one explain_full in a run slot
            result, explained = await self.batcher.call(_explain_objects, explainer, inputs.x, rows, method, layers,
                                                        request.fusion or None, options)
            response = self._response(request, version, explainer, result)
            fill = (response, result, explained, inputs, model, request)
            if request.output != pb.OUTPUT_KIND_MAP or request.size == pb.OUTPUT_SIZE_ORIGINAL:
                await asyncio.to_thread(_fill_objects, *fill)
            else:
                _fill_objects(*fill)
            response.seconds = time.perf_counter() - began
            return response
        if rows is None:
            # the top k classes take a forward run: in a run slot, stopped with the call, as the explanation is
            rows = await self.batcher.call(_top_k_rows, explainer, inputs.x, repeat)
        x = np.repeat(inputs.x, repeat, axis=0) if repeat > 1 else inputs.x
        result = await self.batcher.explain(explainer, x, rows, method, layers, request.fusion or None, options)
        want_map = request.output in (pb.OUTPUT_KIND_UNSPECIFIED, pb.OUTPUT_KIND_MAP, pb.OUTPUT_KIND_BOTH)
        want_png = request.output in (pb.OUTPUT_KIND_OVERLAY_PNG, pb.OUTPUT_KIND_BOTH)
        response = self._response(request, version, explainer, result)
        probabilities = softmax(result.logits.astype(np.float64))
        original = request.size == pb.OUTPUT_SIZE_ORIGINAL
        fill = (response, result, probabilities, inputs, repeat, model, want_map, want_png, original)
        if want_png or original:   # PNG encoding and resizing are CPU work; copying raw maps is not
            await asyncio.to_thread(_fill, *fill)
        else:
            _fill(*fill)
        response.seconds = time.perf_counter() - began
        return response

    @staticmethod
    def _response(request: pb.ExplainRequest, version: str, explainer, result) -> pb.ExplainResponse:
        return pb.ExplainResponse(model=request.model, version=version, method=request.method or DEFAULT,
                                  layers=result.layers, options={k: option_value(v) for k, v in result.options.items()},
                                  provider=explainer.provider, request_id=request.request_id)

    def _prepare(self, request: pb.ExplainRequest):
        version, model, explainer = self.repository.get(request.model, request.version)
        method = request.method or DEFAULT
        lookup(method)   # an unknown method fails before any image is decoded
        inputs = self._inputs(request.images, model, explainer, self.limits)
        if request.size == pb.OUTPUT_SIZE_ORIGINAL and any(o is None for o in inputs.originals):
            raise BadRequest("maps at the original size need encoded images; tensor inputs have no original",
                             "size")
        if request.output in (pb.OUTPUT_KIND_OVERLAY_PNG, pb.OUTPUT_KIND_BOTH) and any(s is None for s in inputs.shown):
            raise BadRequest("overlays need encoded images; tensor inputs get maps only", "output")
        if explainer.kind != "classifier" or request.targets.WhichOneof("kind") in ("objects", "detections"):
            return version, model, explainer, inputs, _objects(request, len(inputs.x), self.limits), 1
        rows, repeat = _target_rows(request.targets, explainer, inputs.x)
        return version, model, explainer, inputs, rows, repeat

    @staticmethod
    def _inputs(messages, model, explainer, limits: Limits) -> _Inputs:
        tensors, shown, originals = [], [], []
        for i, image in enumerate(messages):
            kind = image.WhichOneof("source")
            if kind == "encoded":
                if len(image.encoded) > limits.image_bytes:
                    raise BadRequest(f"image {i} is {len(image.encoded)} bytes; the limit is {limits.image_bytes}",
                                     f"images[{i}].encoded")
                rgb = _indexed(images.decode, f"images[{i}].encoded", image.encoded, limits.image_pixels)
                fitted = images.fit(rgb, model.preprocessing)
                tensors.append(images.normalise(fitted, model.preprocessing)[0])
                shown.append(fitted)
                originals.append(rgb)
            elif kind == "tensor":
                tensors.append(_tensor_image(image.tensor, explainer.info.layout, f"images[{i}].tensor"))
                shown.append(None)
                originals.append(None)
            else:
                raise BadRequest(f"image {i} holds neither encoded bytes nor a tensor", f"images[{i}]")
        if len({t.shape for t in tensors}) > 1:
            raise BadRequest(f"images differ in size after preprocessing: {sorted({t.shape for t in tensors})}",
                             "images")
        x = _indexed(explainer.check_input, "images", np.stack(tensors))
        return _Inputs(x, shown, originals)

    # -- Evaluate -------------------------------------------------------------------------------
    @observed("Evaluate")
    async def Evaluate(self, request: pb.EvaluateRequest, context) -> pb.EvaluateResponse:
        if not request.images:
            raise BadRequest("the request holds no images", "images")
        _check_image_count(len(request.images), self.limits)   # each method runs on them all at once
        if not request.model:
            raise BadRequest("the request names no model", "model")
        methods = list(dict.fromkeys(request.methods)) or [DEFAULT]
        for name in methods:
            lookup(name, "methods")
        options = {m: {} for m in methods}
        for key, value in request.options.items():
            name, _, setting = key.partition(".")
            if name not in options or not setting:
                raise BadRequest(f"option {key!r} must be METHOD.KEY for one of the methods {methods}", "options")
            options[name][setting] = option(value)
        settings = Settings(deletion_step=request.deletion_step or None,
                            deletion_baseline=request.deletion_baseline or "zeros",
                            insertion_baseline=request.insertion_baseline or "blur")
        version, model, explainer = await asyncio.to_thread(self.repository.get, request.model, request.version)
        inputs = await asyncio.to_thread(self._inputs, [item.image for item in request.images], model, explainer,
                                         self.limits)
        layers = list(request.layers) or None   # none: the Model's default layer
        response = pb.EvaluateResponse(model=request.model, version=version, request_id=request.request_id)
        if explainer.kind == "detector":
            return await self._evaluate_detector(request, response, inputs, model, explainer, methods, options,
                                                 layers, settings)
        if explainer.kind != "classifier":
            raise BadRequest(f"Evaluate scores classifiers and detectors; {request.model} is a {explainer.kind}",
                             "model")
        labels, boxes = _labels_and_boxes(request.images, inputs, model, explainer)
        for method in methods:
            scores = await self.batcher.call(evaluate, explainer, inputs.x, labels, boxes, method, layers, settings,
                                             **options[method])
            _add_method_scores(response, method, summarise(scores.per_image),
                               {"fractions": scores.curves["fractions"],
                                **{k: scores.curves[k].mean(axis=0) for k in ("deletion", "insertion")}})
        return response

    async def _evaluate_detector(self, request, response, inputs, model, explainer, methods, options, layers,
                                 settings) -> pb.EvaluateResponse:
        """Each image's boxes matched to the detector's detections, each matched one explained and scored."""
        for method in methods:
            explainer.method_for_kind(method)   # before any work
        boxes, classes = _detector_boxes(request.images, inputs, model, explainer, self.limits)
        score = request.detect.score or detection_study.SCORE
        if not 0.0 <= score <= 1.0:
            raise BadRequest(f"detect.score must be in [0, 1], got {score}", "detect.score")
        jobs, matched = await self.batcher.call(_detector_jobs, explainer, inputs.x, boxes, classes, score)
        for method in methods:
            per, curves, _ = await self.batcher.call(detection_study.score_detections, explainer, jobs, method, layers,
                                                     settings, options[method])
            _add_method_scores(response, method, detection_study.summary(per, matched), curves)
        return response

    # -- listings -------------------------------------------------------------------------------
    @observed("ListModels")
    async def ListModels(self, request, context) -> pb.ListModelsResponse:
        models = await asyncio.to_thread(self.repository.models)
        return pb.ListModelsResponse(models=[pb.ModelSummary(name=n, versions=v, ready=True)
                                             for n, v in models.items()])

    @observed("GetModel")
    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelDescription:
        if not request.model:
            raise BadRequest("the request names no model", "model")
        version, model, explainer = await asyncio.to_thread(self.repository.get, request.model, request.version)
        info, spec = explainer.info, model.preprocessing
        return pb.ModelDescription(
            name=request.model, version=version, input_name=info.input_name,
            input_shape=[str(d) for d in info.input_shape], layout=info.layout, num_classes=info.num_classes or 0,
            labels=model.labels, default_layer=model.default_layer,
            layers=[pb.LayerDescription(name=layer.name, shape=[str(d) for d in layer.shape], op=layer.op,
                                        layout=layer.layout) for layer in (*info.layers, *info.channels_last)],
            preprocessing=pb.Preprocessing(resize=spec.resize or 0, crop=spec.crop or 0, mean=spec.mean,
                                           std=spec.std, color=spec.color, scale=spec.scale,
                                           letterbox=spec.letterbox or 0, pad=spec.pad),
            kind=explainer.kind, head=info.head or "", output_shape=[str(d) for d in info.output_shape],
            precision=explainer.model.precision)

    @observed("ListMethods")
    async def ListMethods(self, request, context) -> pb.ListMethodsResponse:
        return pb.ListMethodsResponse(methods=[
            pb.MethodDescription(name=name, summary=spec.doc, cost=spec.cost or "",
                                 cost_class=COST_CLASSES[spec.cost_class], needs_gradients=spec.gradients,
                                 options={k: option_value(v) for k, v in spec.options.items()}, kinds=list(spec.kinds))
            for name, spec in sorted(METHODS.items())])


def _check_request(request: pb.ExplainRequest, limits: Limits) -> None:
    if not request.images:
        raise BadRequest("the request holds no images", "images")
    _check_image_count(len(request.images), limits)
    if request.targets.WhichOneof("kind") == "top_k":
        # k maps per image: the run explains images x k, and that is what the limit bounds
        maps = len(request.images) * request.targets.top_k
        if maps > limits.images_per_request:
            raise BadRequest(f"{len(request.images)} images x top_k {request.targets.top_k} make {maps} maps; "
                             f"the limit is {limits.images_per_request} per request", "targets.top_k")
    if not request.model:
        raise BadRequest("the request names no model", "model")
    for name, enum, value in (("output", pb.OutputKind, request.output), ("size", pb.OutputSize, request.size)):
        if value not in enum.values():
            raise BadRequest(f"{name} {value} is not one of {', '.join(enum.keys())}", name)


def _check_image_count(count: int, limits: Limits) -> None:
    if count > limits.images_per_request:
        raise BadRequest(f"{count} images; the limit is {limits.images_per_request} per request", "images")


def _indexed(fn, field: str, *args):
    """fn(*args), its BadRequest reported against `field` (the request's path, not the library's name)."""
    try:
        return fn(*args)
    except BadRequest as error:
        raise BadRequest(str(error), field) from error


def _tensor_image(tensor: pb.Tensor, layout: str, field: str) -> np.ndarray:
    array = wire.tensor(tensor, field, rank=3, limit=images.MAX_PIXELS * 4)
    return array.transpose(2, 0, 1) if layout == "NHWC" else array


def _target_rows(targets: pb.Targets, explainer, x: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(rows, k): class-weight rows for every map (zero rows: the image's top-1), k maps per image;
    rows None for top_k, whose rows need a run (`_top_k_rows`, in a run slot)."""
    classes = explainer.info.num_classes
    kind = targets.WhichOneof("kind")
    if kind == "top_k":
        k = targets.top_k
        if not 1 <= k <= (classes or 0):
            raise BadRequest(f"top_k must lie in [1, {classes}], got {k}", "targets.top_k")
        return None, k
    if kind == "class_ids":
        ids = np.array(targets.class_ids.ids, np.int64)
        if ids.size not in (1, len(x)):
            raise BadRequest(f"give one class id, or one per image ({len(x)}); got {ids.size}", "targets.class_ids")
        return _indexed(explainer.class_rows, "targets.class_ids", np.broadcast_to(ids, (len(x),)).copy(),
                        len(x)), 1
    if kind == "weights":
        values, count = np.array(targets.weights.values, np.float32), targets.weights.classes
        if count != classes or values.size not in (count, count * len(x)):
            raise BadRequest(f"class weights: {values.size} values for {count} classes and {len(x)} images; "
                             f"the model has {classes} classes", "targets.weights")
        rows = np.broadcast_to(values.reshape(-1, count), (len(x), count)).copy()
        return _indexed(explainer.class_rows, "targets.weights", rows, len(x)), 1
    return _indexed(explainer.class_rows, "targets", None, len(x)), 1


def _top_k_rows(explainer, x: np.ndarray, k: int) -> np.ndarray:
    """Rows for each image's k best classes, best first (a worker thread's work: it runs the model)."""
    order = np.argsort(-explainer.predict(x), axis=1, kind="stable")[:, :k]
    return _indexed(explainer.class_rows, "targets.top_k", order.reshape(-1), len(x) * k)


def _fill(response, result, probabilities, inputs: _Inputs, repeat: int, model, want_map: bool, want_png: bool,
          original: bool) -> None:
    for i in range(len(inputs.x)):
        group = response.images.add()
        for k in range(i * repeat, (i + 1) * repeat):
            cam, target = result.maps[k], int(result.targets[k])
            item = group.explanations.add(class_id=target, label=model.label(target),
                                          score=float(probabilities[k, target]),
                                          warning=result.warnings[k] if result.warnings else "")
            shown = inputs.shown[i]
            if original:
                cam, shown = images.unfit(cam, inputs.originals[i].shape[:2], model.preprocessing), inputs.originals[i]
            if want_map:
                item.map.CopyFrom(pb.Tensor(shape=list(cam.shape), dtype=pb.DATA_TYPE_FLOAT32,
                                            data=np.ascontiguousarray(cam, "<f4").tobytes()))
            if want_png:
                item.overlay_png = images.encode_png(images.overlay(shown, cam))


@dataclass
class _Objects:
    """Targets beyond classes, as the request gives them: per image a list of camserve.targets objects and
    detection indices (ints), or the k best detections of each image, or None (the kind's default)."""
    given: list[list] | None
    top: int
    detect: tuple[float, float, int]
    in_box: bool = False


def _objects(request: pb.ExplainRequest, n: int, limits: Limits) -> _Objects:
    targets, kind = request.targets, request.targets.WhichOneof("kind")
    d = request.detect
    detect = (d.score or 0.25, d.iou or 0.45, d.max_detections or 100)
    if kind == "detections":
        if not 1 <= targets.detections <= limits.images_per_request // max(n, 1):
            raise BadRequest(f"{n} images x {targets.detections} detections make {n * targets.detections} maps; "
                             f"give 1 to {limits.images_per_request // max(n, 1)} (the limit is "
                             f"{limits.images_per_request} maps per request)", "targets.detections")
        return _Objects(None, targets.detections, detect, d.in_box)
    if kind is None:
        return _Objects(None, 0, detect, d.in_box)
    if kind != "objects":
        raise BadRequest(f"targets.{kind} name classes; this model's targets are region, box, detection or "
                         "similarity targets (targets.objects) or targets.detections", f"targets.{kind}")
    lists = targets.objects.images
    if len(lists) not in (1, n):
        raise BadRequest(f"give one target list, or one per image ({n}); got {len(lists)}", "targets.objects")
    given = [[wire.target(t, f"targets.objects.images[{i}].targets[{k}]") for k, t in enumerate(row.targets)]
             for i, row in enumerate(lists)]
    given = given * n if len(given) == 1 else given
    if len({len(row) for row in given}) != 1 or not given[0]:
        raise BadRequest("every image needs the same number of targets (at least one)", "targets.objects")
    if n * len(given[0]) > limits.images_per_request:
        raise BadRequest(f"{n} images x {len(given[0])} targets make {n * len(given[0])} maps; the limit is "
                         f"{limits.images_per_request} per request", "targets.objects")
    return _Objects(given, 0, detect, d.in_box)


def _explain_objects(explainer, x: np.ndarray, plan: _Objects, method: str, layers, fusion, options):
    """explain_full on region/box/detection/similarity targets (a worker thread's work: detection indices and
    the k best detections take a forward first), and per map the detection it explains (None off detectors)."""
    chosen = plan.given
    indices = plan.top or any(isinstance(t, int) for row in chosen or [] for t in row)
    if indices:
        found = explainer.detect(x, *plan.detect)
        if plan.top:
            short = next((i for i, f in enumerate(found) if len(f) < plan.top), None)
            if short is not None:
                raise BadRequest(f"image {short} has {len(found[short])} detections with score >= {plan.detect[0]}; "
                                 f"{plan.top} were asked for (lower detect.score)", "targets.detections")
            chosen = [f[:plan.top] for f in found]
        else:
            chosen = [[_detection(found[i], t, i) if isinstance(t, int) else t for t in row]
                      for i, row in enumerate(chosen)]
    result = explainer.explain_full(x, method, chosen, layers, fusion, in_box=plan.in_box, **options)
    objects = result.target_objects
    rows = objects if objects and isinstance(objects[0], list) else [[o] for o in objects]
    explained = [[None] * len(row) for row in rows]
    if explainer.kind == "detector":
        output = explainer.predict(x)
        explained = [[explainer.detection_for(out, t) for t in row] for out, row in zip(output, rows)]
    return result, list(zip(rows, explained))


def _detection(found: list, index: int, image: int):
    if not 0 <= index < len(found):
        raise BadRequest(f"image {image} has {len(found)} detections; detection index {index} is out of range",
                         f"targets.objects.images[{image}]")
    return found[index]


def _fill_objects(response, result, explained, inputs: _Inputs, model, request: pb.ExplainRequest) -> None:
    want_map = request.output in (pb.OUTPUT_KIND_UNSPECIFIED, pb.OUTPUT_KIND_MAP, pb.OUTPUT_KIND_BOTH)
    want_png = request.output in (pb.OUTPUT_KIND_OVERLAY_PNG, pb.OUTPUT_KIND_BOTH)
    original = request.size == pb.OUTPUT_SIZE_ORIGINAL
    maps = result.maps.reshape(len(inputs.x), -1, *result.maps.shape[-2:])
    for i, (targets, detections) in enumerate(explained):
        group = response.images.add()
        for t, (target, found) in enumerate(zip(targets, detections)):
            cam, shown = maps[i, t], inputs.shown[i]
            class_id = found.class_id if found is not None else getattr(target, "class_id", None)
            item = group.explanations.add(class_id=-1 if class_id is None else class_id,
                                          label="" if class_id is None else model.label(class_id),
                                          score=0.0 if found is None else found.score,
                                          warning=result.warnings[i * maps.shape[1] + t] if result.warnings else "")
            box = None if found is None else found.box
            if found is not None:
                item.detection.CopyFrom(pb.Detection(x0=box[0], y0=box[1], x1=box[2], y1=box[3],
                                                     class_id=found.class_id, label=model.label(found.class_id),
                                                     score=found.score))
                if inputs.originals[i] is not None:
                    item.detection.original_box.extend(
                        images.unfit_box(box, inputs.originals[i].shape[:2], model.preprocessing))
            if original:
                cam, shown = images.unfit(cam, inputs.originals[i].shape[:2], model.preprocessing), inputs.originals[i]
                if box is not None:
                    box = tuple(item.detection.original_box)
            if want_map:
                item.map.CopyFrom(wire.tensor_message(cam))
            if want_png:
                picture = images.overlay(shown, cam)
                if box is not None:
                    picture = images.draw_box(picture, box, f"{item.label} {found.score:.2f}")
                item.overlay_png = images.encode_png(picture)


def _add_method_scores(response: pb.EvaluateResponse, method: str, summary: dict, curves: dict) -> None:
    """One method's metrics (mean and 95% interval each; undefined where no image had what it needs) and its mean
    deletion / insertion curves."""
    entry = response.methods.add(method=method)
    for name, stat in summary.items():
        entry.metrics[name].CopyFrom(pb.Interval(mean=stat["mean"] or 0.0, low=stat["low"] or 0.0,
                                                 high=stat["high"] or 0.0, defined=stat["mean"] is not None))
    entry.deletion_curve.extend(np.asarray(curves["deletion"]).tolist())
    entry.insertion_curve.extend(np.asarray(curves["insertion"]).tolist())
    entry.fractions.extend(np.asarray(curves["fractions"]).tolist())


def _detector_boxes(items, inputs: _Inputs, model, explainer, limits: Limits) -> tuple[list, list]:
    """Per image its ground-truth boxes in input pixels (those the preprocessing keeps) and their classes; at most
    `images_per_request` maps in all (an image without boxes explains up to OWN_DETECTIONS of its own)."""
    maps = sum(len(item.boxes) or detection_study.OWN_DETECTIONS for item in items)
    if maps > limits.images_per_request:
        raise BadRequest(f"the images' boxes make up to {maps} maps; the limit is {limits.images_per_request} per "
                         "request", "images")
    classes_known = explainer.info.num_classes or 0
    boxes, classes = [], []
    for i, item in enumerate(items):
        if item.boxes and inputs.originals[i] is None:
            raise BadRequest("boxes are given in encoded images' pixels; tensor images take none",
                             f"images[{i}].boxes")
        kept, kinds = [], []
        for j, b in enumerate(item.boxes):
            class_id = b.class_id if b.HasField("class_id") else None
            if class_id is not None and not 0 <= class_id < classes_known:
                raise BadRequest(f"class {class_id} is out of range [0, {classes_known})",
                                 f"images[{i}].boxes[{j}].class_id")
            mapped = map_box((b.x0, b.y0, b.x1, b.y1), inputs.originals[i].shape[:2], model.preprocessing)
            if mapped is not None:
                kept.append(mapped)
                kinds.append(class_id)
        boxes.append(kept)
        classes.append(kinds)
    return boxes, classes


def _detector_jobs(explainer, x: np.ndarray, boxes: list, classes: list, score: float) -> tuple[list, list]:
    jobs, matched = [], []
    for i in range(len(x)):
        found, hits = detection_study.pairs(explainer, x[i:i + 1], boxes[i], classes[i], score)
        jobs.append((x[i:i + 1], found))
        matched += hits
    return jobs, matched


def _labels_and_boxes(items, inputs: _Inputs, model, explainer) -> tuple[np.ndarray, list]:
    classes = explainer.info.num_classes or 0
    labels = np.array([item.label for item in items], np.int64)
    bad = [i for i, label in enumerate(labels) if not 0 <= label < classes]
    if bad:
        raise BadRequest(f"label {labels[bad[0]]} of image {bad[0]} is out of range [0, {classes})",
                         f"images[{bad[0]}].label")
    boxes = []
    for i, item in enumerate(items):
        if item.boxes and inputs.originals[i] is None:
            raise BadRequest("boxes are given in encoded images' pixels; tensor images take none",
                             f"images[{i}].boxes")
        mapped = [map_box((b.x0, b.y0, b.x1, b.y1), inputs.originals[i].shape[:2], model.preprocessing)
                  for b in item.boxes]
        boxes.append([b for b in mapped if b is not None])
    return labels, boxes
