"""Shared timing helpers for the side-by-side benchmarks.

Each benchmark script times geomatch and its peers in one process run and
prints a table of medians and ratios; nothing here asserts on time.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def median_time(fn: Callable[[], object], *, repeat: int = 7, warmup: int = 1,
                min_time: float = 0.0, setup: Callable[[], object] | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup``.

    With ``min_time`` > 0, each sample loops ``fn`` until that many seconds
    have passed and reports the time per call (for sub-millisecond kernels).
    ``setup``, when given, runs untimed before every call of ``fn`` (each
    sample is then one call).
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples = []
    for _ in range(repeat):
        if setup is not None:
            setup()
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
            continue
        n = 0
        t0 = time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return statistics.median(samples)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def print_table(title: str, rows: Sequence[tuple], *, baseline: str | None = None) -> None:
    """Print rows of (name, seconds[, note]) as Markdown, with ratios to ``baseline``.

    The ratio column is peer time / geomatch time (>1 means geomatch is faster)
    when ``baseline`` names the geomatch row.
    """
    base = None
    if baseline is not None:
        for row in rows:
            if row[0] == baseline:
                base = row[1]
    print(f"\n### {title}\n")
    print("| implementation | median | ratio vs geomatch | note |")
    print("|---|---|---|---|")
    for row in rows:
        name, sec = row[0], row[1]
        note = row[2] if len(row) > 2 else ""
        if sec is None:
            print(f"| {name} | n/a | | {note} |")
            continue
        ratio = f"{sec / base:.1f}x" if base else ""
        print(f"| {name} | {fmt_time(sec)} | {ratio} | {note} |")


def best_time(fn: Callable[[], object], n: int = 200) -> float:
    """Fastest wall-clock seconds of a single ``fn()`` call out of ``n`` (on a
    shared machine the minimum is the least disturbed sample)."""
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)
