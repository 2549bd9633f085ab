"""Benchmark: one training step on one pair at 37 x 37 tokens of 768-d.

Step = head forward on both images + loss (cosine similarity, dustbin OT
forward) + OT backward (vjp) + cosine backward + head backward for both
images (the AdamW update is timed separately).  The step is timed as
``geomatch.model.train`` runs it (after ``retain_freed_memory()``, which keeps
freed step buffers in the heap) and, first, with glibc's default malloc
thresholds, with the page faults per step of each.  Reported: median time per
component, steps/s, the OT share of the step, and the peak memory of one step
(tracemalloc: NumPy buffers included).  Peer: the same head forward+backward
in PyTorch (CPU, same thread count), when torch is installed.

Run: OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/bench_train.py
"""
from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np

import geomatch as gm
from geomatch.model import loss as L
from geomatch.model.head import AttentionHead, sincos_2d
from geomatch.model.optim import AdamW
from geomatch.runtime.memory import retain_freed_memory
from geomatch.testing.timing import cpu_time, fmt_time, median_time, print_table
from geomatch.testing.limits import measure, print_limits, print_machine

THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))


def cpu_median(fn, repeat=5, setup=None):
    """Median process CPU seconds of fn() (geomatch.testing.timing.cpu_time)."""
    return cpu_time(fn, repeat=repeat, setup=setup)


def make_pair(rng, h=37, w=37, D=768, K=15):
    fs = rng.normal(size=(h, w, D)).astype(np.float32)
    ft = rng.normal(size=(h, w, D)).astype(np.float32)
    fg = np.zeros((h, w), bool)
    fg[6:30, 8:28] = True
    sp = rng.choice(np.flatnonzero(fg.ravel()), K, replace=False)
    tp = rng.choice(np.flatnonzero(fg.ravel()), K, replace=False)
    sp[rng.random(K) < 0.2] = -1
    tp[rng.random(K) < 0.2] = -1
    perm = np.arange(K)
    perm[0:6] = [1, 0, 3, 2, 5, 4]
    return fs, ft, dict(src_patch=sp, trg_patch=tp, flip_perm=perm, src_fg=fg, trg_fg=fg,
                        n_vis_src=int((sp >= 0).sum()), n_vis_trg=int((tp >= 0).sum()), n_kp=K)


