"""Static, self-contained HTML page of `evaluate` results: header, metric table, curve charts, gallery."""
from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from urllib.parse import quote

# Tableau's ten colours, then their light twins: twenty distinguishable lines on white
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
ARROWS = {"higher": ("\u2191", "higher is better"), "lower": ("\u2193", "lower is better")}
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
td small{display:block;color:#666;font-size:11px}
td.best{font-weight:bold;background:#e6f4ea}
.opts{font-size:11px;color:#666;font-weight:normal}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:bold}dd{margin:0}
svg{font:11px sans-serif;display:block;margin:.5em 0}
#gallery th,#gallery td{text-align:center}#gallery img{width:160px;display:block}
.frame{position:relative;width:160px;margin:auto}
.box{position:absolute;outline:2px solid #00e676;pointer-events:none}"""


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _src(path: str) -> str:
    # a relative URL: a space or '#' in a file name must not break the link
    return _e(quote(str(path).replace("\\", "/")))


def _num(value) -> float | None:
    """A finite float, or None for null, NaN and non-numbers (JSON may carry any of them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value) -> str:
    v = _num(value)
    return "\u2014" if v is None else f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _stat(method: dict, metric: str) -> dict:
    """{"mean", "low", "high"} of a metric; a bare number (e.g. a timing) counts as a mean alone."""
    value = (method.get("metrics") or {}).get(metric)
    return value if isinstance(value, dict) else {"mean": value}


def _header(r: dict) -> str:
    rows = [("model", r.get("model")), ("dataset", r.get("dataset")), ("images", r.get("n")),
            ("provider", f"{r.get('provider')} ({r.get('threads')} threads)"), ("target class", r.get("target")),
            ("created", r.get("created"))]
    rows += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in (r.get("settings") or {}).items()]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<h1>{_e(r.get("model"))} on {_e(r.get("dataset"))}</h1><dl id="header">{items}</dl>'


def _metric_order(r: dict) -> list[str]:
    """results["metric_order"], then any metric a method has that the order forgot."""
    order = list(r.get("metric_order") or [])
    for method in r.get("methods", {}).values():
        order += [k for k in method.get("metrics") or {} if k not in order]
    return order


def _best(r: dict, metric: str) -> float | None:
    means = [_num(_stat(m, metric).get("mean")) for m in r.get("methods", {}).values()]
    means = [v for v in means if v is not None]
    rule = (r.get("better") or {}).get(metric)
    if not means or rule not in ARROWS:
        return None
    return max(means) if rule == "higher" else min(means)


def _metric_cell(stat: dict, best: float | None) -> str:
    mean = _num(stat.get("mean"))
    if mean is None:
        return "<td>\u2014</td>"
    low, high = _num(stat.get("low")), _num(stat.get("high"))
    interval = f"<small>[{_fmt(low)}, {_fmt(high)}]</small>" if low is not None or high is not None else ""
    best_class = ' class="best"' if mean == best else ""
    return f"<td{best_class}>{_fmt(mean)}{interval}</td>"


def _metric_table(r: dict) -> str:
    order = _metric_order(r)
    arrows = {k: ARROWS.get((r.get("better") or {}).get(k), ("", "")) for k in order}
    head = "".join(f'<th data-metric="{_e(k)}" title="{arrows[k][1]}">{_e(k)} {arrows[k][0]}</th>' for k in order)
    best = {k: _best(r, k) for k in order}
    rows = []
    for name, m in r.get("methods", {}).items():
        opts = f'<div class="opts">{_e(json.dumps(m["options"], sort_keys=True))}</div>' if m.get("options") else ""
        cells = "".join(_metric_cell(_stat(m, k), best[k]) for k in order)
        layers = _e(", ".join(m.get("layers") or []))
        rows.append(f'<tr data-method="{_e(name)}"><th scope="row" title="layers: {layers}">{_e(name)}{opts}</th>'
                    f"{cells}</tr>")
    confidence = (r.get("settings") or {}).get("confidence", 0.95)
    return (f'<h2>Metrics</h2><table id="metrics"><thead><tr><th>method</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p><small>mean, with its {confidence:.0%} interval in brackets; '
            "best mean per column in bold</small></p>")


def _chart(chart_id: str, series: list, x_ticks: list, y_range: tuple, x_label: str, y_label: str,
           markers: bool = False) -> str:
    """An SVG line chart with a legend on the right; series: (method, colour, legend, [(x, y, tooltip)])."""
    w, h, left, right, top, bottom = 860, 360, 56, 560, 16, 312  # legend room: 20 methods, long names
    x0, x1, (y0, y1) = x_ticks[0][0], x_ticks[-1][0], y_range
    sx = lambda x: left + (x - x0) / ((x1 - x0) or 1) * (right - left)  # noqa: E731
    sy = lambda y: bottom - (min(max(y, y0), y1) - y0) / ((y1 - y0) or 1) * (bottom - top)  # noqa: E731
    out = [f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>']
    for x, label, tip in x_ticks:
        out.append(f'<g class="x-tick"><title>{_e(tip or label)}</title><line x1="{sx(x):.1f}" x2="{sx(x):.1f}" '
                   f'y1="{bottom}" y2="{bottom + 5}" stroke="#999"/><text x="{sx(x):.1f}" y="{bottom + 17}" '
                   f'text-anchor="middle">{_e(label)}</text></g>')
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<g class="y-tick"><line x1="{left - 5}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text></g>')
    out.append(f'<text x="{(left + right) / 2}" y="{h - 12}" text-anchor="middle">{_e(x_label)}</text><text '
               f'transform="translate(14 {(top + bottom) / 2}) rotate(-90)" text-anchor="middle">{_e(y_label)}</text>')
    for i, (method, colour, legend, points) in enumerate(series):
        points = [(x, y, tip) for x, y, tip in points if _num(x) is not None and _num(y) is not None]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points)
        out.append(f'<polyline data-method="{_e(method)}" points="{coords}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"><title>{_e(legend)}</title></polyline>')
        if markers:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"><title>{_e(tip)}</title></circle>'
                    for x, y, tip in points]
        ly = top + 8 + 16 * i
        out.append(f'<g class="legend" data-method="{_e(method)}"><line x1="{right + 16}" x2="{right + 36}" '
                   f'y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>'
                   f'<text x="{right + 42}" y="{ly + 4}">{_e(legend)}</text></g>')
    return "".join(out) + "</svg>"


def _curve_chart(r: dict, kind: str, colours: dict) -> str:
    series = []
    for name, m in r.get("methods", {}).items():
        curves = m.get("curves") or {}
        if curves.get("fractions") and curves.get(kind):
            auc = _num(_stat(m, f"{kind}_auc").get("mean"))
            legend = name if auc is None else f"{name} (AUC {auc:.3f})"
            points = [(x, y, "") for x, y in zip(curves["fractions"], curves[kind])]
            series.append((name, colours[name], legend, points))
    ticks = [(t / 5, f"{t / 5:g}", "") for t in range(6)]
    verb = "removed" if kind == "deletion" else "inserted"
    return (f"<h2>{kind.title()} curves</h2>" +
            _chart(f"{kind}-chart", series, ticks, (0.0, 1.0), f"fraction of pixels {verb}", "mean class probability"))


def _sanity_chart(r: dict, colours: dict) -> str:
    runs = {name: m["sanity"] for name, m in r.get("methods", {}).items() if m.get("sanity")}
    if not runs:
        return ""
    layers = {}
    for steps in runs.values():
        for step in steps:
            layers.setdefault(step["stage"], step.get("layer", ""))
    at = {stage: i for i, stage in enumerate(sorted(layers))}  # stages evenly spaced, whatever their numbers
    ticks = [(i, str(stage), f"stage {stage}: {layers[stage]}") for stage, i in at.items()]
    series = [(name, colours[name], name,
               [(at[s["stage"]], s.get("spearman"), f"{name}, stage {s['stage']} ({s.get('layer', '')}): "
                 f"\u03c1 = {_fmt(s.get('spearman'))}") for s in steps]) for name, steps in runs.items()]
    return ("<h2>Model-randomisation sanity check</h2>" +
            _chart("sanity-chart", series, ticks, (-1.0, 1.0), "cascade stage (layers randomised from the top)",
                   "Spearman \u03c1, original vs randomised", markers=True))


def _input_cell(image: dict) -> str:
    h, w = image.get("size") or (0, 0)
    # percentages of the drawn image keep each box on its object whatever width the page gives the image
    boxes = "".join(f'<div class="box" style="left:{100 * x0 / w:.3f}%;top:{100 * y0 / h:.3f}%;'
                    f'width:{100 * (x1 - x0) / w:.3f}%;height:{100 * (y1 - y0) / h:.3f}%"></div>'
                    for x0, y0, x1, y1 in (image.get("boxes") or []) if h and w)
    img = f'<img src="{_src(image["file"])}" alt="{_e(image.get("name"))}">' if image.get("file") else ""
    return (f'<td class="input"><div class="frame">{img}{boxes}</div><div>{_e(image.get("name"))}</div>'
            f'<small>{_e(image.get("label_name"))} ({_e(image.get("label"))}) \u00b7 {_e(image.get("kind"))}'
            "</small></td>")


def _gallery(r: dict) -> str:
    methods, gallery = list(r.get("methods", {})), r.get("gallery") or {}
    images = (r.get("images") or [])[:r.get("gallery_limit")]
    rows = []
    for i, image in enumerate(images):
        cells = [_input_cell(image)]
        for m in methods:
            files = gallery.get(m) or []
            src = files[i] if i < len(files) else None
            cells.append(f'<td><img loading="lazy" src="{_src(src)}" alt="{_e(m)}: {_e(image.get("name"))}"></td>'
                         if src else "<td></td>")
        rows.append(f'<tr data-image="{_e(image.get("name"))}">{"".join(cells)}</tr>')
    head = "".join(f"<th>{_e(m)}</th>" for m in methods)
    return (f'<h2>Gallery</h2><table id="gallery"><thead><tr><th>input</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def write_report(results: dict, out_dir: Path) -> Path:
    """Write out_dir/index.html from `results` (its image paths relative to out_dir) and return the page's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(results.get("methods", {}))}
    body = [_header(results), _metric_table(results), _curve_chart(results, "deletion", colours),
            _curve_chart(results, "insertion", colours), _sanity_chart(results, colours), _gallery(results)]
    title = f"camserve evaluation: {results.get('model')} on {results.get('dataset')}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
