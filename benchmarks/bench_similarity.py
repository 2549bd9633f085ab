"""Cosine similarity and window soft-argmax: geomatch vs NumPy and PyTorch.

Run:  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/bench_similarity.py

The main case is one SPair-71k pair at DINOv2-B/14 resolution: 37*37 = 1369
patches per image, 768 channels, float32.  "NumPy matmul (pre-normalized)"
times only the matrix product of already-normalized rows, i.e. the lower
bound for any cosine-similarity implementation; the target is geomatch
within 1.3x of it.  Threads: 2 for everyone (geomatch via
gm.set_num_threads, which also sets OpenBLAS; torch via set_num_threads).
"""
from __future__ import annotations

import numpy as np

import geomatch as gm
from geomatch.testing.timing import median_time, print_table
from geomatch.testing.limits import measure, print_limits, print_machine

LIMITS: dict = {}

THREADS = 2


def numpy_normalize(a):
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(n > 0, n, 1)


def bench_cosine(n=1369, m=1369, d=768, repeat=15):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.standard_normal((m, d)).astype(np.float32)
    xn, ynt = numpy_normalize(x), np.ascontiguousarray(numpy_normalize(y).T)
    yn = numpy_normalize(y)
    rows = [("geomatch cosine_similarity", median_time(lambda: gm.cosine_similarity(x, y),
                                                       repeat=repeat))]
    rows.append(("NumPy matmul (pre-normalized)",
                 median_time(lambda: xn @ yn.T, repeat=repeat), "lower bound"))
    rows.append(("NumPy matmul (pre-normalized, contiguous y.T)",
                 median_time(lambda: xn @ ynt, repeat=repeat), ""))
    rows.append(("NumPy normalize + matmul",
                 median_time(lambda: numpy_normalize(x) @ numpy_normalize(y).T,
                             repeat=repeat), ""))
    try:
        import torch
        torch.set_num_threads(THREADS)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        F = torch.nn.functional

        def torch_cos():
            with torch.no_grad():
                return F.normalize(xt, dim=-1) @ F.normalize(yt, dim=-1).T

        xnt, ynt_t = torch.from_numpy(xn), torch.from_numpy(yn)
        rows.append(("torch normalize + matmul", median_time(torch_cos, repeat=repeat), ""))
        rows.append(("torch matmul (pre-normalized)",
                     median_time(lambda: xnt @ ynt_t.T, repeat=repeat), ""))
    except ImportError:
        rows.append(("torch", None, "not installed"))
    s = gm.cosine_similarity(x, y)
    ref = (xn.astype(np.float64) @ yn.astype(np.float64).T)
    err = float(np.abs(s - ref).max())
    print_table(f"cosine similarity {n}x{d} . {m}x{d} float32, {THREADS} threads "
                f"(max |err| vs float64 = {err:.1e})", rows,
                baseline="geomatch cosine_similarity")
    g = rows[0][1]
    lb = rows[1][1]
    print(f"\ngeomatch / NumPy-matmul-lower-bound = {g / lb:.2f}x (target <= 1.30x)")
    if LIMITS:
        rate = 2.0 * n * m * d / g / 1e9
        print(f"geomatch cosine_similarity: {rate:.1f} GFLOP/s = "
              f"{100 * rate / LIMITS['sgemm_gflops']:.0f}% of the measured sgemm rate")


def bench_soft_argmax(k=1369, h=37, w=37, repeat=15):
    rng = np.random.default_rng(1)
    s = rng.random((k, h * w)).astype(np.float32)
    rows = [("geomatch window_soft_argmax",
             median_time(lambda: gm.window_soft_argmax(s, (h, w)), repeat=repeat)),
            ("geomatch argmax_2d", median_time(lambda: gm.argmax_2d(s, (h, w)),
                                               repeat=repeat))]

    def numpy_soft(window=7, t=0.02):
        a = np.argmax(s, axis=1)
        ay, ax = np.divmod(a, w)
        r = np.arange(h)[None, :, None]
        c = np.arange(w)[None, None, :]
        inside = (np.abs(r - ay[:, None, None]) <= window) & (
            np.abs(c - ax[:, None, None]) <= window)
        m = s.reshape(k, h, w)
        smax = m.reshape(k, -1).max(axis=1)[:, None, None]
        e = np.where(inside, np.exp((m - smax) / t), 0.0)
        z = e.sum(axis=(1, 2))
        return np.stack([(e * c).sum(axis=(1, 2)) / z, (e * r).sum(axis=(1, 2)) / z], 1)

    np.testing.assert_allclose(numpy_soft(), gm.window_soft_argmax(s, (h, w)), atol=1e-4)
    rows.append(("NumPy masked softmax (vectorized)", median_time(numpy_soft, repeat=5), ""))
    rows.append(("NumPy argmax + divmod",
                 median_time(lambda: np.divmod(np.argmax(s, axis=1), w), repeat=repeat), ""))
    print_table(f"window soft-argmax, {k} maps of {h}x{w}, window 7, float32, "
                f"{THREADS} threads", rows, baseline="geomatch window_soft_argmax")


if __name__ == "__main__":
    gm.set_num_threads(THREADS)
    gm.show_config()
    print_machine(THREADS)
    LIMITS.update(measure(THREADS))
    print_limits(LIMITS)
    bench_cosine()
    bench_soft_argmax()
