"""DINOv2 inference: geomatch (NumPy + C kernels, no torch) vs PyTorch CPU.

Both run the same random weights (official layout) on a 518x518 input with
the same thread count (default 2).  Each implementation runs in its own
subprocess so that peak memory (VmHWM, reset after the weights are built)
is measured separately.

    python benchmarks/bench_backbone.py [--models vits14 vitb14] [--threads 2]
                                        [--size 518] [--repeat 5]
                                        [--impls geomatch geomatch-tiled torch]

``geomatch-tiled`` is geomatch with its attention forced to the tiled BLAS
kernel (the float32 path before the fused kernel).  Each model's table is
followed by one attention layer timed alone and by whole forwards, both
with the fused and the tiled kernel alternating in one process (same
threads; on a loaded machine both kernels then see the same load).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time



def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _torch_model(cfg, state):
    import torch
    from torch import nn
    F = nn.functional

    class Attn(nn.Module):
        def __init__(s):
            super().__init__()
            s.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
            s.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

        def forward(s, x):
            b, n, c = x.shape
            q = s.qkv(x).reshape(b, n, 3, cfg.num_heads, c // cfg.num_heads).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q[0], q[1], q[2])
            return s.proj(o.transpose(1, 2).reshape(b, n, c))

    class LS(nn.Module):
        def __init__(s):
            super().__init__()
            s.gamma = nn.Parameter(torch.ones(cfg.embed_dim))

        def forward(s, x):
            return x * s.gamma

    class Mlp(nn.Module):
        def __init__(s):
            super().__init__()
            if cfg.ffn == "mlp":
                s.fc1 = nn.Linear(cfg.embed_dim, cfg.hidden_dim)
                s.fc2 = nn.Linear(cfg.hidden_dim, cfg.embed_dim)
            else:
                s.w12 = nn.Linear(cfg.embed_dim, 2 * cfg.hidden_dim)
                s.w3 = nn.Linear(cfg.hidden_dim, cfg.embed_dim)

        def forward(s, x):
            if cfg.ffn == "mlp":
                return s.fc2(F.gelu(s.fc1(x)))
            a, g = s.w12(x).chunk(2, dim=-1)
            return s.w3(F.silu(a) * g)

    class Block(nn.Module):
        def __init__(s):
            super().__init__()
            s.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
            s.attn = Attn()
            s.ls1 = LS()
            s.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
            s.mlp = Mlp()
            s.ls2 = LS()

        def forward(s, x):
            x = x + s.ls1(s.attn(s.norm1(x)))
            return x + s.ls2(s.mlp(s.norm2(x)))

    class ViT(nn.Module):
        def __init__(s):
            super().__init__()
            d = cfg.embed_dim
            s.patch_embed = nn.Module()
            s.patch_embed.proj = nn.Conv2d(3, d, 14, 14)
            s.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            s.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_grid ** 2 + 1, d))
            s.mask_token = nn.Parameter(torch.zeros(1, d))
            s.blocks = nn.ModuleList([Block() for _ in range(cfg.depth)])
            s.norm = nn.LayerNorm(d, eps=1e-6)

        def forward(s, img):  # 518x518: no positional interpolation needed
            x = s.patch_embed.proj(img).flatten(2).transpose(1, 2)
            x = torch.cat([s.cls_token.expand(x.shape[0], -1, -1), x], 1) + s.pos_embed
            for blk in s.blocks:
                x = blk(x)
            return s.norm(x)[:, 1:]

    m = ViT().eval()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return m


def _force_tiled_attention(mode=None):
    """Make the backbone call nn_attention(..., kernel=mode["kernel"]) (default
    "tiled"); ``mode`` may be changed between forwards."""
    from geomatch import _core
    from geomatch.backbone import dinov2

    mode = {"kernel": "tiled"} if mode is None else mode

    class Switch:
        def __getattr__(self, name):
            return getattr(_core, name)

        @staticmethod
        def nn_attention(qkv, heads, out=None):
            return _core.nn_attention(qkv, heads, out=out, kernel=mode["kernel"])

    dinov2._core = lambda: Switch()


def interleaved(model: str, size: int, threads: int, rounds: int) -> dict:
    """Best seconds of whole forwards with the fused ("auto") and the tiled
    attention kernel, alternating forward by forward in one process (on a
    loaded machine both see the same load)."""
    import numpy as np

    import geomatch as gm
    from geomatch.backbone import DinoV2, DinoV2Config
    from geomatch.testing.limits import random_dinov2_state

    gm.set_num_threads(threads)
    mode = {"kernel": "auto"}
    _force_tiled_attention(mode)
    cfg = DinoV2Config.from_name(model)
    net = DinoV2(cfg, random_dinov2_state(cfg))
    px = np.random.default_rng(1).standard_normal((size, size, 3)).astype(np.float32)
    net.features(px)
    best = {"auto": float("inf"), "tiled": float("inf")}
    for _ in range(rounds):
        for k in best:
            mode["kernel"] = k
            t0 = time.perf_counter()
            net.features(px)
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def attention_layer(cfg, size: int, threads: int, rounds: int = 15) -> dict:
    """Seconds of one attention layer of ``cfg`` at ``size`` (fastest of
    ``rounds``, the kernels alternating): fused (where it applies) and tiled."""
    import numpy as np

    import geomatch as gm
    from geomatch import _core

    gm.set_num_threads(threads)
    n = 1 + cfg.num_register_tokens + (size // cfg.patch_size) ** 2
    qkv = np.random.default_rng(0).standard_normal((1, n, 3 * cfg.embed_dim)).astype(np.float32)
    out = np.empty((1, n, cfg.embed_dim), np.float32)
    kernels = ["tiled"]
    if cfg.head_dim == 64 and _core.nn_attention_fused_supported():
        kernels.insert(0, "fused")
    best = {k: float("inf") for k in kernels}
    for _ in range(rounds):
        for k in kernels:
            t0 = time.perf_counter()
            _core.nn_attention(qkv, cfg.num_heads, out=out, kernel=k)
            best[k] = min(best[k], time.perf_counter() - t0)
    best["tokens"] = n
    best["flops"] = 4.0 * n * n * cfg.embed_dim
    return best


def worker(impl: str, model: str, threads: int, size: int, repeat: int) -> dict:
    import numpy as np

    from geomatch.testing.timing import median_time
    from geomatch.backbone import DinoV2, DinoV2Config

    cfg = DinoV2Config.from_name(model)
    from geomatch.testing.limits import random_dinov2_state

    state = random_dinov2_state(cfg)
    px = np.random.default_rng(1).standard_normal((size, size, 3)).astype(np.float32)
    if impl.startswith("geomatch"):
        import geomatch as gm

        gm.set_num_threads(threads)
        if impl == "geomatch-tiled":
            _force_tiled_attention()
        net = DinoV2(cfg, state)
        del state
        fn = lambda: net.features(px).reshape(-1, cfg.embed_dim)  # noqa: E731
    else:
        import torch

        torch.set_num_threads(threads)
        net = _torch_model(cfg, state)
        del state
        img = torch.from_numpy(np.ascontiguousarray(px.transpose(2, 0, 1)))[None]

        def fn():
            with torch.inference_mode():
                return net(img)[0].numpy()

    # peak resident memory of inference (buffers, allocator caches) on top of
    # the process with the model loaded; freed heap returned to the OS first
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    traced = None
    if impl.startswith("geomatch"):  # NumPy buffers are visible to tracemalloc
        import tracemalloc
        tracemalloc.start()
        fn()
        traced = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    rss0 = _status_kb("VmRSS")
    ok = _reset_peak()
    out = fn()
    t = median_time(fn, repeat=repeat, warmup=0)
    peak = _status_kb("VmHWM") - rss0 if ok else None
    sample = out[:: max(1, out.shape[0] // 50), :8].astype(float).ravel().tolist()
    return {"impl": impl, "model": model, "time": t,
            "peak_extra_mb": peak / 1024 if peak is not None else None,
            "rss_mb": rss0 / 1024, "traced_mb": traced, "sample": sample}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vits14", "vitb14"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--impls", nargs="+", default=["geomatch", "torch"])
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the implementations this many times; keep each one's best")
    ap.add_argument("--interleave", type=int, default=3,
                    help="rounds of whole forwards alternating the fused and the tiled "
                         "attention in one process (0: skip)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "interleave":
        print(json.dumps(interleaved(args.models[0], args.size, args.threads, args.interleave)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.models[0], args.threads, args.size,
                                args.repeat)))
        return
    from geomatch.testing.timing import fmt_time
    from geomatch.testing.limits import measure, print_limits, print_machine, remeasure, vit_flops

    from geomatch.backbone import DinoV2Config

    print_machine(args.threads)
    lim = measure(args.threads)
    print_limits(lim)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print(f"DINOv2 forward, one {args.size}x{args.size} image, {args.threads} threads, "
          "same random weights; best of "
          f"{args.rounds} rounds of {args.repeat}-run medians, each in a fresh process; peak = "
          "extra resident memory during inference")
    for model in args.models:
        res = {}
        for _ in range(args.rounds):
            for impl in args.impls:
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--models",
                       model, "--threads", str(args.threads), "--size", str(args.size),
                       "--repeat", str(args.repeat)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if impl not in res or r["time"] < res[impl]["time"]:
                    res[impl] = r
        base = res.get("geomatch")
        remeasure(lim, args.threads)
        print(f"\n### {model} @ {args.size}x{args.size} (% of the higher sgemm rate, "
              f"{lim['sgemm_gflops']:.1f} GFLOP/s)\n")
        flops = vit_flops(DinoV2Config.from_name(model), args.size)
        print(f"model FLOPs (2 per multiply-add, linear layers + attention products): "
              f"{flops / 1e9:.1f} GFLOP")
        print("| implementation | time / image | images/s | ratio vs geomatch | "
              "GFLOP/s | % of sgemm | peak extra RSS MB | NumPy peak MB (tracemalloc) |")
        print("|---|---|---|---|---|---|---|---|")
        for impl in args.impls:
            r = res.get(impl)
            if r is None:
                print(f"| {impl} | n/a | | | | | | |")
                continue
            ratio = f"{r['time'] / base['time']:.2f}x" if base else ""
            peak = f"{r['peak_extra_mb']:.0f}" if r["peak_extra_mb"] is not None else "n/a"
            tm = f"{r['traced_mb']:.0f}" if r.get("traced_mb") is not None else "n/a"
            rate = flops / r["time"] / 1e9
            print(f"| {impl} | {fmt_time(r['time'])} | {1 / r['time']:.2f} | {ratio} | "
                  f"{rate:.1f} | {100 * rate / lim['sgemm_gflops']:.0f}% | {peak} | {tm} |")
        cfg = DinoV2Config.from_name(model)
        lay = attention_layer(cfg, args.size, args.threads)
        line = (f"\none attention layer ({lay['tokens']} tokens, {cfg.num_heads} heads of "
                f"{cfg.head_dim}; fastest of 15, alternating): ")
        parts = []
        for k in ("fused", "tiled"):
            if k in lay:
                rate = lay["flops"] / lay[k] / 1e9
                parts.append(f"{k} {fmt_time(lay[k])} ({rate:.1f} GFLOP/s, "
                             f"{100 * rate / lim['sgemm_gflops']:.0f}% of sgemm)")
        line += ", ".join(parts)
        if "fused" in lay:
            line += f"; fused / tiled speed-up {lay['tiled'] / lay['fused']:.2f}x"
        print(line)
        if args.interleave > 0 and "geomatch" in args.impls:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "interleave",
                   "--models", model, "--threads", str(args.threads), "--size", str(args.size),
                   "--interleave", str(args.interleave)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode == 0:
                iv = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"whole forward, fused vs tiled attention alternating in one process "
                      f"(best of {args.interleave}): {fmt_time(iv['auto'])} vs "
                      f"{fmt_time(iv['tiled'])} ({iv['tiled'] / iv['auto']:.2f}x)")
            else:
                print(out.stderr[-2000:], file=sys.stderr)
        if base and res.get("torch"):
            import numpy as np

            a, b = np.array(base["sample"]), np.array(res["torch"]["sample"])
            rel = np.abs(a - b).max() / np.abs(b).max()
            print(f"\nfeatures agree to {rel:.1e} (max relative, {a.size} sampled values)")


if __name__ == "__main__":
    main()
