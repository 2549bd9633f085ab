"""Evaluation protocols: every choice a published evaluation makes, by name.

An evaluation is fully described by an :class:`EvalOptions`.  A *protocol*
(``"geco"``, ``"geoaware-sc"``, ``"geoaware-sc-zero-shot"``) is a preset of
those options per dataset, taken from the official code of the paper (see
``docs/protocols.md`` for the table with the file and line of each choice).
Explicitly given options always override the preset, and
:func:`resolve_options` records where each value came from (``"default"``,
``"protocol <name>"`` or ``"explicit"``) so that reports can state every
choice they made.

The choices
-----------
flip_table : {"lr", "geco"}
    SPair-71k counterpart table of the geometry breakdown: strict left/right
    pairs, or GECO's permutation csv which also pairs front/back parts.
threshold : {"bbox", "image"}
    T is the longer side of the target bounding box or of the target image.
frame : "original" or "pad:S"
    The frame in which distances and T are compared: the original image, or
    GeoAware-SC's S-pixel padded square (distances and T scaled by
    ``S / max(W, H)`` of the target).
compare : {"le", "lt"}
    ``distance / T <= alpha`` (GECO) or ``distance < alpha * T`` (GeoAware-SC).
alphas : tuple of float
mode : {"upsample-argmax", "grid-argmax", "grid-argmax-corner", "soft-argmax"}
    Keypoint transfer (:func:`geomatch.transfer_keypoints` and
    :func:`geomatch.ops.transfer.grid_cell_corner`).
pixel : {"centre", "stride"}
    Pixel of a grid position g (grid-argmax and soft-argmax only): the patch
    centre ``(g + 0.5) * W / w - 0.5`` (geomatch), or GeoAware-SC's
    ``g * s + floor(s / 2)`` in network-input pixels (``s`` = input size / grid
    size), mapped back to the image.
window, temperature :
    Window soft-argmax half-width and softmax temperature.
select : "all", "first:N", "random:N[:SEED]" or "geoaware[:N[:SEED]]"
    Pair selection per category (see :func:`parse_select`).
empty_pairs : {"skip", "count"}
    Pairs without a keypoint visible in both images: left out (and counted as
    skipped), or evaluated and counted in the geometry breakdown (GECO).
test_flip : {"off", "masked", "mutual-nn"}
    GeoAware-SC's test-time adaptive flip of the source image.
headline : tuple of str
    The summary keys the paper reports as its main figures.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["EvalOptions", "PROTOCOLS", "DEFAULTS", "TRANSFER_MODES", "resolve_options",
           "parse_select", "parse_frame", "dataset_key"]

TRANSFER_MODES = ("upsample-argmax", "grid-argmax", "grid-argmax-corner", "soft-argmax")
TEST_FLIPS = ("off", "masked", "mutual-nn")
HEADLINE_KEYS = ("pck_point", "pck_image", "pck_geo", "pck_geo_image", "pck_breakdown",
                 "pck_point_catmean", "pck_image_catmean")


@dataclass(frozen=True)
class EvalOptions:
    """Every choice of an evaluation (see the module docstring)."""

    flip_table: str = "lr"
    threshold: str = "bbox"
    frame: str = "original"
    compare: str = "le"
    alphas: Tuple[float, ...] = (0.05, 0.10, 0.15)
    mode: str = "upsample-argmax"
    pixel: str = "centre"
    window: int = 7
    temperature: float = 0.02
    select: str = "all"
    empty_pairs: str = "skip"
    test_flip: str = "off"
    headline: Tuple[str, ...] = ("pck_point", "pck_image")
    protocol: Optional[str] = None
    sources: Dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready dict of every choice (and ``sources``: where each came from)."""
        d = dataclasses.asdict(self)
        d["alphas"] = list(self.alphas)
        d["headline"] = list(self.headline)
        return d

    @property
    def frame_size(self) -> Optional[int]:
        """S of a ``"pad:S"`` frame, None for ``"original"``."""
        return parse_frame(self.frame)


#: geomatch's own defaults (what ``geomatch eval`` does without --protocol).
DEFAULTS: Dict[str, Any] = {f.name: f.default for f in dataclasses.fields(EvalOptions)
                            if f.name not in ("sources", "protocol")}

