"""The test model zoo: torch models exported to ONNX once per machine (cached under .cache/zoo, not committed)."""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CAMSERVE_CACHE", ROOT / ".cache")) / "zoo"
sys.path.insert(0, str(ROOT / "scripts"))

from export_default_model import efficientnet_lite0  # noqa: E402
from export_default_model import mobilenet_v2 as real_mobilenet_v2  # noqa: E402


def random_model(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None).eval()
    return build


class TinyNet(torch.nn.Module):
    """A small CNN whose `view(1, -1)`-style flatten bakes the batch when exported with a fixed batch."""

    def __init__(self, classes: int = 10):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AvgPool2d(2), torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.Tanh())
        self.fc = torch.nn.Linear(16 * 8 * 8, classes)
        with torch.no_grad():  # non-trivial BN statistics so its folding matters
            self.features[1].running_mean.uniform_(-0.5, 0.5)
            self.features[1].running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.view(x.size(0), -1))


class NHWCNet(torch.nn.Module):
    """A small classifier taking channels-last images (as TensorFlow exports do)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 5)
        self.eval()

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x.permute(0, 3, 1, 2))).mean((2, 3)))

    def export(self, path: Path, size: int = 16) -> Path:
        torch.onnx.export(self, torch.zeros(1, size, size, 3), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
        return path


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], torch.nn.Module]
    target: str                 # dotted module path pytorch-grad-cam hooks (its output is the CAM layer)
    size: int = 224
    dynamo: bool = False
    fixed_batch: bool = False
    opset: int = 17
    onnx_target: str | None = None   # module scope in the ONNX graph when export folded the target away


    def torch_model(self) -> torch.nn.Module:
        return self.build()

    def module(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.get_submodule(self.target)

    def onnx_path(self) -> Path:
        path = CACHE / f"{self.name}.onnx"
        if not path.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.onnx")
            export(self.torch_model(), tmp, self.size, self.dynamo, self.fixed_batch, self.opset)
            tmp.replace(path)
        return path

    @functools.lru_cache(maxsize=None)  # noqa: B019 -- zoo models are module constants, alive all session
    def onnx_layer(self) -> str:
        model = onnx.load(str(self.onnx_path()))
        if self.dynamo:  # dynamo names nodes after aten ops, not module scopes: the default layer is the one
            from camserve.graph_tools import inspect
            return inspect(model).default_layer
        return layer_for_module(model, self.onnx_target or self.target)


def export(model: torch.nn.Module, path: Path, size: int, dynamo: bool, fixed_batch: bool, opset: int) -> None:
    x = torch.zeros(1, 3, size, size)
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    if dynamo:
        torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("N", min=1, max=1024)},), **kwargs)
    else:
        axes = None if fixed_batch else {"input": {0: "N"}, "output": {0: "N"}}
        torch.onnx.export(model, x, str(path), dynamo=False, dynamic_axes=axes, **kwargs)


def layer_for_module(model: onnx.ModelProto, dotted: str) -> str:
    """The ONNX tensor a torch module outputs, from the TorchScript exporter's `/a/a.b/...` node scopes."""
    parts = dotted.split(".")
    # numeric children of containers are scoped "parent.index", named ones by their own name; a Sequential's
    # children sit inside the Sequential's own scope, a ModuleList's (never called itself) do not
    names = [f"{parts[k - 1]}.{p}" if p.isdigit() and k else p for k, p in enumerate(parts)]
    listed = [n for k, n in enumerate(names) if not (k + 1 < len(parts) and parts[k + 1].isdigit())]
    scopes = ["/" + "/".join(names) + "/", "/" + "/".join(listed) + "/"]
    for scope in scopes:
        nodes = [n for n in model.graph.node if n.name.startswith(scope)]
        if nodes:
            return nodes[-1].output[0]
    raise KeyError(f"no ONNX node in scope {' or '.join(dict.fromkeys(scopes))}")


