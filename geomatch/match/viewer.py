"""A self-contained HTML page to click points and see where they match.

The page embeds both images (JPEG, for display only) and both feature maps
(base64, float16 by default) and computes every answer in JavaScript with
geomatch's ``upsample-argmax`` rule (:mod:`geomatch.match.viewer_js`); it
makes no network request and needs no server, so it opens from disk, and
the same markup shows inline in Jupyter (:meth:`Viewer._repr_html_`).

Precision: with ``precision="float16"`` (default) the features are rounded
to float16 before they are embedded; the page's answers then equal
``Matcher.match(..., quantize="float16")`` pixel for pixel, and differ from
the float32 answers of ``Matcher.match`` only where float16 rounding moves
the argmax (docs/matching.md gives the measured rate).  ``"float32"``
embeds the maps unrounded (twice the size; answers then equal
``Matcher.match`` up to float rounding ties).

Size: two 518-pixel images with ViT-B/14 features (2 x 37 x 37 x 768
values) make a page of about 6 MB in float16 (docs/matching.md).
"""
from __future__ import annotations

import base64
import html as _html
import io
import json
import os
import uuid
from typing import Optional, Sequence

import numpy as np

from .viewer_js import VIEWER_JS

__all__ = ["Viewer", "PRECISIONS"]

PRECISIONS = ("float16", "float32")

_CSS = """
.gm-viewer{font-family:sans-serif;font-size:13px;color:#222}
.gm-viewer .gm-row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
.gm-viewer .gm-pane{max-width:49%}
.gm-viewer .gm-stack{position:relative;display:inline-block;max-width:100%}
.gm-viewer canvas{display:block;width:460px;max-width:100%;height:auto}
.gm-viewer .gm-src{cursor:crosshair}
.gm-viewer canvas.gm-heat{position:absolute;left:0;top:0;width:100%;height:100%;
 pointer-events:none}
.gm-viewer .gm-list{margin:6px 0;padding-left:20px;max-height:160px;overflow:auto}
.gm-viewer .gm-title{font-weight:bold;margin:4px 0}
"""


#: longest side of the embedded display images (the matching uses full resolution)
DISPLAY_SIDE = 1024


def _display_image(rgb: np.ndarray, quality: int = 90):
    """(data URL, display width, display height): JPEG, at most DISPLAY_SIDE px."""
    from PIL import Image

    im = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    if max(w, h) > DISPLAY_SIDE:
        s = DISPLAY_SIDE / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return url, im.size[0], im.size[1]


def _features_b64(feat: np.ndarray, precision: str) -> str:
    dt = np.dtype("<f2") if precision == "float16" else np.dtype("<f4")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(np.asarray(feat), dtype=dt)
    if not np.isfinite(arr).all():
        raise ValueError(f"features exceed the {precision} range; use precision='float32'")
    return base64.b64encode(arr.tobytes()).decode("ascii")


class Viewer:
    """The interactive page of one image pair (made by :meth:`Matcher.viewer`).

    Parameters
    ----------
    src_rgb, trg_rgb : uint8 arrays (H, W, 3)
    src_feat, trg_feat : arrays (h, w, D), channel-last
    src_frame, trg_frame : (x0, y0, fw, fh)
        The rectangle each grid covers (:func:`geomatch.geometry.grid_frame`).
    precision : {"float16", "float32"}
        How the features are embedded (see the module docstring).
    points : array (K, 2), optional
        Source points matched when the page opens.
    """

    def __init__(self, src_rgb, trg_rgb, src_feat, trg_feat, src_frame, trg_frame, *,
                 precision: str = "float16", points: Optional[Sequence] = None,
                 title: Optional[str] = None, settings: Optional[dict] = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        sf, tf = np.asarray(src_feat), np.asarray(trg_feat)
        if sf.ndim != 3 or tf.ndim != 3 or sf.shape[2] != tf.shape[2]:
            raise ValueError(f"src_feat and trg_feat must be (h, w, D) with the same D, got "
                             f"{sf.shape} and {tf.shape}")
        self.precision = precision
        self.title = title
        self._doc = {
            "dim": int(sf.shape[2]),
            "precision": precision,
            "src": self._image(src_rgb, sf, src_frame),
            "trg": self._image(trg_rgb, tf, trg_frame),
            "feat_src": _features_b64(sf, precision),
            "feat_trg": _features_b64(tf, precision),
            "points": [] if points is None else [[float(x), float(y)] for x, y in points],
            "settings": settings or {},
        }

    @staticmethod
    def _image(rgb, feat, frame) -> dict:
        url, dw, dh = _display_image(rgb)
        return {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "dw": dw, "dh": dh,
                "grid": [int(feat.shape[0]), int(feat.shape[1])],
                "frame": [float(v) for v in frame], "img": url}

    def fragment(self) -> str:
        """The viewer as an HTML fragment (what Jupyter shows)."""
        vid = "gm-" + uuid.uuid4().hex[:12]
        d = self._doc
        data = json.dumps(d, separators=(",", ":")).replace("</", "<\\/")
        title = _html.escape(self.title or "geomatch viewer: click on the source image")
        return (
            f'<div class="gm-viewer" id="{vid}"><style>{_CSS}</style>'
            f'<div class="gm-title">{title}</div>'
            f'<div class="gm-row">'
            f'<div class="gm-pane"><div>source ({d["src"]["width"]} x {d["src"]["height"]})</div>'
            f'<canvas class="gm-src" width="{d["src"]["dw"]}" height="{d["src"]["dh"]}">'
            f'</canvas></div>'
            f'<div class="gm-pane"><div>target ({d["trg"]["width"]} x {d["trg"]["height"]}): '
            f'cosine similarity, best match numbered</div><div class="gm-stack">'
            f'<canvas class="gm-trg" width="{d["trg"]["dw"]}" height="{d["trg"]["dh"]}">'
            f'</canvas><canvas class="gm-heat" width="{d["trg"]["dw"]}" '
            f'height="{d["trg"]["dh"]}"></canvas></div></div>'
            f'</div><div><button class="gm-clear" type="button">clear</button> '
            f'<span class="gm-status">loading...</span></div>'
            f'<ol class="gm-list"></ol>'
            f'<div style="color:#666">upsample-argmax on {d["precision"]} features '
            f'(grid {d["src"]["grid"][0]}x{d["src"]["grid"][1]} and '
            f'{d["trg"]["grid"][0]}x{d["trg"]["grid"][1]}, D = {d["dim"]}), computed in '
            f'this page; no server</div>'
            f'<script type="application/json" id="{vid}-data">{data}</script>'
            f'<script>{VIEWER_JS.replace("__ID__", vid)}</script></div>')

    _repr_html_ = fragment

    def html(self) -> str:
        """A complete standalone HTML document."""
        title = _html.escape(self.title or "geomatch viewer")
        return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
                f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                f'img-src data:; style-src \'unsafe-inline\'; script-src \'unsafe-inline\'">'
                f'<title>{title}</title></head><body>{self.fragment()}</body></html>\n')

    def save(self, path) -> str:
        """Write the standalone page to ``path`` (atomically: a temporary file
        in the same folder, then renamed).  Returns the path."""
        from ..runtime.files import atomic_file

        path = os.fspath(path)
        with atomic_file(path, "w", encoding="utf-8") as f:
            f.write(self.html())
        return path