_GECO_BASE = {
    "flip_table": "geco", "threshold": "image", "frame": "original", "compare": "le",
    "alphas": (0.05, 0.10, 0.15), "mode": "upsample-argmax", "select": "first:10000",
    "empty_pairs": "count", "test_flip": "off",
    "headline": ("pck_point", "pck_breakdown"),
}
_GEOAWARE_BASE = {
    "flip_table": "lr", "threshold": "bbox", "frame": "pad:840", "compare": "lt",
    "alphas": (0.10, 0.05, 0.01), "mode": "soft-argmax", "pixel": "stride", "window": 7,
    "temperature": 0.02,
    "select": "all", "empty_pairs": "skip", "test_flip": "off",
    "headline": ("pck_image", "pck_geo_image"),
}

#: protocol -> dataset ("*" for any) -> option values.  The sources of every
#: value are listed in docs/protocols.md.
PROTOCOLS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "geco": {
        "*": _GECO_BASE,
        # GECO evaluates AP-10K without upsampling: corner pixel of the cell
        "ap10k": {**_GECO_BASE, "mode": "grid-argmax-corner"},
    },
    "geoaware-sc": {
        "*": _GEOAWARE_BASE,
        "ap10k": {**_GEOAWARE_BASE, "headline": ("pck_image", "pck_geo")},
        "pfpascal": {**_GEOAWARE_BASE, "threshold": "image", "alphas": (0.10, 0.05, 0.15),
                     "headline": ("pck_image",)},
    },
    "geoaware-sc-zero-shot": {
        "*": {**_GEOAWARE_BASE, "window": 5, "test_flip": "masked"},
        "ap10k": {**_GEOAWARE_BASE, "window": 5, "test_flip": "masked",
                  "headline": ("pck_image", "pck_geo")},
        "pfpascal": {**_GEOAWARE_BASE, "window": 5, "test_flip": "masked",
                     "threshold": "image", "alphas": (0.10, 0.05, 0.15),
                     "headline": ("pck_image",)},
    },
}


def dataset_key(name: Optional[str]) -> str:
    """Normalized dataset name (``"SPair-71k"`` -> ``"spair"``, ``"ap-10k"`` -> ``"ap10k"``)."""
    n = (name or "").lower().replace("-", "").replace("_", "")
    for k in ("spair", "pfpascal", "ap10k", "cub"):
        if n.startswith(k):
            return k
    return n


_SELECT_RE = re.compile(r"^(all|first:(\d+)|random:(\d+)(?::(\d+))?"
                        r"|geoaware(?::(\d+)(?::(\d+))?)?)$")


def parse_select(select: str) -> Tuple[str, Optional[int], Optional[int]]:
    """Parse a pair selection.

    ``"all"``; ``"first:N"`` (the first N pairs of each category in the
    dataset's order, as GECO's ``n_pairs_eval_pck``); ``"random:N[:SEED]"``
    (N pairs drawn without replacement over the selected categories, as
    :meth:`Dataset.pairs` with ``subsample=N``; seed 0 by default);
    ``"geoaware[:N[:SEED]]"`` (GeoAware-SC's ``TEST_SAMPLE``: per category,
    ``RandomState(SEED).choice`` with replacement; N = 20, SEED = 42 by
    default).

    Returns
    -------
    (kind, n, seed)
    """
    if not isinstance(select, str):
        raise TypeError(f"select must be a string, got {type(select).__name__}")
    m = _SELECT_RE.match(select.strip())
    if not m:
        raise ValueError(f"select must be 'all', 'first:N', 'random:N[:SEED]' or "
                         f"'geoaware[:N[:SEED]]', got {select!r}")
    s = select.strip()
    if s == "all":
        return "all", None, None
    if m.group(2) is not None:
        n, kind, seed = int(m.group(2)), "first", None
    elif m.group(3) is not None:
        n, kind, seed = int(m.group(3)), "random", int(m.group(4) or 0)
    else:
        n, kind, seed = int(m.group(5) or 20), "geoaware", int(m.group(6) or 42)
    if n < 1:
        raise ValueError(f"select: the number of pairs must be at least 1, got {select!r}")
    return kind, n, seed


def parse_frame(frame: str) -> Optional[int]:
    """``"original"`` -> None; ``"pad:S"`` -> S (a positive integer)."""
    if frame == "original":
        return None
    m = re.match(r"^pad:(\d+)$", str(frame))
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"frame must be 'original' or 'pad:S' with S a positive integer "
                         f"(e.g. 'pad:840'), got {frame!r}")
    return int(m.group(1))


