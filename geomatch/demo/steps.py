"""The steps of the demo run: output folder (start over or resume), features,
training, evaluation and predictions."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..runtime.progress import progress as _progress

__all__ = ["MARKER", "prepare_out", "write_state", "featurize_dataset", "train_head",
           "predictions"]

#: The state file of a demo folder: written when a run starts (``status``
#: ``"running"``) and rewritten with the results when it ends (``"done"``).
MARKER = "geomatch-demo.json"
_OUTPUTS = ("data", "cache", "train", "figures")


def write_state(out: Path, state: dict) -> None:
    """Write ``OUT/geomatch-demo.json`` atomically."""
    tmp = out / (MARKER + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MARKER)


def _clear(out: Path) -> None:
    for sub in _OUTPUTS:
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    for f in ("report.md", MARKER, MARKER + ".tmp"):
        if (out / f).is_file():
            (out / f).unlink()


def prepare_out(out: Path, run_id: dict) -> str:
    """Make ``out`` ready for a run; returns what was done.

    ``"new"``: the folder was new or empty.  ``"resume"``: it holds an
    interrupted run (state ``"running"``) of the same seed and settings
    (``run_id``): its data, feature cache and training checkpoint are kept
    and the run continues from them.  ``"restart"``: it holds a finished
    run, or an interrupted run of other settings, or an unreadable state
    file: its outputs are removed and the run starts over.

    Raises
    ------
    ValueError
        When ``out`` is a file, or a non-empty folder that holds no demo run.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return "new"
    marker = out / MARKER
    if not marker.is_file():
        raise ValueError(f"out_dir {out} is not empty and holds no earlier demo run "
                         f"({MARKER}); choose an empty or new folder")
    try:
        state = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    if (isinstance(state, dict) and state.get("status") == "running"
            and state.get("run") == run_id):
        return "resume"
    _clear(out)
    return "restart"


def featurize_dataset(dataset, cache_dir, featurizer, *, splits: Sequence[str] = ("trn", "val", "test"),
                      flip: bool = True, progress: Optional[bool] = None):
    """Featurize every image of ``splits`` (and its horizontal flip) into a cache.

    Parameters
    ----------
    dataset : Dataset
        From :func:`geomatch.data.load_dataset`.
    cache_dir : path
        Feature cache folder (created; an existing cache of the same
        featurizer is reused and only missing images are computed).
    featurizer : callable
        Image path -> ``(h, w, D)`` float32 features, with ``grid``,
        ``input_size`` and ``dim`` attributes
        (:class:`~geomatch.demo.featurizers.LocalAppearanceFeaturizer`).
    splits : sequence of str
    flip : bool
        Also store the features of the mirrored image (``flipped=True``),
        which the training's flip augmentation reads.
    progress : bool, optional
        Progress bar (default: on unless ``GEOMATCH_NO_PROGRESS=1``).

    Returns
    -------
    FeatureCache
    """
    from PIL import Image

    from ..data.cache import FeatureCache

    w_in, h_in = featurizer.input_size
    manifest = {"backbone": "local-appearance", "weights_sha256": "none (weight-free)",
                "resolution": [int(h_in), int(w_in)], "preprocess": "resize",
                "grid": [int(v) for v in featurizer.grid], "dim": int(featurizer.dim),
                "dtype": "float32", "featurizer": repr(featurizer)}
    cache = FeatureCache.create(cache_dir, manifest)
    images = dataset.images_of_splits(splits)
    todo = [r for r in images if not cache.has(r.key) or (flip and not cache.has(r.key, True))]
    for rec in _progress(todo, desc="featurize", total=len(todo), unit="img",
                         disable=None if progress is None else not progress):
        with Image.open(rec.path) as im:
            im = im.convert("RGB")
            cache.put(rec.key, featurizer(im))
            if flip:
                cache.put(rec.key, featurizer(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                          flipped=True)
    cache.flush()
    return cache


def train_head(dataset, cache, run_dir: Path, settings, seed: int, *, resume: bool,
               progress: Optional[bool] = None):
    """Train the head with the demo's settings (continuing ``run_dir/last.npz``
    when ``resume`` and it exists).  Returns ``(TrainResult, val_pairs,
    resumed_from_step)``."""
    from ..model.train import train

    val_pairs = list(dataset.pairs("val", subsample=settings.val_subset, seed=0))
    last = run_dir / "last.npz"
    start = 0
    if resume and last.is_file():
        try:
            with np.load(last) as z:
                start = int(json.loads(str(z["__meta__"]))["train"]["step"])
        except Exception:       # an unreadable checkpoint: train from scratch
            start = 0
    tres = train(dataset, cache, run_dir, val_pairs=val_pairs,
                 head_config=settings.head_config(cache.shape[-1]),
                 loss_config=settings.loss_config(), lr=settings.lr,
                 batch_pairs=settings.batch_pairs, steps=settings.steps, seed=int(seed),
                 flip_aug=settings.flip_aug, swap_aug=settings.swap_aug,
                 val_every=settings.val_every, progress=progress,
                 resume=last if start > 0 else None)
    return tres, val_pairs, start


def predictions(pairs, cache, head=None) -> List[np.ndarray]:
    """Predicted target keypoints of every pair (the evaluation's transfer)."""
    from ..eval.evaluate import transfer_pair
    from ..model.train import feature_source

    feat = feature_source(cache, head)
    return [transfer_pair(p, feat(p.src.key), feat(p.trg.key), cache.manifest) for p in pairs]
