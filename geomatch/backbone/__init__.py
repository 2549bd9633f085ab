"""Torch-free DINOv2 backbone: weights readers, inference, preprocessing.

``load_dinov2(weights, model=None, lora=None, precision="float32")`` reads official ``.pth``
checkpoints, Hugging Face directories and GECO's LoRA files without torch;
``DinoV2.features(pixels)`` returns the (h, w, D) patch-feature map
(``precision="bf16"``: bfloat16 matrix products on CPUs with AVX512-BF16,
:func:`bf16_available`; docs/performance.md);
``preprocess_image(image, mode)`` builds the network input ("resize": GECO's
518x518 stretch, "pad": GeoAware-SC's 840 centred padding) and its
coordinate :class:`Frame`.  ``load_dinov2_torch`` builds the optional
PyTorch engine from the same readers (``pip install "geomatch[torch]"``);
``extract_features(..., client=...)`` runs on a Dask cluster.

The submodules load on first use, so ``import geomatch`` stays cheap.
"""
from __future__ import annotations

import importlib

__all__ = ["DinoV2", "DinoV2Config", "load_dinov2", "MODEL_NAMES", "preprocess_image",
           "load_image", "make_frame", "Frame", "extract_features", "BackboneSpec", "TorchDinoV2",
           "load_dinov2_torch", "bf16_available"]

_LAZY = {
    "DinoV2": "dinov2", "DinoV2Config": "dinov2", "load_dinov2": "dinov2",
    "MODEL_NAMES": "dinov2", "preprocess_image": "preprocess", "load_image": "preprocess",
    "make_frame": "preprocess", "Frame": "preprocess", "extract_features": "extract",
    "BackboneSpec": "extract", "TorchDinoV2": "torch_engine",
    "load_dinov2_torch": "torch_engine", "bf16_available": "dinov2",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
