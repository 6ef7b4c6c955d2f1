"""Benchmark data: synthetic composite scenes and user folders with boxes.json."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from camserve.service import BadRequest, Explainer, images
from camserve.service.data import synthetic
from camserve.service.data.folder import folder_scenes
from camserve.service.data.synthetic import KINDS, OBJECTS, crop, objects, synthetic_scenes
from camserve.service.model_config import load_config

ROOT = Path(__file__).resolve().parents[2]


def distinct_labels():
    """A fake label_fn: each object its own class (101, 102, ...), counting its calls."""
    def label_fn(image):
        label_fn.calls += 1
        return 100 + label_fn.calls
    label_fn.calls = 0
    return label_fn


def test_same_seed_same_scenes_other_seed_other_scenes():
    first, again = synthetic_scenes(6, distinct_labels(), seed=3), synthetic_scenes(6, distinct_labels(), seed=3)
    other = synthetic_scenes(6, distinct_labels(), seed=4)
    assert [s.name for s in first] == [s.name for s in again]
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image) and a.boxes == b.boxes and a.objects == b.objects
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other))
    assert [s.boxes for s in first] != [s.boxes for s in other]


def test_kinds_cycle_and_boxes_have_the_kind_s_size():
    size = 224
    scenes = synthetic_scenes(24, distinct_labels(), size=size)
    assert [s.kind for s in scenes[:3]] == ["large", "small", "pair"]
    assert {s.kind for s in scenes} == set(KINDS)
    assert {s.objects[0]["name"] for s in scenes} == set(OBJECTS)
    for scene in scenes:
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        assert scene.name.startswith("scene-") and scene.name.endswith(scene.kind)
        assert len(scene.objects) == (2 if scene.kind == "pair" else 1)
        assert scene.boxes == [scene.objects[0]["box"]] and scene.label == scene.objects[0]["label"]
        low, high = KINDS[scene.kind]
        for placed in scene.objects:
            x0, y0, x1, y1 = placed["box"]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert low - 1 / size <= max(x1 - x0, y1 - y0) / size <= high + 1 / size


def test_the_object_is_really_in_its_box(monkeypatch):
    catalogue = objects(distinct_labels())
    scenes = synthetic_scenes(6, distinct_labels(), size=160, seed=5)
    # the same draws with nothing pasted: the bare textures
    monkeypatch.setattr(synthetic, "_paste", lambda scene, image, x, y, h, w: (x, y, x + w, y + h))
    for scene, bare in zip(scenes, synthetic_scenes(6, distinct_labels(), size=160, seed=5)):
        outside = np.ones(scene.image.shape[:2], bool)
        for placed in scene.objects:
            x0, y0, x1, y1 = placed["box"]
            patch = scene.image[y0:y1, x0:x1].astype(int)
            expected = cv2.resize(catalogue[placed["name"]][0], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
            assert np.abs(patch - expected).mean() < 1
            assert np.abs(patch - bare.image[y0:y1, x0:x1]).mean() > 20
            outside[y0:y1, x0:x1] = False
        assert np.array_equal(scene.image[outside], bare.image[outside])


def test_pairs_do_not_overlap_and_differ_in_label():
    for scene in [s for s in synthetic_scenes(30, distinct_labels(), seed=1) if s.kind == "pair"]:
        (a0, b0, a1, b1), (c0, d0, c1, d1) = (o["box"] for o in scene.objects)
        assert a1 <= c0 or c1 <= a0 or b1 <= d0 or d1 <= b0
        assert scene.objects[0]["label"] != scene.objects[1]["label"]


def test_labels_come_from_label_fn_once_per_object():
    label_fn = distinct_labels()
    scenes = synthetic_scenes(12, label_fn)
    assert label_fn.calls == len(OBJECTS)
    catalogue = objects(distinct_labels())
    assert all(o["label"] == catalogue[o["name"]][1] for s in scenes for o in s.objects)

    # cat and espresso share a class: never paired; every object one class: no pairs at all
    shared = {crop("cat").shape, crop("espresso").shape}
    scenes = synthetic_scenes(30, lambda image: 1 if image.shape in shared else 2 + image.shape[0])
    assert not any({o["name"] for o in s.objects} == {"cat", "espresso"} for s in scenes)
    with pytest.raises(ValueError, match="same class"):
        synthetic_scenes(3, lambda image: 7)


def test_other_scene_sizes():
    for size in (96, 600):   # 600: larger than the 512-pixel textures
        scene = synthetic_scenes(1, distinct_labels(), size=size)[0]
        assert scene.image.shape == (size, size, 3)


def test_targets_are_the_bundled_mobilenet_s_top1_on_the_object():
    config = load_config(ROOT / "models" / "mobilenet_v2")
    explainer = Explainer(config.path, threads=2)

    def label_fn(image):
        return int(explainer.predict(images.to_tensor(image, config.preprocessing)).argmax())

    labels = {name: label for name, (_, label) in objects(label_fn).items()}
    assert {name: config.label(label) for name, label in labels.items()} == {
        "cat": "Egyptian cat", "espresso": "espresso", "motorcycle": "moped", "tripod": "tripod"}
    for scene in synthetic_scenes(6, label_fn):
        assert scene.label == labels[scene.objects[0]["name"]]


# -- folders --------------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    """wide.png 300x400 with a white block, tall.png 500x250 (no label), an unlisted extra.png."""
    wide = np.zeros((300, 400, 3), np.uint8)
    wide[150:200, 204:300] = 255
    images.write_png(tmp_path / "wide.png", wide)
    tall = np.full((500, 250, 3), 40, np.uint8)
    tall[200:400, 100:200] = (200, 30, 30)
    images.write_png(tmp_path / "tall.png", tall)
    images.write_png(tmp_path / "extra.png", wide)
    boxes = {"wide.png": {"boxes": [[60, 30, 240, 270], [0, 0, 50, 300], [204, 150, 300, 200]], "label": 5},
             "tall.png": {"boxes": [[100, 200, 200, 400]]}}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    return tmp_path


def test_folder_boxes_follow_resize_and_centre_crop(folder):
    spec = images.Preprocessing(resize=256, crop=224)
    seen = []
    scenes = folder_scenes(folder, spec, lambda image: seen.append(image.shape) or 9)
    assert [s.name for s in scenes] == ["wide", "tall"] and {s.kind for s in scenes} == {"folder"}
    wide, tall = scenes
    # wide 300x400 -> 256x341 (x * 341/400, y * 256/300), crop left 58, top 16; [0, 0, 50, 300] is cut away
    assert wide.boxes == [(0, 10, 147, 214), (116, 112, 198, 155)] and wide.label == 5
    # tall 500x250 -> 512x256 (x, y * 1.024), crop left 16, top 144; y1 410 - 144 clips to 224
    assert tall.boxes == [(86, 61, 189, 224)] and tall.label == 9 and seen == [(224, 224, 3)]
    assert np.array_equal(tall.image, images.fit(images.read(folder / "tall.png"), spec))
    assert [o["box"] for o in wide.objects] == wide.boxes
    # the mapped boxes sit on the drawn blocks, to a pixel
    for scene, box, colour in ((wide, wide.boxes[1], (255, 255, 255)), (tall, tall.boxes[0], (200, 30, 30))):
        ys, xs = np.nonzero(np.abs(scene.image.astype(int) - colour).max(-1) < 40)
        x0, y0, x1, y1 = box
        assert max(abs(xs.min() - x0), abs(ys.min() - y0), abs(xs.max() + 1 - x1), abs(ys.max() + 1 - y1)) <= 1


def test_folder_images_without_boxes_are_kept_for_the_other_metrics(folder):
    listing = {"wide.png": {"label": 3}, "tall.png": {"boxes": [[0, 0, 250, 10]]}}   # tall's box: cropped away
    (folder / "boxes.json").write_text(json.dumps(listing))
    scenes = folder_scenes(folder, images.Preprocessing(resize=256, crop=224), lambda image: 0)
    assert [(s.name, s.boxes) for s in scenes] == [("wide", []), ("tall", [])]


def test_folder_classes_per_box_stay_with_their_boxes_and_letterbox(folder):
    """A detector's boxes.json: a class per box, kept beside its box when a box is cut away; a letterbox maps
    boxes with its padding (wide 400x300 -> 320x240, 40 px of padding above)."""
    listing = {"wide.png": {"boxes": [[60, 30, 240, 270], [0, 0, 50, 300], [204, 150, 300, 200]],
                            "classes": [4, 7, 2]}}
    (folder / "boxes.json").write_text(json.dumps(listing))
    cropped = folder_scenes(folder, images.Preprocessing(resize=256, crop=224), lambda image: -1)[0]
    assert [(o["box"], o["label"]) for o in cropped.objects] == [((0, 10, 147, 214), 4), ((116, 112, 198, 155), 2)]
    spec = images.Preprocessing(letterbox=320, resize=None, crop=None)
    boxed = folder_scenes(folder, spec, lambda image: -1)[0]
    assert boxed.image.shape == (320, 320, 3) and boxed.label == -1
    assert boxed.boxes == [(48, 64, 192, 256), (0, 40, 40, 280), (163, 160, 240, 200)]
    assert [o["label"] for o in boxed.objects] == [4, 7, 2]


def test_folder_without_crop_or_resize(folder):
    spec = images.Preprocessing(resize=None, crop=None)
    scenes = folder_scenes(folder, spec, lambda image: 0, limit=1)
    assert scenes[0].boxes == [(60, 30, 240, 270), (0, 0, 50, 300), (204, 150, 300, 200)]
    assert scenes[0].image.shape == (300, 400, 3) and len(scenes) == 1
    with pytest.raises(BadRequest, match="set a crop"):   # 400x300 and 250x500: no one model input
        folder_scenes(folder, spec, lambda image: 0)


def test_folder_scene_names_stay_apart(folder):
    images.write_png(folder / "wide.jpg", np.zeros((300, 400, 3), np.uint8))   # PNG bytes: decoded by content
    (folder / "sub").mkdir()
    images.write_png(folder / "sub" / "wide.png", np.zeros((300, 400, 3), np.uint8))
    listing = {"wide.png": {}, "sub/wide.png": {}, "wide.jpg": {}}
    (folder / "boxes.json").write_text(json.dumps(listing))
    scenes = folder_scenes(folder, images.Preprocessing(), lambda image: 0)
    assert [s.name for s in scenes] == ["wide", "sub_wide", "wide-2"]   # overlays are written by name


@pytest.mark.parametrize("boxes_json, match", [
    (None, "cannot read the boxes file"),
    ("{not json", "not valid JSON"),
    ("[]", "must map image file names"),
    ({"missing.png": {"boxes": [[0, 0, 5, 5]]}}, "no such image"),
    ({"wide.png": [[0, 0, 5, 5]]}, "expected"),
    ({"wide.png": {"boxes": {"x0": 0}}}, "boxes must be a list"),
    ({"wide.png": {"boxes": [[0, 0, 5]]}}, "malformed box"),
    ({"wide.png": {"boxes": [[10, 0, 5, 5]]}}, "malformed box"),
    ({"wide.png": {"boxes": [["a", 0, 5, 5]]}}, "malformed box"),
    ({"wide.png": {"boxes": [[0, 0, 5, 5]], "label": "cat"}}, "label must be a class id"),
    ({"broken.png": {"boxes": [[0, 0, 5, 5]]}}, "broken.png.*not a decodable image"),
    ({"wide.png": {"boxes": [[0, 0, 5, 5]], "classes": [1, 2]}}, "one class id .* per box"),
    ({"wide.png": {"boxes": [[0, 0, 5, 5]], "classes": [-1]}}, "one class id .* per box"),
])
def test_folder_errors_say_what_is_wrong(folder, boxes_json, match):
    (folder / "broken.png").write_bytes(b"not a png")
    listing = folder / "boxes.json"
    if boxes_json is None:
        listing.unlink()
    else:
        listing.write_text(boxes_json if isinstance(boxes_json, str) else json.dumps(boxes_json))
    with pytest.raises(BadRequest, match=match):
        folder_scenes(folder, images.Preprocessing(), lambda image: 0)


def test_missing_folder_is_a_bad_request(tmp_path):
    with pytest.raises(BadRequest, match="does not exist") as error:
        folder_scenes(tmp_path / "nowhere", images.Preprocessing(), lambda image: 0)
    assert error.value.field == "directory"


# -- the benchmark: candidates kept where the model is right ------------------------------------------------

from camserve.service.data.benchmark import BENCH_KINDS, BENCH_OBJECTS, benchmark_scenes, candidate  # noqa: E402

LABELS = {name: 10 + k for k, name in enumerate(BENCH_OBJECTS)}


def test_candidates_are_a_function_of_seed_and_index():
    again = candidate(7, LABELS)
    assert np.array_equal(candidate(7, LABELS).image, again.image) and candidate(7, LABELS).boxes == again.boxes
    assert not np.array_equal(candidate(7, LABELS, seed=1).image, again.image)
    assert not np.array_equal(candidate(8, LABELS).image, again.image)


def test_candidates_cover_every_kind_and_object_with_boxes_inside():
    scenes = [candidate(i, LABELS, size=160) for i in range(4 * len(BENCH_OBJECTS))]
    assert {s.kind for s in scenes} == set(BENCH_KINDS)
    assert {s.objects[0]["name"] for s in scenes} == set(BENCH_OBJECTS)
    for s in scenes:
        assert s.image.shape == (160, 160, 3) and s.image.dtype == np.uint8
        assert s.label == LABELS[s.objects[0]["name"]]
        for x0, y0, x1, y1 in (o["box"] for o in s.objects):
            assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160
        low, high = BENCH_KINDS[s.kind]
        x0, y0, x1, y1 = s.boxes[0]
        if s.kind in ("large", "medium"):   # the object's longer side is its drawn share of the scene
            assert low * 160 - 1 <= max(x1 - x0, y1 - y0) <= high * 160 + 1
        if s.kind == "pair":
            (a, b) = (o["box"] for o in s.objects)
            assert s.objects[0]["label"] != s.objects[1]["label"]
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]   # side by side, not overlapping


def test_a_photo_candidate_holds_its_object_where_its_box_says():
    """Where the crop holds the whole object (its box keeps the object's aspect), the box's pixels are the
    object's pixels of the photo, resized."""
    checked = 0
    for s in (candidate(i, LABELS) for i in range(96)):
        if s.kind != "photo":
            continue
        file, (x0, y0, x1, y1) = BENCH_OBJECTS[s.objects[0]["name"]]
        bx0, by0, bx1, by1 = s.boxes[0]
        if abs((bx1 - bx0) / (by1 - by0) - (x1 - x0) / (y1 - y0)) > 0.02:
            continue   # clipped by the crop's edge
        expected = cv2.resize(synthetic._read(file)[y0:y1, x0:x1], (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
        assert np.abs(s.image[by0:by1, bx0:bx1].astype(float) - expected).mean() < 12
        checked += 1
    assert checked >= 3


def test_benchmark_keeps_the_accepted_candidates_in_order():
    seen = []

    def accept(images, labels):
        seen.append(len(images))
        return np.arange(len(images)) % 3 == 0            # every third candidate of a batch

    scenes, drawn = benchmark_scenes(5, lambda crop: 1 + crop.shape[0], accept, batch=6)
    assert len(scenes) == 5 and [int(s.name.split("-")[1]) for s in scenes] == [0, 3, 6, 9, 12]
    assert drawn == 13 and seen == [6, 6, 6]
    fewer, _ = benchmark_scenes(2, lambda crop: 1 + crop.shape[0], accept, batch=6)
    assert [s.name for s in fewer] == [s.name for s in scenes[:2]]   # a smaller run is a prefix of a larger one
    with pytest.raises(ValueError, match="only 0 of 40 candidate scenes"):
        benchmark_scenes(4, lambda crop: 1 + crop.shape[0], lambda images, labels: np.zeros(len(images), bool))