def _check(opts: EvalOptions, dataset: str) -> None:
    """Validate every option (messages name the option)."""
    from .metrics import _check_alphas, _check_compare

    if opts.flip_table not in ("lr", "geco"):
        raise ValueError(f"flip_table must be 'lr' or 'geco', got {opts.flip_table!r}")
    if opts.flip_table == "geco" and dataset not in ("spair", ""):
        raise ValueError(f"flip_table 'geco' exists for SPair-71k only, not for {dataset!r}")
    if opts.threshold not in ("bbox", "image"):
        raise ValueError(f"threshold must be 'bbox' or 'image', got {opts.threshold!r}")
    parse_frame(opts.frame)
    _check_compare(opts.compare)
    _check_alphas(opts.alphas)
    if opts.mode not in TRANSFER_MODES:
        raise ValueError(f"mode must be one of {TRANSFER_MODES}, got {opts.mode!r}")
    if opts.pixel not in ("centre", "stride"):
        raise ValueError(f"pixel must be 'centre' or 'stride', got {opts.pixel!r}")
    if (opts.pixel == "stride" and opts.mode not in ("grid-argmax", "soft-argmax")
            and opts.sources.get("pixel") == "explicit"):
        raise ValueError(f"pixel 'stride' applies to the grid-argmax and soft-argmax modes, "
                         f"not to {opts.mode!r}")
    if isinstance(opts.window, bool) or not isinstance(opts.window, int) or opts.window < 0:
        raise ValueError(f"window must be an integer >= 0, got {opts.window!r}")
    t = opts.temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")
    parse_select(opts.select)
    if opts.empty_pairs not in ("skip", "count"):
        raise ValueError(f"empty_pairs must be 'skip' or 'count', got {opts.empty_pairs!r}")
    if opts.test_flip not in TEST_FLIPS:
        raise ValueError(f"test_flip must be one of {TEST_FLIPS}, got {opts.test_flip!r}")
    bad = [h for h in opts.headline if h not in HEADLINE_KEYS]
    if bad or not opts.headline:
        raise ValueError(f"headline must list some of {HEADLINE_KEYS}, got {list(opts.headline)}")


def resolve_options(protocol: Optional[str] = None, dataset: Optional[str] = None,
                    **explicit: Any) -> EvalOptions:
    """The options of an evaluation: defaults, then the protocol preset for
    the dataset, then every explicitly given (non-None) option.

    Parameters
    ----------
    protocol : {"geco", "geoaware-sc", "geoaware-sc-zero-shot"}, optional
    dataset : str, optional
        Dataset name (selects the per-dataset preset).
    **explicit
        Any :class:`EvalOptions` field; None means "not given".

    Returns
    -------
    EvalOptions
        With ``sources`` telling, for each field, ``"default"``,
        ``"protocol <name>"`` or ``"explicit"``.

    Raises
    ------
    ValueError
        Unknown protocol or option, or a bad value (the message names it).
    """
    names = {f.name for f in dataclasses.fields(EvalOptions)} - {"sources", "protocol"}
    unknown = sorted(set(explicit) - names)
    if unknown:
        raise ValueError(f"unknown evaluation option(s) {unknown}; known: {sorted(names)}")
    values = dict(DEFAULTS)
    sources = {k: "default" for k in values}
    ds = dataset_key(dataset)
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        preset = PROTOCOLS[protocol].get(ds, PROTOCOLS[protocol]["*"])
        for k, v in preset.items():
            if k == "flip_table" and ds != "spair":
                continue   # only SPair-71k has two tables
            values[k] = v
            sources[k] = f"protocol {protocol}"
    for k, v in explicit.items():
        if v is None:
            continue
        if k in ("alphas", "headline"):
            v = tuple(float(x) for x in v) if k == "alphas" else tuple(str(x) for x in v)
        values[k] = v
        sources[k] = "explicit"
    opts = EvalOptions(**values, protocol=protocol, sources=sources)
    _check(opts, ds)
    return opts


def options_from_dict(d: Mapping) -> EvalOptions:
    """Rebuild :class:`EvalOptions` from :meth:`EvalOptions.to_dict` (a predictions file)."""
    names = {f.name for f in dataclasses.fields(EvalOptions)}
    kw = {k: v for k, v in d.items() if k in names}
    for k in ("alphas", "headline"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return EvalOptions(**kw)
