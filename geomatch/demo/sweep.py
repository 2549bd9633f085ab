"""Check the demo's settings over seeds: ``python -m geomatch.demo.sweep``.

Runs the demo for each seed (default 0-4) in both modes (full and
``--quick``), reads each run's ``geomatch-demo.json`` and prints one Markdown
row per run: PCK@0.10 per point, per image and on the geometry-aware subset
(raw -> head), the left/right confusion rate n̄₁₁/n₁₁, n̂₁₁, the lowest
per-category change, the wall time, and whether the run meets the demo's
promise (:func:`criteria`).  The table and the per-run metrics are also
written to ``OUT/sweep.json``.

Usage::

    python -m geomatch.demo.sweep [--out DIR] [--seeds 0 1 2 3 4] [--modes full quick]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["MARGINS", "criteria", "sweep", "main"]

#: Required gain (percentage points of PCK@0.10) of the head over the raw features.
MARGINS = {"full": 10.0, "quick": 5.0}


def _at(values: Sequence, alphas: Sequence[float], alpha: float = 0.10):
    i = min(range(len(alphas)), key=lambda j: abs(alphas[j] - alpha))
    return values[i]


def criteria(summary: dict, mode: str) -> Dict[str, bool]:
    """Which of the demo's promises a run's ``geomatch-demo.json`` meets.

    Keys: ``pck_point``, ``pck_image``, ``pck_geo`` (the head's PCK@0.10 is at
    least ``MARGINS[mode]`` points above the raw features'), ``confusion``
    (the rate n̄₁₁/n₁₁ at least halved), ``n11_hat`` (n̂₁₁ raised),
    ``categories`` (no category's PCK@0.10 lowered).
    """
    if mode not in MARGINS:
        raise ValueError(f"mode must be one of {sorted(MARGINS)}, got {mode!r}")
    m, al = summary["metrics"], summary["alphas"]
    raw, head = m["raw"], m["head"]
    out = {}
    for k in ("pck_point", "pck_image", "pck_geo"):
        r, h = _at(raw[k], al), _at(head[k], al)
        out[k] = (r is not None and h is not None
                  and 100.0 * (h - r) >= MARGINS[mode] - 1e-9)   # rounding of h - r
    rb, hb = raw["breakdown"], head["breakdown"]
    out["confusion"] = rb["11"] > 0 and hb["11_bar"] * rb["11"] * 2 <= rb["11_bar"] * hb["11"]
    out["n11_hat"] = hb["11_hat"] > rb["11_hat"]
    out["categories"] = all(_at(head["per_category"][c]["pck_point"], al)
                            >= _at(raw["per_category"][c]["pck_point"], al)
                            for c in raw["per_category"])
    return out


def _row(mode: str, seed: int, s: dict, wall: float) -> str:
    m, al = s["metrics"], s["alphas"]

    def pp(k):
        return f"{100 * _at(m['raw'][k], al):.1f} → {100 * _at(m['head'][k], al):.1f}"

    rb, hb = m["raw"]["breakdown"], m["head"]["breakdown"]
    worst = min((_at(m["head"]["per_category"][c]["pck_point"], al)
                 - _at(m["raw"]["per_category"][c]["pck_point"], al)) * 100
                for c in m["raw"]["per_category"])
    ok = criteria(s, mode)
    missed = [k for k, v in ok.items() if not v]
    return (f"| {mode} | {seed} | {pp('pck_point')} | {pp('pck_image')} | {pp('pck_geo')} | "
            f"{rb['11_bar']}/{rb['11']} → {hb['11_bar']}/{hb['11']} | "
            f"{rb['11_hat']} → {hb['11_hat']} | {worst:+.1f} | {wall:.0f} | "
            f"{'yes' if not missed else 'no: ' + ', '.join(missed)} |")


HEADER = ("| mode | seed | PCK@0.10 per point | per image | geometry-aware | n̄₁₁/n₁₁ | n̂₁₁ | "
          "lowest category change | wall (s) | meets all |\n"
          "|---|---:|---|---|---|---|---|---:|---:|---|")


def sweep(out_dir, seeds: Sequence[int] = (0, 1, 2, 3, 4),
          modes: Sequence[str] = ("full", "quick"), verbose: bool = True) -> List[dict]:
    """Run the demo for every (mode, seed) into ``out_dir/<mode>-<seed>`` and
    return one dict per run (``mode``, ``seed``, ``wall_s``, ``criteria``,
    ``summary`` = its ``geomatch-demo.json``)."""
    from .run import run_demo

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    if verbose:
        print(HEADER, flush=True)
    for mode in modes:
        if mode not in MARGINS:
            raise ValueError(f"modes must be among {sorted(MARGINS)}, got {mode!r}")
        for seed in seeds:
            t0 = time.perf_counter()
            run_demo(out_dir / f"{mode}-{seed}", quick=(mode == "quick"), seed=int(seed),
                     progress=False, verbose=False)
            wall = time.perf_counter() - t0
            s = json.loads((out_dir / f"{mode}-{seed}" / "geomatch-demo.json").read_text())
            runs.append({"mode": mode, "seed": int(seed), "wall_s": wall,
                         "criteria": criteria(s, mode), "summary": s})
            if verbose:
                print(_row(mode, seed, s, wall), flush=True)
    table = "\n".join([HEADER] + [_row(r["mode"], r["seed"], r["summary"], r["wall_s"])
                                  for r in runs])
    (out_dir / "sweep.json").write_text(json.dumps(
        {"table": table, "load_avg": os.getloadavg(), "runs": runs}, indent=1) + "\n")
    return runs


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m geomatch.demo.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="geomatch-demo-sweep", help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--modes", nargs="+", default=["full", "quick"], choices=sorted(MARGINS))
    a = p.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f} (1 min)", flush=True)
    runs = sweep(a.out, a.seeds, a.modes)
    print(f"load average after: {os.getloadavg()[0]:.1f} (1 min)")
    bad = [r for r in runs if not all(r["criteria"].values())]
    print(f"{len(runs) - len(bad)}/{len(runs)} runs meet every criterion")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
