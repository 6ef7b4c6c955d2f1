"""Merge per-method `camserve evaluate` outputs (OUT/<model>/<method>/results.json) into one markdown table
per model and one HTML report per model (OUT/<model>/index.html)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camserve.service.evaluation import METRICS
from camserve.service.metrics.summary import adcc_of_means
from camserve.service.report.html import write_report

SHOWN = list(METRICS)
SHORT = {"average_drop": "AD ↓", "increase_in_confidence": "IC ↑", "average_gain": "AG ↑", "coherency": "Coh ↑",
         "complexity": "Com ↓", "adcc": "ADCC ↑", "deletion_auc": "Del ↓", "insertion_auc": "Ins ↑",
         "road": "ROAD ↑", "arcc": "ARCC ↑", "pointing_game": "PG ↑", "energy_pointing_game": "EBPG ↑",
         "seconds_per_image": "s/img ↓"}


def _cell(metric: dict | None, name: str) -> str:
    if not metric or metric["mean"] is None:
        return "—"
    digits = 3 if name in ("deletion_auc", "insertion_auc", "road", "seconds_per_image") else 1
    return f"{metric['mean']:.{digits}f} <sub>[{metric['low']:.{digits}f}, {metric['high']:.{digits}f}]</sub>"


def merge(folder: Path) -> dict:
    """One results dict for a model from its per-method runs; image and gallery paths made relative to folder."""
    merged = None
    for path in sorted(folder.glob("*/results.json")):
        one = json.loads(path.read_text())
        method = path.parent.name
        prefix = f"{method}/"
        if merged is None or one["n"] > merged["n"]:
            base = {k: v for k, v in one.items() if k not in ("methods", "gallery")}
            base["images"] = [{**i, "file": prefix + i["file"]} for i in one["images"]]
            previous = merged
            merged = {**base, "methods": {}, "gallery": {}}
            if previous:
                merged["methods"], merged["gallery"] = previous["methods"], previous["gallery"]
        merged["methods"][method] = {**one["methods"][method], "n": one["n"]}
        merged["gallery"][method] = [prefix + f for f in one["gallery"][method]]
    if merged is None:
        raise SystemExit(f"no */results.json under {folder}")
    order = [m for m in ORDER if m in merged["methods"]] + sorted(set(merged["methods"]) - set(ORDER))
    merged["methods"] = {m: merged["methods"][m] for m in order}
    merged["gallery"] = {m: merged["gallery"][m] + [None] * (len(merged["images"]) - len(merged["gallery"][m]))
                         for m in order}
    merged["n"] = max(entry["n"] for entry in merged["methods"].values())
    return merged


ORDER = ["randomcam", "cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam",
         "eigencam", "eigengradcam", "fullgrad", "smoothgradcam++", "integrative", "scorecam", "sscam", "iscam",
         "ablationcam", "groupcam", "reciprocam", "rise", "fdcam"]


def table(results: dict) -> str:
    lines = [f"### {results['model']}", "",
             "| method | N | " + " | ".join(SHORT[m] for m in SHOWN) + " | sanity ρ (last stage) |",
             "|---|---|" + "---|" * (len(SHOWN) + 1)]
    for method, entry in results["methods"].items():
        sanity = entry.get("sanity")
        last = f"{sanity[-1]['spearman']:.2f}" if sanity else "—"
        options = {k: v for k, v in entry.get("options", {}).items() if k in ("samples",)}
        name = method + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")
        lines.append(f"| {name} | {entry['n']} | " + " | ".join(_cell(entry["metrics"].get(m), m) for m in SHOWN)
                     + f" | {last} |")
    return "\n".join(lines) + "\n"


def kind_table(results: dict, metrics=("adcc", "deletion_auc", "insertion_auc", "pointing_game",
                                        "energy_pointing_game")) -> str:
    """Means per scene kind: a large object, a small one, a target beside a distractor."""
    kinds = list(dict.fromkeys(i["kind"] for i in results["images"]))
    lines = [f"#### {results['model']}, by scene kind ({' / '.join(kinds)})", "",
             "| method | " + " | ".join(SHORT[m] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for method, entry in results["methods"].items():
        by_kind = entry.get("by_kind")
        if not by_kind:
            continue
        cells = []
        for metric in metrics:
            digits = 3 if metric in ("deletion_auc", "insertion_auc") else 1
            cells.append(" / ".join("—" if by_kind.get(k, {}).get(metric, {}).get("mean") is None
                                    else f"{by_kind[k][metric]['mean']:.{digits}f}" for k in kinds))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def subset_table(results: dict, count: int, metrics=("average_drop", "adcc", "deletion_auc", "insertion_auc", "road",
                                                    "pointing_game", "energy_pointing_game")) -> str:
    """Every method's means on the first `count` scenes only: what the costly methods, run on fewer
    scenes, are to be compared with."""
    lines = [f"#### {results['model']}, every method on the first {count} scenes", "",
             "| method | " + " | ".join(SHORT[m] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for method, entry in results["methods"].items():
        per_image = {k: np.array([np.nan if v is None else v for v in values[:count]], float)
                     for k, values in entry["per_image"].items()}
        if len(per_image["adcc"]) < count:
            continue
        cells = []
        for metric in metrics:
            if metric == "adcc":
                value = adcc_of_means(np.stack([per_image[k] for k in ("average_drop", "coherency", "complexity")], 1))
            else:
                value = float(np.nanmean(per_image[metric]))
            cells.append(f"{value:.3f}" if metric in ("deletion_auc", "insertion_auc", "road") else f"{value:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder scripts/run_results.sh wrote (OUT/<model>/<method>/)")
    parser.add_argument("table", type=Path, help="markdown file to write")
    args = parser.parse_args()
    parts = []
    for folder in sorted(p for p in args.out.iterdir() if p.is_dir()):
        results = merge(folder)
        (folder / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, folder)
        parts += [table(results), kind_table(results)]
        parts += [subset_table(results, n) for n in sorted({e["n"] for e in results["methods"].values()}) if
                  n < results["n"]]
        print(f"wrote {folder / 'index.html'}")
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text("\n".join(parts))
    print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
