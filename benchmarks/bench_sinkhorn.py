"""Benchmark: geomatch.sinkhorn vs POT on 1369 x 1369 cosine costs.

C = 1 - cosine similarity of GECO-like patch features of two 37 x 37 grids
(smooth random-Fourier features of the patch position, the target grid a
warped copy, plus noise; 64 channels, L2-normalized), uniform marginals,
float32, tol 1e-6, 2 threads:
  reg 0.05  geomatch vs ot.sinkhorn(method="sinkhorn")
  reg 1e-3  geomatch vs ot.sinkhorn(method="sinkhorn_log")
Prints medians, ratios (peer time / geomatch time) and plan agreement.
Run: OMP_NUM_THREADS=2 python benchmarks/bench_sinkhorn.py [--repeat R]

OpenMP wait policy: geomatch's default (a short spin, GOMP_SPINCOUNT=10000,
then sleep) unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

import geomatch as gm
from geomatch.testing.timing import median_time, print_table
from geomatch.testing.limits import measure, print_limits, print_machine


def geco_like_costs(h: int = 37, w: int = 37, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Cosine costs (h*w, h*w) between two synthetic feature grids."""
    rng = np.random.default_rng(seed)
    freq = rng.normal(scale=3.0, size=(2, dim))
    phase = rng.uniform(0, 2 * np.pi, size=dim)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    pos = np.stack([xx.ravel(), yy.ravel()], 1)
    warped = pos + 0.05 * np.sin(3 * pos[:, ::-1]) + 0.02 * rng.normal(size=pos.shape)
    fs = np.cos(pos @ freq + phase) + 0.3 * rng.normal(size=(h * w, dim))
    ft = np.cos(warped @ freq + phase) + 0.3 * rng.normal(size=(h * w, dim))
    fs /= np.linalg.norm(fs, axis=1, keepdims=True)
    ft /= np.linalg.norm(ft, axis=1, keepdims=True)
    return (1.0 - fs @ ft.T).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import ot

    gm.set_num_threads(args.threads)
    print_machine(args.threads)
    print_limits(measure(args.threads, numpy_gemm=False))
    C = geco_like_costs()
    n, m = C.shape
    a = np.full(n, 1.0 / n, dtype=np.float32)
    b = np.full(m, 1.0 / m, dtype=np.float32)
    tol = 1e-6
    print(f"C: {n}x{m} float32 cosine costs, range [{C.min():.3f}, {C.max():.3f}]; "
          f"threads={args.threads}; tol={tol}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")

    for reg, method, max_iter in [(0.05, "sinkhorn", 1000), (1e-3, "sinkhorn_log", 1000)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            P, f, g, it = gm.sinkhorn(C, a, b, reg, tol=tol, max_iter=max_iter,
                                      return_potentials=True)
            # max-norm tol that implies POT's 2-norm test: tol / sqrt(M)
            tol_l2 = tol / np.sqrt(m)
            *_, it_l2 = gm.sinkhorn(C, a, b, reg, tol=tol_l2, max_iter=max_iter,
                                    return_potentials=True)

            def run_gm(t=tol):
                gm.sinkhorn(C, a, b, reg, tol=t, max_iter=max_iter)

            t_gm = median_time(run_gm, repeat=args.repeat)
            t_gm_l2 = median_time(lambda: run_gm(tol_l2), repeat=args.repeat)
            gm.set_num_threads(1)
            t_gm1 = median_time(run_gm, repeat=args.repeat)
            gm.set_num_threads(args.threads)
            # POT: the slow log-domain solver is timed on single calls
            pot_repeat = 1 if method == "sinkhorn_log" else max(1, min(args.repeat, 3))
            samples = []
            for _ in range(pot_repeat):
                t0 = time.perf_counter()
                Q, log = ot.sinkhorn(a, b, C, reg, method=method, stopThr=tol,
                                     numItermax=max_iter, log=True)
                samples.append(time.perf_counter() - t0)
            t_pot = float(np.median(samples))
        Q = np.asarray(Q)
        diff = float(np.abs(P - Q).max())
        rel = diff / float(Q.max())
        # marginal violations of the returned plans (float64 sums)
        colerr = float(np.abs(P.sum(0, dtype=np.float64) - b).max())
        pot_colerr = float(np.abs(Q.sum(0, dtype=np.float64) - b).max())
        rowerr = float(np.abs(P.sum(1, dtype=np.float64) - a).max())
        pot_rowerr = float(np.abs(Q.sum(1, dtype=np.float64) - a).max())
        print_table(
            f"reg={reg:g}: geomatch.sinkhorn vs ot.sinkhorn(method={method!r})",
            [("geomatch.sinkhorn", t_gm, f"{it} iterations, max row/col err {rowerr:.2g}/{colerr:.2g}"),
             ("geomatch.sinkhorn, 1 thread", t_gm1, "same plan (thread-count invariant)"),
             ("geomatch.sinkhorn, tol/sqrt(M)", t_gm_l2,
              f"{it_l2} iterations; max-norm tol implying POT's 2-norm test"),
             (f"POT ot.sinkhorn {method}", t_pot,
              f"{log.get('niter', '?') + 1} iterations, max row/col err "
              f"{pot_rowerr:.2g}/{pot_colerr:.2g}")],
            baseline="geomatch.sinkhorn")
        print(f"\nplans: max |P_gm - P_pot| = {diff:.3g} (relative to max P: {rel:.3g}); "
              f"speed-up {t_pot / t_gm:.1f}x")


if __name__ == "__main__":
    main()
