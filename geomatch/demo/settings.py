"""Sizes and training settings of the demo's full and ``--quick`` runs.

Both runs were chosen (``docs/demo.md``) so that for every seed 0-4 the
trained head beats the raw features on the test split by the margins the
demo promises; ``python -m geomatch.demo.sweep`` re-checks that.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

__all__ = ["DemoSettings", "FULL", "QUICK"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run (see :data:`QUICK` and :data:`FULL`).

    Attributes
    ----------
    n_images_per_category, n_pairs, image_size, categories
        Passed to :func:`geomatch.demo.synthetic.generate_spair_like`
        (``n_pairs`` per category and split).
    grid, patch, neighbourhoods, prototypes
        :class:`~geomatch.demo.featurizers.PartColourFeaturizer` settings.
    head
        Fields of :class:`~geomatch.model.head.HeadConfig` (``in_dim`` comes from
        the featurizer).
    loss
        Fields of :class:`~geomatch.model.loss.LossConfig` that differ from
        GECO's defaults.
    steps, batch_pairs, lr, flip_aug, swap_aug, val_subset, val_every
        Passed to :func:`geomatch.model.train.train`; the best checkpoint is
        picked on ``val_subset`` validation pairs.
    figure_seed
        Seed of the one random test pair drawn besides the first test pair of
        each category (:func:`geomatch.demo.figures.select_figure_pairs`).
    """

    n_images_per_category: int = 40
    n_pairs: int = 40
    image_size: tuple = (128, 96)
    categories: Optional[tuple] = None
    grid: tuple = (12, 16)
    patch: int = 8
    neighbourhoods: tuple = (1,)
    prototypes: int = 4
    head: tuple = (("dim", 128), ("out_dim", 128), ("num_heads", 2), ("num_blocks", 1),
                   ("mlp_dim", 256), ("attn_dim", 64), ("pos_gain_init", 0.1))
    loss: tuple = (("w_neg", 1.0), ("w_fgbg", 1.0))
    steps: int = 1000
    batch_pairs: int = 4
    lr: float = 1e-3
    flip_aug: bool = True
    swap_aug: bool = True
    val_subset: int = 100
    val_every: Optional[int] = 50
    figure_seed: int = 2025

    def head_config(self, in_dim: int):
        """The :class:`~geomatch.model.head.HeadConfig` for features of ``in_dim`` channels."""
        from ..model.head import HeadConfig

        return HeadConfig(in_dim=int(in_dim), **dict(self.head))

    def loss_config(self):
        """The :class:`~geomatch.model.loss.LossConfig` of the run."""
        from ..model.loss import LossConfig

        return LossConfig(**dict(self.loss))

    def featurizer(self):
        """The weight-free featurizer of the run."""
        from .featurizers import PartColourFeaturizer

        return PartColourFeaturizer(grid=self.grid, patch=self.patch,
                                    prototypes=self.prototypes,
                                    neighbourhoods=self.neighbourhoods)

    def to_dict(self) -> dict:
        """JSON-ready fields (``head`` and ``loss`` as dicts)."""
        d = dataclasses.asdict(self)
        d["head"] = dict(self.head)
        d["loss"] = dict(self.loss)
        return d


#: The full demo: 3 categories x 40 images, 1000 steps of 4 pairs.
FULL = DemoSettings()

#: ``--quick``: the same data, 900 steps with a higher learning rate and a
#: larger initial positional gain (the head learns which twin is which
#: sooner), validation every 100 steps.
QUICK = DemoSettings(steps=900, lr=2e-3, val_every=100, val_subset=120,
                     head=(("dim", 128), ("out_dim", 128), ("num_heads", 2), ("num_blocks", 1),
                           ("mlp_dim", 256), ("attn_dim", 64), ("pos_gain_init", 0.3)))
