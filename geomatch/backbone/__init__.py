"""Torch-free DINOv2 backbone: weights readers, inference, preprocessing.

``load_dinov2(weights, model=None, lora=None)`` reads official ``.pth``
checkpoints, Hugging Face directories and GECO's LoRA files without torch;
``DinoV2.features(pixels)`` returns the (h, w, D) patch-feature map.
"""
from .dinov2 import MODEL_NAMES, DinoV2, DinoV2Config, load_dinov2

__all__ = ["DinoV2", "DinoV2Config", "load_dinov2", "MODEL_NAMES"]
