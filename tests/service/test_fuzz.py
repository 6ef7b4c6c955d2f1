"""Fuzzing the gRPC server with bad requests: each gets exactly the right status, and the server keeps serving.

Bad input -> INVALID_ARGUMENT with a google.rpc.BadRequest field violation; an unknown model or version ->
NOT_FOUND; never UNKNOWN or INTERNAL, never a crash, a hang or an out-of-memory. Every test generates its
requests with hypothesis (derandomized: CI sees the same requests on every run); strategies draw compact
descriptions of a request (what hypothesis prints when an example fails) and the test body builds it.
Every 100 calls, and after each test's run, the photo must still be explained.
"""
from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from camserve.service.methods import METHODS
from camserve.v1 import explain_pb2 as pb
from serving import violation

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "chelsea.png"
PHOTO_BYTES = PHOTO.read_bytes()
MODEL = "mobilenet_v2"
CLASSES = 1000
INPUT = (3, 224, 224)
TIMEOUT = 60
MAX_PIXELS = 64_000_000          # the server's decoded-image limit today; the huge images here lie far above it
PEAK_GROWTH = 256 * 2 ** 20      # a rejected image may not raise the server's peak memory by more than this

OK, INVALID, NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
F32, F16, U8 = pb.DATA_TYPE_FLOAT32, pb.DATA_TYPE_FLOAT16, pb.DATA_TYPE_UINT8
ITEMSIZE = {F32: 4, F16: 2, U8: 1}
NUMPY = {F32: "<f4", F16: "<f2", U8: "u1"}

# Corrupt images are the point here: no decoder warnings from the test's own decoding.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

# A small real image, encoded: the base of the truncated and bit-flipped ones.
SMALL = cv2.resize(cv2.imread(str(PHOTO)), (32, 24), interpolation=cv2.INTER_AREA)
ENCODED = {"png": cv2.imencode(".png", SMALL)[1].tobytes(), "jpeg": cv2.imencode(".jpg", SMALL)[1].tobytes()}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- calls -----------------------------------------------------------------------------------------
_calls = itertools.count(1)


def still_serving(stub) -> None:
    """The photo is still explained (its top-1 class is the cat)."""
    reply = stub.Explain(pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=PHOTO_BYTES)]), timeout=TIMEOUT)
    assert reply.images[0].explanations[0].label == "Egyptian cat"


def outcome(stub, request: pb.ExplainRequest, rpc: str = "Explain", timeout: float = TIMEOUT):
    """(status code, the error or None); every 100th call is followed by a valid one."""
    try:
        getattr(stub, rpc)(request, timeout=timeout)
        code, error = OK, None
    except grpc.RpcError as caught:
        code, error = caught.code(), caught
    if next(_calls) % 100 == 0:
        still_serving(stub)
    return code, error


def field_of(error: grpc.RpcError) -> str:
    try:
        field = violation(error)
    except (AssertionError, IndexError) as missing:
        pytest.fail(f"INVALID_ARGUMENT without a google.rpc.BadRequest field violation ({missing!r}): "
                    f"{error.details()!r}")
    assert field, f"an empty field in the BadRequest violation: {error.details()!r}"
    return field


def check(code, error, want, fields: tuple[str, ...] = ()) -> None:
    """The status is `want`; an INVALID_ARGUMENT names a field starting with one of `fields` (when given)."""
    details = error.details() if error is not None else "(a reply)"
    assert code == want, f"{code.name} where {want.name} was due: {details!r}"
    if want == INVALID:
        field = field_of(error)
        assert not fields or field.startswith(fields), f"violation of {field!r}, not of {fields}: {details!r}"
    elif want == NOT_FOUND:
        assert error.details(), "NOT_FOUND without a message"


def rejected(stub, request: pb.ExplainRequest, want=INVALID, fields: tuple[str, ...] = (), rpc: str = "Explain"):
    check(*outcome(stub, request, rpc), want, fields)


def photo() -> pb.Image:
    return pb.Image(encoded=PHOTO_BYTES)


def alive(server) -> None:
    assert server[0].poll() is None, "the server process died"


