"""Times one model in the formats production teams ship: ResNet-50 (torchvision, random init) as fp32, fp16
(onnxconverter-common, keep_io_types) and int8 QDQ (onnxruntime.quantization, 8 random calibration images), on
ONNX Runtime's CPU provider (and CUDA where present): a plain forward and a Grad-CAM, their ratio, and the Grad-CAM
map's correlation to the fp32 model's.

    python bench/formats.py
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from common import CACHE, THREADS, build_model, cached_export, cpu_model, median_ms
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from camserve import Explainer

FOLDER = CACHE / "formats"


class Noise(CalibrationDataReader):
    def __init__(self):
        self.feeds = iter({"input": np.random.default_rng(i).standard_normal((1, 3, 224, 224), np.float32)}
                          for i in range(8))

    def get_next(self):
        return next(self.feeds, None)


def files() -> dict[str, str]:
    FOLDER.mkdir(parents=True, exist_ok=True)
    fp32 = cached_export(build_model("resnet50"), FOLDER / "resnet50.onnx")
    fp16 = FOLDER / "resnet50_fp16.onnx"
    if not fp16.exists():
        onnx.save(float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(fp16))
    qdq = FOLDER / "resnet50_qdq.onnx"
    if not qdq.exists():
        quantize_static(str(fp32), str(qdq), Noise(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return {"fp32": str(fp32), "fp16": str(fp16), "int8 QDQ": str(qdq)}


def measure(path: str, provider: str, x: np.ndarray) -> tuple[float, float, float, np.ndarray, str]:
    """(the file's own ORT forward ms, camserve's forward ms, Grad-CAM ms, the map, the provider that ran)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    own = ort.InferenceSession(path, options, providers=[provider])
    feed = x.astype(np.float16) if own.get_inputs()[0].type == "tensor(float16)" else x
    native = median_ms(lambda: own.run(None, {"input": feed}), 10)
    explainer = Explainer(path, providers=[provider], threads=THREADS)
    forward = median_ms(lambda: explainer.predict(x), 10)
    gradcam = median_ms(lambda: explainer.explain(x, "gradcam"), 10)
    return native, forward, gradcam, explainer.explain(x, "gradcam"), explainer.provider


def main() -> None:
    paths = files()
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 224, 224)).astype(np.float32)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, threads={THREADS}, onnxruntime {ort.__version__}")
    for provider in providers:
        reference = None
        print(f"\nprovider {provider}")
        print("| format | the file's own forward ms | camserve forward ms | Grad-CAM ms | Grad-CAM / forward | "
              "map correlation to fp32 |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, path in paths.items():
            native, forward, gradcam, cam, ran = measure(path, provider, x)
            reference = cam if reference is None else reference
            correlation = float(np.corrcoef(cam.ravel(), reference.ravel())[0, 1])
            print(f"| {name} ({ran}) | {native:.1f} | {forward:.1f} | {gradcam:.1f} | {gradcam / forward:.2f}x | "
                  f"{correlation:.4f} |")
    print("\nfp16 is explained through a float32 copy of its graph (camserve's forward too); int8 QDQ predicts with "
          "its own quantised graph and takes gradients through a float rewrite of its quantisation (docs/formats.md)")


if __name__ == "__main__":
    main()
