"""Weight-free patch featurizers: stand-ins for DINOv2 in the demo and in tests.

Both need no weights and no network, run in milliseconds, and produce a
channel-last ``(h, w, D)`` float32 grid of patch descriptors just like the
backbone.  Every statistic they compute is invariant to a horizontal flip of
the pixels it pools, so the descriptor grid of a mirrored image is the
mirrored descriptor grid: a part and its mirror twin, drawn alike by
:mod:`geomatch.demo.world`, get the same descriptor -- the failure mode that
a geometry-aware head has to fix.

- :class:`PartColourFeaturizer` (the demo's): responses to fixed colour
  prototypes, max- and mean-pooled per patch, with neighbourhood context; it
  finds the demo's coloured parts (about half of the keypoints at PCK@0.10),
  confusing twins.
- :class:`LocalAppearanceFeaturizer`: colour and gradient histograms of a patch
  and its neighbourhood (weaker at finding parts; used by tests).
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image

__all__ = ["LocalAppearanceFeaturizer", "PartColourFeaturizer"]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def _load_rgb(image: ImageLike) -> Image.Image:
    """PIL RGB image from a path, a PIL image or an (H, W, 3) / (H, W) array."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise FileNotFoundError(f"image file not found: {os.fspath(image)}")
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"image must be an (H, W, 3) array, got shape {image.shape}")
        arr = arr[:, :, :3]
        if arr.dtype == np.uint8:
            return Image.fromarray(np.ascontiguousarray(arr), "RGB")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)):
                raise ValueError("image contains NaN or infinite values")
            arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
            return Image.fromarray(arr, "RGB")
        raise TypeError(f"image array must be uint8 or float (in [0, 1]), got {arr.dtype}")
    raise TypeError(f"image must be a path, a PIL image or an array, got "
                    f"{type(image).__name__}")


