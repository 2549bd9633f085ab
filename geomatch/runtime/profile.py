"""Runtime and memory of the pipeline, in the layout of GECO's evaluation.

GECO (``src/evaluation/runtime_mem.py``) reports, for a featurizer and an
optional refiner (GECO's head): ``size featurizer (MB)`` and ``size refiner
(MB)`` = (parameters + buffers) x bytes per element / 1024² (lines 8-24,
35-38), and ``runtime`` = the mean wall time in ms of featurizing one image
(the featurizer's forward on a PIL image, i.e. its preprocessing included,
then the refiner), over ``num_imgs_time_mem = 1000`` images
(``configs/eval_time_mem.yaml``; lines 41-61).  :func:`profile` measures the
same quantities on this machine, plus the time of matching one pair of
feature maps (keypoint transfer), the peak resident memory of the process and
the thread count, and :func:`profile_markdown` prints them as one table row
(GECO's three columns first).

Command line::

    geomatch profile --weights W [--lora L] [--head H] [--model M] \\
        [--images N] [--pairs N] [--size 518] [--root DIR --dataset NAME]
"""
from __future__ import annotations

import os
import resource
import sys
import time
from typing import Optional

import numpy as np

__all__ = ["profile", "profile_markdown", "model_size", "peak_rss_mb", "configure_parser",
           "run_cli"]

_MB = 1024.0 ** 2
_KEEP = 8          # feature maps kept for the matching timings


def model_size(arrays) -> tuple:
    """(number of elements, size in MB) of an iterable of arrays (GECO's ``get_model_size``)."""
    n = nbytes = 0
    for a in arrays:
        a = np.asarray(a)
        n += int(a.size)
        nbytes += int(a.size) * int(a.dtype.itemsize)
    return n, nbytes / _MB


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (``getrusage``)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / _MB if sys.platform == "darwin" else r / 1024.0   # bytes on macOS, KiB on Linux


def _backbone_size(model) -> tuple:
    """(parameters, MB) of a DinoV2: every tensor of its checkpoint layout, float32."""
    n = sum(int(np.prod(s)) for s in model.config.expected_shapes().values())
    return n, n * 4 / _MB


