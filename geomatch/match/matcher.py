"""``gm.Matcher``: match points between your own images.

A :class:`Matcher` loads the DINOv2 weights (and optionally GECO's LoRA and a
trained head) once, featurizes images on demand and keeps the features of
the last few images, so that asking for other points of the same pair costs
only the transfer.  Predictions are made exactly as the evaluation pipeline
makes them (:func:`geomatch.eval.evaluate.transfer_pair` on the same maps):
points are mapped into the rectangle the feature grid covers
(:func:`geomatch.geometry.grid_frame`: the whole image for ``"resize"``,
the padded square for ``"pad"``), transferred with
:func:`geomatch.transfer_keypoints`, and mapped back to target pixels.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from types import SimpleNamespace
from typing import NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["Matcher", "Matches", "load_rgb", "QUANTIZE"]

#: Storage precisions of the embedded viewer features (see :meth:`Matcher.match`).
QUANTIZE = (None, "float16")


class Matches(NamedTuple):
    """Result of :meth:`Matcher.match`: unpacks as ``points, scores``."""

    points: np.ndarray   #: (K, 2) float64 predicted (x, y) in target pixels
    scores: np.ndarray   #: (K,) float64 cosine similarity at each prediction


def load_rgb(image, name: str = "image") -> np.ndarray:
    """An image as a uint8 (H, W, 3) array.

    Parameters
    ----------
    image : str, path-like, PIL image or array (H, W, 3) / (H, W)
        A path is opened with Pillow and turned upright by its EXIF
        orientation tag (points are pixels of the upright image, as viewers
        show it); a grey array is repeated to RGB.
    name : str
        Used in error messages.

    Raises
    ------
    FileNotFoundError
        The path does not exist (the message names it).
    ValueError
        The file is not an image Pillow can read, or the array has a bad
        shape or dtype (the message names the path or ``name``).
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, ImageOps, UnidentifiedImageError

        path = os.fspath(image)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: file not found: {path}")
        if os.path.isdir(path):
            raise ValueError(f"{name}: {path} is a directory, not an image file")
        try:
            with Image.open(path) as im:
                # upright as image viewers show it (phone photos store their
                # rotation in the EXIF orientation tag)
                im = ImageOps.exif_transpose(im)
                if im.mode.startswith("I;16") or im.mode == "I":
                    # 16-bit grayscale (older Pillow: mode "I"): convert("RGB")
                    # would clip every value above 255
                    g = np.asarray(im, dtype=np.float64)
                    if im.mode.startswith("I;16") or (g.min() >= 0 and 255 < g.max() <= 65535):
                        g = np.round(g / 257.0).astype(np.uint8)
                        return np.repeat(g[:, :, None], 3, axis=2)
                return np.asarray(im.convert("RGB"))
        except UnidentifiedImageError:
            raise ValueError(f"{name}: {path} is not an image file Pillow can read") from None
        except Image.DecompressionBombError as exc:
            raise ValueError(f"{name}: {path}: {exc} (raise PIL.Image.MAX_IMAGE_PIXELS if "
                             "you trust the file)") from None
        except OSError as exc:
            raise ValueError(f"{name}: cannot read {path} ({exc})") from None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: an image array must have shape (H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1:
            arr = np.round(arr * 255).astype(np.uint8)
        else:
            raise ValueError(f"{name}: an image array must be uint8 (or float in [0, 1]), "
                             f"got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _short_mismatch(msg: str, model: Optional[str]) -> str:
    """One readable line for a weights/architecture mismatch (the loader
    lists every tensor; the counts and one example say enough here)."""
    import re

    head, sep, rest = msg.partition(": weights do not match the model: ")
    if not sep:
        return msg
    counts = [f"{m.group(1)} {m.group(2)}" for m in
              re.finditer(r"(missing|unexpected|wrong shape) (\d+):", rest)]
    example = re.search(r"wrong shape \d+: ([^,;]+\([^)]*\) \(expected \([^)]*\)\))", rest)
    what = f"the {model} architecture" if model else "a DINOv2 architecture"
    return (f"{head}: weights do not match {what} (" + ", ".join(counts) + " tensors"
            + (f"; e.g. {example.group(1)}" if example else "") + ")")


class Matcher:
    """DINOv2 (+ LoRA, + head) feature matching between arbitrary images.

    Parameters
    ----------
    weights : path or DinoV2
        DINOv2 weights in any format :func:`geomatch.backbone.load_dinov2`
        reads (official ``.pth``, ``.safetensors``, Hugging Face directory),
        or an already loaded :class:`geomatch.backbone.DinoV2`.
    lora : path, optional
        GECO's LoRA file, merged into the backbone's qkv weights.
    head : path or AttentionHead, optional
        A trained head (:meth:`geomatch.head.AttentionHead.save` file or the
        object); the maps are then the head's embeddings.
    model : str, optional
        Architecture the weights must be (``vitb14``, ...); default: inferred.
    preprocess : {"resize", "pad"}
        ``"resize"``: GECO's 518 x 518 stretch; ``"pad"``: GeoAware-SC's
        longest side 840, centred on a black square.
    size : int, optional
        Side of the square network input (default 518 / 840).
    cache_size : int
        Number of images whose features are kept (least recently used out).

    Examples
    --------
    >>> m = gm.Matcher("dinov2_vitb14_pretrain.pth")          # doctest: +SKIP
    >>> points, scores = m.match("cat1.jpg", "cat2.jpg", [[120, 80]])  # doctest: +SKIP
    >>> m.show("cat1.jpg", "cat2.jpg")    # interactive viewer in Jupyter  # doctest: +SKIP
    """

    def __init__(self, weights, *, lora=None, head=None, model: Optional[str] = None,
                 preprocess: str = "resize", size: Optional[int] = None, cache_size: int = 4):
        from ..backbone.preprocess import DEFAULT_SIZES, check_input_size

        if preprocess not in DEFAULT_SIZES:
            raise ValueError(f"preprocess must be 'resize' or 'pad', got {preprocess!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be a positive integer, got {cache_size!r}")
        if isinstance(weights, (str, os.PathLike)):
            from ..backbone.dinov2 import load_dinov2

            try:
                self.backbone = load_dinov2(weights, model, lora=lora)
            except ValueError as exc:
                raise ValueError(_short_mismatch(str(exc), model)) from None
            self.weights = os.fspath(weights)
        elif hasattr(weights, "features") and hasattr(weights, "patch_size"):
            if lora is not None:
                raise ValueError("lora: pass the LoRA file to load_dinov2 together with the "
                                 "weights (a loaded model cannot take it)")
            self.backbone = weights
            self.weights = getattr(weights, "source", None) or type(weights).__name__
            cfg = getattr(weights, "config", None)
            if model is not None and cfg is not None:
                from ..backbone.dinov2 import DinoV2Config

                want = DinoV2Config.from_name(model)
                got = (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.num_register_tokens)
                if got != (want.embed_dim, want.depth, want.num_heads,
                           want.num_register_tokens):
                    raise ValueError(f"weights: the given model is {cfg.name}, not {model}")
        else:
            raise TypeError(f"weights must be a path or a DinoV2 model, got "
                            f"{type(weights).__name__}")
        self.lora = None if lora is None else os.fspath(lora)
        self.head, self.head_source = self._load_head(head)
        self.preprocess = preprocess
        # the backbone's one size policy (docs/limits.md); 0 is an error, not the default
        self.size = check_input_size(DEFAULT_SIZES[preprocess] if size is None else size,
                                     int(self.backbone.patch_size))
        self.cache_size = cache_size
        self._features: "OrderedDict[str, Tuple[np.ndarray, object, np.ndarray]]" = OrderedDict()
        self._path_keys: dict = {}

    # ------------------------------------------------------------------ setup
    def _load_head(self, head):
        if head is None:
            return None, None
        if isinstance(head, (str, os.PathLike)):
            from ..model.head import load_head

            obj, source = load_head(head), os.fspath(head)
        elif callable(head):
            obj, source = head, type(head).__name__
        else:
            raise TypeError(f"head must be a path, an AttentionHead or None, got "
                            f"{type(head).__name__}")
        cfg = getattr(obj, "config", None)
        dim = int(self.backbone.embed_dim)
        if cfg is not None and int(cfg.in_dim) != dim:
            raise ValueError(f"head {source}: trained on {cfg.in_dim}-dimensional features, "
                             f"but the backbone ({self.backbone_name}) gives {dim}")
        return obj, source

    @property
    def backbone_name(self) -> str:
        cfg = getattr(self.backbone, "config", None)
        return f"dinov2_{cfg.name}" if cfg is not None else type(self.backbone).__name__

    @property
    def manifest(self) -> dict:
        """The coordinate settings of the maps (``preprocess``, ``resolution``),
        as a feature cache manifest holds them."""
        return {"preprocess": self.preprocess, "resolution": [self.size, self.size]}

    def settings(self) -> dict:
        """What produced the matches (written to ``matches.json``)."""
        return {"weights": self.weights, "lora": self.lora, "head": self.head_source,
                "backbone": self.backbone_name, "preprocess": self.preprocess,
                "size": self.size}

    def __repr__(self) -> str:
        return (f"Matcher(backbone={self.backbone_name!r}, preprocess={self.preprocess!r}, "
                f"size={self.size}, head={self.head_source!r})")

    # --------------------------------------------------------------- features
    def _entry(self, image, name: str):
        # a file seen before (same path, size and modification time) is not
        # decoded again
        stat_key = None
        if isinstance(image, (str, os.PathLike)):
            try:
                st = os.stat(image)
                stat_key = (os.path.abspath(os.fspath(image)), st.st_mtime_ns, st.st_size)
            except OSError:
                stat_key = None
            key = self._path_keys.get(stat_key)
            if key is not None and key in self._features:
                self._features.move_to_end(key)
                return self._features[key]
        rgb = load_rgb(image, name)
        key = hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest() + str(rgb.shape)
        if stat_key is not None:
            if len(self._path_keys) > 8 * self.cache_size:   # forget evicted files
                self._path_keys = {k: v for k, v in self._path_keys.items()
                                   if v in self._features}
            self._path_keys[stat_key] = key
        hit = self._features.get(key)
        if hit is not None:
            self._features.move_to_end(key)
            return hit
        from ..backbone.preprocess import preprocess_image

        pixels, frame = preprocess_image(rgb, self.preprocess, self.size,
                                         patch_size=int(self.backbone.patch_size))
        feat = np.asarray(self.backbone.features(pixels), dtype=np.float32)
        if self.head is not None:
            feat = np.asarray(self.head(feat), dtype=np.float32)
            if feat.ndim != 3 or not np.isfinite(feat).all():
                raise ValueError(f"head {self.head_source} returned {feat.shape} features "
                                 "with non-finite values or a wrong shape")
        feat = np.ascontiguousarray(feat)
        feat.flags.writeable = False          # the cached copy; features() hands out copies
        rgb = np.array(rgb)
        rgb.flags.writeable = False
        entry = (feat, frame, rgb)
        self._features[key] = entry
        while len(self._features) > self.cache_size:
            self._features.popitem(last=False)
        return entry

    def features(self, image):
        """The feature map of ``image`` and its coordinate frame.

        Parameters
        ----------
        image : path, PIL image or uint8 array (H, W, 3)

        Returns
        -------
        feat : float32 ndarray (h, w, D)
            Channel-last backbone features (the head's embeddings when the
            matcher has a head), a copy of the cached map: changing it does
            not change later matches.  Cached: the same image again is only
            a copy.
        frame : geomatch.backbone.Frame
            How the image sits in the network input.
        """
        feat, frame, _ = self._entry(image, "image")
        return feat.copy(), frame

    # --------------------------------------------------------------- matching
    def _points(self, points, size, name="points") -> np.ndarray:
        try:
            p = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be (x, y) pairs of numbers") from None
        if p.ndim == 1 and p.shape == (2,):
            p = p[None]
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"{name} must have shape (K, 2) of (x, y) pixels, got {p.shape}")
        W, H = size
        for k, (x, y) in enumerate(p):
            if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < W and 0 <= y < H):
                raise ValueError(f"{name}: point {k} (x, y) = ({x:g}, {y:g}) lies outside the "
                                 f"source image of size (W, H) = ({W}, {H}); need "
                                 f"0 <= x < {W} and 0 <= y < {H}")
        return p

    @staticmethod
    def _quantized(feat, quantize):
        if quantize is None:
            return feat
        if quantize == "float16":
            with np.errstate(over="ignore"):
                q = feat.astype(np.float16)
            if not np.isfinite(q).all():
                raise ValueError("features exceed the float16 range; use quantize=None")
            return q.astype(np.float64)
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")

    def match(self, src, trg, points, mode: str = "upsample-argmax", *,
              quantize: Optional[str] = None) -> Matches:
        """Where the source points land in the target image.

        Parameters
        ----------
        src, trg : path, PIL image or uint8 array (H, W, 3)
        points : array_like (K, 2) or (2,)
            Source (x, y) pixels, ``0 <= x < W`` and ``0 <= y < H``.
        mode : {"upsample-argmax", "grid-argmax", "soft-argmax"}
            Keypoint transfer rule (see :func:`geomatch.transfer_keypoints`).
        quantize : {None, "float16"}
            ``"float16"``: round both maps to float16 first (and compute in
            float64) -- what the HTML viewer embeds; its answers equal these
            pixel for pixel.

        Returns
        -------
        Matches
            ``points`` (K, 2) float64 target (x, y) pixels -- integers for
            ``"upsample-argmax"`` with ``"resize"``; with ``"pad"`` the
            target's padding offset is added, as in the evaluation -- and
            ``scores`` (K,) the cosine similarity there (at the pixel nearest
            to a non-integer prediction).

        Raises
        ------
        ValueError
            A point outside the source image (the message names it), an
            unreadable image (the message names the path), a bad mode.
        """
        from ..eval.evaluate import transfer_pair

        sfeat, _, srgb = self._entry(src, "source image")
        tfeat, _, trgb = self._entry(trg, "target image")
        ssize = (srgb.shape[1], srgb.shape[0])
        tsize = (trgb.shape[1], trgb.shape[0])
        pts = self._points(points, ssize)
        sf, tf = self._quantized(sfeat, quantize), self._quantized(tfeat, quantize)
        if len(pts) == 0:
            return Matches(np.zeros((0, 2)), np.zeros(0))
        pair = SimpleNamespace(src=SimpleNamespace(keypoints=pts, visible=np.ones(len(pts), bool),
                                                   size=ssize),
                               trg=SimpleNamespace(size=tsize))
        pred = transfer_pair(pair, sf, tf, self.manifest, mode=mode)
        scores = np.array([self._score(sf, tf, p, q, ssize, tsize) for p, q in zip(pts, pred)])
        return Matches(pred, scores)

    def _frames(self, ssize, tsize):
        from ..geometry import grid_frame

        return grid_frame(ssize, self.manifest), grid_frame(tsize, self.manifest)

    def _similarity(self, sf, tf, point, ssize, tsize):
        """Full-frame map (frame coordinates) and the two frames."""
        from ..ops.upsampled import upsampled_similarity

        (sx0, sy0, sfw, sfh), (tx0, ty0, tfw, tfh) = self._frames(ssize, tsize)
        fs = (int(round(sfw)), int(round(sfh)))
        ft = (int(round(tfw)), int(round(tfh)))
        # the evaluation's clip (transfer_pair), in the same float32 rounding
        x = np.float32(min(max(point[0] - sx0, 0.0), fs[0] - 1e-3))
        y = np.float32(min(max(point[1] - sy0, 0.0), fs[1] - 1e-3))
        return upsampled_similarity(sf, tf, (float(x), float(y)), fs, ft), (tx0, ty0)

    def _score(self, sf, tf, point, pred, ssize, tsize) -> float:
        """Cosine at the prediction: the two upsampled descriptors only, O(D)
        (no full-resolution map)."""
        from ..ops.upsampled import source_descriptor

        (sx0, sy0, sfw, sfh), (tx0, ty0, tfw, tfh) = self._frames(ssize, tsize)
        fs = (int(round(sfw)), int(round(sfh)))
        ft = (int(round(tfw)), int(round(tfh)))
        x = np.float32(min(max(point[0] - sx0, 0.0), fs[0] - 1e-3))
        y = np.float32(min(max(point[1] - sy0, 0.0), fs[1] - 1e-3))
        q = source_descriptor(sf, (float(x), float(y)), fs)
        j = float(np.clip(np.floor(pred[0] - tx0 + 0.5), 0, ft[0] - 1))
        i = float(np.clip(np.floor(pred[1] - ty0 + 0.5), 0, ft[1] - 1))
        t = source_descriptor(tf, (j, i), ft)
        nq, nt = float(np.sqrt(q @ q)), float(t @ t)
        if nq == 0 or nt < np.finfo(np.float32).tiny:
            return 0.0
        return float(q @ t) / (nq * np.sqrt(nt))

    def similarity(self, src, trg, point, *, quantize: Optional[str] = None) -> np.ndarray:
        """Cosine similarity of one source point with every target pixel.

        Parameters
        ----------
        src, trg : path, PIL image or uint8 array
        point : (x, y)
            Source pixel.

        Returns
        -------
        ndarray (H, W) float64
            The upsampled map of the upsample-argmax rule over the target
            image's own pixels (:func:`geomatch.ops.upsampled.upsampled_similarity`);
            with ``"pad"``, pixel (i, j) is read at the nearest pixel of the
            padded frame.
        """
        sfeat, _, srgb = self._entry(src, "source image")
        tfeat, _, trgb = self._entry(trg, "target image")
        ssize = (srgb.shape[1], srgb.shape[0])
        tsize = (trgb.shape[1], trgb.shape[0])
        pt = self._points(point, ssize, "point")[0]
        sf, tf = self._quantized(sfeat, quantize), self._quantized(tfeat, quantize)
        sim, (tx0, ty0) = self._similarity(sf, tf, pt, ssize, tsize)
        if tx0 == 0 and ty0 == 0 and sim.shape == (tsize[1], tsize[0]):
            return sim
        rows = np.clip(np.floor(np.arange(tsize[1]) - ty0 + 0.5).astype(int), 0, sim.shape[0] - 1)
        cols = np.clip(np.floor(np.arange(tsize[0]) - tx0 + 0.5).astype(int), 0, sim.shape[1] - 1)
        return sim[rows][:, cols]

    # ----------------------------------------------------------------- viewer
    def viewer(self, src, trg, *, points=None, precision: str = "float16", title=None):
        """The interactive HTML viewer of a pair (:class:`geomatch.match.viewer.Viewer`).

        ``points`` (optional, (K, 2)) are shown as initial matches.
        """
        from .viewer import Viewer

        sfeat, _, srgb = self._entry(src, "source image")
        tfeat, _, trgb = self._entry(trg, "target image")
        (sframe, tframe) = self._frames((srgb.shape[1], srgb.shape[0]),
                                        (trgb.shape[1], trgb.shape[0]))
        if points is not None:
            points = self._points(points, (srgb.shape[1], srgb.shape[0]))
        return Viewer(srgb, trgb, sfeat, tfeat, sframe, tframe, precision=precision,
                      points=points, title=title, settings=self.settings())

    def show(self, src, trg, **kwargs):
        """Show the interactive viewer inline in Jupyter (plain HTML output).

        Nothing is returned (so the viewer is not shown twice); use
        :meth:`viewer` for the object (``.save(path)`` writes the standalone
        page, and a notebook cell ending in it shows it too).
        """
        v = self.viewer(src, trg, **kwargs)
        try:
            from IPython.display import HTML, display
        except ImportError:
            raise RuntimeError("show() needs IPython (Jupyter); use "
                               "matcher.viewer(src, trg).save('viewer.html') instead") from None
        display(HTML(v.fragment()))
