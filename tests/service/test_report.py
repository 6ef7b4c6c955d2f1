"""The HTML report as headless Chromium renders it: metric table, SVG charts, gallery images and boxes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from camserve.service.report import write_report

METHODS = ["gradcam", "gradcam++", "scorecam"]
ORDER = ["average_drop", "increase_in_confidence", "deletion_auc", "insertion_auc", "seconds_per_image"]
BETTER = {"average_drop": "lower", "increase_in_confidence": "higher", "deletion_auc": "lower",
          "insertion_auc": "higher", "seconds_per_image": "lower"}
H, W = 60, 90  # not square, so a box drawn with x and y swapped would show


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((H, W, 3), value, np.uint8))


def _results(out: Path) -> dict:
    fractions = np.linspace(0, 1, 11).round(3).tolist()
    methods = {}
    for i, name in enumerate(METHODS):
        methods[name] = {
            "options": {"fusion": "mean"} if i else {}, "layers": ["/features/18"],
            "metrics": {"average_drop": {"mean": 10.0 + i, "low": 9.5 + i, "high": 11.25 + i},
                        "increase_in_confidence": {"mean": 20.0 + 5 * i, "low": 15.0, "high": 30.0},
                        "deletion_auc": {"mean": 0.2 + 0.1 * i, "low": 0.1, "high": 0.5},
                        "insertion_auc": {"mean": 0.6 - 0.1 * i, "low": 0.4, "high": 0.7},
                        "seconds_per_image": {"mean": 0.05 * (i + 1), "low": 0.04, "high": 0.2}},
            "curves": {"fractions": fractions, "deletion": [0.9 * (1 - f) ** (i + 1) for f in fractions],
                       "insertion": [0.05 + 0.85 * f ** (i + 1) for f in fractions]},
        }
        if i < 2:  # the sanity chart shows only the methods that have a cascade
            methods[name]["sanity"] = [{"stage": s, "layer": f"/classifier/{s}", "spearman": 0.9 - 0.4 * s + 0.1 * i,
                                        "spearman_abs": 0.95} for s in (1, 2, 3)]
    images, gallery = [], {name: [] for name in METHODS}
    for k in range(4):
        name = f"scene-{k:03d}-{'large' if k % 2 else 'small'}"
        _png(out / "images" / f"{name}.png", 40 * k)
        images.append({"name": name, "kind": "large" if k % 2 else "small", "label": 281, "label_name": "tabby",
                       "boxes": [[10, 5, 50, 35], [60, 30, 88, 58]], "size": [H, W], "file": f"images/{name}.png"})
        for j, method in enumerate(METHODS):
            missing = (k, j) == (1, 2)  # a null gallery entry is an empty cell
            file = f"gallery/{method}/{name}.png"
            gallery[method].append(None if missing else file)
            if not missing:
                _png(out / file, 200 - 30 * j)
    return {"model": "mobilenet_v2", "dataset": "synthetic", "n": 4, "provider": "CPUExecutionProvider", "threads": 2,
            "created": "2026-11-22T15:00:00Z", "target": "label: MobileNetV2's top-1 on the object alone",
            "settings": {"deletion_step": 1792, "insertion_baseline": "blur", "confidence": 0.95},
            "metric_order": ORDER, "better": BETTER, "methods": methods, "images": images, "gallery": gallery,
            "gallery_limit": 3}


def _open(browser, results: dict, out: Path) -> Path:
    (out / "results.json").write_text(json.dumps(results))
    page = write_report(results, out)
    assert page == out / "index.html"
    browser.get(page.as_uri())
    return page


def _rect(browser, element) -> dict:
    return browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                                  "return {x: r.x, y: r.y, w: r.width, h: r.height};", element)


def test_report_shows_table_charts_and_gallery(browser, tmp_path):
    results = _results(tmp_path)
    _open(browser, results, tmp_path)
    assert "mobilenet_v2" in browser.title
    header = browser.find_element(By.ID, "header").text
    assert "CPUExecutionProvider (2 threads)" in header and "top-1 on the object alone" in header and "1792" in header

    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr[data-method]")
    assert [r.get_attribute("data-method") for r in rows] == METHODS
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#metrics thead th[data-metric]")]
    assert heads == ["average_drop \u2193", "increase_in_confidence \u2191", "deletion_auc \u2193",
                     "insertion_auc \u2191", "seconds_per_image \u2193"]
    cells = browser.find_elements(By.CSS_SELECTOR, 'tr[data-method="gradcam"] td')
    assert [c.text.split("\n") for c in cells[:2]] == [["10", "[9.5, 11.25]"], ["20", "[15, 30]"]]
    assert "fusion" in browser.find_element(By.CSS_SELECTOR, 'tr[data-method="gradcam++"] th').text
    # the best mean per column: gradcam for the lower-is-better columns, scorecam for increase in confidence
    best = {(row.get_attribute("data-method"), metric) for row in rows
            for metric, cell in zip(ORDER, row.find_elements(By.TAG_NAME, "td"), strict=True)
            if "best" in (cell.get_attribute("class") or "").split()}
    assert best == {("gradcam", "average_drop"), ("scorecam", "increase_in_confidence"), ("gradcam", "deletion_auc"),
                    ("gradcam", "insertion_auc"), ("gradcam", "seconds_per_image")}
    assert all(int(c.value_of_css_property("font-weight")) >= 700
               for c in browser.find_elements(By.CSS_SELECTOR, "#metrics td.best"))
    assert int(cells[1].value_of_css_property("font-weight")) < 700  # gradcam's increase in confidence isn't best

    for chart, methods in (("deletion", METHODS), ("insertion", METHODS), ("sanity", METHODS[:2])):
        svg = browser.find_element(By.ID, f"{chart}-chart")
        assert svg.is_displayed() and svg.size["width"] > 0
        lines = svg.find_elements(By.CSS_SELECTOR, "polyline[data-method]")
        assert [p.get_attribute("data-method") for p in lines] == methods
        for line in lines:
            box = browser.execute_script("const b = arguments[0].getBBox(); return [b.width, b.height];", line)
            assert box[0] > 100 and box[1] > 10, (chart, line.get_attribute("data-method"), box)
    legend = browser.find_element(By.ID, "deletion-chart").find_elements(By.CSS_SELECTOR, "g.legend text")
    assert [t.text for t in legend] == ["gradcam (AUC 0.200)", "gradcam++ (AUC 0.300)", "scorecam (AUC 0.400)"]
    ticks = browser.find_elements(By.CSS_SELECTOR, "#sanity-chart g.x-tick title")
    assert [t.get_attribute("textContent") for t in ticks] == [f"stage {s}: /classifier/{s}" for s in (1, 2, 3)]

    gallery_rows = browser.find_elements(By.CSS_SELECTOR, "#gallery tbody tr")
    assert len(gallery_rows) == results["gallery_limit"]
    images = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert len(images) == 3 * (1 + len(METHODS)) - 1  # one null gallery entry
    for img in images:  # lazy images load once scrolled to; every one must decode (its relative path is right)
        browser.execute_script("arguments[0].scrollIntoView();", img)
        WebDriverWait(browser, 10).until(lambda d, img=img: d.execute_script("return arguments[0].complete;", img))
        assert browser.execute_script("return arguments[0].naturalWidth;", img) == W, img.get_attribute("src")
    assert gallery_rows[1].find_elements(By.TAG_NAME, "td")[3].find_elements(By.TAG_NAME, "img") == []
    assert "tabby (281)" in gallery_rows[0].text and "scene-000-small" in gallery_rows[0].text

    browser.execute_script("window.scrollTo(0, 0);")
    for row, image in zip(gallery_rows, results["images"]):
        picture = _rect(browser, row.find_element(By.CSS_SELECTOR, "td.input img"))
        scale = picture["w"] / W
        assert abs(picture["h"] - H * scale) < 1
        for div, (x0, y0, x1, y1) in zip(row.find_elements(By.CSS_SELECTOR, ".box"), image["boxes"], strict=True):
            box = _rect(browser, div)
            assert abs(box["x"] - (picture["x"] + x0 * scale)) < 1 and abs(box["y"] - (picture["y"] + y0 * scale)) < 1
            assert abs(box["w"] - (x1 - x0) * scale) < 1 and abs(box["h"] - (y1 - y0) * scale) < 1


def test_report_handles_null_means_missing_curves_and_escapes_markup(browser, tmp_path):
    results = _results(tmp_path)
    attack = "<script>document.title='pwned'</script>"
    results["methods"]["broken"] = {"options": {"note": attack}, "layers": [],
                                    "metrics": {k: {"mean": None, "low": None, "high": None} for k in ORDER}}
    results["images"][0]["label_name"] = attack
    page = _open(browser, results, tmp_path)

    text = page.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text
    assert browser.execute_script("return document.scripts.length;") == 0 and "pwned" not in browser.title
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-method="broken"]')
    assert attack in row.find_element(By.TAG_NAME, "th").text
    assert [c.text for c in row.find_elements(By.TAG_NAME, "td")] == ["\u2014"] * len(ORDER)
    assert row.find_elements(By.CSS_SELECTOR, "td.best") == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "#metrics td.best")) == len(ORDER)  # nulls never win
    for chart in ("deletion", "insertion"):
        assert browser.find_elements(By.CSS_SELECTOR, f'#{chart}-chart polyline[data-method="broken"]') == []
    assert attack in browser.find_element(By.CSS_SELECTOR, "#gallery tbody tr").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery thead th")) == 2 + len(METHODS)