ZOO = {m.name: m for m in [
    ZooModel("resnet18", random_model("resnet18"), "layer4.1"),
    ZooModel("resnet50", random_model("resnet50"), "layer4.2"),
    ZooModel("vgg16", random_model("vgg16"), "features.30"),
    ZooModel("mobilenet_v2", random_model("mobilenet_v2"), "features.18"),
    ZooModel("efficientnet_b0", random_model("efficientnet_b0"), "features.8"),
    # not features.norm5: torchvision's in-place F.relu after it rewrites the activations
    # pytorch-grad-cam stored (its gradients stay pre-ReLU), a peer quirk no ONNX tensor reproduces
    ZooModel("densenet121", random_model("densenet121"), "features.denseblock4"),
    ZooModel("real_mobilenet_v2", real_mobilenet_v2, "features.18"),
    # BatchNorm _bn1 is folded into _conv_head's Conv on export: same tensor
    ZooModel("real_efficientnet_lite0", efficientnet_lite0, "_bn1", onnx_target="_conv_head"),
    ZooModel("resnet18_dynamo", random_model("resnet18"), "layer4.1", dynamo=True, opset=18),
    ZooModel("resnet18_batch1", random_model("resnet18"), "layer4.1", fixed_batch=True),
    ZooModel("resnet18_opset11", random_model("resnet18"), "layer4.1", opset=11),
    ZooModel("tinynet_batch1", TinyNet, "features.8", size=32, fixed_batch=True),
    # small inputs, for the peers' perturbation methods (hundreds of full forwards per map)
    ZooModel("resnet18_96", random_model("resnet18"), "layer4.1", size=96),
    ZooModel("real_mobilenet_v2_96", real_mobilenet_v2, "features.18", size=96),
]}


def photos(size: int = 224, names=("chelsea.png", "coffee.png")) -> np.ndarray:
    """Real photos from scikit-image, preprocessed like ImageNet models expect: (N, 3, size, size)."""
    import skimage

    from camserve.service.images import Preprocessing, read, to_tensor
    folder = Path(skimage.__file__).parent / "data"
    spec = Preprocessing(resize=round(size * 256 / 224), crop=size)
    return np.concatenate([to_tensor(read(folder / name), spec) for name in names])


# -- a YOLOv8-style detector: three scales, box and class branches, DFL decoding, sigmoid scores -------------------
class TinyYolo(torch.nn.Module):
    """The head layout of Ultralytics' YOLOv8 export (N x (4+K) x A, boxes decoded through a DFL in the graph),
    on a small backbone: strides 8, 16, 32."""

    def __init__(self, classes: int = 3, bins: int = 4, size: int = 64):
        super().__init__()
        torch.manual_seed(0)
        c = lambda i, o, s: torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, s, 1), torch.nn.SiLU())  # noqa: E731
        self.stem = torch.nn.Sequential(c(3, 8, 2), c(8, 8, 2), c(8, 16, 2))
        self.down4, self.down5 = c(16, 16, 2), c(16, 16, 2)
        self.box = torch.nn.ModuleList(torch.nn.Sequential(c(16, 16, 1), torch.nn.Conv2d(16, 4 * bins, 1))
                                       for _ in range(3))
        self.cls = torch.nn.ModuleList(torch.nn.Sequential(c(16, 16, 1), torch.nn.Conv2d(16, classes, 1))
                                       for _ in range(3))
        self.bins, self.classes = bins, classes
        anchors, strides = [], []
        for stride in (8, 16, 32):
            n = size // stride
            ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
            anchors.append(torch.stack([xs.ravel(), ys.ravel()], 0))
            strides.append(torch.full((n * n,), float(stride)))
        self.register_buffer("anchors", torch.cat(anchors, 1))
        self.register_buffer("strides", torch.cat(strides))
        self.eval()

    def forward(self, x):
        p3 = self.stem(x)
        p4 = self.down4(p3)
        p5 = self.down5(p4)
        outs = [torch.cat([self.box[i](p), self.cls[i](p)], 1).flatten(2) for i, p in enumerate((p3, p4, p5))]
        raw = torch.cat(outs, 2)
        box, cls = raw.split([4 * self.bins, self.classes], 1)
        n, _, a = box.shape
        dist = (box.view(n, 4, self.bins, a).softmax(2) * torch.arange(self.bins, dtype=x.dtype).view(1, 1, -1, 1))
        lt, rb = dist.sum(2).chunk(2, 1)
        x0y0, x1y1 = self.anchors - lt, self.anchors + rb
        xywh = torch.cat([(x0y0 + x1y1) / 2, x1y1 - x0y0], 1) * self.strides
        return torch.cat([xywh, cls.sigmoid()], 1)


