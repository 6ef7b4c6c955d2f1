"""The ONNX files production teams ship besides plain fp32 exports, each against the fp32 original's maps.

fp16: onnxconverter-common 1.16.0's float16 conversion (with and without keep_io_types) of torchvision ResNet-18
and MobileNetV2 (random init): explained through a float32 copy of the fp16 graph (its weights the fp16 values)."""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationDataReader

from camserve import Explainer, Model
from camserve.graph_tools import inspect
from camserve.service.errors import BadRequest
from zoo import CACHE, photos

FOLDER = CACHE.parent / "formats"
ARCHITECTURES = {"resnet18": "/layer4/layer4.1/relu_1/Relu_output_0",
                 "mobilenet_v2": "/features/features.18/features.18.2/Clip_output_0"}
GRADIENT_METHODS = ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "eigencam"]


@functools.lru_cache(maxsize=None)
def fp32(name: str) -> onnx.ModelProto:
    path = FOLDER / f"{name}.onnx"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)(weights=None).eval()
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
        tmp.replace(path)
    return onnx.load(str(path))


@functools.lru_cache(maxsize=None)
def explainers(name: str, keep_io_types: bool) -> tuple[Explainer, Explainer]:
    half = float16.convert_float_to_float16(fp32(name), keep_io_types=keep_io_types)
    return Explainer(fp32(name), threads=2), Explainer(half, threads=2)


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_fp16_exports_load_and_their_maps_equal_the_fp32_originals(name, keep_io_types):
    full, half = explainers(name, keep_io_types)
    assert half.model.precision == "float16" and full.model.precision == "float32"
    assert half.model.default_layer == full.model.default_layer == ARCHITECTURES[name]
    assert [layer.name for layer in half.info.layers] == [layer.name for layer in full.info.layers]
    x = photos(224)
    np.testing.assert_allclose(half.predict(x), full.predict(x), atol=2e-2, rtol=2e-2)
    for method in GRADIENT_METHODS:   # measured: at most 8.1e-4 (MobileNetV2), 3.2e-4 (ResNet-18)
        ours, theirs = half.explain(x, method), full.explain(x, method)
        assert np.abs(ours - theirs).max() <= 1e-2, (method, np.abs(ours - theirs).max())
    # FullGrad adds input-gradient x input at pixel resolution, where fp16 weights move single pixels: max
    # difference 0.13 (ResNet-18) and 0.15 (MobileNetV2), correlation 0.998 and 0.997
    ours, theirs = half.explain(x, "fullgrad"), full.explain(x, "fullgrad")
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.99


def test_fp16_perturbation_methods_run_and_agree():
    full, half = explainers("resnet18", True)
    x = photos(224)[:1]
    for method, options in (("scorecam", {}), ("ablationcam", {}), ("rise", {"masks": 64})):
        ours, theirs = half.explain(x, method, **options), full.explain(x, method, **options)
        assert np.isfinite(ours).all() and np.abs(ours - theirs).max() <= 2e-2, method


def test_the_fp16_input_and_output_types_are_float32_in_the_copy():
    half = float16.convert_float_to_float16(fp32("resnet18"), keep_io_types=False)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    info = inspect(Model(half).graph)
    assert info.kind == "classifier" and info.num_classes == 1000 and len(info.layers) > 20


