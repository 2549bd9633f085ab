"""The demo's report: before/after tables, the machine-readable metrics of
``geomatch-demo.json``, the Markdown report and the next steps on SPair-71k."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

__all__ = ["confusion_counts", "metrics_summary", "headline_rows", "headline_table",
           "comparison_tables", "write_report", "next_steps", "CAVEAT"]

def confusion_counts(result, alpha: float = 0.10) -> Dict[str, Dict[str, int]]:
    """Left/right confusions of an :class:`~geomatch.eval.evaluate.EvalResult`.

    Returns ``{"all": {...}, <category>: {...}}`` with ``n11`` (keypoints
    whose mirror twin is also visible in the target) and ``n11_bar`` (their
    predictions that land within ``alpha``·T of the twin but not of the
    keypoint) at the α of the result closest to ``alpha``.
    """
    i = int(np.argmin([abs(a - alpha) for a in result.alphas]))
    out = {}
    for name, st in [("all", result.overall)] + sorted(result.categories.items()):
        bd = st.get("breakdown")
        if bd is not None:
            out[name] = {"n11": int(bd["11"][i]), "n11_bar": int(bd["11_bar"][i])}
    return out


def _alpha_index(result, alpha: float = 0.10) -> int:
    return int(np.argmin([abs(a - alpha) for a in result.alphas]))


def metrics_summary(result, alpha: float = 0.10) -> dict:
    """The machine-readable metrics of one evaluation (``geomatch-demo.json``).

    Returns
    -------
    dict
        ``pck_point``, ``pck_image``, ``pck_geo`` (fractions, lists aligned
        with ``result.alphas``), ``breakdown`` (the counts of
        :data:`geomatch.eval.metrics.BREAKDOWN_KEYS` at the α closest to
        ``alpha``) and ``per_category`` (``{category: {"pck_point": [...]}}``).
    """
    from ..eval.metrics import BREAKDOWN_KEYS

    i = _alpha_index(result, alpha)
    ov = result.overall
    bd = ov.get("breakdown") or {}
    return {"pck_point": [None if v is None else float(v) for v in ov["pck_point"]],
            "pck_image": [None if v is None else float(v) for v in ov["pck_image"]],
            "pck_geo": [None if v is None else float(v) for v in ov["pck_geo"]],
            "breakdown": {k: int(bd[k][i]) for k in BREAKDOWN_KEYS if k in bd},
            "per_category": {c: {"pck_point": [None if v is None else float(v)
                                               for v in st["pck_point"]]}
                             for c, st in sorted(result.categories.items())}}


_KIND_TITLES = (("pck_point", "per point"), ("pck_image", "per image"),
                ("pck_geo", "geometry-aware subset"))
_BD_NAMES = {"11": "n₁₁", "11_hat": "n̂₁₁", "11_tilde": "ñ₁₁", "11_bar": "n̄₁₁",
             "10": "n₁₀", "10_hat": "n̂₁₀", "1x": "n₁ₓ", "1x_hat": "n̂₁ₓ",
             "01": "n₀₁", "01_bar": "n̄₀₁", "00": "n₀₀"}
# which direction is better for each breakdown count (None: a total, fixed by the data)
_BD_BETTER = {"11_hat": "higher", "11_tilde": None, "11_bar": "lower", "10_hat": "higher",
              "1x_hat": "higher", "01_bar": "lower"}


def headline_rows(raw: dict, head: dict, alphas, alpha: float = 0.10) -> List[dict]:
    """Every metric of two :func:`metrics_summary` results, side by side.

    Rows, in this order: PCK per point, per image and on the geometry-aware
    subset at every α; the left/right confusion rate n̄₁₁/n₁₁ at ``alpha``;
    every geometry-breakdown count at ``alpha``; PCK per point of each
    category at ``alpha``.  Each row is a dict with ``metric`` (name),
    ``raw``, ``head``, ``unit`` (``"%"``: fractions shown as percent, or
    ``"count"``), ``better`` (``"higher"``, ``"lower"`` or None: totals
    fixed by the data, and ñ₁₁), ``worse`` (True where the head is worse)
    and ``note`` (``"(total)"`` for the totals).
    """
    i = int(np.argmin([abs(a - alpha) for a in alphas]))
    rows: List[dict] = []

    def add(metric, r, h, unit, better, note=""):
        worse = False
        if better is not None and r is not None and h is not None:
            worse = h < r if better == "higher" else h > r
        rows.append({"metric": metric, "raw": r, "head": h, "unit": unit, "better": better,
                     "worse": bool(worse), "note": note})

    for kind, title in _KIND_TITLES:
        for j, a in enumerate(alphas):
            add(f"PCK@{a:.2f} {title}", raw[kind][j], head[kind][j], "%", "higher")
    rb, hb = raw["breakdown"], head["breakdown"]

    def rate(bd):
        return bd["11_bar"] / bd["11"] if bd.get("11") else None

    add(f"left/right confusion rate n̄₁₁/n₁₁ @{alphas[i]:.2f}", rate(rb), rate(hb), "%", "lower")
    for k, name in _BD_NAMES.items():
        if k in rb:
            note = ("(within α·T of both twins)" if k == "11_tilde"
                    else "" if k in _BD_BETTER else "(total)")
            add(f"{name} @{alphas[i]:.2f}", rb[k], hb[k], "count", _BD_BETTER.get(k), note)
    for c in sorted(raw["per_category"]):
        add(f"PCK@{alphas[i]:.2f} per point: {c}", raw["per_category"][c]["pck_point"][i],
            head["per_category"][c]["pck_point"][i], "%", "higher")
    return rows


def _fmt(v, unit) -> str:
    if v is None:
        return "–"
    return f"{100.0 * v:.1f}" if unit == "%" else str(int(v))


def headline_table(rows: List[dict], labels=("raw features", "trained head")) -> List[str]:
    """Markdown lines of :func:`headline_rows`: metric, raw, head, change, and
    "worse" where the head is worse."""
    lines = [f"| metric | {labels[0]} | {labels[1]} | change | |", "|---|---:|---:|---:|---|"]
    for r in rows:
        if r["raw"] is None or r["head"] is None:
            ch = "–"
        elif r["unit"] == "%":
            ch = f"{100.0 * (r['head'] - r['raw']):+.1f}"
        else:
            ch = f"{int(r['head']) - int(r['raw']):+d}"
        note = "**worse**" if r["worse"] else r.get("note", "")
        lines.append(f"| {r['metric']}{' (%)' if r['unit'] == '%' else ''} | "
                     f"{_fmt(r['raw'], r['unit'])} | {_fmt(r['head'], r['unit'])} | {ch} | {note} |")
    return lines


# ---------------------------------------------------------------------------
# report

def _pct(v) -> str:
    return "–" if v is None else f"{100.0 * v:.1f}"


def _pck_table(before, after, labels) -> List[str]:
    al = before.alphas
    head = "| | " + " | ".join(f"PCK@{a:.2f}" for a in al) + " |"
    lines = [head, "|---|" + "---:|" * len(al)]
    for kind, title in (("pck_point", "per point"), ("pck_image", "per image"),
                        ("pck_geo", "geometry-aware subset")):
        for res, lab in zip((before, after), labels):
            vals = " | ".join(_pct(v) for v in res.overall[kind])
            lines.append(f"| {lab}, {title} | {vals} |")
    return lines


def _category_table(before, after, labels, alpha: float = 0.10) -> List[str]:
    i = int(np.argmin([abs(a - alpha) for a in before.alphas]))
    lines = [f"| category | pairs | points | {labels[0]} PCK@{alpha:.2f} | "
             f"{labels[1]} PCK@{alpha:.2f} | {labels[0]} n̄₁₁/n₁₁ | {labels[1]} n̄₁₁/n₁₁ |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    cb, ca = confusion_counts(before, alpha), confusion_counts(after, alpha)
    for cat in sorted(before.categories):
        sb, sa = before.categories[cat], after.categories[cat]
        lines.append(f"| {cat} | {sb['n_pairs']} | {sb['n_points']} | {_pct(sb['pck_point'][i])} | "
                     f"{_pct(sa['pck_point'][i])} | {cb[cat]['n11_bar']}/{cb[cat]['n11']} | "
                     f"{ca[cat]['n11_bar']}/{ca[cat]['n11']} |")
    return lines


_BD_COLUMNS = (("11", "n₁₁"), ("11_hat", "n̂₁₁"), ("11_tilde", "ñ₁₁"), ("11_bar", "n̄₁₁"),
               ("10", "n₁₀"), ("10_hat", "n̂₁₀"), ("1x", "n₁ₓ"), ("1x_hat", "n̂₁ₓ"),
               ("01", "n₀₁"), ("01_bar", "n̄₀₁"), ("00", "n₀₀"))


def _breakdown_table(before, after, labels) -> List[str]:
    head = "| | α | " + " | ".join(t for _, t in _BD_COLUMNS) + " | n̄₁₁/n₁₁ (%) | PCK (%) |"
    lines = [head, "|---|---|" + "---:|" * (len(_BD_COLUMNS) + 2)]
    for res, lab in zip((before, after), labels):
        bd = res.overall["breakdown"]
        for i, a in enumerate(res.alphas):
            vals = " | ".join(str(bd[k][i]) for k, _ in _BD_COLUMNS)
            n11 = bd["11"][i]
            rate = f"{100.0 * bd['11_bar'][i] / n11:.1f}" if n11 else "–"
            lines.append(f"| {lab} | {a:.2f} | {vals} | {rate} | "
                         f"{_pct(res.overall['pck_breakdown'][i])} |")
    return lines


def comparison_tables(before, after, labels=("raw features", "trained head")) -> str:
    """Markdown tables comparing two evaluations of the same split: PCK
    (per point, per image, geometry-aware subset) at every α, PCK@0.10 and
    left/right confusions per category, and GECO's geometry breakdown."""
    lines = ["#### PCK (%)", ""] + _pck_table(before, after, labels)
    lines += ["", "#### Per category", ""] + _category_table(before, after, labels)
    lines += ["", "#### Geometry breakdown (all categories)", ""]
    lines += _breakdown_table(before, after, labels)
    return "\n".join(lines) + "\n"