class TinySSD(torch.nn.Module):
    """An SSD/RetinaNet-style head: two scales (strides 8 and 16 at 64 px) with 2 priors per cell, box offsets
    decoded against the priors in the graph, and two outputs: boxes (N, A, 4) as x0, y0, x1, y1 (input pixels, or
    normalised to 0-1) and softmax class scores (N, A, K)."""

    def __init__(self, classes: int = 3, size: int = 64, normalized: bool = False):
        super().__init__()
        torch.manual_seed(0)
        c = lambda i, o, s: torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, s, 1), torch.nn.ReLU())  # noqa: E731
        self.stem = torch.nn.Sequential(c(3, 8, 2), c(8, 8, 2), c(8, 16, 2))
        self.extra = c(16, 16, 2)
        self.loc = torch.nn.ModuleList(torch.nn.Conv2d(16, 2 * 4, 3, 1, 1) for _ in range(2))
        self.conf = torch.nn.ModuleList(torch.nn.Conv2d(16, 2 * classes, 3, 1, 1) for _ in range(2))
        self.classes, self.scale = classes, 1.0 / size if normalized else 1.0
        priors = []
        for stride in (8, 16):
            n = size // stride
            ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
            for side in (1.5, 3.0):   # two priors per cell, cell-major like SSD's
                priors.append(torch.stack([xs, ys, torch.full_like(xs, side), torch.full_like(xs, side)], -1)
                              * stride)
        cells = [torch.stack(priors[2 * k:2 * k + 2], 2).reshape(-1, 4) for k in range(2)]
        self.register_buffer("priors", torch.cat(cells, 0))
        self.eval()

    def forward(self, x):
        f1 = self.stem(x)
        f2 = self.extra(f1)
        n = x.shape[0]
        loc = torch.cat([self.loc[i](f).permute(0, 2, 3, 1).reshape(n, -1, 4) for i, f in enumerate((f1, f2))], 1)
        conf = torch.cat([self.conf[i](f).permute(0, 2, 3, 1).reshape(n, -1, self.classes)
                          for i, f in enumerate((f1, f2))], 1)
        centre = self.priors[:, :2] + 0.1 * loc[..., :2] * self.priors[:, 2:]
        side = self.priors[:, 2:] * torch.exp(0.2 * loc[..., 2:])
        boxes = torch.cat([centre - side / 2, centre + side / 2], -1) * self.scale
        return boxes, conf.softmax(-1)


class TinySegmenter(torch.nn.Module):
    """N x K x H x W class scores at the input's size: a stride-8 encoder, a 1x1 classifier, bilinear upsampling
    (torchvision's FCN layout, small)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        c = lambda i, o, s: torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, s, 1), torch.nn.ReLU())  # noqa: E731
        self.encoder = torch.nn.Sequential(c(3, 8, 2), c(8, 16, 2), c(16, 16, 2))
        self.classifier = torch.nn.Conv2d(16, classes, 1)
        self.eval()

    def forward(self, x):
        return torch.nn.functional.interpolate(self.classifier(self.encoder(x)), size=x.shape[2:], mode="bilinear",
                                               align_corners=False)


class TinyEmbedder(torch.nn.Module):
    """An L2-normalised N x D embedding of pooled conv features (a retrieval model's layout, small)."""

    def __init__(self, dims: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU())
        self.project = torch.nn.Linear(16, dims)
        self.eval()

    def forward(self, x):
        return torch.nn.functional.normalize(self.project(self.features(x).mean((2, 3))), dim=1)
