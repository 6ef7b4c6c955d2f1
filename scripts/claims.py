"""Decide the seed methods' claims from `scripts/run_bench.sh` output (OUT/<model>/<method>/results.json):
per claim a paired bootstrap of the per-image differences on the scenes both methods ran, Holm-corrected over
every claim on every model, and a verdict. Prints a markdown table; `--json FILE` writes the numbers too."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camserve.service.metrics.paired import holm, paired_bootstrap, verdict
from camserve.service.metrics.summary import adcc_of_means

# (claimed winner, other, metric, who claims it)
CLAIMS = [
    ("integrative", "gradcam", "insertion_auc", "Integrative CAM"),
    ("integrative", "gradcam", "adcc", "Integrative CAM"),
    ("fdcam", "scorecam", "deletion_auc", "FD-CAM"),
    ("fdcam", "scorecam", "pointing_game", "FD-CAM"),
    ("fdcam", "gradcam", "pointing_game", "FD-CAM"),
    ("reciprocam", "scorecam", "adcc", "Recipro-CAM"),
]
LOWER = {"deletion_auc"}
ALPHA = 0.05
POWER = 0.8


def _values(results: dict, method: str, metric: str) -> tuple[list[str], np.ndarray]:
    """Image names and per-image values; ADCC as its three components, (N, 3)."""
    names = [image["name"] for image in results["images"]]
    per = results["methods"][method]["per_image"]
    columns = ["average_drop", "coherency", "complexity"] if metric == "adcc" else [metric]
    values = np.array([[np.nan if per[c][i] is None else per[c][i] for c in columns] for i in range(len(names))])
    return names, values if metric == "adcc" else values[:, 0]


def _statistic(metric: str):
    return adcc_of_means if metric == "adcc" else np.mean


def detectable(a: np.ndarray, b: np.ndarray, metric: str, alpha: float) -> float | None:
    """The smallest true difference found with probability POWER at level alpha (normal approximation of the
    paired mean difference; ADCC's from per-image ADCC differences)."""
    if metric == "adcc":
        from camserve.service.metrics.adcc import adcc
        a, b = (adcc(v[:, 0], v[:, 1], v[:, 2]) for v in (a, b))
    d = (a - b)[~np.isnan(a - b)]
    if len(d) < 2 or d.std() == 0:   # no spread: the paired test cannot tell any difference from chance
        return None
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(POWER)) * d.std(ddof=1) / np.sqrt(len(d)))


def decide(folder: Path, resamples: int = 10000) -> list[dict]:
    rows = []
    for model_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for winner, other, metric, source in CLAIMS:
            paths = [model_dir / m / "results.json" for m in (winner, other)]
            row = {"model": model_dir.name, "claim": f"{winner} beats {other}", "metric": metric, "source": source}
            if not all(p.exists() for p in paths):
                rows.append({**row, "n": 0, "difference": None, "p": None})
                continue
            (na, a), (nb, b) = (_values(json.loads(p.read_text()), m, metric) for p, m in zip(paths, (winner, other)))
            common = [n for n in na if n in set(nb)]
            ia, ib = [na.index(n) for n in common], [nb.index(n) for n in common]
            a, b = a[ia], b[ib]
            test = paired_bootstrap(a, b, _statistic(metric), resamples=resamples)
            rows.append({**row, **test, "values": (a, b)})
    adjusted = holm([r["p"] for r in rows])
    m = sum(p is not None for p in adjusted)
    for row, p in zip(rows, adjusted):
        row["p_holm"] = p
        row["verdict"] = (verdict(row["difference"], p, row["metric"] not in LOWER, ALPHA) if row["n"]
                          else "not run")
        values = row.pop("values", None)
        # Holm's first step tests at alpha / m: the detectable difference there is the conservative figure
        row["detectable"] = detectable(*values, row["metric"], ALPHA / max(m, 1)) if values else None
    return rows


def _f(value, digits):
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = ["| model | claim | metric | n | winner | other | difference [95% CI] | p | Holm p | verdict | "
             "detectable (80% power) |", "|" + "---|" * 11]
    for r in rows:
        digits = 1 if r["metric"] in ("adcc", "pointing_game") else 4
        ci = f"{_f(r['difference'], digits)} [{_f(r.get('low'), digits)}, {_f(r.get('high'), digits)}]"
        lines.append(f"| {r['model']} | {r['claim']} | {r['metric']} | {r['n']} | {_f(r.get('a'), digits)} | "
                     f"{_f(r.get('b'), digits)} | {ci} | {_f(r['p'], 4)} | {_f(r['p_holm'], 4)} | "
                     f"**{r['verdict']}** | {_f(r['detectable'], digits)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--resamples", type=int, default=10000)
    args = parser.parse_args()
    rows = decide(args.folder, args.resamples)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