# -- the server's memory (Linux): its peak resident size can be reset and read --------------------
def _status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak(pid: int) -> int | None:
    """Reset the process's peak RSS (VmHWM) to its current RSS, which is returned; None where not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return _status_bytes(pid, "VmRSS")
    except (OSError, KeyError):
        return None


def peak_growth(pid: int, baseline: int | None) -> int:
    return 0 if baseline is None else _status_bytes(pid, "VmHWM") - baseline


# -- crafted images ------------------------------------------------------------------------------------
def decodes(data: bytes) -> bool:
    """Whether OpenCV itself (the server's decoder) makes an image of these bytes."""
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    except cv2.error:
        return False


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    """A PNG whose IHDR (correct CRC) claims width x height, with the given IDAT payload."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """The small JPEG with its SOF0 header patched to claim width x height (its scan is left as it is)."""
    data = bytearray(ENCODED["jpeg"])
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bomb(side: int) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels: a few kB that decode to side^2 * 3 bytes."""
    row = b"\0" * (1 + (side + 7) // 8)
    return png_claiming(side, side, 1, 0, zlib.compress(row * side, 9))


# -- strategies (compact descriptions; the tests build the requests) ------------------------------------------
@st.composite
def corrupt_images(draw):
    """('random', None, bytes) | ('truncated', format, cut) | ('flipped', format, [(offset, xor), ...])."""
    kind = draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        return kind, None, draw(st.binary(max_size=2048))
    fmt = draw(st.sampled_from(sorted(ENCODED)))
    size = len(ENCODED[fmt])
    if kind == "truncated":
        return kind, fmt, draw(st.integers(0, size - 1))
    flips = st.tuples(st.integers(size // 4, 3 * size // 4), st.integers(1, 255))
    return kind, fmt, draw(st.lists(flips, min_size=1, max_size=8))


def corrupt_bytes(kind: str, fmt: str | None, how) -> bytes:
    if kind == "random":
        return how
    data = ENCODED[fmt]
    if kind == "truncated":
        return data[:how]
    flipped = bytearray(data)
    for offset, xor in how:
        flipped[offset] ^= xor
    return bytes(flipped)


HUGE_SIDES = st.one_of(st.integers(1, 2 ** 31 - 1), st.sampled_from([60000, 65535, 65536, 100000, 2 ** 31 - 1]),
                       st.integers(1, 64))
# (bit depth, colour type): grey, RGB, palette (no PLTE: invalid as well), grey+alpha, RGBA
PNG_FORMATS = [(8, 2), (1, 0), (8, 0), (16, 0), (16, 2), (8, 3), (8, 4), (8, 6), (16, 6)]

SHAPE_DIM = st.integers(1, 8)
BIG_DIM = st.one_of(st.integers(1, 2 ** 63 - 1), st.sampled_from([2 ** k for k in (16, 20, 31, 32, 33, 62)]),
                    st.sampled_from([3, 224, 100000]))
BAD_DTYPES = st.one_of(st.just(pb.DATA_TYPE_UNSPECIFIED), st.integers(4, 2 ** 31 - 1), st.integers(-2 ** 31, -1))
VALID_DTYPES = st.sampled_from([F32, F16, U8])


def need(shape, dtype) -> int:
    return int(np.prod(shape)) * ITEMSIZE[dtype]


@st.composite
def bad_tensors(draw):
    """(kind, shape, dtype, data): data is a count of zero bytes, bytes, or ('nonfinite', positions, values)."""
    kind = draw(st.sampled_from(["rank", "nonpositive", "channels", "spatial", "huge", "dtype", "length",
                                 "nonfinite"]))
    dtype = draw(VALID_DTYPES)
    if kind == "rank":
        if draw(st.integers(0, 4)) == 0:   # the batch axis left on: (1, 3, 224, 224)
            shape = [1, *INPUT]
        else:
            shape = draw(st.sampled_from([0, 1, 2, 4, 5]).flatmap(lambda r: st.lists(SHAPE_DIM, min_size=r,
                                                                                    max_size=r)))
        return kind, shape, dtype, need(shape, dtype)
    if kind == "nonpositive":
        shape = draw(st.lists(st.one_of(SHAPE_DIM, st.integers(-2 ** 63, 0)), min_size=3, max_size=3))
        assume(min(shape) < 1)
        return kind, shape, dtype, draw(st.binary(max_size=64))
    if kind == "channels":
        shape = [draw(st.integers(1, 8).filter(lambda c: c != INPUT[0])), *INPUT[1:]]
        return kind, shape, dtype, need(shape, dtype)
    if kind == "spatial":
        shape = [INPUT[0], draw(st.integers(1, 300)), draw(st.integers(1, 300))]
        assume(shape != list(INPUT))
        return kind, shape, dtype, need(shape, dtype)
    if kind == "huge":
        shape = draw(st.lists(BIG_DIM, min_size=3, max_size=3))
        assume(np.prod([float(d) for d in shape]) > MAX_PIXELS)
        return kind, shape, dtype, draw(st.binary(max_size=64))
    if kind == "dtype":
        return kind, list(INPUT), draw(BAD_DTYPES), need(INPUT, F32)
    if kind == "length":
        size = need(INPUT, dtype)
        return kind, list(INPUT), dtype, draw(st.integers(0, size + 64).filter(lambda n: n != size))
    count = int(np.prod(INPUT))
    positions = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=8))
    values = draw(st.lists(st.sampled_from(["nan", "inf", "-inf"]), min_size=len(positions),
                           max_size=len(positions)))
    return kind, list(INPUT), draw(st.sampled_from([F32, F16])), ("nonfinite", positions, values)


def tensor_data(dtype, shape, spec) -> bytes:
    if isinstance(spec, int):
        return b"\0" * spec
    if isinstance(spec, bytes):
        return spec
    _, positions, values = spec
    array = np.zeros(int(np.prod(shape)), NUMPY[dtype])
    array[positions] = [float(v) for v in values]
    return array.tobytes()


TENSOR_FIELDS = {   # where the violation is clearly the tensor message's (or, once stacked, the model input's)
    "rank": ("images[0].tensor.shape",), "nonpositive": ("images[0].tensor.shape",),
    "huge": ("images[0].tensor",), "dtype": ("images[0].tensor.dtype",), "length": ("images[0].tensor.data",),
    "channels": ("images",), "spatial": ("images",), "nonfinite": ("images",),
}

MISSING_NAMES = st.text(min_size=1, max_size=40).filter(lambda s: s != MODEL)
MISSING_VERSIONS = st.one_of(st.integers(0, 10 ** 6).map(str), st.sampled_from(["0", "2", "01", "1.0", " 1", "latest"]),
                             st.text(min_size=1, max_size=12)).filter(lambda v: v != "1")

OUT_OF_RANGE_IDS = st.one_of(st.integers(-2 ** 63, -1), st.integers(CLASSES, 2 ** 63 - 1))
UNKNOWN_FUSIONS = st.text(max_size=20).filter(lambda f: f not in ("", "mean", "max", "adaptive"))


@st.composite
def bad_fields(draw):
    """(kind, images, fields of ExplainRequest as a compact dict): one thing wrong; the rest valid."""
    kind = draw(st.sampled_from(["method", "layers", "class_ids", "class_count", "top_k", "weights_count",
                                 "weights_nonfinite", "option_unknown", "option_empty", "fusion", "no_images",
                                 "empty_image", "no_model"]))
    images = ["photo"]
    if kind == "method":
        fields = {"method": draw(st.text(min_size=1, max_size=20).filter(lambda m: m not in METHODS))}
    elif kind == "layers":
        fields = {"layers": draw(st.lists(st.text(max_size=30), min_size=1, max_size=3))}
    elif kind == "class_ids":
        images = ["photo"] * draw(st.integers(1, 2))
        ids = draw(st.lists(st.one_of(st.integers(0, CLASSES - 1), OUT_OF_RANGE_IDS), min_size=len(images),
                            max_size=len(images)))
        assume(any(not 0 <= i < CLASSES for i in ids))
        fields = {"class_ids": ids}
    elif kind == "class_count":   # one id per image, or one for all: neither
        images = ["photo"] * draw(st.integers(1, 2))
        ids = draw(st.lists(st.integers(0, CLASSES - 1), max_size=4).filter(lambda i: len(i) not in (1, len(images))))
        fields = {"class_ids": ids}
    elif kind == "top_k":
        fields = {"top_k": draw(st.one_of(st.just(0), st.integers(CLASSES + 1, 2 ** 32 - 1)))}
    elif kind == "weights_count":
        classes = draw(st.one_of(st.integers(0, 2 * CLASSES), st.integers(0, 2 ** 32 - 1), st.just(CLASSES)))
        as_many = classes if classes <= 2 * CLASSES else 0   # never millions of values
        count = draw(st.one_of(st.integers(0, 2 * CLASSES + 8), st.just(CLASSES), st.just(as_many)))
        assume((classes, count) != (CLASSES, CLASSES))
        fields = {"weights": (classes, count)}
    elif kind == "weights_nonfinite":
        positions = draw(st.lists(st.integers(0, CLASSES - 1), min_size=1, max_size=5))
        fields = {"weights": (CLASSES, CLASSES, positions, draw(st.sampled_from(["nan", "inf", "-inf"])))}
    elif kind == "option_unknown":
        method = draw(st.sampled_from(sorted(m for m in METHODS if "classifier" in METHODS[m].kinds)))
        name = draw(st.text(min_size=1, max_size=20).filter(lambda n: n not in METHODS[method].options))
        fields = {"method": method, "options": {name: 1.0}}
    elif kind == "option_empty":
        method = draw(st.sampled_from(sorted(m for m in METHODS if METHODS[m].options
                                             and "classifier" in METHODS[m].kinds)))
        fields = {"method": method, "options": {draw(st.sampled_from(sorted(METHODS[method].options))): None}}
    elif kind == "fusion":
        fields = {"fusion": draw(UNKNOWN_FUSIONS)}
    elif kind == "no_images":
        images = []
        fields = draw(st.sampled_from([{}, {"method": "gradcam"}, {"top_k": 1}]))
    elif kind == "empty_image":
        images = ["photo"] * draw(st.integers(0, 2))
        images.insert(draw(st.integers(0, len(images))), "empty")
        fields = {}
    else:
        fields = {"model": ""}
    return kind, images, fields


BAD_FIELD = {   # kind -> the violation's field (prefix)
    "method": ("method",), "layers": ("layers",), "class_ids": ("targets",), "class_count": ("targets",),
    "top_k": ("targets",), "weights_count": ("targets",), "weights_nonfinite": ("targets",),
    "option_unknown": ("options",), "option_empty": ("options",), "fusion": ("fusion",), "no_images": ("images",),
    "empty_image": ("images",), "no_model": ("model",),
}


def build(images: list[str], fields: dict) -> pb.ExplainRequest:
    request = pb.ExplainRequest(model=fields.get("model", MODEL), method=fields.get("method", ""),
                                layers=fields.get("layers", []), fusion=fields.get("fusion", ""),
                                images=[photo() if kind == "photo" else pb.Image() for kind in images])
    if "class_ids" in fields:
        request.targets.class_ids.ids.extend(fields["class_ids"])
    if "top_k" in fields:
        request.targets.top_k = fields["top_k"]
    if "weights" in fields:
        classes, count, *bad = fields["weights"]
        values = np.full(count, 1.0 / max(count, 1), np.float32)
        if bad:
            values[bad[0]] = float(bad[1])
        request.targets.weights.CopyFrom(pb.ClassWeights(values=values.tolist(), classes=classes))
    for name, value in fields.get("options", {}).items():
        request.options[name].CopyFrom(pb.OptionValue() if value is None else pb.OptionValue(number=value))
    return request


# -- the tests ------------------------------------------------------------------------------------------------
def test_corrupt_image_bytes(server, stub):
    """Random bytes, truncated and bit-flipped PNG/JPEG: INVALID_ARGUMENT unless OpenCV itself decodes them
    (only a flip can leave a decodable image: then OK is fine too)."""
    flips = {fmt: [] for fmt in ENCODED}   # per format: was the flipped image rejected?

    @fuzz(150)
    @given(corrupt_images())
    @example(("random", None, b"not an image"))
    @example(("truncated", "png", 0))
    @example(("truncated", "jpeg", len(ENCODED["jpeg"]) // 2))
    def run(case):
        kind, fmt, how = case
        data = corrupt_bytes(kind, fmt, how)
        code, error = outcome(stub, pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=data)]))
        if kind == "flipped":
            flips[fmt].append(code != OK)
        if decodes(data):
            assert code in (OK, INVALID), f"{code.name}: {error.details()!r}"
            if code == INVALID:
                field_of(error)
        else:
            check(code, error, INVALID, ("images[0].encoded",))

    run()
    assert flips["png"] and sum(flips["png"]) > len(flips["png"]) / 2, f"most bit-flipped PNGs decoded: {flips['png']}"
    alive(server)
    still_serving(stub)


def test_images_claiming_huge_dimensions_are_rejected_without_their_memory(server, stub):
    """PNG headers (correct CRC) claiming up to 2^31-1 x 2^31-1 with a tiny IDAT: INVALID_ARGUMENT,
    and the server's peak memory barely moves."""
    still_serving(stub)   # the model loaded, the allocators warm: only the images count
    baseline = reset_peak(server[0].pid)

    @fuzz(60)
    @given(width=HUGE_SIDES, height=HUGE_SIDES, fmt=st.sampled_from(PNG_FORMATS), raw=st.binary(max_size=64),
           compress=st.booleans())
    @example(width=60000, height=60000, fmt=(8, 2), raw=b"\0" * 16, compress=True)
    @example(width=100000, height=1, fmt=(8, 2), raw=b"\0" * 16, compress=True)
    @example(width=1, height=100000, fmt=(8, 2), raw=b"\0" * 16, compress=True)
    def run(width, height, fmt, raw, compress):
        assume(width * height >= 100_000)   # so 64 bytes of pixel data can never fill it
        data = png_claiming(width, height, *fmt, zlib.compress(raw) if compress else raw)
        rejected(stub, pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=data)]), INVALID, ("images[0].encoded",))

    run()
    alive(server)
    growth = peak_growth(server[0].pid, baseline)
    assert growth < PEAK_GROWTH, f"huge-dimension PNGs raised the server's peak memory by {growth / 2 ** 20:.0f} MiB"
    still_serving(stub)