def torch_peer(head, x, G, step_kw=None):
    """Torch peer of the head's forward+backward (``step_kw`` None), or, with
    the pair's loss arguments ``step_kw``, of the whole training step: head on
    both images, cosine similarity, GECO's log-domain dustbin OT loop (10
    iterations), the four loss terms of :class:`geomatch.model.loss.PairLoss`
    and autograd back to the head's parameters."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    F = torch.nn.functional
    c = head.config
    p = {k: torch.tensor(v, requires_grad=True) for k, v in head.parameters().items()}
    xt = torch.tensor(x)
    Gt = torch.tensor(G)
    B, h, w, _ = x.shape
    T = h * w
    pe = torch.tensor(sincos_2d(h, w, c.dim).reshape(T, c.dim))
    da, H = c.attention_dim, c.num_heads
    dh = da // H

    def step():
        for v in p.values():
            v.grad = None
        z = xt.reshape(B, T, -1) @ p["in_proj.weight"] + p["in_proj.bias"] + pe * p["pos_gain"]
        for b in range(c.num_blocks):
            pre = f"blocks.{b}."
            a = F.layer_norm(z, (c.dim,), p[pre + "norm1.weight"], p[pre + "norm1.bias"], c.ln_eps)
            qkv = a @ p[pre + "attn.qkv.weight"] + p[pre + "attn.qkv.bias"]
            q, k, v = (t.reshape(B, T, H, dh).transpose(1, 2) for t in qkv.split(da, -1))
            o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, da)
            z = z + o @ p[pre + "attn.proj.weight"] + p[pre + "attn.proj.bias"]
            bb = F.layer_norm(z, (c.dim,), p[pre + "norm2.weight"], p[pre + "norm2.bias"], c.ln_eps)
            u = F.gelu(bb @ p[pre + "mlp.fc1.weight"] + p[pre + "mlp.fc1.bias"], approximate="tanh")
            z = z + u @ p[pre + "mlp.fc2.weight"] + p[pre + "mlp.fc2.bias"]
        zo = F.layer_norm(z, (c.dim,), p["norm_out.weight"], p["norm_out.bias"], c.ln_eps)
        y = zo @ p["out_proj.weight"] + p["out_proj.bias"]
        if step_kw is None:
            (y.reshape(G.shape) * Gt).sum().backward()
        else:
            pair_loss(y.reshape(B, T, -1)).backward()

    if step_kw is None:
        return step
    cfg = L.LossConfig()
    kw = step_kw
    N = M = T
    mu = torch.tensor(L.dustbin_marginal(kw["src_fg"], kw["n_vis_src"], kw["n_kp"], cfg.mass),
                      dtype=torch.float32)
    nu = torch.tensor(L.dustbin_marginal(kw["trg_fg"], kw["n_vis_trg"], kw["n_kp"], cfg.mass),
                      dtype=torch.float32)
    lmu, lnu = mu.log(), nu.log()
    sets = {k: tuple(torch.from_numpy(a) for a in v)
            for k, v in L.match_sets(kw["src_patch"], kw["trg_patch"], kw["flip_perm"],
                                     N, M).items()}
    sfg = torch.from_numpy(np.asarray(kw["src_fg"]).reshape(-1))
    tfg = torch.from_numpy(np.asarray(kw["trg_fg"]).reshape(-1))
    fb = torch.zeros(N + 1, M + 1, dtype=torch.bool)
    fb[:N, :M] = (sfg[:, None] & ~tfg[None]) | (~sfg[:, None] & tfg[None])
    lam, phi = 1.0 / cfg.reg, cfg.reg_m / (cfg.reg_m + cfg.reg)

    def pair_loss(y):
        e = F.normalize(y, dim=-1)
        S = e[0] @ e[1].T
        Z = lam * F.pad(S, (0, 1, 0, 1), value=cfg.bin_score)
        u = torch.zeros_like(lmu)
        v = torch.zeros_like(lnu)
        for _ in range(cfg.n_iter):
            u = phi / lam * (lmu - torch.logsumexp(Z + lam * v[None, :], dim=1))
            v = phi / lam * (lnu - torch.logsumexp(Z + lam * u[:, None], dim=0))
        P = (Z + lam * u[:, None] + lam * v[None, :]).exp().clamp(1e-30, 1 - 1e-7)
        loss = cfg.w_fgbg * (-torch.log1p(-P[fb])).mean()
        for name, w, positive in (("pos", cfg.w_pos / (N + 1), True),
                                  ("bin", cfg.w_bin / (N + 1), True), ("neg", cfg.w_neg, False)):
            r, cc = sets[name]
            if r.numel():
                q = P[r, cc]
                loss = loss + w * (-(q.log() if positive else torch.log1p(-q))).mean()
        return loss

    return step


def ot_share_in_step(step, n=7):
    """Share of the step's wall time spent inside the OT layer's forward and
    backward calls, timed during the same n steps (the loss resolves the
    layer through loss._ot_impl at every call)."""
    real = L._ot_impl
    spent = [0.0]

    def timing(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[0] += time.perf_counter() - t0
            return out
        return wrapper

    L._ot_impl = lambda: tuple(timing(f) for f in real())
    try:
        step()
        spent[0] = 0.0
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        total = time.perf_counter() - t0
    finally:
        L._ot_impl = real
    return spent[0] / total


def timed(fn):
    """Wall seconds of one call of fn()."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_faults(step, n=5):
    """Minor page faults and system CPU seconds per call of step()."""
    import resource

    step()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_minflt - r0.ru_minflt) / n, (r1.ru_stime - r0.ru_stime) / n


