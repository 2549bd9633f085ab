"""The machine's own limits, measured in the same run as a benchmark.

Ratios against these are what must hold on every machine (issue 16), unlike
absolute times:

- **sgemm rate**: GFLOP/s of a 1369x768 @ 768x3072 float32 product (the
  shape of a ViT-B MLP layer at 518x518), through geomatch's own GEMM path
  (``_core.nn_linear``: the AVX-512F kernel of ``csrc/gm_sgemm_avx512.c``
  where the CPU has it and GEOMATCH_SGEMM allows, else row blocks of
  single-threaded BLAS calls on the OpenMP threads), through the same path
  forced onto BLAS (GEOMATCH_SGEMM=blas), and through NumPy's ``@``
  (NumPy's own BLAS).  Both BLAS rates follow ``OPENBLAS_CORETYPE``.
- **float32 FMA peak**: GFLOP/s of a register-only loop of independent FMAs
  (``_core.fma_peak``) on 256-bit (AVX2) and 512-bit (AVX-512F) vectors,
  run on ``threads`` Python threads at once (the C loop releases the GIL),
  summed: what the cores can do at most, to read the sgemm rates against.
- **read pass**: seconds of one pass reading a 1370x1370 float32 matrix:
  the fastest single call of a matrix-vector product (sgemv) or a sum (the
  matrix is then in the last-level cache, as the dustbin layer's is).

Every benchmark calls :func:`print_machine` first (CPU model, the SIMD flags
that matter here: AVX-512, AVX512_BF16, AMX, and the BLAS kernel in use) and
:func:`measure` for the limits it divides by.  Nothing here asserts on time.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Dict, Optional

GEMM_SHAPE = (1369, 768, 3072)  # m, k, n
READ_SIDE = 1370
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
          "amx_int8")


def cpu_description() -> Dict[str, object]:
    """CPU model, core count and the relevant SIMD flags from /proc/cpuinfo."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "cpus": os.cpu_count(),
            "flags": [f for f in _FLAGS if f in flags]}


def blas_kernel() -> str:
    """The BLAS build geomatch uses and the kernel it selected at run time."""
    from geomatch.runtime.config import build_info
    info = build_info()
    return f"{info.get('blas', '?')}, kernel {info.get('blas_corename', '?')}"


def print_machine(threads: Optional[int] = None) -> None:
    """One line: CPU model, flags, BLAS kernel, threads, date (UTC)."""
    d = cpu_description()
    flags = ", ".join(d["flags"]) or "none of " + ", ".join(_FLAGS)
    print(f"machine: {d['model']}, {d['cpus']} CPUs; flags: {flags}; BLAS: {blas_kernel()}"
          + (f"; {threads} threads" if threads else "")
          + time.strftime("; %Y-%m-%d %H:%M UTC", time.gmtime()))


def _median(fn, repeat: int, warmup: int = 1) -> float:
    from .timing import median_time
    return median_time(fn, repeat=repeat, warmup=warmup)


def measure(threads: int, *, repeat: int = 7, numpy_gemm: bool = True,
            read_side: int = READ_SIDE) -> Dict[str, float]:
    """Measure the limits with ``threads`` threads; returns a dict.

    Keys: ``sgemm_gflops`` (geomatch's GEMM path), ``sgemm_kernel``
    ("avx512" or "blas": what that path ran), ``blas_sgemm_gflops`` (the
    same path on BLAS; with ``numpy_gemm``, and only when it differs from
    the first), ``numpy_sgemm_gflops`` (NumPy ``@``; absent with
    ``numpy_gemm=False``), ``fma_peak_avx2_gflops`` /
    ``fma_peak_avx512_gflops`` (:func:`fma_peak`; absent where the CPU
    lacks the instruction set), ``bf16_peak_gflops`` (the AVX512_BF16
    ``VDPBF16PS`` peak, ``fma_peak(512, kind="bf16")``; absent without
    AVX512_BF16), ``read_pass_s`` (one
    read of a ``read_side``-square float32 matrix, default 1370: the fastest
    of 200 single calls, since a median of a 40-microsecond call on a shared
    machine measures the scheduler, not the memory), ``read_pass_median_s``,
    ``read_gbs`` (the bandwidth of the fastest pass).  The sgemm rates are
    medians of ``repeat`` runs, like the benchmarks' own figures.
    """
    import numpy as np

    import geomatch as gm
    from geomatch import _core

    gm.set_num_threads(threads)
    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)  # (out, in), as a Linear weight
    y = np.empty((m, n), np.float32)
    flops = 2.0 * m * k * n
    out = {"sgemm_gflops": flops / _median(lambda: _core.nn_linear(a, w, None, out=y),
                                           repeat) / 1e9}
    out["sgemm_kernel"] = gm.get_sgemm()
    if numpy_gemm:
        if out["sgemm_kernel"] != "blas":
            mode = ("auto", "avx512", "blas")[_core.get_sgemm()[0]]
            gm.set_sgemm("blas")
            try:
                out["blas_sgemm_gflops"] = flops / _median(
                    lambda: _core.nn_linear(a, w, None, out=y), repeat) / 1e9
            finally:
                gm.set_sgemm(mode)
        for width in (256, 512):
            g = fma_peak(width, threads)
            if g is not None:
                out[f"fma_peak_avx{2 if width == 256 else 512}_gflops"] = g
        g = fma_peak(512, threads, kind="bf16")
        if g is not None:
            out["bf16_peak_gflops"] = g
        wt = np.ascontiguousarray(w.T)
        out["numpy_sgemm_gflops"] = flops / _median(lambda: np.matmul(a, wt, out=y),
                                                    repeat) / 1e9
    s = read_side
    mat = rng.standard_normal((s, s)).astype(np.float32)
    v = np.ones(s, np.float32)
    from .timing import best_time
    out["read_pass_s"] = min(best_time(lambda: mat @ v, 200), best_time(lambda: mat.sum(), 50))
    out["read_pass_median_s"] = min(_median(lambda: mat @ v, 21), _median(lambda: mat.sum(), 21))
    out["read_gbs"] = mat.nbytes / out["read_pass_s"] / 1e9
    out["read_side"] = s
    return out