def next_steps() -> str:
    """The commands that run the same pipeline on SPair-71k with real DINOv2
    weights (placeholders in angle brackets)."""
    return "\n".join([
        "# 1. DINOv2 features (and those of the flipped images) of every split into a cache",
        "geomatch extract --dataset spair --root <SPAIR71K_DIR> --weights <DINOV2_WEIGHTS> \\",
        "    --model vitb14 --split trn val test --out <CACHE_DIR>",
        "# 2. train the attention head on the cached training features",
        "geomatch train --dataset spair --root <SPAIR71K_DIR> --cache <CACHE_DIR> --out <RUN_DIR>",
        "# 3. evaluate the raw features, then the trained head, on the test split",
        "geomatch eval --dataset spair --root <SPAIR71K_DIR> --split test --cache <CACHE_DIR> \\",
        "    --out <EVAL_DIR>/raw",
        "geomatch eval --dataset spair --root <SPAIR71K_DIR> --split test --cache <CACHE_DIR> \\",
        "    --head <RUN_DIR>/best.npz --out <EVAL_DIR>/head --figures",
    ])


#: What the synthetic world does and does not tell about real data (printed in every report).
CAVEAT = (
    "**What this does and does not show.** The synthetic world isolates one failure of "
    "DINOv2-like features on SPair-71k: a part is found, but it cannot be told from its "
    "mirror twin because the features are (here: exactly) symmetric under mirroring, and "
    "only the layout of the whole object says which twin is which. It shows that "
    "geomatch's head, loss, training loop and evaluation learn to resolve that from a few "
    "dozen images per category on a CPU. It does not predict numbers on real photos: the "
    "objects are simple ellipsoid models that face the camera (within 60°), so the head "
    "never has to infer which way an object faces, as it must on SPair-71k; the stand-in "
    "features find parts by their colour (DINOv2's errors are more varied: background, "
    "scale, texture, pose); there are three categories; train and test images come from "
    "the same generator. The published GECO figures are for DINOv2 with LoRA on "
    "SPair-71k; run the commands at the end to measure on real data.")


