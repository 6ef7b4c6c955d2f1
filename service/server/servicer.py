"""ExplainService: request messages to arrays, the Explainer, arrays back to messages; errors to gRPC statuses."""
from __future__ import annotations

import asyncio
import functools
import time

import grpc
import numpy as np
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .. import images
from ..errors import BadRequest
from ..methods import METHODS
from ..methods.base import softmax
from ..wire import option, option_value
from .repository import ModelNotFound, ModelRepository

DTYPES = {pb.DATA_TYPE_FLOAT32: np.float32, pb.DATA_TYPE_FLOAT16: np.float16, pb.DATA_TYPE_UINT8: np.uint8}
MAX_TENSOR_ELEMENTS = 64_000_000


def _status(code: int, message: str, field: str | None = None) -> grpc.Status:
    details = []
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


def _handled(call):
    """Bad input -> INVALID_ARGUMENT with a BadRequest field violation; an unknown model -> NOT_FOUND."""
    @functools.wraps(call)
    async def wrapper(self, request, context):
        try:
            return await call(self, request, context)
        except BadRequest as error:
            status = _status(code_pb2.INVALID_ARGUMENT, str(error), error.field or "request")
        except ModelNotFound as error:
            status = _status(code_pb2.NOT_FOUND, str(error))
        await context.abort(status.code, status.details, status.trailing_metadata)
    return wrapper


