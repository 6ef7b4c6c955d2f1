"""Detectors, segmenters and embedders over gRPC: targets.detections, box / detection-index / region / similarity
targets, replies that list each map's detection, overlays with boxes; each equal to the in-process Explainer, and
bad targets refused with INVALID_ARGUMENT and the field at fault."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import torch

from camserve.service import images
from camserve.service.client import Client
from camserve.service.explainer import Explainer
from camserve.service.model_config import load_config
from camserve.targets import Box, Region, Similarity
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc
from serving import serving, violation
from zoo import TinyEmbedder, TinySegmenter, TinyYolo

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "chelsea.png"
SIZE = 64
PLAIN = {"resize": SIZE, "crop": SIZE, "mean": [0, 0, 0], "std": [1, 1, 1]}
PORT: list[int] = []   # the module's server
MODELS = {"yolo": (TinyYolo, {"kind": "detector", "labels": ["cat", "dog", "bird"]}),
          "seg": (TinySegmenter, {"kind": "segmenter"}),
          "embed": (TinyEmbedder, {"kind": "embedding"})}


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kinds")
    for name, (cls, config) in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        torch.onnx.export(cls(), torch.zeros(1, 3, SIZE, SIZE), str(root / name / "1" / "model.onnx"), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"])
        (root / name / "config.json").write_text(json.dumps({"name": name, "preprocessing": PLAIN, **config}))
    shutil.copytree(ROOT / "models" / "mobilenet_v2", root / "mobilenet_v2")
    return root


@pytest.fixture(scope="module")
def stub(repository):
    with serving(repository) as (process, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            PORT[:] = [port]
            yield explain_pb2_grpc.ExplainServiceStub(channel)


def local(repository: Path, name: str) -> tuple[Explainer, np.ndarray, np.ndarray]:
    config = load_config(repository / name)
    fitted = images.fit(images.read(PHOTO), config.preprocessing)
    return Explainer(config.path, threads=2), images.normalise(fitted, config.preprocessing), fitted


def served(item) -> np.ndarray:
    return np.frombuffer(item.map.data, "<f4").reshape(item.map.shape)


def photo_request(model: str, **fields) -> pb.ExplainRequest:
    return pb.ExplainRequest(model=model, images=[pb.Image(encoded=PHOTO.read_bytes())], **fields)


def test_the_model_description_says_kind_and_head(stub):
    yolo = stub.GetModel(pb.GetModelRequest(model="yolo"))
    assert (yolo.kind, yolo.head, yolo.num_classes, list(yolo.output_shape)) == ("detector", "yolov8", 3,
                                                                                ["1", "7", "84"])
    assert stub.GetModel(pb.GetModelRequest(model="seg")).kind == "segmenter"
    assert stub.GetModel(pb.GetModelRequest(model="embed")).kind == "embedding"
    assert stub.GetModel(pb.GetModelRequest(model="mobilenet_v2")).kind == "classifier"


def test_the_k_best_detections_each_get_a_map_and_their_detection(stub, repository):
    explainer, x, _ = local(repository, "yolo")
    found = explainer.detect(x, score=0.05)[0][:3]
    expected = explainer.explain_full(x, "gradcam", targets=[found]).maps[0]
    reply = stub.Explain(photo_request("yolo", targets=pb.Targets(detections=3), detect=pb.DetectOptions(score=0.05),
                                       output=pb.OUTPUT_KIND_BOTH))
    items = reply.images[0].explanations
    assert len(items) == 3
    for item, detection, cam in zip(items, found, expected):
        d = item.detection
        assert (d.class_id, d.label) == (detection.class_id, ["cat", "dog", "bird"][detection.class_id])
        np.testing.assert_allclose((d.x0, d.y0, d.x1, d.y1), detection.box, atol=1e-4)
        assert d.score == pytest.approx(detection.score, abs=1e-6) and item.score == d.score
        np.testing.assert_allclose(served(item), cam, atol=1e-5)
        assert len(d.original_box) == 4 and item.overlay_png.startswith(b"\x89PNG")
    # the overlay draws the box: its white edge sits where the detection's box does
    overlay = cv2.cvtColor(cv2.imdecode(np.frombuffer(items[0].overlay_png, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    x0, y0, x1, y1 = (int(round(min(max(v, 0), SIZE - 1))) for v in found[0].box)
    edge = overlay[min(y1, SIZE - 1), x0:x1 + 1] if y1 < SIZE else overlay[y0:y1 + 1, min(x1, SIZE - 1)]
    assert (edge == 255).all(axis=-1).mean() > 0.8


def test_original_size_maps_and_boxes_come_back_on_the_photo(stub, repository):
    reply = stub.Explain(photo_request("yolo", targets=pb.Targets(detections=1), detect=pb.DetectOptions(score=0.05),
                                       size=pb.OUTPUT_SIZE_ORIGINAL))
    item = reply.images[0].explanations[0]
    h, w = images.read(PHOTO).shape[:2]
    assert served(item).shape == (h, w)
    d = item.detection
    config = load_config(repository / "yolo")
    nh, nw, top, left, _, _ = images.geometry((h, w), config.preprocessing)
    expected = [min(max((v + left) * w / nw, 0), w) for v in (d.x0, d.x1)], \
        [min(max((v + top) * h / nh, 0), h) for v in (d.y0, d.y1)]
    np.testing.assert_allclose(d.original_box, [expected[0][0], expected[1][0], expected[0][1], expected[1][1]],
                               rtol=1e-5)


def test_box_and_detection_index_targets(stub, repository):
    explainer, x, _ = local(repository, "yolo")
    found = explainer.detect(x, score=0.05)[0]
    box = tuple(v + 1 for v in found[1].box)
    expected = explainer.explain_full(x, "gradcam", targets=[[Box(box, found[1].class_id), found[0]]]).maps[0]
    request = Client.request([PHOTO], "gradcam", "yolo", {"objects": [[Box(box, found[1].class_id), 0]]},
                             detect={"score": 0.05})
    items = stub.Explain(request).images[0].explanations
    assert items[1].detection.class_id == found[0].class_id
    np.testing.assert_allclose([served(i) for i in items], expected, atol=1e-5)


def test_a_region_of_a_segmenter_and_a_similarity_of_an_embedding(stub, repository):
    explainer, x, _ = local(repository, "seg")
    for target in (Region(2), Region(1, np.eye(SIZE, dtype=np.float32))):
        expected = explainer.explain(x, "gradcam", targets=[target])
        reply = stub.Explain(Client.request([PHOTO], "gradcam", "seg", [target]))
        item = reply.images[0].explanations[0]
        assert item.class_id == target.class_id and not item.HasField("detection")
        np.testing.assert_allclose(served(item), expected[0], atol=1e-5)
    default = stub.Explain(photo_request("seg"))   # the most predicted class
    assert default.images[0].explanations[0].class_id == int(np.bincount(explainer.predict(x)[0].argmax(0).ravel())
                                                             .argmax())
    explainer, x, _ = local(repository, "embed")
    vector = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    expected = explainer.explain(x, "gradcam", targets=[Similarity(vector)])
    reply = stub.Explain(Client.request([PHOTO], "gradcam", "embed", [Similarity(vector)]))
    np.testing.assert_allclose(served(reply.images[0].explanations[0]), expected[0], atol=1e-5)


BOX = pb.Target(box=pb.BoxTarget(x0=200, y0=200, x1=260, y1=260))


@pytest.mark.parametrize("model, fields, field", [
    ("yolo", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[BOX])]))), "targets"),
    ("yolo", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[pb.Target(
        box=pb.BoxTarget(x0=0, y0=0, x1=30, y1=30, class_id=7))])]))), "targets"),
    ("yolo", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[pb.Target(
        detection=50)])]))), "targets.objects.images[0]"),
    ("yolo", dict(targets=pb.Targets(class_ids=pb.ClassIds(ids=[1]))), "targets.class_ids"),
    ("yolo", dict(targets=pb.Targets(detections=10_000)), "targets.detections"),
    ("yolo", dict(targets=pb.Targets(detections=3), detect=pb.DetectOptions(score=0.99)), "targets.detections"),
    ("yolo", dict(method="cam"), "method"),
    ("mobilenet_v2", dict(method="drise"), "method"),
    ("mobilenet_v2", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[pb.Target(
        region=pb.RegionTarget(class_id=1))])]))), "targets"),
    ("seg", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[pb.Target(
        region=pb.RegionTarget(class_id=1, mask=pb.Tensor(shape=[3, 3], dtype=pb.DATA_TYPE_FLOAT32,
                                                          data=b"\0" * 36)))])]))), "targets"),
    ("seg", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[pb.Target(
        region=pb.RegionTarget(class_id=1, mask=pb.Tensor(shape=[3, 3], dtype=pb.DATA_TYPE_FLOAT32,
                                                          data=b"\0")))])]))),
     "targets.objects.images[0].targets[0].region.mask.data"),
    ("embed", dict(), "targets"),
    ("embed", dict(targets=pb.Targets(objects=pb.TargetLists(images=[pb.TargetList(targets=[pb.Target(
        similarity=pb.SimilarityTarget(vector=[1.0, 2.0]))])]))), "targets"),
])
def test_bad_targets_are_invalid_argument_and_the_server_keeps_serving(stub, model, fields, field):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(photo_request(model, **fields), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert violation(caught.value) == field, caught.value.details()
    assert stub.Explain(photo_request("yolo", targets=pb.Targets(detections=1), detect=pb.DetectOptions(score=0.05)))


def test_the_cli_explains_detections_and_box_targets_here_and_on_the_server(stub, repository, tmp_path):
    import subprocess
    import sys

    explainer, x, _ = local(repository, "yolo")
    found = explainer.detect(x, score=0.05)[0][:2]
    expected = explainer.explain_full(x, "gradcam", targets=[found]).maps[0]
    box = ",".join(f"{v + 1:.2f}" for v in found[0].box)
    runs = {"local": [], "remote": ["--server", f"127.0.0.1:{PORT[0]}"]}
    for where, extra in runs.items():
        model = str(repository / "yolo") if where == "local" else "yolo"
        out = subprocess.run([sys.executable, "-m", "camserve", "explain", "--model", model, "--image", str(PHOTO),
                              "--detections", "2", "--score", "0.05", "--out", str(tmp_path / f"{where}.png"),
                              "--save-map", str(tmp_path / f"{where}.npy"), *extra],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("detection '") == 2, out.stdout
        np.testing.assert_allclose(np.load(tmp_path / f"{where}.npy"), expected, atol=1e-5)
        assert (tmp_path / f"{where}.png").read_bytes().startswith(b"\x89PNG")
        boxed = subprocess.run([sys.executable, "-m", "camserve", "explain", "--model", model, "--image", str(PHOTO),
                                "--target", f"box:{box}:{found[0].class_id}", "--target", "detection:1",
                                "--score", "0.05", "--save-map", str(tmp_path / f"{where}-box.npy"), *extra],
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert boxed.returncode == 0, boxed.stderr
        np.testing.assert_allclose(np.load(tmp_path / f"{where}-box.npy"), expected, atol=1e-5)
    bad = subprocess.run([sys.executable, "-m", "camserve", "explain", "--model", str(repository / "yolo"),
                          "--image", str(PHOTO), "--target", "box:1,2,3"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "box:X0,Y0,X1,Y1" in bad.stderr


def test_maps_renormalised_in_their_boxes_over_grpc(stub, repository):
    explainer, x, _ = local(repository, "yolo")
    found = explainer.detect(x, score=0.05)[0][:2]
    expected = explainer.explain(x, "eigencam", targets=[found], in_box=True)[0]
    reply = stub.Explain(photo_request("yolo", method="eigencam", targets=pb.Targets(detections=2),
                                       detect=pb.DetectOptions(score=0.05, in_box=True)))
    np.testing.assert_allclose([served(i) for i in reply.images[0].explanations], expected, atol=1e-6)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(photo_request("seg", detect=pb.DetectOptions(in_box=True)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violation(caught.value) == "in_box"


def test_evaluate_scores_each_ground_truth_box_of_a_detector(stub, repository):
    from camserve.service.data.folder import map_box
    from camserve.service.detection_metrics import evaluate_detections
    from camserve.service.detection_study import pairs

    explainer, x, _ = local(repository, "yolo")
    config = load_config(repository / "yolo")
    shape = images.read(PHOTO).shape[:2]
    found = explainer.detect(x, score=0.05)[0][:2]
    truths = [tuple(int(round(v)) for v in images.unfit_box(d.box, shape, config.preprocessing)) for d in found]
    request = pb.EvaluateRequest(model="yolo", methods=["gradcam", "eigencam"], detect=pb.DetectOptions(score=0.05),
                                 images=[pb.LabelledImage(image=pb.Image(encoded=PHOTO.read_bytes()), boxes=[
                                     pb.Box(x0=b[0], y0=b[1], x1=b[2], y1=b[3], class_id=d.class_id)
                                     for b, d in zip(truths, found)] + [pb.Box(x0=225, y0=150, x1=228, y1=153)])])
    reply = stub.Evaluate(request, timeout=120)
    assert [m.method for m in reply.methods] == ["gradcam", "eigencam"]
    for entry in reply.methods:
        metrics = {k: v.mean for k, v in entry.metrics.items()}
        assert metrics["matched"] == pytest.approx(200 / 3)   # the 3 x 3 box matches no detection
        # in-process: the ground truth mapped to the model's input, matched, and its detections scored
        boxes = [map_box(b, shape, config.preprocessing) for b in truths]
        matched, _ = pairs(explainer, x, boxes, [d.class_id for d in found], score=0.05)
        assert len(matched) == 2
        scores = evaluate_detections(explainer, x, entry.method, [d for d, _ in matched], boxes=boxes)
        for name in ("pointing_game", "energy_in_box", "box_share", "deletion_auc", "insertion_auc"):
            assert metrics[name] == pytest.approx(np.mean([getattr(s, name) for s in scores]), abs=1e-5), name
        np.testing.assert_allclose(entry.deletion_curve, np.mean([s.deletion_curve for s in scores], 0), atol=1e-5)
        assert len(entry.fractions) == len(entry.insertion_curve) == len(scores[0].insertion_curve)


@pytest.mark.parametrize("model, boxes, field", [
    ("yolo", [pb.Box(x0=10, y0=10, x1=40, y1=40, class_id=7)], "images[0].boxes[0].class_id"),
    ("yolo", [pb.Box(x0=10, y0=10, x1=40, y1=40)] * 300, "images"),
    ("seg", [], "model"),
])
def test_evaluate_refuses_what_it_cannot_score(stub, model, boxes, field):
    request = pb.EvaluateRequest(model=model, images=[pb.LabelledImage(image=pb.Image(encoded=PHOTO.read_bytes()),
                                                                       boxes=boxes)])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Evaluate(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert violation(caught.value) == field, caught.value.details()


def test_the_cli_evaluates_a_detector_on_a_folder_with_boxes(repository, tmp_path):
    import subprocess
    import sys

    explainer, x, _ = local(repository, "yolo")
    config = load_config(repository / "yolo")
    found = explainer.detect(x, score=0.05)[0][0]
    truth = [round(v) for v in images.unfit_box(found.box, images.read(PHOTO).shape[:2], config.preprocessing)]
    (tmp_path / "data").mkdir()
    shutil.copy(PHOTO, tmp_path / "data" / "cat.png")
    (tmp_path / "data" / "boxes.json").write_text(json.dumps(
        {"cat.png": {"boxes": [truth, [225, 150, 228, 153]], "classes": [found.class_id, 0]}}))
    out = subprocess.run([sys.executable, "-m", "camserve", "evaluate", "--model", str(repository / "yolo"),
                          "--dataset", str(tmp_path / "data"), "--methods", "gradcam,drise", "--option",
                          "drise.masks=64", "--score", "0.05", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["detections"] == 1 and list(results["methods"]) == ["gradcam", "drise"]
    for entry in results["methods"].values():
        assert entry["metrics"]["matched"]["mean"] == 50.0
        assert 0 <= entry["metrics"]["energy_in_box"]["mean"] <= 100
    assert (tmp_path / "out" / "gallery" / "drise" / "cat-0.png").exists()
    assert "energy_in_box" in (tmp_path / "out" / "index.html").read_text()
    refused = subprocess.run([sys.executable, "-m", "camserve", "evaluate", "--model", str(repository / "yolo"),
                              "--methods", "cam", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode != 0 and "'cam' scores classes only" in refused.stderr


def test_a_blank_map_says_why_over_grpc(stub, repository):
    explainer, x, _ = local(repository, "yolo")
    found = [d for d in explainer.detect(x, score=0.0)[0] if d.anchor < 64][0]   # a stride-8 detection
    coarse = explainer.info.scales[-1][2]                                        # the stride-32 branch
    expected = explainer.explain_full(x, "gradcam", targets=[[found]], layers=[coarse]).warnings
    assert "gradient is zero" in expected[0]
    box = tuple(float(v) for v in found.box)
    request = Client.request([PHOTO], "gradcam", "yolo", {"objects": [[Box(box, found.class_id, iou=0.99)]]},
                             layers=[coarse], detect={"score": 0.0})
    item = stub.Explain(request).images[0].explanations[0]
    assert item.detection.class_id == found.class_id and item.warning == expected[0]
    assert not served(item).any()