@pytest.mark.parametrize("name, data", [
    ("jpeg header claiming 65535 x 65535", jpeg_claiming(65535, 65535)),
    ("jpeg header claiming 12000 x 12000", jpeg_claiming(12000, 12000)),
    ("valid 1-bit png of 12000 x 12000 (a decompression bomb)", png_bomb(12000)),
], ids=["jpeg-65535", "jpeg-12000", "png-bomb-12000"])
def test_images_over_the_pixel_limit_are_rejected_before_decoding(server, stub, name, data):
    """Over the pixel limit, however few bytes: INVALID_ARGUMENT without decoding (peak memory barely moves)."""
    assert len(data) < 100_000
    still_serving(stub)
    baseline = reset_peak(server[0].pid)
    rejected(stub, pb.ExplainRequest(model=MODEL, images=[pb.Image(encoded=data)]), INVALID, ("images[0].encoded",))
    alive(server)
    growth = peak_growth(server[0].pid, baseline)
    assert growth < PEAK_GROWTH, f"{name}: the server's peak memory rose by {growth / 2 ** 20:.0f} MiB"
    still_serving(stub)


def test_bad_tensors(server, stub):
    """Wrong rank, non-positive, wrong or huge dims, bad dtype enums, data of the wrong length, NaN/Inf."""
    @fuzz(150)
    @given(bad_tensors())
    @example(("huge", [3, 100000, 100000], F32, b"\0" * 16))
    @example(("huge", [2 ** 32, 2 ** 32, 3], F32, b""))   # the element count overflows int64 to 0
    @example(("rank", [1, *INPUT], F32, need(INPUT, F32)))
    @example(("dtype", list(INPUT), pb.DATA_TYPE_UNSPECIFIED, need(INPUT, F32)))
    def run(case):
        kind, shape, dtype, spec = case
        tensor = pb.Tensor(shape=shape, dtype=dtype, data=tensor_data(dtype, shape, spec))
        rejected(stub, pb.ExplainRequest(model=MODEL, images=[pb.Image(tensor=tensor)]), INVALID,
                 TENSOR_FIELDS[kind])

    run()
    alive(server)
    still_serving(stub)