def _tensor_image(tensor: pb.Tensor, layout: str) -> np.ndarray:
    if tensor.dtype not in DTYPES:
        raise BadRequest(f"tensor dtype {tensor.dtype} is not one of FLOAT32, FLOAT16, UINT8", "images.tensor.dtype")
    shape = list(tensor.shape)
    if len(shape) != 3 or min(shape) < 1 or int(np.prod(shape)) > MAX_TENSOR_ELEMENTS:
        raise BadRequest(f"tensor shape {shape} must be 3 positive dims, at most {MAX_TENSOR_ELEMENTS} elements",
                         "images.tensor.shape")
    dtype = np.dtype(DTYPES[tensor.dtype]).newbyteorder("<")
    if len(tensor.data) != int(np.prod(shape)) * dtype.itemsize:
        raise BadRequest(f"tensor data holds {len(tensor.data)} bytes; shape {shape} of {dtype.name} needs "
                         f"{int(np.prod(shape)) * dtype.itemsize}", "images.tensor.data")
    array = np.frombuffer(tensor.data, dtype).reshape(shape).astype(np.float32)
    return array.transpose(2, 0, 1) if layout == "NHWC" else array


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(self, repository: ModelRepository):
        self.repository = repository

    @_handled
    async def Explain(self, request: pb.ExplainRequest, context) -> pb.ExplainResponse:
        began = time.perf_counter()
        if not request.images:
            raise BadRequest("the request holds no images", "images")
        if not request.model:
            raise BadRequest("the request names no model", "model")
        if request.size == pb.OUTPUT_SIZE_ORIGINAL:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "maps at the original image size are not served yet")
        version, config, explainer = await asyncio.to_thread(self.repository.get, request.model, request.version)
        method = request.method or "gradcam"
        if method not in METHODS:
            raise BadRequest(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}", "method")
        x, shown = await asyncio.to_thread(self._inputs, request, config, explainer)   # decoding is CPU work
        targets = await asyncio.to_thread(self._targets, request.targets, explainer, x)
        repeat = len(targets) // len(x) if isinstance(targets, np.ndarray) and targets.ndim == 1 else 1
        x_all = np.repeat(x, repeat, axis=0) if repeat > 1 else x
        options = {name: option(value) for name, value in request.options.items()}
        layers = list(request.layers) or ([config.default_layer] if config.default_layer else None)
        result = await asyncio.to_thread(explainer.explain_full, x_all, method, targets, layers,
                                         request.fusion or None, **options)
        probabilities = softmax(result.logits.astype(np.float64))
        want_map = request.output in (pb.OUTPUT_KIND_UNSPECIFIED, pb.OUTPUT_KIND_MAP, pb.OUTPUT_KIND_BOTH)
        want_png = request.output in (pb.OUTPUT_KIND_OVERLAY_PNG, pb.OUTPUT_KIND_BOTH)
        if want_png and any(s is None for s in shown):
            raise BadRequest("overlays need encoded images; tensor inputs get maps only", "output")
        response = pb.ExplainResponse(model=request.model, version=version, method=method, layers=result.layers,
                                      options={k: option_value(v) for k, v in result.options.items()},
                                      provider=explainer.provider, request_id=request.request_id)
        for i in range(len(x)):
            group = response.images.add()
            for k in range(i * repeat, (i + 1) * repeat):
                cam, target = result.maps[k], int(result.targets[k])
                item = group.explanations.add(class_id=target, label=config.label(target),
                                              score=float(probabilities[k, target]))
                if want_map:
                    item.map.CopyFrom(pb.Tensor(shape=list(cam.shape), dtype=pb.DATA_TYPE_FLOAT32,
                                                data=cam.astype("<f4").tobytes()))
                if want_png:
                    item.overlay_png = images.encode_png(images.overlay(shown[i], cam))
        response.seconds = time.perf_counter() - began
        return response

    def _inputs(self, request, config, explainer) -> tuple[np.ndarray, list]:
        tensors, shown = [], []
        for image in request.images:
            kind = image.WhichOneof("source")
            if kind == "encoded":
                fitted = images.fit(images.decode(image.encoded), config.preprocessing)
                tensors.append(images.normalise(fitted, config.preprocessing)[0])
                shown.append(fitted)
            elif kind == "tensor":
                tensors.append(_tensor_image(image.tensor, explainer.info.layout))
                shown.append(None)
            else:
                raise BadRequest("an image holds neither encoded bytes nor a tensor", "images")
        if len({t.shape for t in tensors}) > 1:
            raise BadRequest(f"images differ in size after preprocessing: {sorted({t.shape for t in tensors})}",
                             "images")
        return np.stack(tensors), shown

    @staticmethod
    def _targets(targets: pb.Targets, explainer, x: np.ndarray):
        kind = targets.WhichOneof("kind")
        if kind is None:
            return None
        if kind == "class_ids":
            ids = np.array(targets.class_ids.ids, np.int64)
            if ids.size not in (1, len(x)):
                raise BadRequest(f"give one class id, or one per image ({len(x)}); got {ids.size}", "targets")
            return np.broadcast_to(ids, (len(x),)).copy()
        if kind == "weights":
            values, classes = np.array(targets.weights.values, np.float32), targets.weights.classes
            if classes < 1 or values.size not in (classes, classes * len(x)):
                raise BadRequest(f"class weights: {values.size} values for {classes} classes and {len(x)} images",
                                 "targets.weights")
            return np.broadcast_to(values.reshape(-1, classes), (len(x), classes)).copy()
        k = targets.top_k
        classes = explainer.info.num_classes or 0
        if not 1 <= k <= classes:
            raise BadRequest(f"top_k must lie in [1, {classes}], got {k}", "targets.top_k")
        order = np.argsort(-explainer.predict(x), axis=1, kind="stable")[:, :k]
        return order.reshape(-1)

    @_handled
    async def ListModels(self, request, context) -> pb.ListModelsResponse:
        models = await asyncio.to_thread(self.repository.models)
        return pb.ListModelsResponse(models=[pb.ModelSummary(name=n, versions=v, ready=True)
                                             for n, v in models.items()])

    @_handled
    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelDescription:
        version, config, explainer = await asyncio.to_thread(self.repository.get, request.model, request.version)
        info, spec = explainer.info, config.preprocessing
        return pb.ModelDescription(
            name=request.model, version=version, input_name=info.input_name,
            input_shape=[str(d) for d in info.input_shape], layout=info.layout, num_classes=info.num_classes or 0,
            labels=config.labels, default_layer=config.default_layer or info.default_layer,
            layers=[pb.LayerDescription(name=layer.name, shape=[str(d) for d in layer.shape], op=layer.op)
                    for layer in info.layers],
            preprocessing=pb.Preprocessing(resize=spec.resize or 0, crop=spec.crop or 0, mean=spec.mean,
                                           std=spec.std, color=spec.color, scale=spec.scale))

    @_handled
    async def ListMethods(self, request, context) -> pb.ListMethodsResponse:
        return pb.ListMethodsResponse(methods=[
            pb.MethodDescription(name=name, summary=spec.doc, cost=spec.cost or "", cost_class=_cost_class(spec),
                                 needs_gradients=spec.needs.gradients,
                                 options={k: option_value(v) for k, v in spec.options.items()})
            for name, spec in sorted(METHODS.items())])

    async def ExplainStream(self, request_iterator, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ExplainStream is not served yet; call Explain")

    async def Evaluate(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Evaluate is not served yet; use `camserve evaluate`")


def _cost_class(spec) -> int:
    needs = spec.needs
    if needs.masks == "inputs" and spec.name != "groupcam":
        return pb.COST_CLASS_PER_CHANNEL
    if needs.masks or needs.noisy_copies or needs.layers in ("bias", "conv"):
        return pb.COST_CLASS_FEW_FORWARDS
    return pb.COST_CLASS_FORWARD
