"""Extraction throughput: the C engine in one process and on 1 and 2 local
Dask workers, and the PyTorch engine on CPU (float32 and the low precisions),
plus the effect of the low precisions on the features.

Random weights of the real architecture (default ViT-S/14), synthetic
500x375 JPEG images, GECO preprocessing (518x518), each image with its
flipped copy (as ``geomatch extract`` does).  Weights are loaded before
timing (on every Dask worker too); each configuration writes a fresh cache.

    python benchmarks/bench_scale.py [--model vits14] [--images 12] [--threads 2]
                                     [--configs c c-dask1 c-dask2 torch torch-bf16]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from types import SimpleNamespace


ALL = ("c", "c-dask1", "c-dask2", "torch", "torch-bf16", "torch-fp16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vits14")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2, help="threads of the in-process runs")
    ap.add_argument("--batch", type=int, default=4, help="torch engine images per batch")
    ap.add_argument("--configs", nargs="+", default=list(ALL), choices=ALL)
    args = ap.parse_args()

    import numpy as np
    from PIL import Image
    from safetensors.numpy import save_file

    import geomatch as gm
    from geomatch.testing.limits import random_dinov2_state as random_state
    from geomatch.backbone import DinoV2Config
    from geomatch.backbone.extract import BackboneSpec, extract_features, weights_sha256
    from geomatch.data.cache import FeatureCache

    gm.set_num_threads(args.threads)
    from _limits import print_machine
    print_machine(args.threads)
    tmp = tempfile.mkdtemp(prefix="geomatch-bench-scale-")
    try:
        cfg = DinoV2Config.from_name(args.model)
        wpath = os.path.join(tmp, f"{args.model}.safetensors")
        save_file({k: v.astype(np.float32) for k, v in random_state(cfg).items()}, wpath)
        rng = np.random.default_rng(0)
        recs = []
        for i in range(args.images):
            p = os.path.join(tmp, f"img{i:03d}.jpg")
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(p)
            recs.append(SimpleNamespace(key=f"bench/{i:03d}", path=p))
        sha = weights_sha256(wpath)
        print(f"# {args.model}, {args.images} images 500x375 -> 518x518, each with its flip; "
              f"in-process threads {args.threads}; {os.cpu_count()} CPUs\n")
        print("| configuration | seconds | images/s |")
        print("|---|---|---|")
        caches = {}
        for name in args.configs:
            out = os.path.join(tmp, f"cache-{name}")
            client = None
            if name.startswith("torch"):
                import torch

                torch.set_num_threads(args.threads)
                prec = {"torch": "float32", "torch-bf16": "bfloat16",
                        "torch-fp16": "float16"}[name]
                model = BackboneSpec(wpath, engine="torch", compute_dtype=prec,
                                     sha256=sha).load()
                kw = dict(batch_size=args.batch)
            else:
                spec = BackboneSpec(wpath, sha256=sha)
                kw = {}
                if name == "c":
                    model = spec.load()
                else:
                    from geomatch.runtime.distributed import connect, worker_cached

                    client = connect(f"local:{name[-1]}")
                    client.run(lambda s=spec: (worker_cached(("backbone", s), s.load), None)[1])
                    model = spec
            t0 = time.perf_counter()
            res = extract_features(recs, model, out, progress=False, client=client,
                                   sha256=sha, **kw)
            dt = time.perf_counter() - t0
            if client is not None:
                from geomatch.runtime.distributed import close

                close(client)
            assert res["computed"] == len(recs)
            caches[name] = out
            label = {"c": f"C engine, one process, {args.threads} threads",
                     "c-dask1": "C engine, Dask local:1 (1 worker, kernels on all cores)",
                     "c-dask2": "C engine, Dask local:2 (2 workers, cores shared)",
                     "torch": f"torch engine CPU float32, batch {args.batch}, "
                              f"{args.threads} threads",
                     "torch-bf16": f"torch engine CPU bfloat16 autocast, batch {args.batch}",
                     "torch-fp16": f"torch engine CPU float16 autocast, batch {args.batch}"}[name]
            print(f"| {label} | {dt:.1f} | {len(recs) / dt:.2f} |", flush=True)
        ref = caches.get("c") or caches.get("c-dask1") or caches.get("c-dask2")
        if ref is not None:
            print("\n| engine vs C engine | max abs diff / max abs | relative L2 | "
                  "min cosine per patch |")
            print("|---|---|---|---|")
            rc = FeatureCache.open(ref)
            for name, path in caches.items():
                if path == ref:
                    continue
                c = FeatureCache.open(path)
                a = np.stack([np.asarray(rc.get(r.key), np.float64) for r in recs])
                b = np.stack([np.asarray(c.get(r.key), np.float64) for r in recs])
                same = "bytes identical" if all(
                    open(os.path.join(ref, "features", f), "rb").read()
                    == open(os.path.join(path, "features", f), "rb").read()
                    for f in os.listdir(os.path.join(ref, "features"))) else ""
                cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
                print(f"| {name} | {np.abs(a - b).max() / np.abs(a).max():.2e} | "
                      f"{np.linalg.norm(a - b) / np.linalg.norm(a):.2e} | {cos.min():.6f} "
                      f"{same}|")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