def test_unknown_models_and_versions(server, stub):
    """NOT_FOUND from Explain and GetModel, for unknown models and for unknown versions of the known one."""
    @fuzz(60)
    @given(st.one_of(st.tuples(MISSING_NAMES, st.one_of(st.just(""), MISSING_VERSIONS, st.just("1"))),
                     st.tuples(st.just(MODEL), MISSING_VERSIONS)))
    @example(("nomodel", ""))
    @example((MODEL, "7"))
    @example(("../models/" + MODEL, ""))
    def run(case):
        model, version = case
        rejected(stub, pb.ExplainRequest(model=model, version=version, images=[photo()]), NOT_FOUND)
        rejected(stub, pb.GetModelRequest(model=model, version=version), NOT_FOUND, rpc="GetModel")

    run()
    alive(server)
    still_serving(stub)


def test_bad_request_fields(server, stub):
    """Unknown method, layer, option or fusion; class ids, top_k and class weights out of range or of the wrong
    count, NaN weights; an empty option value; no images; an Image holding nothing; no model."""
    known = {layer.name for layer in stub.GetModel(pb.GetModelRequest(model=MODEL), timeout=TIMEOUT).layers}

    @fuzz(150)
    @given(bad_fields())
    @example(("class_ids", ["photo"], {"class_ids": [-1]}))
    @example(("class_ids", ["photo"], {"class_ids": [CLASSES]}))
    @example(("top_k", ["photo"], {"top_k": 0}))
    @example(("top_k", ["photo"], {"top_k": CLASSES + 1}))
    @example(("no_images", [], {}))
    @example(("empty_image", ["empty"], {}))
    def run(case):
        kind, images, fields = case
        assume(kind != "layers" or not set(fields["layers"]) <= known)
        rejected(stub, build(images, fields), INVALID, BAD_FIELD[kind])

    run()
    alive(server)
    still_serving(stub)


