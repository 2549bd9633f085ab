"""Benchmark: evaluating a whole SPair-71k-sized test split from a feature cache.

Generates (once, reused afterwards) a cache of random 37x37x768 float16
feature maps for ~1,800 distinct images and a fake dataset of 12,234 pairs
over them (18 categories, SPair-like image sizes and keypoint visibility),
then times ``geomatch.eval.evaluate.evaluate`` end to end (cache reads, float32
conversion, keypoint transfer, metrics) for each transfer mode, next to a
plain NumPy peer (grid argmax, timed on a subset and scaled to the split).

    OMP_NUM_THREADS=2 taskset -c 0,1 python benchmarks/bench_eval.py [--pairs N] [--dir DIR]

Target: the whole split (12,234 pairs) in <= 2 minutes with 2 threads, and for
upsample-argmax an effective rate (2*h*w*D flops per transferred keypoint over
the whole split's wall time) of at least 20% of the machine's sgemm rate,
measured in the same run (issue 16).  The limits are measured again at the end
and the higher sgemm rate is used (the machine's load changes during a run).
Printed as well: the rate per CPU-second (the process's CPU time, all
threads), one read pass over the split's feature files (the data's own
limit, from the OS page cache: the runs assume the cache files there, as after
the benchmark wrote them), and the transfer kernel alone over the split's target groups
(``_core.transfer_upsample_argmax_group`` on the float16 maps, as the
evaluation calls it, features already in memory), once with the cell bounds
and once with ``full_scan=True`` (every pixel: the cost when the bounds do not
prune, as on smooth feature maps; random maps prune well).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("GEOMATCH_NO_PROGRESS", "1")

import geomatch as gm  # noqa: E402
from geomatch.data.cache import FeatureCache  # noqa: E402
from geomatch.eval.evaluate import evaluate  # noqa: E402
from geomatch.testing.timing import fmt_time, print_table  # noqa: E402
from geomatch.testing.limits import measure, print_limits, print_machine, remeasure

N_CATS = 18
K = 20                      # keypoints per category
GRID = (37, 37)
DIM = 768


def make_dataset(n_pairs: int, n_images: int, seed: int = 0):
    """A fake SPair-like dataset: images, pairs, visibility, boxes (no files)."""
    rng = np.random.default_rng(seed)
    per_cat = n_images // N_CATS
    images = {}
    by_cat = {}
    perm = np.array([1, 0, 3, 2, 5, 4, 7, 6] + list(range(8, K)), np.int64)
    for c in range(N_CATS):
        cat = f"cat{c:02d}"
        by_cat[cat] = []
        for i in range(per_cat):
            long_side = 500
            short = int(rng.integers(250, 500))
            w, h = (long_side, short) if rng.random() < 0.7 else (short, long_side)
            vis = rng.random(K) < 0.6
            x1, y1 = rng.uniform(0, 0.3 * w), rng.uniform(0, 0.3 * h)
            x2, y2 = rng.uniform(0.7 * w, w), rng.uniform(0.7 * h, h)
            kps = np.stack([rng.uniform(x1, x2, K), rng.uniform(y1, y2, K)], 1).astype(np.float32)
            kps[~vis] = np.nan
            rec = SimpleNamespace(dataset="bench", category=cat, key=f"{cat}/img{i:03d}",
                                  path=None, size=(w, h), keypoints=kps, visible=vis,
                                  bbox=np.array([x1, y1, x2, y2], np.float32), mask_path=None)
            images[rec.key] = rec
            by_cat[cat].append(rec)
    pairs = []
    cats = sorted(by_cat)
    for j in range(n_pairs):
        cat = cats[j * N_CATS // n_pairs]
        recs = by_cat[cat]
        a, b = rng.choice(len(recs), 2, replace=False)
        pairs.append(SimpleNamespace(dataset="bench", split="test", category=cat,
                                     pair_id=f"{j:05d}", src=recs[a], trg=recs[b],
                                     keypoint_names=tuple(f"kp{k}" for k in range(K)),
                                     flip_perm=perm, meta={}))

    class Dataset:
        name = "bench"
        skipped = 0

        def pairs(self, split, categories=None, subsample=None, seed=0):
            out = [p for p in pairs if categories is None or p.category in categories]
            return out[:subsample] if subsample else out

    return Dataset(), images


def make_cache(path: str, keys, seed: int = 1) -> FeatureCache:
    manifest = dict(backbone="random-bench", weights_sha256="0" * 64, resolution=[518, 518],
                    preprocess="resize", grid=list(GRID), dim=DIM, dtype="float16")
    cache = FeatureCache.create(path, manifest)
    todo = [k for k in keys if not cache.has(k)]
    if todo:
        print(f"writing {len(todo)} feature maps to {path} ...", flush=True)
        rng = np.random.default_rng(seed)
        base = rng.standard_normal((GRID[0], GRID[1], DIM)).astype(np.float32)
        t0 = time.perf_counter()
        for k in todo:
            # shared structure + noise, so that argmax maps are not degenerate
            f = 0.7 * base + rng.standard_normal((GRID[0], GRID[1], DIM), dtype=np.float32)
            cache.put(k, f)
        cache.flush()
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return cache


def numpy_grid_argmax(src_feat, trg_feat, src_kps, src_size, trg_size, *, mode="grid-argmax"):
    """Peer: plain NumPy cosine argmax on the patch grid (patch centres out)."""
    sh, sw, d = src_feat.shape
    th, tw, _ = trg_feat.shape
    t = trg_feat.reshape(-1, d)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    kps = np.asarray(src_kps, np.float64)
    r = np.minimum((kps[:, 1] * sh / src_size[1]).astype(int), sh - 1)
    c = np.minimum((kps[:, 0] * sw / src_size[0]).astype(int), sw - 1)
    q = src_feat[r, c]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    j = np.argmax(q @ t.T, axis=1)
    return np.stack([(j % tw + 0.5) * trg_size[0] / tw, (j // tw + 0.5) * trg_size[1] / th], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12234)
    ap.add_argument("--images", type=int, default=1800)
    ap.add_argument("--dir", default="/tmp/geomatch_bench_eval")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[2],
                    help="evaluate(workers=...) settings to time (default: 2; 1 = one pair "
                         "at a time with multithreaded kernels)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode (best reported)")
    ap.add_argument("--peer-pairs", type=int, default=1000,
                    help="pairs the NumPy peer is timed on (scaled to the split)")
    ap.add_argument("--kernel-groups", type=int, default=300,
                    help="target groups the kernel is timed on alone (0: skip)")
    ap.add_argument("--modes", nargs="+",
                    default=["upsample-argmax", "grid-argmax", "soft-argmax"])
    args = ap.parse_args(argv)
    gm.set_num_threads(args.threads)
    print_machine(args.threads)
    lim = measure(args.threads)
    print_limits(lim)

    ds, images = make_dataset(args.pairs, args.images)
    cache = make_cache(os.path.join(args.dir, "cache"), sorted(images))
    pairs = ds.pairs("test")
    n_src = sum(int(p.src.visible.sum()) for p in pairs)
    n_mut = sum(int((p.src.visible & p.trg.visible).sum()) for p in pairs)
    print(f"load average before: {os.getloadavg()[0]:.1f}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    print(f"{len(pairs)} pairs over {len(images)} images; {n_src} source keypoints transferred, "
          f"{n_mut} scored; threads {gm.get_num_threads()}")

    rows = []
    cpu_of = {}
    runs = [(m, w) for m in args.modes for w in args.workers]
    for mode, workers in runs:
        best = cpu = None
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            res = evaluate(ds, "test", cache, mode=mode, progress=False, workers=workers)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if best is None or dt < best:
                best, cpu = dt, dc
        pk = res.overall["pck_point"]
        cpu_of[f"geomatch evaluate, {mode}, workers={workers}"] = cpu
        rows.append((f"geomatch evaluate, {mode}, workers={workers}", best,
                     f"PCK@.1 {100 * pk[1]:.2f}%; CPU {cpu:.1f} s; "
                     f"{'meets' if best <= 120 else 'MISSES'} the 2-min target"))
    # the NumPy peer on a subset, scaled to the split
    n_peer = min(args.peer_pairs, len(pairs))
    if n_peer > 0:
        t0, c0 = time.perf_counter(), time.process_time()
        _peer_subset(ds, cache, n_peer)
        scale = len(pairs) / n_peer
        dt, dc = (time.perf_counter() - t0) * scale, (time.process_time() - c0) * scale
        rows.append(("NumPy grid-argmax (same pipeline)", dt,
                     f"CPU {dc:.1f} s; timed on {n_peer} pairs, scaled to {len(pairs)}"))
    # the data's own limit: one read() pass over the split's feature files,
    # from the OS page cache as the runs above found them (a cold page cache
    # adds the disk: measured in docs/performance.md)
    keys = sorted(images)
    buf = np.empty(cache.shape, cache.dtype)
    t0 = time.perf_counter()
    for k in keys:
        cache.read(k, out=buf)
    t_read = time.perf_counter() - t0
    nbytes = len(keys) * buf.nbytes
    kernel = None
    if "upsample-argmax" in args.modes and args.kernel_groups > 0:
        kernel = _kernel_only(pairs, cache, args.kernel_groups)
        rows.append(("transfer kernel alone (groups by target)", kernel[0],
                     f"{kernel[1]} of the split's target groups, {kernel[2]} pairs, "
                     "features in memory; CPU " f"{kernel[3]:.2f} s"))
        full = _kernel_only(pairs, cache, args.kernel_groups, full_scan=True)
        rows.append(("transfer kernel alone, full scan", full[0],
                     "every pixel evaluated (what a keypoint costs when the cell bounds "
                     "do not prune, e.g. on smooth feature maps); CPU " f"{full[3]:.2f} s"))
    base = rows[0][0] if runs else None
    remeasure(lim, args.threads)
    print_table(f"evaluate a {len(pairs)}-pair split (37x37x768 float16 cache), "
                f"{args.threads} threads", rows, baseline=base)
    flops = n_src * 2.0 * GRID[0] * GRID[1] * DIM
    cpus = {name: cpu for name, cpu in cpu_of.items()}
    for name, sec, _ in rows:
        if sec is None:
            continue
        fl = flops if not name.startswith("transfer kernel") else kernel[4]
        n = len(pairs) if not name.startswith("transfer kernel") else kernel[2]
        rate = fl / sec / 1e9
        line = (f"{name}: {fmt_time(sec)} total, {1e3 * sec / n:.2f} ms/pair; "
                f"effective rate (2*h*w*D flops per transferred keypoint) {rate:.1f} GFLOP/s = "
                f"{100 * rate / lim['sgemm_gflops']:.1f}% of sgemm"
                + (" (target >= 20% for upsample-argmax)" if "evaluate, upsample" in name
                   else ""))
        if name in cpus:
            line += (f"; per CPU-second {fl / cpus[name] / 1e9:.1f} GFLOP/s = "
                     f"{100 * fl / cpus[name] / 1e9 / (lim['sgemm_gflops'] / args.threads):.1f}%"
                     " of one thread's share of sgemm")
        print(line)
    print(f"one read pass over the split's {len(keys)} feature files ({nbytes / 1e9:.2f} GB, "
          f"FeatureCache.read, one thread): {fmt_time(t_read)} ({nbytes / 1e9 / t_read:.1f} "
          f"GB/s from the OS page cache){'' if not runs else '; the evaluation above: ' + f'{rows[0][1] / t_read:.1f} read passes'}")
    return 0


def _kernel_only(pairs, cache, n_groups, full_scan=False):
    """The upsample-argmax kernel alone on the first ``n_groups`` target groups
    of the split, as the evaluation calls it (one group call per target, the
    pipeline's frames and keypoints, the cache's float16 maps as they are,
    one reused float32 buffer for the converted target), features read
    beforehand.  Returns (seconds, groups, pairs, CPU seconds, credited flops)."""
    from geomatch import _core
    from geomatch.eval import evaluate as E

    order = E._target_order(pairs)
    groups = list(E._target_groups([pairs[i] for i in order]))[:n_groups]
    feats = {}
    calls, n_pairs, n_kps = [], 0, 0
    manifest = cache.manifest
    for g in groups:
        items = []
        for p, pts in zip(g, E._prepare_group(g, manifest)):
            if pts is not None:
                items.append((p.src.key, pts))
                n_kps += len(pts.kps)
            for k in (p.src.key, p.trg.key):
                if k not in feats:
                    feats[k] = cache.read(k)
        n_pairs += len(g)
        if items:
            calls.append(([feats[k] for k, _ in items], [pts.kps for _, pts in items],
                          np.array([pts.ssize for _, pts in items], np.int64),
                          feats[g[0].trg.key], np.array(items[0][1].tsize, np.int64)))
    work = np.empty(max((c[3].size for c in calls), default=1), np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for c in calls:
        _core.transfer_upsample_argmax_group(*c, check_src=False, full_scan=full_scan,
                                             work=work)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return dt, len(groups), n_pairs, dc, n_kps * 2.0 * GRID[0] * GRID[1] * DIM


def _peer_subset(ds, cache, n):
    sub = ds.pairs("test")[:: max(1, len(ds.pairs("test")) // n)][:n]

    class Sub:
        name = "bench"
        skipped = 0

        def pairs(self, split, categories=None, subsample=None, seed=0):
            return sub

    return evaluate(Sub(), "test", cache, mode="grid-argmax", progress=False,
                    transfer=numpy_grid_argmax)


if __name__ == "__main__":
    sys.exit(main())