# -- files ONNX Runtime saved after its own graph optimisation -------------------------------------------------------
def _saved(name: str, level) -> str:
    import onnxruntime as ort
    path = FOLDER / f"{name}_{level.name.lower()}.onnx"
    if not path.exists():
        options = ort.SessionOptions()
        options.graph_optimization_level, options.optimized_model_filepath = level, str(path)
        fp32(name)
        ort.InferenceSession(str(FOLDER / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
    return str(path)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_files_saved_at_the_extended_level_are_explained_like_their_source(name):
    import onnxruntime as ort
    path = _saved(name, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    fused = [n for n in onnx.load(path).graph.node if n.domain == "com.microsoft"]
    assert fused and {n.op_type for n in fused} <= {"FusedConv", "FusedGemm"}
    saved, source = Explainer(path, threads=2), Explainer(fp32(name), threads=2)
    assert saved.model.default_layer == source.model.default_layer == ARCHITECTURES[name]
    x = photos(224)[:1]
    for method in ("gradcam", "gradcam++", "layercam", "fullgrad", "scorecam"):
        np.testing.assert_allclose(saved.explain(x, method), source.explain(x, method), atol=1e-5)


def test_files_saved_at_the_all_level_are_refused_naming_the_ops_and_the_level_to_use():
    import onnxruntime as ort
    path = _saved("resnet18", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    with pytest.raises(BadRequest, match=r"com\.microsoft\.nchwc\.Conv x\d+.*'all' level.*ORT_ENABLE_BASIC"):
        Model(path)


def test_unfused_conv_and_gemm_equal_onnx_runtimes_own_kernels():
    """FusedConv with a sum input and Clip, FusedGemm with LeakyRelu: ONNX Runtime runs the fused graph, and the
    standard graph camserve rewrites it to gives the same numbers."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from camserve.graph_tools import contrib

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("w", (4, 3, 3, 3)), ("b", (4,)), ("g", (5, 64)), ("c", (5,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("FusedConv", ["x", "w", "b", "z"], ["y"], domain="com.microsoft", pads=[1, 1, 1, 1],
                              activation="Clip", activation_params=[-0.5, 0.7]),
             helper.make_node("AveragePool", ["y"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("FusedGemm", ["f", "g", "c"], ["out"], domain="com.microsoft", transB=1,
                              activation="LeakyRelu", activation_alpha=0.1)]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 5]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8, 8])], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    fused = ort.InferenceSession(model.SerializeToString(), plain, providers=["CPUExecutionProvider"])
    unfused = contrib.unfuse(onnx.load_from_string(model.SerializeToString()))
    assert not contrib.contrib_ops(unfused)
    standard = ort.InferenceSession(unfused.SerializeToString(), plain, providers=["CPUExecutionProvider"])
    for theirs, ours in zip(fused.run(None, {"x": x}), standard.run(None, {"x": x})):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


# -- int8 QDQ (onnxruntime.quantization.quantize_static) --------------------------------------------------------------
class Noise(CalibrationDataReader):
    """Calibration data for onnxruntime.quantization: 8 random normal images."""

    def __init__(self):
        self.feeds = iter({"input": np.random.default_rng(i).standard_normal((1, 3, 224, 224), np.float32)}
                          for i in range(8))

    def get_next(self):
        return next(self.feeds, None)


def _qdq(name: str) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    path = FOLDER / f"{name}_qdq.onnx"
    if not path.exists():
        fp32(name)
        tmp = path.with_suffix(".tmp.onnx")
        quantize_static(str(FOLDER / f"{name}.onnx"), str(tmp), Noise(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        tmp.replace(path)
    return str(path)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_qdq_gradient_maps_pass_the_quantisation_and_follow_the_float_model(name):
    """Measured (straight estimator, the default): Grad-CAM / HiResCAM / XGrad-CAM 0.9996 (ResNet-18) and 0.995
    (MobileNetV2), Grad-CAM++ 0.9999 / 0.997, LayerCAM 0.9999 / 0.998."""
    path = _qdq(name)
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(path).graph.node) > 30
    quantised, full = Explainer(path, threads=2), Explainer(fp32(name), threads=2)
    x = photos(224)
    for method in ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"):
        ours, theirs = quantised.explain(x, method), full.explain(x, method)
        assert ours.max() > 0.99, method          # not the all-zero map of a zero derivative
        assert _correlation(ours, theirs) >= 0.95, (method, _correlation(ours, theirs))


def test_qdq_clipped_estimator_and_perturbation_methods():
    """The clipped estimator (quantisation-aware training's) on ResNet-18: 0.9996; perturbation methods run the
    quantised model's own forward."""
    path = _qdq("resnet18")
    full = Explainer(fp32("resnet18"), threads=2)
    clipped = Explainer(Model(path, ste="clipped"), threads=2)
    x = photos(224)[:1]
    assert _correlation(clipped.explain(x, "gradcam"), full.explain(x, "gradcam")) >= 0.95
    for method, options in (("scorecam", {}), ("ablationcam", {})):
        ours, theirs = clipped.explain(x, method, **options), full.explain(x, method, **options)
        assert np.isfinite(ours).all() and _correlation(ours, theirs) >= 0.9, method
    with pytest.raises(BadRequest, match="ste must be one of straight, clipped"):
        Model(path, ste="soft")


# -- int8 dynamic (onnxruntime.quantization.quantize_dynamic: DynamicQuantizeLinear, ConvInteger, MatMulInteger) ----
def _dynamic(name: str) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = FOLDER / f"{name}_dynamic.onnx"
    if not path.exists():
        fp32(name)
        prepared, tmp = path.with_suffix(".pre.onnx"), path.with_suffix(".tmp.onnx")
        quant_pre_process(str(FOLDER / f"{name}.onnx"), str(prepared))   # quantize_dynamic wants inferred shapes
        quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(path)
        prepared.unlink()
    return str(path)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_dynamic_int8_gradient_maps_pass_the_integer_ops_and_follow_the_float_model(name):
    """Measured on ResNet-18: Grad-CAM, HiResCAM, XGrad-CAM 0.9999, Grad-CAM++ and LayerCAM 0.99996."""
    path = _dynamic(name)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger"} <= ops
    quantised, full = Explainer(path, threads=2), Explainer(fp32(name), threads=2)
    assert quantised.model.default_layer == ARCHITECTURES[name]
    x = photos(224)
    for method in ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"):
        ours, theirs = quantised.explain(x, method), full.explain(x, method)
        assert ours.max() > 0.99 and _correlation(ours, theirs) >= 0.95, (method, _correlation(ours, theirs))


# -- int8 QOperator (quantize_static with QuantFormat.QOperator: QLinearConv, QLinearAdd, QGemm, ...) ------------------
def _qoperator(name: str) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = FOLDER / f"{name}_qoperator.onnx"
    if not path.exists():
        fp32(name)
        prepared, tmp = path.with_suffix(".pre.onnx"), path.with_suffix(".tmp.onnx")
        quant_pre_process(str(FOLDER / f"{name}.onnx"), str(prepared))
        quantize_static(str(prepared), str(tmp), Noise(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        tmp.replace(path)
        prepared.unlink()
    return str(path)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_qoperator_int8_models_are_explained_through_their_qdq_form(name):
    """Measured on ResNet-18: predictions 0.9998 correlated with the float model's; Grad-CAM 0.9997, Grad-CAM++
    0.9999, LayerCAM 0.99995, Score-CAM 0.99995."""
    path = _qoperator(name)
    assert "QLinearConv" in {n.op_type for n in onnx.load(path).graph.node}
    quantised, full = Explainer(path, threads=2), Explainer(fp32(name), threads=2)
    assert quantised.model.default_layer.endswith("::camserve::float")   # a dequantised activation
    x = photos(224)
    assert _correlation(quantised.predict(x), full.predict(x)) > 0.99
    for method in ("gradcam", "gradcam++", "layercam", "scorecam"):
        ours, theirs = quantised.explain(x, method), full.explain(x, method)
        assert ours.max() > 0.99 and _correlation(ours, theirs) >= 0.95, (method, _correlation(ours, theirs))
