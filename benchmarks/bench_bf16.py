"""DINOv2 backbone, bfloat16 (``precision="bf16"``) vs float32, same machine.

Per model (random weights, 518x518): median time per image of both
precisions (alternated, same process), the speed-up, the feature error of
bf16 against float32 (max |diff| / max |f32| and relative Frobenius norm),
and the upsample-argmax keypoint transfers of a set of image pairs computed
from both (the fraction of keypoints whose predicted pixel is unchanged).
The pairs are smooth synthetic images (low-frequency noise) and a shifted,
re-noised copy, so the transfers are well defined even with random weights;
real weights are not available offline (say so beside the figure).

    python benchmarks/bench_bf16.py [--models vits14 vitb14] [--pairs 6] [--threads 2]

Targets (issue 16): >= 2x float32, features within 1e-2 relative,
>= 99% of the upsample-argmax predictions unchanged.
"""
from __future__ import annotations

import argparse


import numpy as np  # noqa: E402

import geomatch as gm  # noqa: E402
from geomatch.testing.limits import measure, print_limits, print_machine, remeasure, vit_flops  # noqa: E402
from geomatch.testing.timing import fmt_time, median_time  # noqa: E402
from geomatch.testing.limits import random_dinov2_state as random_state  # noqa: E402


def smooth_image(rng, size, shift=(0, 0)):
    """A (size, size, 3) normalized image of low-frequency noise; ``shift``
    moves the content by whole pixels (the pair's ground truth)."""
    from PIL import Image
    big = size + 64
    lo = rng.standard_normal((12, 12, 3)).astype(np.float32)
    out = np.stack([np.asarray(Image.fromarray(lo[..., c]).resize((big, big),
                                                                  Image.BICUBIC))
                    for c in range(3)], -1)
    dy, dx = shift
    return np.ascontiguousarray(out[32 + dy:32 + dy + size, 32 + dx:32 + dx + size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vits14", "vitb14"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--keypoints", type=int, default=100, help="per pair")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gm.set_num_threads(args.threads)
    print_machine(args.threads)
    lim = measure(args.threads)
    print_limits(lim)
    from geomatch.backbone import DinoV2, DinoV2Config
    from geomatch.backbone.dinov2 import bf16_available

    if not bf16_available():
        print("this CPU has no AVX512-BF16: precision='bf16' is not available here")
        return
    size = args.size
    for model in args.models:
        cfg = DinoV2Config.from_name(model)
        st = random_state(cfg)
        f32, bf = DinoV2(cfg, st), DinoV2(cfg, st, precision="bf16")
        del st
        rng = np.random.default_rng(0)
        px = smooth_image(rng, size)
        t32 = tbf = None
        for _ in range(2):   # alternate; keep each one's best median
            a = median_time(lambda: f32.features(px), repeat=args.repeat)
            b = median_time(lambda: bf.features(px), repeat=args.repeat)
            t32 = a if t32 is None else min(t32, a)
            tbf = b if tbf is None else min(tbf, b)
        flops = vit_flops(cfg, size)
        errs, fros, same, total = [], [], 0, 0
        for i in range(args.pairs):
            shift = (int(rng.integers(-20, 21)), int(rng.integers(-20, 21)))
            srng = np.random.default_rng(100 + i)
            src = smooth_image(srng, size)
            trg = smooth_image(np.random.default_rng(100 + i), size, shift)
            trg = trg + 0.05 * rng.standard_normal(trg.shape).astype(np.float32)
            fa = [f32.features(x) for x in (src, trg)]
            fb = [bf.features(x) for x in (src, trg)]
            for u, v in zip(fa, fb):
                errs.append(np.abs(u - v).max() / np.abs(u).max())
                fros.append(np.linalg.norm(u - v) / np.linalg.norm(u))
            kps = rng.uniform(40, size - 40, (args.keypoints, 2)).astype(np.float32)
            pa = gm.transfer_keypoints(fa[0], fa[1], kps, (size, size), (size, size))
            pb = gm.transfer_keypoints(fb[0], fb[1], kps, (size, size), (size, size))
            same += int(np.all(pa == pb, axis=1).sum())
            total += len(kps)
        remeasure(lim, args.threads)
        print(f"\n### {model} @ {size}x{size}, {args.threads} threads (% of the higher "
              f"sgemm rate, {lim['sgemm_gflops']:.1f} GFLOP/s)\n")
        peak = {"float32": lim.get("fma_peak_avx512_gflops"), "bf16": lim.get("bf16_peak_gflops")}
        print("| precision | time / image | GFLOP/s | % of sgemm | % of its own peak | speed-up |")
        print("|---|---|---|---|---|---|")
        for name, t in (("float32", t32), ("bf16", tbf)):
            rate = flops / t / 1e9
            own = f"{100 * rate / peak[name]:.0f}%" if peak[name] else "n/a"
            print(f"| {name} | {fmt_time(t)} | {rate:.1f} | "
                  f"{100 * rate / lim['sgemm_gflops']:.0f}% | {own} | {t32 / t:.2f}x |")
        if peak["float32"] and peak["bf16"]:
            print(f"\nceiling: bf16 peak / float32 peak = {peak['bf16'] / peak['float32']:.2f} "
                  "(the matrix products can gain at most this; LayerNorm, softmax and GELU "
                  "do not get faster)")
        print(f"\nbf16 vs float32 features ({2 * args.pairs} images): max |diff| / max |f32| "
              f"{max(errs):.2e} (worst image), relative Frobenius {max(fros):.2e} "
              "(target <= 1e-2)")
        print(f"upsample-argmax predictions unchanged: {same}/{total} = "
              f"{100 * same / total:.2f}% of keypoints over {args.pairs} pairs "
              "(target >= 99%; random weights, synthetic pairs)")


if __name__ == "__main__":
    main()