def test_options_of_the_wrong_type(server, stub):
    """Each method's options as ListMethods gives them: text for a number, a fraction for an integer, text or a
    number for a flag -> INVALID_ARGUMENT on `options`."""
    described = stub.ListMethods(pb.ListMethodsRequest(), timeout=TIMEOUT).methods
    cost = {m.name: m.cost_class for m in described}
    typed = sorted(((cost[m.name], m.name, name, value.WhichOneof("value")) for m in described
                    for name, value in m.options.items()
                    if value.WhichOneof("value") in ("number", "integer", "flag") and "classifier" in m.kinds))
    assert typed, "ListMethods gives no numeric or flag options"
    fractions = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    wrong = {"number": st.builds(lambda t: pb.OptionValue(text=t), st.text(max_size=10)),
             "integer": st.one_of(st.builds(lambda t: pb.OptionValue(text=t), st.text(max_size=10)),
                                  st.builds(lambda f: pb.OptionValue(number=f), fractions)),
             "flag": st.one_of(st.builds(lambda t: pb.OptionValue(text=t), st.text(max_size=10)),
                               st.builds(lambda f: pb.OptionValue(number=f), st.floats()))}

    @fuzz(80)
    @given(st.data())
    def run(data):
        _, method, name, kind = data.draw(st.sampled_from(typed), label="option")
        value = data.draw(wrong[kind], label="value")
        request = pb.ExplainRequest(model=MODEL, method=method, images=[photo()], options={name: value})
        rejected(stub, request, INVALID, ("options",))

    run()
    alive(server)
    still_serving(stub)
