"""Benchmark: exact upsample-argmax keypoint transfer vs upsample-then-argmax.

One SPair-sized pair: 37x37x768 DINOv2-B features for source and target,
500x375 images, 10 source keypoints.  Peers compute the published protocol
literally: upsample both maps bilinearly (align_corners=False), normalize,
cosine against every target pixel, argmax.

    OMP_NUM_THREADS=2 python benchmarks/bench_transfer.py
"""
from __future__ import annotations

import numpy as np

import geomatch as gm
from geomatch.testing import reference
from geomatch.testing.timing import best_time, median_time, print_table
from geomatch.testing.limits import measure, print_limits, print_machine

H_GRID = W_GRID = 37
DIM = 768
SRC_SIZE = (500, 375)   # (W, H)
TRG_SIZE = (500, 375)
N_KPS = 10
THREADS = 2


linear_matrix = reference.resize_matrix  # (n_out, n_in), PyTorch align_corners=False


def numpy_naive(sf, tf, kps, ss, ts, mats):
    """Upsample both maps (separable matrices), normalize, cosine, argmax."""
    ry_s, rx_s, ry_t, rx_t = mats
    su = np.einsum("Yi,ijd->Yjd", ry_s, sf)
    su = np.einsum("Xj,Yjd->YXd", rx_s, su)
    tu = np.einsum("Yi,ijd->Yjd", ry_t, tf)
    tu = np.einsum("Xj,Yjd->YXd", rx_t, tu).reshape(-1, sf.shape[-1])
    tu /= np.linalg.norm(tu, axis=1, keepdims=True)
    q = su[np.floor(kps[:, 1]).astype(int), np.floor(kps[:, 0]).astype(int)]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    best = np.argmax(q @ tu.T, axis=1)
    return np.stack([best % ts[0], best // ts[0]], axis=1)


def torch_naive(torch, F, sf, tf, kps, ss, ts):
    """F.interpolate + normalize + matmul + argmax, as in the published code."""
    with torch.no_grad():
        su = F.interpolate(sf, size=(ss[1], ss[0]), mode="bilinear", align_corners=False)[0]
        tu = F.interpolate(tf, size=(ts[1], ts[0]), mode="bilinear", align_corners=False)[0]
        d = tu.shape[0]
        tn = F.normalize(tu.reshape(d, -1), dim=0)
        q = su[:, kps[:, 1].floor().long(), kps[:, 0].floor().long()].T
        q = F.normalize(q, dim=1)
        best = torch.argmax(q @ tn, dim=1)
        return torch.stack([best % ts[0], best // ts[0]], dim=1)


def main() -> None:
    gm.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    # Smooth-ish random features (neighbouring patches correlated, as in DINOv2).
    base = rng.standard_normal((2, H_GRID + 2, W_GRID + 2, DIM)).astype(np.float32)
    feats = (base[:, :-2, :-2] + base[:, 1:-1, 1:-1] + base[:, 2:, 2:]) / 3 + 0.3
    sf, tf = feats[0].copy(), feats[1].copy()
    kps = np.stack([rng.uniform(0, SRC_SIZE[0], N_KPS),
                    rng.uniform(0, SRC_SIZE[1], N_KPS)], axis=1).astype(np.float32)

    ours = gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE)
    b_ours = best_time(lambda: gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE))
    gm.set_num_threads(1)
    t_one = median_time(lambda: gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE),
                        repeat=15, min_time=0.05)
    b_one = best_time(lambda: gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE))
    gm.set_num_threads(THREADS)
    t_ours = median_time(lambda: gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE),
                         repeat=15, min_time=0.05)
    t_grid = median_time(lambda: gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE,
                                                       mode="grid-argmax"),
                         repeat=15, min_time=0.05)
    t_soft = median_time(lambda: gm.transfer_keypoints(sf, tf, kps, SRC_SIZE, TRG_SIZE,
                                                       mode="soft-argmax"),
                         repeat=15, min_time=0.05)

    mats = (linear_matrix(H_GRID, SRC_SIZE[1]).astype(np.float32),
            linear_matrix(W_GRID, SRC_SIZE[0]).astype(np.float32),
            linear_matrix(H_GRID, TRG_SIZE[1]).astype(np.float32),
            linear_matrix(W_GRID, TRG_SIZE[0]).astype(np.float32))
    ref_np = numpy_naive(sf, tf, kps, SRC_SIZE, TRG_SIZE, mats)
    t_np = median_time(lambda: numpy_naive(sf, tf, kps, SRC_SIZE, TRG_SIZE, mats), repeat=3)

    rows = [("geomatch upsample-argmax (exact, C)", t_ours,
             f"{THREADS} threads; fastest call {b_ours * 1e3:.2f} ms"),
            ("geomatch upsample-argmax, 1 thread", t_one,
             f"same result; fastest call {b_one * 1e3:.2f} ms"),
            ("NumPy upsample + normalize + argmax", t_np,
             f"agrees on {int(np.sum(np.all(ref_np == ours, axis=1)))}/{N_KPS} kps")]
    try:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(THREADS)
        st = torch.from_numpy(sf).permute(2, 0, 1)[None].contiguous()
        tt = torch.from_numpy(tf).permute(2, 0, 1)[None].contiguous()
        kt = torch.from_numpy(kps)
        ref_t = torch_naive(torch, F, st, tt, kt, SRC_SIZE, TRG_SIZE).numpy()
        t_t = median_time(lambda: torch_naive(torch, F, st, tt, kt, SRC_SIZE, TRG_SIZE),
                          repeat=5)
        rows.append(("PyTorch F.interpolate + normalize + matmul + argmax", t_t,
                     f"agrees on {int(np.sum(np.all(ref_t == ours, axis=1)))}/{N_KPS} kps"))
    except ImportError:
        rows.append(("PyTorch F.interpolate + normalize + matmul + argmax", None,
                      "torch not installed"))
    # The exact branch and bound prunes grid cells only where the cell bounds
    # separate them; on these maps (neighbouring columns independent) most
    # keypoints take the exhaustive scan.  Maps with a shared component plus
    # noise (bench_eval's) are pruned:
    t_full = median_time(lambda: gm._core.transfer_upsample_argmax(
        sf, tf, kps, np.array(SRC_SIZE), np.array(TRG_SIZE), full_scan=True),
        repeat=15, min_time=0.05)
    shared = rng.standard_normal((H_GRID, W_GRID, DIM)).astype(np.float32)
    sf2, tf2 = (0.7 * shared + rng.standard_normal((H_GRID, W_GRID, DIM), dtype=np.float32)
                for _ in range(2))
    t_bb2 = median_time(lambda: gm.transfer_keypoints(sf2, tf2, kps, SRC_SIZE, TRG_SIZE),
                        repeat=15, min_time=0.05)
    t_full2 = median_time(lambda: gm._core.transfer_upsample_argmax(
        sf2, tf2, kps, np.array(SRC_SIZE), np.array(TRG_SIZE), full_scan=True),
        repeat=15, min_time=0.05)
    rows += [("same, exhaustive scan of every pixel (full_scan=True)", t_full, "same result"),
             ("maps with a shared component + noise (bench_eval's), branch and bound", t_bb2,
              f"exhaustive scan {t_full2 * 1e3:.2f} ms; "
              f"rate {N_KPS * 2.0 * H_GRID * W_GRID * DIM / t_bb2 / 1e9:.1f} GFLOP/s")]
    rows += [("geomatch grid-argmax (37x37, not exact)", t_grid, "other protocol"),
             ("geomatch soft-argmax (37x37, not exact)", t_soft, "other protocol")]
    print_machine(THREADS)
    lim = measure(THREADS)
    print_limits(lim)
    print(f"pair: features {H_GRID}x{W_GRID}x{DIM} float32, images {SRC_SIZE} -> "
          f"{TRG_SIZE} (W, H), {N_KPS} keypoints, {THREADS} threads")
    print_table("upsample-argmax keypoint transfer (one SPair-sized pair)", rows,
                baseline="geomatch upsample-argmax (exact, C)")
    flops = N_KPS * 2.0 * H_GRID * W_GRID * DIM
    rate = flops / t_ours / 1e9
    print(f"\nupsample-argmax effective rate (2*h*w*D flops per keypoint): {rate:.1f} GFLOP/s "
          f"= {100 * rate / lim['sgemm_gflops']:.1f}% of the measured sgemm rate "
          "(one pair of 10 keypoints; the issue-16 target of >= 20% is over a whole "
          "split: benchmarks/bench_eval.py)")


if __name__ == "__main__":
    main()
