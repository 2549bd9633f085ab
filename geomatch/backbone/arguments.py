"""The backbone options of the commands that run DINOv2 (``extract``, ``match``,
``profile``): one definition, so that they read and default alike."""
from __future__ import annotations

__all__ = ["add_backbone_arguments"]


def add_backbone_arguments(parser, *, head: bool = False) -> None:
    """Add ``--weights`` (required), ``--lora``, ``--head`` (with ``head=True``),
    ``--model``, ``--preprocess`` and ``--size`` to an argparse parser."""
    from .dinov2 import MODEL_NAMES

    parser.add_argument("--weights", required=True,
                        help="DINOv2 weights: official .pth, .safetensors or a Hugging Face "
                             "directory (required)")
    parser.add_argument("--lora", default=None,
                        help="GECO LoRA weights merged into the backbone's qkv (default: none)")
    if head:
        parser.add_argument("--head", default=None,
                            help="trained head checkpoint (.npz from geomatch train), GECO's "
                                 "refiner (default: none)")
    parser.add_argument("--model", default=None, choices=MODEL_NAMES,
                        help="architecture the weights must be (default: inferred from them)")
    parser.add_argument("--preprocess", default="resize", choices=("resize", "pad"),
                        help="resize: 518x518 stretch (GECO); pad: longest side 840, centred "
                             "zero padding (GeoAware-SC) (default: resize)")
    parser.add_argument("--size", type=int, default=None,
                        help="network input side, a multiple of 14 of at most 2072 "
                             "(default: 518 for resize, 840 for pad)")
