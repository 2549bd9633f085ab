"""The machine's own limits (sgemm rate, float32 FMA peak, one read pass), as
every benchmark measures them; with ``--coretypes``, the same under each
OpenBLAS kernel set (``OPENBLAS_CORETYPE``), each in a fresh process; with
``--shapes``, a table of float32 GEMM rates for the shapes geomatch runs
(backbone MLP, head, attention, the head backward's transposed products):
geomatch's AVX-512F kernel and the BLAS path (GEOMATCH_SGEMM=avx512 / blas,
alternating in one process) and NumPy's ``@``.

    python benchmarks/bench_limits.py [--threads 2] [--coretypes Haswell SkylakeX] [--shapes]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

# (label, m, n, k, trans_a, trans_b): C (m x n) = op(A) (m x k) op(B) (k x n)
SHAPES = [
    ("ViT-B MLP fc1 (nn_linear: B transposed)", 1369, 3072, 768, False, True),
    ("ViT-B MLP fc1, B not transposed", 1369, 3072, 768, False, False),
    ("head linear, 2 images", 2738, 256, 256, False, False),
    ("attention q k^T, one head", 1369, 1369, 64, False, True),
    ("attention p v, one head", 1369, 64, 1369, False, False),
    ("head backward dW = x^T dy", 768, 256, 1369, True, False),
    ("head backward dW, 256 wide", 256, 384, 1369, True, False),
    ("head backward dx = dy W^T", 1369, 768, 256, False, True),
]


def shape_table(threads: int, repeat: int) -> None:
    """GFLOP/s per shape: best of `repeat` alternating runs (wall clock, and
    process CPU time, which a shared machine's time slicing does not
    inflate)."""
    import numpy as np

    import geomatch as gm
    from geomatch import _core
    from geomatch.testing.limits import fma_peak

    gm.set_num_threads(threads)
    peak = fma_peak(512, threads) or fma_peak(256, threads)
    modes = (["avx512"] if _core.get_sgemm()[2] else []) + ["blas"]
    before = ("auto", "avx512", "blas")[_core.get_sgemm()[0]]
    rng = np.random.default_rng(0)
    print(f"float32 GEMM, {threads} threads, best of {repeat} alternating runs, GFLOP/s "
          f"wall / CPU-time (% of the float32 FMA peak, {peak:.1f} GFLOP/s)")
    print("| shape | m x k @ k x n | " + " | ".join(
        {"avx512": "geomatch AVX-512F", "blas": "geomatch on BLAS"}[m] for m in modes)
        + " | NumPy @ |")
    print("|---|---|" + "---|" * (len(modes) + 1))
    try:
        for label, m, n, k, ta, tb in SHAPES:
            a = rng.uniform(-1, 1, (k, m) if ta else (m, k)).astype(np.float32)
            b = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(np.float32)
            c = np.empty((m, n), np.float32)
            opa, opb = (a.T if ta else a), (b.T if tb else b)
            runs = {md: (lambda md=md: (gm.set_sgemm(md), _core.gemm(a, b, c, ta, tb, 1.0, 0.0)))
                    for md in modes}
            runs["numpy"] = lambda: np.matmul(opa, opb, out=c)
            best = {key: [1e9, 1e9] for key in runs}
            for _ in range(repeat):
                for key, fn in runs.items():
                    w, p = time.perf_counter(), time.process_time()
                    fn()
                    w, p = time.perf_counter() - w, time.process_time() - p
                    best[key][0] = min(best[key][0], w)
                    best[key][1] = min(best[key][1], max(p, 1e-9) / threads)
            fl = 2.0 * m * n * k

            def cell(key):
                g_w, g_c = fl / best[key][0] / 1e9, fl / best[key][1] / 1e9
                return f"{g_w:.0f} / {g_c:.0f} ({100 * g_w / peak:.0f}%)"
            print(f"| {label} | {m}x{k} @ {k}x{n} | "
                  + " | ".join(cell(md) for md in modes) + f" | {cell('numpy')} |")
    finally:
        gm.set_sgemm(before)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--coretypes", nargs="*", default=None,
                    help="OpenBLAS kernel sets to compare (default: only the current one)")
    ap.add_argument("--shapes", action="store_true",
                    help="also print the GEMM rates of geomatch's shapes")
    args = ap.parse_args()
    from geomatch.testing.limits import measure, print_limits, print_machine

    if args.coretypes:
        for core in args.coretypes:
            env = dict(os.environ, OPENBLAS_CORETYPE=core)
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                  "--repeat", str(args.repeat)]
                                 + (["--shapes"] if args.shapes else []), env=env,
                                 capture_output=True, text=True)
            print(f"OPENBLAS_CORETYPE={core}:\n{out.stdout.strip()}{out.stderr[-500:]}")
        return
    print_machine(args.threads)
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print_limits(measure(args.threads, repeat=args.repeat))
    if args.shapes:
        shape_table(args.threads, max(args.repeat, 5))


if __name__ == "__main__":
    main()