def main():
    gm.set_num_threads(THREADS)
    print_machine(THREADS)
    print_limits(measure(THREADS))
    rng = np.random.default_rng(0)
    head = AttentionHead()
    print(f"default head: {head.config}")
    print(f"parameters: {head.num_parameters():,}; threads: {THREADS}")
    fwd_ot, vjp_ot = L._ot_impl()
    fs, ft, kw = make_pair(rng)
    x = np.stack([fs, ft])
    loss_fn = L.PairLoss()

    y = head.forward(x)
    G = rng.normal(size=y.shape).astype(np.float32)

    def step():
        yy = head.forward(x, cache=True)
        _, gs, gt, _ = loss_fn(yy[0], yy[1], **kw)
        return head.backward(np.stack([gs, gt]))

    # the step as a plain loop runs it (glibc's default malloc thresholds),
    # then as geomatch.model.train runs it (freed step buffers kept in the heap)
    flt_default, sys_default = step_faults(step)
    t_step_default = median_time(step, repeat=7)
    retained = retain_freed_memory()
    flt_kept, sys_kept = step_faults(step)

    # components
    N = 37 * 37
    S = rng.uniform(-1, 1, (N, N)).astype(np.float32)
    fg = kw["src_fg"]
    mu = gm.dustbin_marginals(fg, 10, 15)
    GP = np.zeros((N + 1, N + 1), np.float32)
    GP[np.ix_(fg.ravel(), ~fg.ravel())] = 1e-3
    t_fwd = median_time(lambda: head.forward(x, cache=True), repeat=5)
    refwd = lambda: head.forward(x, cache=True)  # noqa: E731  (backward consumes it)
    t_bwd = median_time(lambda: head.backward(G), repeat=5, setup=refwd)
    t_otf = median_time(lambda: fwd_ot(S, mu, mu), repeat=5)
    t_otb = median_time(lambda: vjp_ot(S, mu, mu, GP), repeat=5)
    t_loss = median_time(lambda: loss_fn(y[0], y[1], **kw), repeat=5)
    samples = []
    t_step = median_time(lambda: samples.append(timed(step)), repeat=7)
    t_step = float(np.median(samples[1:]))  # the warm-up call is samples[0]
    t_best = min(samples[1:])
    cpu = []
    for _ in range(5):
        c0 = time.process_time()
        step()
        cpu.append(time.process_time() - c0)
    t_step_cpu = float(np.median(cpu))
    grads = step()
    opt = AdamW(head.parameters())
    t_opt = median_time(lambda: opt.step(grads), repeat=5)
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ot = t_otf + t_otb
    rows = [
        ("geomatch train step (1 pair)", t_step,
         f"{1 / t_step:.2f} steps/s; best of 7 {fmt_time(t_best)}"),
        ("  same, default malloc thresholds", t_step_default, "plain loop, no geomatch.model.train"),
        ("  head forward (2 images)", t_fwd, ""),
        ("  loss fwd+bwd (cosine, OT fwd+vjp)", t_loss, ""),
        ("  OT forward", t_otf, "C layer"),
        ("  OT backward (vjp)", t_otb, "C layer"),
        ("  head backward (2 images)", t_bwd, ""),
        ("AdamW update", t_opt, ""),
    ]
    peer = torch_peer(head, x, G)
    hb_ratio = step_ratio = None
    if peer is not None:
        t_peer = median_time(peer, repeat=5)
        rows.append(("torch head fwd+bwd (2 images)", t_peer, "peer of head fwd+bwd"))
        rows.append(("geomatch head fwd+bwd (2 images)", t_fwd + t_bwd, ""))
        t_tstep = median_time(torch_peer(head, x, G, kw), repeat=5)
        rows.append(("torch train step (head, cosine, log-domain OT, loss; autograd)", t_tstep,
                     "peer of the whole step"))
        hb_ratio, step_ratio = t_peer / (t_fwd + t_bwd), t_tstep / t_step
    print_table("one training step, 37x37x768 pair, default head", rows,
                baseline="geomatch head fwd+bwd (2 images)" if peer is not None else None)
    if hb_ratio is not None:
        print(f"\nhead fwd+bwd: torch / geomatch = {hb_ratio:.2f} (target >= 1.2); "
              f"whole step: torch / geomatch = {step_ratio:.2f} (target >= 1.5)")
    c_rows = [("geomatch train step (1 pair)", cpu_median(step)),
              ("  head forward (2 images)", cpu_median(lambda: head.forward(x, cache=True))),
              ("  head backward (2 images)", cpu_median(lambda: head.backward(G), setup=refwd)),
              ("  loss fwd+bwd (cosine, OT fwd+vjp)", cpu_median(lambda: loss_fn(y[0], y[1], **kw))),
              ("  OT forward", cpu_median(lambda: fwd_ot(S, mu, mu))),
              ("  OT backward (vjp)", cpu_median(lambda: vjp_ot(S, mu, mu, GP)))]
    if peer is not None:
        c_rows.append(("torch head fwd+bwd (2 images)", cpu_median(peer)))
    print(f"\n### process CPU time (all threads), {THREADS} thread(s)\n")
    print("| part | CPU time |")
    print("|---|---|")
    for name, sec in c_rows:
        print(f"| {name} | {fmt_time(sec)} |")
    ot_cpu = c_rows[4][1] + c_rows[5][1]
    print(f"\nOT share of the step (CPU time): {ot_cpu / c_rows[0][1] * 100:.1f}%")
    share = ot_share_in_step(step)
    print(f"\nOT share of the step: {share * 100:.1f}% (target <= 10%): time inside the "
          f"OT forward and backward calls of 7 steps / their wall time "
          f"(separately timed OT / step median: {ot / t_step * 100:.1f}%)")
    print(f"step: {fmt_time(t_step)} wall (target <= 150 ms) -> {1 / t_step:.2f} steps/s; "
          f"CPU time of the process per step {fmt_time(t_step_cpu)} (all threads)")
    print(f"page faults per step: {flt_default:.0f} ({sys_default * 1e3:.1f} ms system time) "
          f"with glibc's default malloc thresholds -> {flt_kept:.0f} "
          f"({sys_kept * 1e3:.1f} ms) after retain_freed_memory() "
          f"({'in effect' if retained else 'not available here'}), as geomatch.model.train runs")
    print(f"peak traced memory of one step: {peak / 2**20:.0f} MiB")
    try:
        import resource

        print(f"max RSS of the process: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
