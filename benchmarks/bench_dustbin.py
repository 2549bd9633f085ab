"""Benchmark of the dustbin OT layer: geomatch vs PyTorch and POT.

Problem: GECO's training-time layer at full resolution, N = M = 37*37 = 1369
patches (a 1370 x 1370 augmented matrix), cosine scores, float32, 10
iterations, reg 0.1, reg_m 10, bin_score 0.3, GECO's marginals.

Peers (same iterations, same threads):
- PyTorch log domain: the logsumexp loop of SuperGlue / GECO
  (``log_sinkhorn_iterations_kl``), re-implemented here; backward = autograd
  of that loop (forward + backward, like geomatch's VJP which recomputes
  the forward).
- POT ``sinkhorn_unbalanced(..., reg_type="entropy", numItermax=10,
  stopThr=0)``: method "sinkhorn_stabilized" (the log-stabilized variant,
  the closest POT equivalent of a log-domain layer) and method "sinkhorn"
  (kernel domain).  Both run exactly the same u-then-v updates; in POT the
  "stabilized" variant is still a kernel-domain method (one exp, then BLAS
  matrix-vector products, with absorption only on overflow).
- POT ``bregman.sinkhorn_log(numItermax=10, stopThr=0)``: POT's log-domain
  (logsumexp) solver.  It is balanced and updates v before u, so its plan
  differs; it is timed as the log-domain computation at equal iterations.

Statistic (one rule for both sides of every ratio): each geomatch figure is
taken over ``--repeat`` (default 200) warm single calls after 3 warm-up calls,
and the read pass over 200, measured before and again after the layer (the
faster kept; ``geomatch.testing.limits``); the ratios are
printed twice, fastest / fastest (the minimum over the warm calls: the least
disturbed sample on a shared machine, the primary figure) and median /
median.  The backward is VJP - forward (the VJP recomputes the forward), by
the same statistic.  Peers are timed as medians of fewer calls (they are not
part of a ratio against the machine).

Run:  python benchmarks/bench_dustbin.py [--n 1369] [--threads 2] [--passive]
(--passive sets OMP_WAIT_POLICY=PASSIVE for every OpenMP runtime in the
process, which matters on an oversubscribed machine.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1369, help="patches per image (N = M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=200,
                    help="warm single calls per geomatch figure (peers: fewer)")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--no-peers", action="store_true", help="time geomatch only")
    args = ap.parse_args()
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    import geomatch as gm
    from geomatch.testing.timing import cpu_time, print_table
    from geomatch.testing.limits import measure, print_limits, print_machine, remeasure

    gm.set_num_threads(args.threads)
    n, iters = args.n, args.iters
    reg, reg_m, bin_score = 0.1, 10.0, 0.3
    rng = np.random.default_rng(0)
    side = int(round(np.sqrt(n)))
    x = rng.standard_normal((n, 64)).astype(np.float32)
    y = rng.standard_normal((n, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    S = x @ y.T
    mask = np.zeros(n, bool)
    mask[: n // 3] = True
    mu = gm.dustbin_marginals(mask, 7, 15)
    nu = gm.dustbin_marginals(np.roll(mask, n // 5), 9, 15)
    G = rng.standard_normal((n + 1, n + 1)).astype(np.float32)
    kw = dict(bin_score=bin_score, reg=reg, reg_m=reg_m, n_iter=iters)

    def timed(fn, repeat=15):
        """(median, fastest) seconds of ``repeat`` warm single calls."""
        for _ in range(3):
            fn()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts), min(ts)

    def cpu_ms(fn, repeat=5):
        """Least process CPU time of one call (meaningful with --threads 1 on a
        shared machine, where wall time includes waiting for a core)."""
        return cpu_time(fn, repeat=repeat, best=True) * 1e3

    def note(t, fn, extra=""):
        s = f"best {t[1] * 1e3:.2f} ms"
        if args.threads == 1:
            s += f"; CPU {cpu_ms(fn):.2f} ms"
        return s + extra

    print(f"dustbin OT layer: N = M = {n} ({side}x{side} patches), {iters} iterations, "
          f"float32, {args.threads} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'default')}")
    print_machine(args.threads)
    lim = measure(args.threads, read_side=n + 1)
    print_limits(lim)
    P = gm.dustbin_sinkhorn(S, mu, nu, **kw)
    fwd_rows, bwd_rows = [], []
    f = lambda: gm.dustbin_sinkhorn(S, mu, nu, **kw)  # noqa: E731
    t_fwd = timed(f, args.repeat)
    fwd_rows.append(("geomatch (kernel domain)", t_fwd[0], note(t_fwd, f)))
    f = lambda: gm.dustbin_sinkhorn(S, mu, nu, **dict(kw, n_iter=1))  # noqa: E731
    t_one = timed(f, args.repeat)
    fwd_rows.append(("geomatch, 1 iteration (fixed cost)", t_one[0], note(t_one, f)))
    f = lambda: gm.dustbin_sinkhorn(S, mu, nu, method="log", **kw)  # noqa: E731
    t = timed(f, repeat=5)
    fwd_rows.append(("geomatch method='log'", t[0], note(t, f)))
    f = lambda: gm.dustbin_sinkhorn_vjp(S, mu, nu, G, **kw)  # noqa: E731
    t_vjp = timed(f, args.repeat)
    bwd_rows.append(("geomatch VJP (fwd recomputed)", t_vjp[0], note(t_vjp, f)))
    f = lambda: gm.dustbin_sinkhorn_vjp(S, mu, nu, G, wrt="log_plan", **kw)  # noqa: E731
    t = timed(f)
    bwd_rows.append(("geomatch VJP wrt log_plan", t[0], note(t, f)))

    if not args.no_peers:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            torch.set_num_threads(args.threads)
            lam, phi = 1.0 / reg, reg_m / (reg_m + reg)

            def torch_plan(St, lmu, lnu):
                Z = lam * St
                u = torch.zeros_like(lmu)
                v = torch.zeros_like(lnu)
                for _ in range(iters):
                    u = phi / lam * (lmu - torch.logsumexp(Z + lam * v[None, :], dim=1))
                    v = phi / lam * (lnu - torch.logsumexp(Z + lam * u[:, None], dim=0))
                return (Z + lam * u[:, None] + lam * v[None, :]).exp()

            St_np = np.full((n + 1, n + 1), bin_score, np.float32)
            St_np[:n, :n] = S
            lmu = torch.log(torch.from_numpy(mu))
            lnu = torch.log(torch.from_numpy(nu))
            Gt = torch.from_numpy(G)
            Sx = torch.from_numpy(S)

            def torch_fwd():
                with torch.no_grad():
                    St = torch.nn.functional.pad(Sx, (0, 1, 0, 1), value=bin_score)
                    return torch_plan(St, lmu, lnu)

            def torch_bwd():
                Sv = Sx.clone().requires_grad_(True)
                St = torch.nn.functional.pad(Sv, (0, 1, 0, 1), value=bin_score)
                (torch_plan(St, lmu, lnu) * Gt).sum().backward()
                return Sv.grad

            dev = np.abs(torch_fwd().numpy() - P).max()
            t = timed(torch_fwd)
            fwd_rows.append(("PyTorch log domain (GECO loop)", t[0],
                             note(t, torch_fwd, f"; max |dP| {dev:.1e}")))
            gref = torch_bwd().numpy()
            dS = gm.dustbin_sinkhorn_vjp(S, mu, nu, G, **kw)
            dev = np.abs(gref - dS).max() / np.abs(gref).max()
            t = timed(torch_bwd, repeat=7)
            bwd_rows.append(("PyTorch autograd (fwd + bwd)", t[0],
                             note(t, torch_bwd, f"; rel max |d dS| {dev:.1e}")))
        try:
            import ot
        except ImportError:
            ot = None
        if ot is not None:
            St_np = np.full((n + 1, n + 1), bin_score, np.float32)
            St_np[:n, :n] = S
            C = -St_np
            for method in ("sinkhorn_stabilized", "sinkhorn"):
                def pot(method=method):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        return ot.unbalanced.sinkhorn_unbalanced(
                            mu, nu, C, reg, reg_m, method=method, reg_type="entropy",
                            numItermax=iters, stopThr=0.0)
                dev = np.abs(pot() - P).max()
                t = timed(pot, repeat=5 if method == "sinkhorn_stabilized" else 9)
                fwd_rows.append((f"POT sinkhorn_unbalanced({method})", t[0],
                                 note(t, pot, f"; max |dP| {dev:.1e}")))

            def pot_log():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return ot.bregman.sinkhorn_log(mu, nu, C, reg, numItermax=iters,
                                                   stopThr=0.0)
            t = timed(pot_log, repeat=5)
            fwd_rows.append(("POT bregman.sinkhorn_log (log domain)", t[0],
                             note(t, pot_log, "; balanced, v-then-u: same cost profile, "
                                  "not the same plan")))

    # the load of a shared machine changes within a run: measure the read pass
    # again and keep the faster (both sides of the ratio are minima)
    remeasure(lim, args.threads)
    print_table("forward (plan)", fwd_rows, baseline="geomatch (kernel domain)")
    print_table("backward (dL/dS)", bwd_rows, baseline="geomatch VJP (fwd recomputed)")
    bwd_best, bwd_med = t_vjp[1] - t_fwd[1], t_vjp[0] - t_fwd[0]
    print(f"\nbackward only (VJP - forward) = {bwd_best * 1e3:.2f} ms = "
          f"{bwd_best / t_fwd[1]:.2f} x forward (fastest calls; medians: "
          f"{bwd_med * 1e3:.2f} ms = {bwd_med / t_fwd[0]:.2f} x) (target <= 1.5)")
    print(f"forward / one read pass over the {n + 1}^2 float32 matrix = "
          f"{t_fwd[1] / lim['read_pass_s']:.1f} (fastest forward {t_fwd[1] * 1e3:.3f} ms / "
          f"fastest pass {lim['read_pass_s'] * 1e6:.1f} us; medians: "
          f"{t_fwd[0] / lim['read_pass_median_s']:.1f}) (target <= 30; {iters} iterations; "
          f"the 1-iteration call costs {t_one[1] / lim['read_pass_s']:.1f} passes)")


if __name__ == "__main__":
    main()
