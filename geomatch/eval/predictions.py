"""Predicted keypoints of an evaluation run: one ``predictions.npz`` per split.

Every ``geomatch eval`` run writes the predictions with everything needed to
score them again without the dataset, the features or the head:

==============  =========================  ====================================
array           shape / dtype              content
==============  =========================  ====================================
``meta``        0-d str (JSON)             format, dataset, split, options,
                                           cache, head, skipped
``pair_id``     (P,) str                   pair identifier
``category``    (P,) str
``src_key``     (P,) str                   source image key (cache key)
``trg_key``     (P,) str                   target image key
``n_kp``        (P,) int64                 K of the pair's category
``src_kps``     (P, Kmax, 2) float64       source keypoints (x, y), NaN padded
``trg_kps``     (P, Kmax, 2) float64       target ground truth, NaN padded
``pred``        (P, Kmax, 2) float64       predicted target points, NaN where
                                           the source keypoint is invisible
``src_vis``     (P, Kmax) bool             visibility in the source
``trg_vis``     (P, Kmax) bool             visibility in the target
``flip_perm``   (P, Kmax) int64            counterparts used for scoring (-1 pad)
``trg_bbox``    (P, 4) float64             target box [x1, y1, x2, y2]
``trg_size``    (P, 2) int64               target (W, H)
``src_size``    (P, 2) int64               source (W, H)
``azimuth_diff`` (P,) int64                circular azimuth-bin difference, -1
                                           where unknown
``mirror``      (P,) int64                 mirror flag, -1 where unknown
``flipped``     (P,) bool                  test-time flip chose the flipped source
==============  =========================  ====================================

:func:`rescore` recomputes every metric from this file alone (optionally with
other scoring choices: threshold, frame, compare, alphas, flip table).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["Prediction", "save_predictions", "load_predictions", "rescore",
           "FORMAT", "configure_parser", "run_cli"]

FORMAT = "geomatch.predictions/1"
_SCORING = ("threshold", "frame", "compare", "alphas", "flip_table", "headline")


@dataclass
class Prediction:
    """One evaluated pair: what was predicted and what scoring needs."""

    dataset: str
    split: str
    category: str
    pair_id: str
    src_key: str
    trg_key: str
    src_kps: np.ndarray
    trg_kps: np.ndarray
    pred: np.ndarray
    src_vis: np.ndarray
    trg_vis: np.ndarray
    flip_perm: np.ndarray
    trg_bbox: np.ndarray
    trg_size: tuple
    src_size: tuple
    azimuth_diff: Optional[int] = None
    mirror: Optional[int] = None
    flipped: bool = False


def save_predictions(path, predictions: Sequence[Prediction], meta: dict) -> str:
    """Write predictions (and ``meta``) to ``path`` (``.npz``), atomically."""
    from .report import atomic_write

    n = len(predictions)
    kmax = max([len(p.src_vis) for p in predictions] or [0])

    def pad(key, shape, fill, dtype):
        out = np.full((n,) + shape, fill, dtype=dtype)
        for i, p in enumerate(predictions):
            v = np.asarray(getattr(p, key))
            out[i, :len(v)] = v
        return out

    arrays = {
        "meta": np.array(json.dumps({"format": FORMAT, **meta})),
        "pair_id": np.array([p.pair_id for p in predictions], dtype=str),
        "category": np.array([p.category for p in predictions], dtype=str),
        "src_key": np.array([p.src_key for p in predictions], dtype=str),
        "trg_key": np.array([p.trg_key for p in predictions], dtype=str),
        "n_kp": np.array([len(p.src_vis) for p in predictions], dtype=np.int64),
        "src_kps": pad("src_kps", (kmax, 2), np.nan, np.float64),
        "trg_kps": pad("trg_kps", (kmax, 2), np.nan, np.float64),
        "pred": pad("pred", (kmax, 2), np.nan, np.float64),
        "src_vis": pad("src_vis", (kmax,), False, bool),
        "trg_vis": pad("trg_vis", (kmax,), False, bool),
        "flip_perm": pad("flip_perm", (kmax,), -1, np.int64),
        "trg_bbox": np.array([np.asarray(p.trg_bbox, np.float64) for p in predictions],
                             dtype=np.float64).reshape(n, 4),
        "trg_size": np.array([p.trg_size for p in predictions], dtype=np.int64).reshape(n, 2),
        "src_size": np.array([p.src_size for p in predictions], dtype=np.int64).reshape(n, 2),
        "azimuth_diff": np.array([-1 if p.azimuth_diff is None else p.azimuth_diff
                                  for p in predictions], dtype=np.int64),
        "mirror": np.array([-1 if p.mirror is None else p.mirror for p in predictions],
                           dtype=np.int64),
        "flipped": np.array([bool(p.flipped) for p in predictions], dtype=bool),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def load_predictions(path):
    """Read a predictions file.

    Returns
    -------
    (meta, predictions) : (dict, list of Prediction)

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a geomatch predictions file, or inconsistent arrays (names the path).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zip / format errors
        raise ValueError(f"{path}: not a readable predictions .npz file ({exc})") from None
    try:
        meta = json.loads(str(data["meta"]))
    except (KeyError, ValueError):
        raise ValueError(f"{path}: not a geomatch predictions file (no valid 'meta')") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a geomatch predictions file (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    need = ("pair_id", "category", "src_key", "trg_key", "n_kp", "src_kps", "trg_kps", "pred",
            "src_vis", "trg_vis", "flip_perm", "trg_bbox", "trg_size", "src_size",
            "azimuth_diff", "mirror", "flipped")
    missing = [k for k in need if k not in data]
    if missing:
        raise ValueError(f"{path}: predictions file lacks arrays {missing}")
    n = len(data["pair_id"])
    if any(len(data[k]) != n for k in need):
        raise ValueError(f"{path}: predictions arrays disagree in their number of pairs")
    out = []
    for i in range(n):
        k = int(data["n_kp"][i])
        if k > data["src_vis"].shape[1] or k < 0:
            raise ValueError(f"{path}: pair {i} has n_kp {k} beyond the stored keypoints")
        az, mi = int(data["azimuth_diff"][i]), int(data["mirror"][i])
        out.append(Prediction(
            dataset=str(meta.get("dataset")), split=str(meta.get("split")),
            category=str(data["category"][i]), pair_id=str(data["pair_id"][i]),
            src_key=str(data["src_key"][i]), trg_key=str(data["trg_key"][i]),
            src_kps=data["src_kps"][i, :k], trg_kps=data["trg_kps"][i, :k],
            pred=data["pred"][i, :k], src_vis=data["src_vis"][i, :k],
            trg_vis=data["trg_vis"][i, :k], flip_perm=data["flip_perm"][i, :k],
            trg_bbox=data["trg_bbox"][i], trg_size=tuple(int(v) for v in data["trg_size"][i]),
            src_size=tuple(int(v) for v in data["src_size"][i]),
            azimuth_diff=None if az < 0 else az, mirror=None if mi < 0 else mi,
            flipped=bool(data["flipped"][i])))
    return meta, out


def rescore(path, *, dataset: Optional[str] = None, split: Optional[str] = None,
            out_dir=None, **scoring):
    """Recompute every metric from a predictions file alone.

    Parameters
    ----------
    path : path of a ``predictions.npz`` written by an evaluation run.
    dataset, split : str, optional
        When given, the file must hold predictions of this dataset / split.
    out_dir : path, optional
        Write ``results.json``, ``results.csv`` and ``results.md`` there.
    **scoring
        Other scoring choices (``threshold``, ``frame``, ``compare``,
        ``alphas``, ``flip_table``, ``headline``); default: those of the run.

    Returns
    -------
    geomatch.eval.evaluate.EvalResult
        Equal to the run's result when no scoring choice changes.
    """
    from .evaluate import EvalResult, score_predictions, write_reports
    from .protocols import options_from_dict, resolve_options

    bad = sorted(k for k, v in scoring.items() if k not in _SCORING and v is not None)
    if bad:
        raise ValueError(f"rescore can only change the scoring choices {list(_SCORING)}, "
                         f"not {bad} (those need a new evaluation)")
    meta, preds = load_predictions(path)
    path = os.fspath(path)
    for name, want in (("dataset", dataset), ("split", split)):
        if want is not None and str(meta.get(name)) != str(want):
            raise ValueError(f"{path}: predictions of {name} {meta.get(name)!r}, "
                             f"not {want!r}")
    run_opts = options_from_dict(meta.get("options", {}))
    given = {k: v for k, v in scoring.items() if v is not None}
    fields = {k: getattr(run_opts, k) for k in
              ("flip_table", "threshold", "frame", "compare", "alphas", "mode", "pixel", "window",
               "temperature", "select", "empty_pairs", "test_flip", "headline")}
    fields.update(given)
    opts = resolve_options(None, meta.get("dataset"), **fields)
    srcs = dict(run_opts.sources or {})
    srcs.update({k: "explicit (rescore)" for k in given})
    opts = type(opts)(**{**opts.__dict__, "protocol": run_opts.protocol, "sources": srcs})
    if "flip_table" in given:
        preds = [_with_flip_table(p, opts.flip_table) for p in preds]
    acc = score_predictions(preds, opts)
    config = dict(meta.get("config", {}))
    config["options"] = opts.to_dict()
    config["rescored_from"] = path
    result = EvalResult(summary=acc.summary(), config=config,
                        skipped=int(meta.get("skipped", 0)), n_pairs=len(preds),
                        pair_results=acc.results, predictions=preds)
    if out_dir is not None:
        write_reports(result, out_dir, predictions=False)
    return result


def _with_flip_table(p: Prediction, table: str) -> Prediction:
    from .evaluate import scoring_flip_perm

    import dataclasses

    perm = scoring_flip_perm(p.dataset, p.category, len(p.src_vis), p.flip_perm, table)
    return dataclasses.replace(p, flip_perm=perm)


# ----------------------------------------------------------------- CLI

def configure_parser(parser) -> None:
    """Arguments of ``geomatch rescore``."""
    parser.add_argument("predictions", help="predictions.npz written by geomatch eval")
    parser.add_argument("--dataset", default=None,
                        help="check that the file holds predictions of this dataset "
                             "(default: no check)")
    parser.add_argument("--split", default=None,
                        help="check that the file holds predictions of this split "
                             "(default: no check)")
    parser.add_argument("--out", default=None,
                        help="write results.json/.csv/.md here (default: print only)")
    from .evaluate import add_scoring_arguments

    add_scoring_arguments(parser, default="the run's")


def run_cli(args) -> int:
    """Run ``geomatch rescore``: print the Markdown report."""
    from .evaluate import _flag_message

    try:
        res = rescore(args.predictions, dataset=args.dataset, split=args.split,
                      out_dir=args.out, threshold=args.threshold, frame=args.frame,
                      compare=args.compare, alphas=args.alphas, flip_table=args.flip_table)
    except ValueError as exc:
        raise ValueError(_flag_message(str(exc))) from None
    print(res.to_markdown())
    if args.out:
        print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0
