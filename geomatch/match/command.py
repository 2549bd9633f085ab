"""``geomatch match SRC TRG``: match points between two image files.

Writes ``OUT/matches.json``, ``OUT/matches.png`` and ``OUT/viewer.html``.
Everything is computed first and written into a temporary folder next to
``OUT``; the files are moved into ``OUT`` only when all three are complete,
so an error leaves ``OUT`` as it was.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import List

import numpy as np

__all__ = ["configure_parser", "run_cli", "parse_points", "read_points_file", "grid_points",
           "write_outputs"]


def _point(parts, what: str) -> list:
    """Two numbers or ValueError(what)."""
    try:
        if len(parts) != 2:
            raise ValueError
        return [float(parts[0]), float(parts[1])]
    except ValueError:
        raise ValueError(what) from None


def parse_points(tokens: List[str]) -> np.ndarray:
    """``["x,y", ...]`` -> (K, 2) float64; ValueError naming the bad token."""
    out = [_point(tok.split(","), f"--points: {tok!r} is not a point X,Y (e.g. 120,85)")
           for tok in tokens]
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def read_points_file(path) -> np.ndarray:
    """Points from a file: JSON (a list of [x, y], or ``{"points": [...]}``) or
    text with one ``x,y`` / ``x y`` per line (``#`` comments)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--points-file: file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--points-file: cannot read {path} ({exc})") from None
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--points-file: {path} is not valid JSON ({exc})") from None
        if isinstance(doc, dict):
            doc = doc.get("points")
        try:
            arr = np.asarray(doc, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"--points-file: {path} must hold a list of [x, y] pairs")
        return arr
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        rows.append(_point(line.replace(",", " ").split(),
                           f"--points-file: {path}, line {n}: {line!r} is not 'x,y'"))
    if not rows:
        raise ValueError(f"--points-file: {path} holds no points")
    return np.array(rows, dtype=np.float64)


#: largest --grid: 2,500 points still draw as a readable figure in seconds
MAX_GRID = 50


def grid_points(width: int, height: int, n: int) -> np.ndarray:
    """n x n points at the centres of an n x n grid of cells, integer pixels."""
    xs = np.floor((np.arange(n) + 0.5) * width / n)
    ys = np.floor((np.arange(n) + 0.5) * height / n)
    return np.array([[x, y] for y in ys for x in xs], dtype=np.float64)


def write_outputs(out: str, files: dict) -> None:
    """Write ``{name: writer(path)}`` into a temporary folder beside ``out``,
    then move every file into ``out`` (created if needed)."""
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out: {out} exists and is not a directory")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out: parent directory does not exist: {parent}")
    tmp = tempfile.mkdtemp(prefix=".geomatch-match-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)   # mkdtemp's 0700 would become OUT's mode
    try:
        for name, writer in files.items():
            writer(os.path.join(tmp, name))
        if not os.path.exists(out):
            os.replace(tmp, out)
            return
        for name in files:
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def configure_parser(parser) -> None:
    """Arguments of ``geomatch match``."""
    from ..backbone.arguments import add_backbone_arguments
    from ..ops.transfer import TRANSFER_MODES
    from .viewer import PRECISIONS

    parser.add_argument("src", metavar="SRC", help="source image file")
    parser.add_argument("trg", metavar="TRG", help="target image file")
    # "--points -1,3" is a point (then refused with the image size in the
    # message), not an unknown option: argparse takes a token that starts
    # with "-" for a value only when it looks like a negative number
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(
            r"^-\d+$|^-\d*\.\d+$|^-?[\d.]+(e-?\d+)?,-?[\d.]+(e-?\d+)?$")
    add_backbone_arguments(parser, head=True)
    pts = parser.add_mutually_exclusive_group()
    pts.add_argument("--points", nargs="+", metavar="X,Y", default=None,
                     help="source points in source pixels, e.g. --points 120,85 40,60 "
                          "(default: a grid, see --grid)")
    pts.add_argument("--points-file", default=None,
                     help="file of source points: 'x,y' per line or a JSON list of [x, y] "
                          "(default: none)")
    parser.add_argument("--grid", type=int, default=5,
                        help="without points: match an N x N grid of source points, "
                             "N <= 50 (default: 5)")
    parser.add_argument("--mode", default="upsample-argmax", choices=TRANSFER_MODES,
                        help="keypoint transfer rule of matches.json and matches.png; "
                             "viewer.html always uses upsample-argmax (default: upsample-argmax)")
    parser.add_argument("--viewer-precision", default="float16", choices=PRECISIONS,
                        help="how viewer.html embeds the features; float16 halves the page "
                             "(default: float16)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: match-<src name>-<trg name>)")


def run_cli(args) -> int:
    """Run ``geomatch match``."""
    from .figure import plot_matches
    from .matcher import Matcher, load_rgb

    if not 1 <= args.grid <= MAX_GRID:
        raise ValueError(f"--grid must be between 1 and {MAX_GRID} ({MAX_GRID ** 2} points), "
                         f"got {args.grid}; give more points with --points-file")
    if args.size is not None:  # checked before any file is read
        from ..backbone.preprocess import check_input_size

        check_input_size(args.size, name="--size")
    # read both images first: a bad file fails before the weights are loaded
    srgb = load_rgb(args.src, "SRC")
    trgb = load_rgb(args.trg, "TRG")
    if args.points is not None:
        points = parse_points(args.points)
    elif args.points_file is not None:
        points = read_points_file(args.points_file)
    else:
        points = grid_points(srgb.shape[1], srgb.shape[0], args.grid)
    matcher = Matcher(args.weights, lora=args.lora, head=args.head, model=args.model,
                      preprocess=args.preprocess, size=args.size)
    pred, scores = matcher.match(srgb, trgb, points, mode=args.mode)
    viewer = matcher.viewer(srgb, trgb, points=points, precision=args.viewer_precision,
                            title=f"{os.path.basename(args.src)} -> {os.path.basename(args.trg)}")
    settings = dict(matcher.settings(), mode=args.mode)
    doc = {"source": os.path.abspath(args.src), "target": os.path.abspath(args.trg),
           "points": points.tolist(), "matches": np.asarray(pred).tolist(),
           "scores": np.asarray(scores).tolist(), "settings": settings}

    def write_json(path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")

    def write_png(path):
        import matplotlib.pyplot as plt

        fig = plot_matches(srgb, trgb, points, pred, scores,
                           title=f"{os.path.basename(args.src)} -> {os.path.basename(args.trg)}")
        try:
            fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)

    out = args.out or ("match-" + os.path.splitext(os.path.basename(args.src))[0] + "-"
                       + os.path.splitext(os.path.basename(args.trg))[0])
    write_outputs(out, {"matches.json": write_json, "matches.png": write_png,
                        "viewer.html": viewer.save})
    print(f"{len(points)} points matched ({args.mode}); median cosine "
          f"{float(np.median(scores)) if len(scores) else float('nan'):.3f} -> "
          f"{os.path.join(out, 'matches.json')}, matches.png, viewer.html")
    return 0
