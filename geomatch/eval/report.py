"""Evaluation reports: Markdown, JSON and CSV tables of a PCK summary.

Every report states the options the evaluation used (each with where it came
from: geomatch's default, a protocol preset, or an explicit choice), then the
headline figures of that protocol, then the tables: PCK per point, per
image, geometry-aware per point and per image, the geometry breakdown, and
the breakdowns by azimuth difference and mirror flag.  Files are written to
a temporary name and renamed, so a failed run leaves no half-written report.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterable, List, Mapping, Optional

__all__ = ["summary_rows", "summary_markdown", "options_markdown", "headline_markdown",
           "atomic_write", "write_json", "write_csv", "write_text"]

_KINDS = {"pck_point": "PCK per point (%)", "pck_image": "PCK per image (%)",
          "pck_geo": "PCK geometry-aware subset, per point (%)",
          "pck_geo_image": "PCK geometry-aware subset, per image (%)"}
_BREAKDOWN_HEAD = ("11", "11_hat", "11_tilde", "11_bar", "10", "10_hat", "1x", "1x_hat",
                   "01", "01_bar", "00")


def _fmt_alpha(a: float) -> str:
    return f"{a:g}"


def _pct(v):
    return None if v is None else 100.0 * v


def _cell(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def summary_rows(summary: Mapping) -> List[dict]:
    """Flatten a :meth:`PCKAccumulator.summary` dict into table rows.

    One row per category, then ``all`` (pooled) and ``mean`` (mean over
    categories).  Columns: category, n_pairs, n_points, ``pck_point@α``,
    ``pck_image@α``, ``pck_geo@α``, ``pck_geo_image@α`` (percent),
    n_geo_points, n_geo_pairs.
    """
    alphas = summary["alphas"]
    rows = []

    def row(name, st, suffix=""):
        r = {"category": name, "n_pairs": st.get("n_pairs"), "n_points": st.get("n_points")}
        for kind in _KINDS:
            vals = st.get(kind + suffix) or [None] * len(alphas)
            for a, v in zip(alphas, vals):
                r[f"{kind}@{_fmt_alpha(a)}"] = _pct(v)
        r["n_geo_points"] = st.get("n_geo_points")
        r["n_geo_pairs"] = st.get("n_geo_pairs")
        return r

    for c, st in summary["categories"].items():
        rows.append(row(c, st))
    if summary["categories"]:
        ov = summary["overall"]
        rows.append(row("all", ov))
        mean = {k + "_catmean": ov.get(k + "_catmean") for k in _KINDS}
        rows.append(row("mean", mean, "_catmean"))
    return rows


def _stats_table(title: str, label: str, groups: Mapping, alphas) -> List[str]:
    head = (f"| {label} | pairs | points | "
            + " | ".join(f"point@{_fmt_alpha(a)}" for a in alphas) + " | "
            + " | ".join(f"image@{_fmt_alpha(a)}" for a in alphas) + " |")
    out = [f"### {title}", "", head, "|" + "---|" * (3 + 2 * len(alphas))]
    for key, st in groups.items():
        vals = [_cell(_pct(v)) for v in st["pck_point"]] + [_cell(_pct(v)) for v in st["pck_image"]]
        out.append(f"| {key} | {st['n_pairs']} | {st['n_points']} | " + " | ".join(vals) + " |")
    out.append("")
    return out


def summary_markdown(summary: Mapping) -> str:
    """Markdown tables of a summary: PCK per point, per image, geometry-aware
    (per point and per image, with the occurrence ratios), the geometry
    breakdown, and the breakdowns by azimuth difference and mirror flag."""
    alphas = summary["alphas"]
    rows = summary_rows(summary)

    def cnt(v):
        return "" if v is None else str(v)

    out = []
    for kind, title in _KINDS.items():
        head = ("| category | pairs | points | "
                + " | ".join(f"@{_fmt_alpha(a)}" for a in alphas) + " |")
        out += [f"### {title}", "", head, "|" + "---|" * (3 + len(alphas))]
        for r in rows:
            geo = kind.startswith("pck_geo")
            n_pairs = r["n_geo_pairs"] if kind == "pck_geo_image" else r["n_pairs"]
            n_pts = r["n_geo_points"] if geo else r["n_points"]
            vals = " | ".join(_cell(r[f"{kind}@{_fmt_alpha(a)}"]) for a in alphas)
            out.append(f"| {r['category']} | {cnt(n_pairs)} | {cnt(n_pts)} | {vals} |")
        out.append("")
    ov = summary["overall"]
    if ov.get("geo_pair_ratio") is not None:
        out += [f"Geometry-aware occurrence: {100 * ov['geo_pair_ratio']:.2f}% of the scored "
                f"pairs, {100 * (ov['geo_point_ratio'] or 0):.2f}% of the scored points.", ""]
    if "breakdown" in ov:
        bd = ov["breakdown"]
        out += ["### Geometry breakdown (all categories)", "",
                "| α | n11 | n̂11 | ñ11 | n̄11 | n10 | n̂10 | n1x | n̂1x | n01 | n̄01 | n00 | PCK (%) |",
                "|" + "---|" * 13]
        for i, a in enumerate(alphas):
            vals = " | ".join(str(bd[key][i]) for key in _BREAKDOWN_HEAD)
            pb = ov["pck_breakdown"][i]
            out.append(f"| {_fmt_alpha(a)} | {vals} | {_cell(_pct(pb))} |")
        out.append("")
    if summary.get("by_azimuth"):
        out += _stats_table("PCK by azimuth difference (%)", "Δazimuth", summary["by_azimuth"],
                            alphas)
    if summary.get("by_mirror"):
        out += _stats_table("PCK by mirror flag (%)", "mirror", summary["by_mirror"], alphas)
    return "\n".join(out)


def options_markdown(options: Mapping) -> str:
    """A Markdown table of every evaluation choice and where it came from."""
    src = options.get("sources", {})
    lines = ["| choice | value | from |", "|---|---|---|"]
    for k, v in options.items():
        if k in ("sources", "protocol"):
            continue
        if isinstance(v, (list, tuple)):
            v = " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        lines.append(f"| {k} | {v} | {src.get(k, 'default')} |")
    return "\n".join(lines)


def headline_markdown(summary: Mapping, headline: Iterable[str]) -> str:
    """One line per headline figure, e.g. ``pck_image: @0.1 62.10 | @0.05 ...``."""
    alphas = summary["alphas"]
    ov = summary["overall"]
    out = []
    for key in headline:
        vals = ov.get(key)
        if vals is None:
            continue
        out.append(f"- **{key}** (all pairs): " + " | ".join(
            f"@{_fmt_alpha(a)} {_cell(_pct(v))}" for a, v in zip(alphas, vals)))
    return "\n".join(out)


def atomic_write(path, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path, text: str) -> str:
    return atomic_write(path, text.encode("utf-8"))


def write_json(path, obj) -> str:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path, rows: List[dict], columns: Optional[List[str]] = None) -> str:
    """Rows as CSV (empty cells for missing values)."""
    cols = columns or (list(rows[0].keys()) if rows else ["category"])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return write_text(path, buf.getvalue())