def _synthetic_images(n: int, size=(500, 375), seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


def profile(model, *, head=None, lora_params: int = 0, images=None, n_images: int = 10,
            n_pairs: int = 20, n_keypoints: int = 30, preprocess: str = "resize",
            size: Optional[int] = None, mode: str = "upsample-argmax",
            progress: Optional[bool] = None) -> dict:
    """Measure size, time per image, time per pair and peak memory.

    Parameters
    ----------
    model : geomatch.backbone.DinoV2
    head : callable with ``parameters()`` (an AttentionHead), optional
    lora_params : int
        Parameters of GECO's LoRA factors (counted with the featurizer, as
        GECO's LoRA model holds them next to the frozen weights).
    images : list of paths or (H, W, 3) uint8 arrays, optional
        Default: ``n_images`` random 500 x 375 images (the typical VOC size).
    n_images : int
        Images timed (the first one, a warm-up, is not counted).
    n_pairs, n_keypoints : int
        Pairs matched with :func:`geomatch.transfer_keypoints` (``mode``) and
        source keypoints per pair.
    preprocess, size : see :func:`geomatch.backbone.preprocess.preprocess_image`

    Returns
    -------
    dict
        ``n_params featurizer``, ``size featurizer (MB)``, ``n_params
        refiner``, ``size refiner (MB)``, ``runtime`` (ms per image:
        preprocessing, backbone, head), ``runtime backbone (ms)``, ``matching
        (ms/pair)``, ``peak RSS (MB)``, ``threads``, ``grid``, ``images``,
        ``pairs``.
    """
    import geomatch as gm
    from ..backbone.preprocess import DEFAULT_SIZES, load_image, preprocess_image
    from .progress import progress as _progress

    for name, v, lo in (("n_images", n_images, 2), ("n_pairs", n_pairs, 1),
                        ("n_keypoints", n_keypoints, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if preprocess not in DEFAULT_SIZES:
        raise ValueError(f"preprocess must be one of {sorted(DEFAULT_SIZES)}, got {preprocess!r}")
    size = int(DEFAULT_SIZES[preprocess] if size is None else size)
    if images is None:
        images = _synthetic_images(n_images)
    images = list(images)
    if len(images) < 2:
        raise ValueError("images: need at least 2 (the first is a warm-up)")
    images = images[:n_images]
    n_feat, mb_feat = _backbone_size(model)
    n_feat += int(lora_params)
    mb_feat += int(lora_params) * 4 / _MB
    if head is not None:
        n_head, mb_head = model_size(head.parameters().values())
    else:
        n_head, mb_head = 0, 0.0

    t_total, t_backbone, feats, sizes = [], [], [], []
    bar = _progress(images, desc="profile: images", total=len(images), unit="img",
                    disable=None if progress is None else not progress)
    for img in bar:
        if not isinstance(img, np.ndarray):
            img = load_image(img)            # reading the file is not timed (as in GECO)
        t0 = time.perf_counter()
        pixels, frame = preprocess_image(img, preprocess, size)
        t1 = time.perf_counter()
        f = model.features(pixels)
        t2 = time.perf_counter()
        if head is not None:
            f = np.asarray(head(f), dtype=np.float32)
        t3 = time.perf_counter()
        t_total.append(t3 - t0)
        t_backbone.append(t2 - t1)
        if len(feats) < _KEEP:            # a few maps to match (not all: 1000 images
            feats.append(np.ascontiguousarray(f, dtype=np.float32))   # of ViT-B are 4 GB)
            sizes.append(frame.image_size)
    rng = np.random.default_rng(0)
    t_match = []
    for i in range(n_pairs + 1):
        a, b = i % len(feats), (i + 1) % len(feats)
        w, h = sizes[a]
        kps = np.stack([rng.uniform(0, w - 1, n_keypoints),
                        rng.uniform(0, h - 1, n_keypoints)], axis=1).astype(np.float32)
        t0 = time.perf_counter()
        gm.transfer_keypoints(feats[a], feats[b], kps, sizes[a], sizes[b], mode=mode)
        t_match.append(time.perf_counter() - t0)
    return {
        "n_params featurizer": int(n_feat),
        "size featurizer (MB)": float(mb_feat),
        "n_params refiner": int(n_head),
        "size refiner (MB)": float(mb_head),
        "runtime": 1000.0 * float(np.mean(t_total[1:])),
        "runtime backbone (ms)": 1000.0 * float(np.mean(t_backbone[1:])),
        "matching (ms/pair)": 1000.0 * float(np.mean(t_match[1:])),
        "peak RSS (MB)": peak_rss_mb(),
        "threads": int(gm.get_num_threads()),
        "grid": list(feats[0].shape[:2]),
        "dim": int(feats[0].shape[2]),
        "images": len(images) - 1,
        "pairs": n_pairs,
        "keypoints": n_keypoints,
        "mode": mode,
        "input": f"{preprocess} {size}",
    }


_COLUMNS = (("size featurizer (MB)", "{:.3f}"), ("size refiner (MB)", "{:.3f}"),
            ("runtime", "{:.1f}"), ("n_params featurizer", "{:,}"), ("n_params refiner", "{:,}"),
            ("runtime backbone (ms)", "{:.1f}"), ("matching (ms/pair)", "{:.2f}"),
            ("peak RSS (MB)", "{:.0f}"), ("threads", "{}"))


def profile_markdown(result: dict, name: str = "model") -> str:
    """One Markdown table: GECO's columns (sizes in MB, ``runtime`` in ms per
    image), then parameter counts, backbone-only time, matching time, peak
    memory and threads."""
    head = "| model | " + " | ".join(
        "runtime (ms/img)" if c == "runtime" else c for c, _ in _COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(_COLUMNS)
    row = f"| {name} | " + " | ".join(f.format(result[c]) for c, f in _COLUMNS) + " |"
    note = (f"\n{result['images']} images ({result['input']}, grid {result['grid'][0]}x"
            f"{result['grid'][1]}x{result['dim']}), {result['pairs']} pairs of "
            f"{result['keypoints']} keypoints ({result['mode']}), {result['threads']} threads.")
    return "\n".join([head, sep, row]) + "\n" + note + "\n"


def configure_parser(parser) -> None:
    from ..backbone.arguments import add_backbone_arguments

    add_backbone_arguments(parser, head=True)
    parser.add_argument("--images", type=int, default=11,
                        help="images to featurize, the first one a warm-up (default: 11; "
                             "GECO: 1000)")
    parser.add_argument("--pairs", type=int, default=20, help="pairs to match (default: 20)")
    parser.add_argument("--keypoints", type=int, default=30,
                        help="source keypoints per pair (default: 30)")
    parser.add_argument("--dataset", default=None,
                        help="take the images from this dataset (with --root; default: "
                             "random 500x375 images)")
    parser.add_argument("--root", default=None,
                        help="dataset folder for --dataset (default: none)")
    parser.add_argument("--split", default="test", help="split of --dataset (default: test)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args) -> int:
    from ..backbone.dinov2 import load_dinov2

    if (args.dataset is None) != (args.root is None):
        raise ValueError("--dataset and --root go together")
    if args.images < 2:
        raise ValueError("--images must be at least 2 (the first is a warm-up)")
    model = load_dinov2(args.weights, args.model, lora=args.lora)
    lora_params = 0
    if args.lora is not None:
        from ..backbone.dinov2 import _read_state_file
        lora_params = sum(int(np.asarray(v).size)
                          for v in _read_state_file(os.fspath(args.lora)).values())
    head = None
    if args.head is not None:
        from ..model.head import load_head
        head = load_head(args.head)
    images = None
    if args.dataset is not None:
        from ..data import load_dataset
        recs = []
        for rec in load_dataset(args.dataset, args.root).iter_images(args.split):
            recs.append(rec.path)
            if len(recs) >= args.images:
                break
        if len(recs) < 2:
            raise ValueError(f"{args.dataset} {args.split} at {args.root}: need at least 2 images")
        images = recs
    res = profile(model, head=head, lora_params=lora_params, images=images,
                  n_images=args.images, n_pairs=args.pairs, n_keypoints=args.keypoints,
                  preprocess=args.preprocess, size=args.size, progress=False if args.no_progress else None)
    name = f"dinov2 {model.config.name}" + (" + LoRA" if args.lora else "") + \
        (" + head" if args.head else "")
    print(profile_markdown(res, name))
    return 0