def write_report(path, before, after, *, figures: Dict[str, object], settings=None,
                 timings: Optional[Dict[str, float]] = None, train_result=None,
                 n_val_pairs: Optional[int] = None, start: Optional[str] = None,
                 labels=("raw features", "trained head"), title: str = "geomatch demo") -> str:
    """Write the Markdown report of a before/after comparison.

    Parameters
    ----------
    path : path of ``report.md``; figure paths are written relative to its folder.
    before, after : EvalResult of the raw features and of the trained head.
    figures : dict with ``transfers`` (list of paths), ``rule`` (how they were
        chosen), ``confusions`` and ``training`` (paths), any of them optional.
    settings : DemoSettings or dict, optional.
    timings : stage -> seconds, optional.
    train_result : TrainResult, optional (steps, best validation PCK).
    n_val_pairs : validation pairs the best checkpoint was picked on.
    start : ``"new"``, ``"resume"`` or ``"restart"`` (how the folder was used).

    Returns
    -------
    str : the path written.
    """
    path = Path(path)
    base = path.parent

    def rel(p):
        p = Path(p)
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return p.as_posix()

    raw, head = metrics_summary(before), metrics_summary(after)
    rows = headline_rows(raw, head, before.alphas)
    worse = [r["metric"] for r in rows if r["worse"]]
    L = [f"# {title}", "",
         "Keypoint transfer on a synthetic SPair-71k-layout dataset of 3-D toy objects "
         "(`geomatch.demo.world`, written by `geomatch.demo.synthetic`), with weight-free "
         "features (`geomatch.demo.featurizers.PartColourFeaturizer`) in place of DINOv2. "
         "Mirror-twin parts (left/right eye, front-left/front-right foot, ...) look "
         "identical up close, so the raw features find the part but confuse the twins; the "
         "attention head sees the whole object and is trained to tell them apart.", "",
         f"## Every metric, raw features and trained head (test split, {before.n_pairs} pairs)",
         "",
         "PCK uses α·T with T the longer side of the target bounding box. Lower is better "
         "for the confusion rate, n̄₁₁ and n̄₀₁; rows marked (total) are fixed by the data; "
         "ñ₁₁ (predictions within α·T of both twins, counted correct) is neither.", ""]
    L += headline_table(rows, labels)
    L += ["", ("Metrics where the trained head is worse: " + ", ".join(worse) + ".")
          if worse else "The trained head is worse on none of these metrics.", ""]
    L += ["## Geometry breakdown at every α (all categories)", "",
          "For each source keypoint k with mirror twin k': n₁₁ — k and k' visible in the "
          "target (n̂₁₁ correct, ñ₁₁ within α·T of both, n̄₁₁ within α·T of k' only: a "
          "left/right confusion); n₁₀ — k visible, k' not; n₁ₓ — k has no twin; n₀₁ — k "
          "not visible but k' is (n̄₀₁: lands on k'); n₀₀ — neither. "
          "PCK = (n̂₁₀ + n̂₁₁ + n̂₁ₓ)/(n₁₀ + n₁₁ + n₁ₓ).", ""]
    L += _breakdown_table(before, after, labels)
    L += ["", "## Per category", ""]
    L += _category_table(before, after, labels)
    L += ["", CAVEAT, "", "## Figures", ""]
    tr = list(figures.get("transfers") or [])
    if tr:
        L += ["Keypoint transfers on test pairs: ground truth as hollow circles, predictions "
              "green (correct), orange (on the mirror twin) or red (other miss).", ""]
        L += [f"![transfer {i}]({rel(p)})" for i, p in enumerate(tr)] + [""]
        if figures.get("rule"):
            L += [f"*Pairs shown: {figures['rule']}.*", ""]
    if figures.get("confusions"):
        L += ["Left/right confusions before and after training:", "",
              f"![left/right confusions]({rel(figures['confusions'])})", ""]
    if figures.get("training"):
        L += ["Training curves (dashed: raw features on the same validation pairs):", "",
              f"![training curves]({rel(figures['training'])})", ""]
    L += ["## Run", ""]
    if start:
        L.append(f"- output folder: {dict(new='new', resume='resumed an interrupted run of the same settings', restart='started over (earlier outputs removed)')[start]}")
    if train_result is not None:
        bv = train_result.best_val
        L.append(f"- training: {train_result.steps} steps; best checkpoint picked on "
                 f"{n_val_pairs if n_val_pairs is not None else '?'} validation pairs: "
                 f"PCK@0.1 {_pct(bv)} % "
                 f"(`{rel(train_result.best_path) if train_result.best_path else '–'}`)")
    if timings:
        L.append("- time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if settings is not None:
        sd = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
        L += ["- settings: `" + json.dumps(sd, sort_keys=True) + "`"]
    L += ["", "## Next: SPair-71k with real DINOv2 weights", "",
          "```sh", next_steps(), "```", "",
          "<details><summary>Full evaluation tables</summary>", "",
          f"### {labels[0]}", "", before.to_markdown(), "",
          f"### {labels[1]}", "", after.to_markdown(), "", "</details>", ""]
    path.write_text("\n".join(L), encoding="utf-8")
    return os.fspath(path)
