"""Python values to and from camserve.v1 messages (options, targets, tensors): one conversion for the server and
the client."""
from __future__ import annotations

import math

import numpy as np

from camserve.v1 import explain_pb2 as pb

from . import targets
from .errors import BadRequest


def option_value(value) -> pb.OptionValue:
    """A method option's value as an OptionValue (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return pb.OptionValue(flag=value)
    if isinstance(value, int):
        return pb.OptionValue(integer=value)
    if isinstance(value, float):
        return pb.OptionValue(number=value)
    return pb.OptionValue(text="" if value is None else str(value))


def option(value: pb.OptionValue):
    """The Python value an OptionValue holds."""
    kind = value.WhichOneof("value")
    if kind is None:
        raise BadRequest("an option value is empty", "options")
    return getattr(value, kind)


def target(message: pb.Target, field: str):
    """A camserve.targets object for one Target message; a detection index stays an int (resolved against the
    image's detections by the caller)."""
    kind = message.WhichOneof("kind")
    if kind == "region":
        mask = None
        if message.region.HasField("mask"):
            mask = tensor(message.region.mask, f"{field}.region.mask", rank=2)
        return targets.Region(int(message.region.class_id), mask)
    if kind == "box":
        b = message.box
        return targets.Box((b.x0, b.y0, b.x1, b.y1), int(b.class_id) if b.HasField("class_id") else None,
                           b.iou or 0.5, tuple(b.terms) or ("class",))
    if kind == "detection":
        return int(message.detection)
    if kind == "similarity":
        return targets.Similarity(np.array(message.similarity.vector, np.float32))
    raise BadRequest("a target holds none of region, box, detection, similarity", field)


def target_message(value) -> pb.Target:
    """The Target message for a camserve.targets object (Region, Box, Detection, Similarity) or a detection
    index (int)."""
    if isinstance(value, bool) or not isinstance(value, (int, targets.Target)):
        raise BadRequest(f"not a target: {value!r}", "targets")
    if isinstance(value, int):
        return pb.Target(detection=value)
    if isinstance(value, targets.Region):
        mask = None if value.mask is None else tensor_message(value.mask)
        return pb.Target(region=pb.RegionTarget(class_id=value.class_id, mask=mask))
    if isinstance(value, (targets.Box, targets.Detection)):
        x0, y0, x1, y1 = value.box
        return pb.Target(box=pb.BoxTarget(x0=x0, y0=y0, x1=x1, y1=y1, class_id=value.class_id,
                                          iou=getattr(value, "iou", 0.5), terms=list(value.terms)))
    if isinstance(value, targets.Similarity):
        return pb.Target(similarity=pb.SimilarityTarget(vector=[float(v) for v in value.vector]))
    raise BadRequest(f"{type(value).__name__} targets have no camserve.v1 message", "targets")


MAX_ELEMENTS = 64_000_000


def tensor(message: pb.Tensor, field: str, rank: int | None = None, limit: int = MAX_ELEMENTS) -> np.ndarray:
    """A float32 array from a Tensor message (FLOAT32, FLOAT16 or UINT8), its size checked before any copy."""
    dtypes = {pb.DATA_TYPE_FLOAT32: "<f4", pb.DATA_TYPE_FLOAT16: "<f2", pb.DATA_TYPE_UINT8: "u1"}
    if message.dtype not in dtypes:
        raise BadRequest(f"tensor dtype {message.dtype} is not one of FLOAT32, FLOAT16, UINT8", f"{field}.dtype")
    shape = [int(d) for d in message.shape]
    count = math.prod(shape)   # Python integers: huge dims must not wrap around
    if (rank is not None and len(shape) != rank) or min(shape, default=0) < 1 or count > limit:
        raise BadRequest(f"tensor shape {shape} must be {rank or 'some'} positive dims, at most {limit} elements",
                         f"{field}.shape")
    dtype = np.dtype(dtypes[message.dtype])
    if len(message.data) != count * dtype.itemsize:
        raise BadRequest(f"tensor data holds {len(message.data)} bytes; shape {shape} of {dtype.name} needs "
                         f"{count * dtype.itemsize}", f"{field}.data")
    return np.frombuffer(message.data, dtype).reshape(shape).astype(np.float32)


def tensor_message(array) -> pb.Tensor:
    """A float32 Tensor message of an array."""
    array = np.ascontiguousarray(array, "<f4")
    return pb.Tensor(shape=list(array.shape), dtype=pb.DATA_TYPE_FLOAT32, data=array.tobytes())