def fma_peak(width: int, threads: int = 1, iters: int = 1000000,
             reps: int = 10, kind: str = "f32") -> Optional[float]:
    """float32 FMA peak in GFLOP/s for ``width``-bit vectors (256: AVX2+FMA,
    512: AVX-512F): ``_core.fma_peak`` (the best of ``reps`` runs of a
    register-only loop of 16 independent FMA chains, ``iters`` iterations)
    on ``threads`` Python threads at once, summed.  ``kind="bf16"`` (width
    512): the same for AVX512_BF16 ``VDPBF16PS`` (4 flops per lane: two
    bfloat16 products, two float32 additions).  None when the CPU lacks
    that instruction set."""
    import threading

    from geomatch import _core

    if _core.fma_peak(width, iters=1000, reps=1, kind=kind) is None:
        return None
    results = [0.0] * threads

    def run(i):
        results[i] = _core.fma_peak(width, iters=iters, reps=reps, kind=kind)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return float(sum(results))


def remeasure(lim: Dict[str, float], threads: int) -> Dict[str, float]:
    """Measure the limits again (after a long benchmark, on a machine whose
    load changes) and keep the higher sgemm rate and the faster read pass;
    prints the new measurement.  Returns ``lim`` updated in place."""
    again = measure(threads, numpy_gemm=False, read_side=int(lim.get("read_side", READ_SIDE)))
    print("re-measured at the end:", end=" ")
    print_limits(again)
    lim["sgemm_gflops"] = max(lim["sgemm_gflops"], again["sgemm_gflops"])
    if again["read_pass_s"] < lim["read_pass_s"]:
        for k in ("read_pass_s", "read_gbs"):
            lim[k] = again[k]
    return lim


def print_limits(lim: Dict[str, float]) -> None:
    """Print the measured limits as one Markdown line."""
    m, k, n = GEMM_SHAPE
    s = f"limits: sgemm {m}x{k} @ {k}x{n} float32 = {lim['sgemm_gflops']:.1f} GFLOP/s " \
        "(geomatch nn_linear)"
    if "sgemm_kernel" in lim:
        s = s[:-1] + f", {lim['sgemm_kernel']} kernel)"
    if "blas_sgemm_gflops" in lim:
        s += f", {lim['blas_sgemm_gflops']:.1f} GFLOP/s (geomatch nn_linear on BLAS)"
    if "numpy_sgemm_gflops" in lim:
        s += f", {lim['numpy_sgemm_gflops']:.1f} GFLOP/s (NumPy @)"
    peaks = [(name, lim[key]) for name, key in (("AVX2", "fma_peak_avx2_gflops"),
                                                ("AVX-512", "fma_peak_avx512_gflops"))
             if key in lim]
    if peaks:
        s += "; float32 FMA peak " + ", ".join(f"{n} {g:.1f}" for n, g in peaks) + " GFLOP/s"
        top = peaks[-1][1]
        s += f" (sgemm at {100 * lim['sgemm_gflops'] / top:.0f}% of the {peaks[-1][0]} peak)"
    if "bf16_peak_gflops" in lim:
        s += f"; bf16 VDPBF16PS peak {lim['bf16_peak_gflops']:.1f} GFLOP/s"
        if "fma_peak_avx512_gflops" in lim:
            s += (f" ({lim['bf16_peak_gflops'] / lim['fma_peak_avx512_gflops']:.2f}x the "
                  "AVX-512 float32 peak: the ceiling of a bf16 speed-up)")
    s += (f"; one read pass over {lim.get('read_side', READ_SIDE)}^2 float32 = "
          f"{lim['read_pass_s'] * 1e6:.0f} us fastest ({lim['read_gbs']:.1f} GB/s), "
          f"{lim['read_pass_median_s'] * 1e6:.0f} us median")
    print(s)


def vit_flops(cfg, size: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one DINOv2 forward at size x size:
    patch embedding, per block qkv/proj/MLP linear layers and the two
    attention products (softmax, LayerNorm, GELU not counted)."""
    p = cfg.patch_size
    tokens = 1 + cfg.num_register_tokens + (size // p) ** 2
    d, h = cfg.embed_dim, cfg.hidden_dim
    patch = 2.0 * (size // p) ** 2 * 3 * p * p * d
    mlp = 2.0 * tokens * d * h * (3 if cfg.ffn == "swiglu" else 2)
    linear = 2.0 * tokens * d * (3 * d + d) + mlp
    attention = 2.0 * 2.0 * tokens * tokens * d
    return patch + cfg.depth * (linear + attention)


def random_dinov2_state(cfg, seed=0):
    """Random DINOv2 weights of configuration ``cfg`` (float32, scaled like a
    trained model: LayerNorm gains near 1, layer-scale gammas near 0.1,
    matrices with unit-variance outputs), for timing without real weights."""
    import numpy as np

    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in cfg.expected_shapes().items():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("gamma"):
            a = 0.1 + 0.1 * rng.random(shape)
        elif len(shape) >= 2 and "token" not in name and "pos" not in name:
            a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            a = 0.1 * rng.standard_normal(shape)
        state[name] = a.astype(np.float32)
    return state
