"""Feature maps from other tools: channel order and torch tensors.

geomatch stores and matches channel-last maps, ``(..., h, w, D)``.  Torch code
produces channel-first ones, ``(D, h, w)`` or ``(1, D, h, w)``; read as
channel-last they give wrong points without any error.  So every entry point
that takes a single feature map (:func:`geomatch.transfer_keypoints`,
:meth:`geomatch.data.cache.FeatureCache.put`, :func:`geomatch.data.write_features`)
goes through :func:`as_feature_map`:

* ``layout="chw"`` says the map is channel-first; it is transposed to
  ``(..., h, w, D)``.
* ``layout="hwc"`` says it is channel-last; it is taken as it is.
* ``layout=None`` (the default) takes it as channel-last, but refuses a map
  that looks channel-first: the first of its last three axes is larger than
  both others (``(768, 37, 37)``), or the last two are equal and the first
  differs (``(32, 37, 37)``: square grids are the rule, a feature dimension
  equal to the grid width is not).  The message says to pass
  ``layout="chw"``, or ``layout="hwc"`` for a channel-last map of such a
  shape.

Torch tensors are accepted when NumPy can read them (CPU, no autograd, a
NumPy dtype); otherwise the error says what to call (``.detach()``,
``.float()``, ``.cpu()``).  Nothing here imports torch.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["as_feature_map", "LAYOUTS", "check_torch_tensor"]

LAYOUTS = ("hwc", "chw")


def check_torch_tensor(name: str, obj) -> None:
    """Raise TypeError for a torch tensor NumPy cannot (or should not) read.

    Tensors that require grad, bfloat16 tensors and tensors on an
    accelerator each get a message naming the call that fixes it.
    """
    mod = type(obj).__module__ or ""
    if not (mod == "torch" or mod.startswith("torch.")):
        return
    if getattr(obj, "requires_grad", False):
        raise TypeError(f"{name} is a torch tensor that requires grad; pass "
                        f"{name}.detach().cpu().numpy() (features need no gradient here)")
    dtype = str(getattr(obj, "dtype", ""))
    if dtype == "torch.bfloat16":
        raise TypeError(f"{name} is a bfloat16 torch tensor, which NumPy cannot read; pass "
                        f"{name}.float().cpu().numpy()")
    device = getattr(obj, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        raise TypeError(f"{name} is a torch tensor on {device}; pass {name}.cpu().numpy()")


def as_feature_map(name: str, obj, layout: Optional[str] = None, *, min_ndim: int = 3):
    """Return ``obj`` as a channel-last array ``(..., h, w, D)``.

    Parameters
    ----------
    name : str
        Argument name used in error messages.
    obj : array_like or torch tensor
        The feature map(s); the last three axes are the map.
    layout : {None, "hwc", "chw"}
        See the module docstring.
    min_ndim : int
        Fewer axes than this is an error.

    Returns
    -------
    ndarray
        A view when possible (``"chw"`` gives a transposed view, not a copy);
        the dtype is left alone.

    Raises
    ------
    TypeError
        Bad ``layout`` or a torch tensor NumPy cannot read (see
        :func:`check_torch_tensor`).
    ValueError
        Too few axes, or a channel-first-looking map without ``layout``.
    """
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be None, 'hwc' or 'chw', got {layout!r}")
    check_torch_tensor(name, obj)
    try:
        arr = obj if isinstance(obj, np.ndarray) else np.asarray(obj)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array") from exc
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have shape (..., h, w, D) (or (..., D, h, w) with "
                         f"layout='chw'), got shape {arr.shape}")
    if layout == "chw":
        return np.moveaxis(arr, -3, -1)
    if layout is None:
        a, b, c = arr.shape[-3:]
        if (a > b and a > c) or (b == c and a != b):
            why = (f"its first map axis ({a}) is larger than both others" if a > b and a > c
                   else f"its last two axes are equal ({b}) and the first is not")
            raise ValueError(
                f"{name} has shape {arr.shape}, which looks channel-first (D, h, w): {why}. "
                f"Pass layout='chw' to have it transposed, or layout='hwc' if it really is "
                f"(h, w, D)")
    return arr
