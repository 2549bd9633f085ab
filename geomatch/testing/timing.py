"""Timing helpers of the side-by-side benchmarks (``benchmarks/``).

Each benchmark script times geomatch and its peers in one process run and
prints a table of medians and ratios; nothing here asserts on time.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def _single_calls(fn: Callable[[], object], clock: Callable[[], float], n: int,
                  setup: Callable[[], object] | None = None) -> list:
    """``clock()`` seconds of ``n`` single calls of ``fn``, ``setup`` untimed before each."""
    samples = []
    for _ in range(n):
        if setup is not None:
            setup()
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return samples


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
    if setup is not None:
        return statistics.median(_single_calls(fn, time.perf_counter, repeat, setup))
    samples = []
    for _ in range(repeat):
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


def best_time(fn: Callable[[], object], n: int = 200) -> float:
    """Fastest wall-clock seconds of a single ``fn()`` call out of ``n`` (on a
    shared machine the minimum is the least disturbed sample)."""
    return min(_single_calls(fn, time.perf_counter, n))


def cpu_time(fn: Callable[[], object], *, repeat: int = 5,
             setup: Callable[[], object] | None = None, best: bool = False) -> float:
    """Process CPU seconds (all threads) of one ``fn()`` call: the median over
    ``repeat`` calls after one warm-up, or the least with ``best``.

    ``setup`` runs untimed before each call.  On a machine shared with other
    jobs CPU time is steadier than wall time; with one thread it is what the
    wall time would be on an idle core."""
    if setup is not None:
        setup()
    fn()
    out = _single_calls(fn, time.process_time, repeat, setup)
    return min(out) if best else statistics.median(out)


def fmt_time(seconds: float) -> str:
    """``seconds`` in us, ms or s with 3-4 significant digits."""
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