def _check_common(grid, neighbourhoods, **ints) -> tuple:
    """Validate the grid, the neighbourhood radii and integer parameters
    ``name=(value, minimum)``; returns ``((h, w), radii)``."""
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise TypeError(f"grid must be a pair (h, w) of integers, got {grid!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"grid must be positive, got {grid!r}")
    for name, (v, lo) in ints.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    radii = tuple(int(r) for r in neighbourhoods)
    if any(r < 1 for r in radii):
        raise ValueError(f"neighbourhoods must hold radii >= 1, got {neighbourhoods!r}")
    return (h, w), radii


def _resized(image, size) -> Image.Image:
    """RGB image (see :func:`_load_rgb`) resized to ``size`` (bilinear) unless it has it."""
    im = _load_rgb(image)
    return im if im.size == size else im.resize(size, Image.Resampling.BILINEAR)


def _normalised_blocks(blocks) -> np.ndarray:
    """Each (h, w, C_i) block L2-normalised per cell (zero stays zero), concatenated, float32."""
    out = []
    for b in blocks:
        n = np.sqrt(np.sum(b * b, axis=2, keepdims=True))
        out.append(np.divide(b, n, out=np.zeros_like(b), where=n > 0))
    return np.concatenate(out, axis=2).astype(np.float32)


def _box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)^2 grid neighbourhood of every cell of (h, w, C),
    counting only cells inside the grid (symmetric under flips)."""
    h, w, c = x.shape
    pad = np.zeros((h + 2 * r + 1, w + 2 * r + 1, c))
    pad[1 + r:1 + r + h, 1 + r:1 + r + w] = x
    ones = np.zeros((h + 2 * r + 1, w + 2 * r + 1))
    ones[1 + r:1 + r + h, 1 + r:1 + r + w] = 1.0
    s = pad.cumsum(0).cumsum(1)
    n = ones.cumsum(0).cumsum(1)
    k = 2 * r + 1

    def window(a):
        return a[k:, k:] - a[:-k, k:] - a[k:, :-k] + a[:-k, :-k]

    return window(s) / window(n)[:, :, None]


def _folded_gradient(arr: np.ndarray, bins: int) -> tuple:
    """Gradient magnitude and folded-orientation bin of every pixel of an (H, W, 3)
    image (0-255 scale): ``atan2(|gy|, |gx|)`` in [0, pi/2] split into ``bins``
    bins, unchanged by a horizontal flip.  Returns ``(mag, bin)`` (float64, int64)."""
    gray = arr.astype(np.float64).mean(axis=2) / 255.0
    gy, gx = np.gradient(gray)
    ax, ay = np.abs(gx), np.abs(gy)
    mag = np.sqrt(ax * ax + ay * ay)
    theta = np.arctan2(ay, ax)                       # folded: [0, pi/2]
    return mag, np.minimum((theta * (bins / (np.pi / 2))).astype(np.int64), bins - 1)


class LocalAppearanceFeaturizer:
    """Patch descriptors of local colour and gradient statistics (no weights).

    A stand-in for DINOv2 in the demo and in tests.  The image is resized to
    ``(w * patch, h * patch)`` pixels (bilinear; no resize when it already
    has that size) and cut into an ``h x w`` grid of ``patch x patch``
    patches.  Each patch gets

    - a per-channel colour histogram (``colour_bins`` bins per channel,
      fraction of the patch's pixels),
    - its mean colour (in [0, 1]),
    - a gradient-energy histogram over ``orientation_bins`` bins of the
      *folded* orientation ``atan2(|gy|, |gx|)`` in [0, pi/2] (magnitude
      weighted, per pixel),

    and these statistics averaged over the ``(2r+1) x (2r+1)`` patch
    neighbourhoods for each ``r`` in ``neighbourhoods`` are appended.  Each
    of these blocks is L2-normalized (an all-zero block stays zero) and the
    blocks are concatenated.

    Every statistic is invariant to a horizontal flip of the pixels it
    pools (histograms ignore pixel order; folding the orientation removes
    the sign of ``gx``; the neighbourhoods are symmetric), so
    ``f(mirror(image)) == mirror(f(image))`` up to float rounding: mirror-twin
    parts drawn identically get identical descriptors.

    Parameters
    ----------
    grid : (int, int), default (32, 32)
        Output grid ``(h, w)``.
    patch : int, default 8
        Patch size in pixels of the resized image.
    colour_bins : int, default 8
        Histogram bins per colour channel.
    orientation_bins : int, default 4
        Bins of the folded gradient orientation.
    neighbourhoods : tuple of int, default (1, 2)
        Radii (in patches) of the pooled neighbourhood blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from geomatch.demo.featurizers import LocalAppearanceFeaturizer
    >>> f = LocalAppearanceFeaturizer(grid=(4, 6), patch=8)
    >>> f(np.zeros((40, 50, 3), np.uint8)).shape
    (4, 6, 93)
    """

    def __init__(self, grid: tuple[int, int] = (32, 32), patch: int = 8, *,
                 colour_bins: int = 8, orientation_bins: int = 4,
                 neighbourhoods: tuple[int, ...] = (1, 2)) -> None:
        (h, w), radii = _check_common(grid, neighbourhoods, patch=(patch, 2),
                                      colour_bins=(colour_bins, 1),
                                      orientation_bins=(orientation_bins, 1))
        if colour_bins > 256:
            raise ValueError(f"colour_bins must be <= 256, got {colour_bins}")
        self.grid = (h, w)
        self.patch = int(patch)
        self.colour_bins = int(colour_bins)
        self.orientation_bins = int(orientation_bins)
        self.neighbourhoods = radii

    @property
    def dim(self) -> int:
        """Descriptor length D."""
        block = 3 * self.colour_bins + 3 + self.orientation_bins
        return block * (1 + len(self.neighbourhoods))

    @property
    def input_size(self) -> tuple[int, int]:
        """``(W, H)`` the image is resized to."""
        return (self.grid[1] * self.patch, self.grid[0] * self.patch)

    def __repr__(self) -> str:
        return (f"LocalAppearanceFeaturizer(grid={self.grid}, patch={self.patch}, "
                f"colour_bins={self.colour_bins}, orientation_bins={self.orientation_bins}, "
                f"neighbourhoods={self.neighbourhoods})")

    def _patch_stats(self, arr: np.ndarray) -> np.ndarray:
        """(h, w, B) raw statistics of each patch of a uint8 (H, W, 3) image."""
        h, w = self.grid
        p, nb, no = self.patch, self.colour_bins, self.orientation_bins
        npatch = h * w
        rows = np.arange(h * p) // p
        cols = np.arange(w * p) // p
        pidx = (rows[:, None] * w + cols[None, :]).ravel()
        npix = float(p * p)
        blocks = []
        for c in range(3):
            b = (arr[:, :, c].astype(np.int64) * nb) >> 8
            counts = np.bincount(pidx * nb + b.ravel(), minlength=npatch * nb)
            blocks.append(counts.reshape(npatch, nb) / npix)
        means = arr.reshape(h, p, w, p, 3).astype(np.float64).mean(axis=(1, 3)) / 255.0
        blocks.append(means.reshape(npatch, 3))
        mag, ob = _folded_gradient(arr, no)
        energy = np.bincount(pidx * no + ob.ravel(), weights=mag.ravel(),
                             minlength=npatch * no)
        blocks.append(energy.reshape(npatch, no) / npix)
        return np.concatenate(blocks, axis=1).reshape(h, w, -1)

    def __call__(self, image: ImageLike) -> np.ndarray:
        """Descriptor grid of one image.

        Parameters
        ----------
        image : path, PIL.Image.Image or numpy.ndarray
            An RGB image (an array is ``(H, W, 3)`` uint8, or float in
            [0, 1]; grayscale ``(H, W)`` is accepted).

        Returns
        -------
        numpy.ndarray
            float32 ``(h, w, D)`` descriptors, channel-last.

        Raises
        ------
        FileNotFoundError
            For a path that does not exist.
        TypeError, ValueError
            For an unsupported image type, shape or non-finite values.
        """
        stats = self._patch_stats(np.asarray(_resized(image, self.input_size)))
        blocks = [stats] + [_box_mean(stats, r) for r in self.neighbourhoods]
        return _normalised_blocks(blocks)

    featurize = __call__


def _patch_pool(x: np.ndarray, grid: tuple, patch: int, how: str) -> np.ndarray:
    """Pool a (H, W, C) pixel map over the patches of ``grid``: (h, w, C)."""
    h, w = grid
    blocks = x.reshape(h, patch, w, patch, -1)
    return blocks.max(axis=(1, 3)) if how == "max" else blocks.mean(axis=(1, 3))


class PartColourFeaturizer:
    """Patch descriptors that recognise coloured parts up to their mirror twin (no weights).

    The demo's stand-in for DINOv2.  The image is resized to
    ``(w * patch, h * patch)`` pixels and every pixel's colour is compared
    with ``prototypes**3`` fixed colour prototypes (a regular grid of RGB
    space) through Gaussian responses ``exp(-|c - p|^2 / (2 sigma^2))``.  A
    patch's descriptor is, each block L2-normalized and concatenated:

    - the maximum response of each prototype over the patch (a small part
      inside the patch registers fully),
    - the mean response over the patch,
    - the mean of the patch maxima over the ``(2r+1) x (2r+1)`` patch
      neighbourhood, for each ``r`` in ``neighbourhoods`` (context: which
      parts are nearby),
    - a magnitude-weighted histogram of the *folded* gradient orientation
      ``atan2(|gy|, |gx|)`` (local shape).

    Maxima, means, symmetric neighbourhoods and folded orientations are all
    unchanged by a horizontal flip of the pixels they pool, so
    ``f(mirror(image)) == mirror(f(image))`` up to rounding: a part and its
    mirror twin (same colour and shape) get the same descriptor, and only
    the object's pose can tell them apart.

    Parameters
    ----------
    grid : (int, int), default (16, 20)
        Output grid ``(h, w)`` of patches.
    patch : int, default 8
        Side of a patch, in pixels of the resized image.
    prototypes : int, default 4
        Prototypes per colour axis (``prototypes**3`` in all), at least 2.
    sigma : float, default 40.0
        Width of the Gaussian colour response (0-255 scale).
    orientation_bins : int, default 4
    neighbourhoods : tuple of int, default (1,)
        Radii (in patches) of the context blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from geomatch.demo.featurizers import PartColourFeaturizer
    >>> f = PartColourFeaturizer(grid=(4, 6), patch=8, prototypes=3)
    >>> f(np.zeros((40, 50, 3), np.uint8)).shape
    (4, 6, 85)
    """

    def __init__(self, grid: tuple = (16, 20), patch: int = 8, *, prototypes: int = 4,
                 sigma: float = 40.0, orientation_bins: int = 4,
                 neighbourhoods: tuple = (1,)) -> None:
        (h, w), radii = _check_common(grid, neighbourhoods, patch=(patch, 2),
                                      prototypes=(prototypes, 2),
                                      orientation_bins=(orientation_bins, 1))
        if prototypes > 8:
            raise ValueError(f"prototypes must be <= 8, got {prototypes}")
        if not (isinstance(sigma, (int, float)) and np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        self.grid = (h, w)
        self.patch = int(patch)
        self.prototypes = int(prototypes)
        self.sigma = float(sigma)
        self.orientation_bins = int(orientation_bins)
        self.neighbourhoods = radii
        levels = (np.arange(self.prototypes) + 0.5) * (255.0 / self.prototypes)
        self._protos = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"),
                                axis=-1).reshape(-1, 3)

    @property
    def dim(self) -> int:
        """Descriptor length D."""
        k = self.prototypes ** 3
        return k * (2 + len(self.neighbourhoods)) + self.orientation_bins

    @property
    def input_size(self) -> tuple:
        """``(W, H)`` the image is resized to."""
        return (self.grid[1] * self.patch, self.grid[0] * self.patch)

    def __repr__(self) -> str:
        return (f"PartColourFeaturizer(grid={self.grid}, patch={self.patch}, "
                f"prototypes={self.prototypes}, sigma={self.sigma:g}, "
                f"orientation_bins={self.orientation_bins}, "
                f"neighbourhoods={self.neighbourhoods})")

    def __call__(self, image: ImageLike) -> np.ndarray:
        """Descriptor grid of one image: float32 ``(h, w, D)``, channel-last.

        Takes the same images, and raises the same errors, as
        :meth:`LocalAppearanceFeaturizer.__call__` (both read it with ``_load_rgb``).
        """
        arr = np.asarray(_resized(image, self.input_size), dtype=np.float32)
        protos = self._protos.astype(np.float32)
        d2 = ((arr * arr).sum(-1)[..., None] - 2.0 * (arr @ protos.T)
              + (protos * protos).sum(-1))
        resp = np.exp(np.maximum(d2, 0.0) * np.float32(-0.5 / self.sigma ** 2))
        pmax = _patch_pool(resp, self.grid, self.patch, "max").astype(np.float64)
        blocks = [pmax, _patch_pool(resp, self.grid, self.patch, "mean").astype(np.float64)]
        blocks += [_box_mean(pmax, r) for r in self.neighbourhoods]
        no = self.orientation_bins
        mag, ob = _folded_gradient(arr, no)
        onehot = np.zeros(ob.shape + (no,))
        np.put_along_axis(onehot, ob[..., None], mag[..., None], axis=-1)
        blocks.append(_patch_pool(onehot, self.grid, self.patch, "mean"))
        return _normalised_blocks(blocks)

    featurize = __call__
