"""Dataset loaders for SPair-71k, PF-PASCAL, AP-10K, CUB-200-2011 and PASCAL-Part.

>>> from geomatch.data import load_dataset
>>> ds = load_dataset("spair", "/data/SPair-71k")          # doctest: +SKIP
>>> pairs = ds.pairs("test", categories=["cat"], subsample=50)  # doctest: +SKIP

Every loader reads the dataset's published on-disk format and returns
:class:`ImageRecord` / :class:`PairRecord` objects whose keypoints cover the
category's full keypoint list (NaN rows where not visible), in (x, y) pixels
of the original image.
"""
from __future__ import annotations

from pathlib import Path

from .base import Dataset, ImageRecord, PairRecord, SkipReport
from .cache import FeatureCache
from .external import (feature_manifest, import_geco_features, import_geoaware_features,
                       write_features)
from .tables import flip_permutation

__all__ = ["load_dataset", "Dataset", "ImageRecord", "PairRecord",
           "SkipReport", "flip_permutation", "DATASETS", "FeatureCache", "feature_manifest",
           "write_features", "import_geco_features", "import_geoaware_features"]

DATASETS = ("spair", "pfpascal", "ap10k", "cub", "pascalparts")


def load_dataset(name: str, root: str | Path, **options) -> Dataset:
    """Open a dataset from a local directory.

    Parameters
    ----------
    name : {"spair", "pfpascal", "ap10k", "cub", "pascalparts"}
    root : path
        The dataset directory (``SPair-71k``, ``PF-dataset-PASCAL``,
        ``ap-10k``, ``CUB_200_2011``, or for ``pascalparts`` the folder
        holding ``Parts/`` and ``VOCdevkit/``).
    **options
        Loader options: ``flip_table`` (spair), ``split_kind`` (ap10k:
        ``"intra-species"``, ``"cross-species"``, ``"cross-family"``),
        ``pairs_per_species`` / ``pair_seed`` (cub).

    Returns
    -------
    Dataset
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"spair": "spair", "spair71k": "spair", "pfpascal": "pfpascal",
               "ap10k": "ap10k", "cub": "cub", "cub200": "cub",
               "cub2002011": "cub", "pascalparts": "pascalparts",
               "pascalpart": "pascalparts"}
    if key not in aliases:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    key = aliases[key]
    if key == "spair":
        from .spair import SPair as cls
    elif key == "pfpascal":
        from .pfpascal import PFPascal as cls
    elif key == "ap10k":
        from .ap10k import AP10K as cls
    elif key == "pascalparts":
        from .pascalparts import PascalParts as cls
    else:
        from .cub import CUB as cls
    import inspect

    accepted = [n for n in inspect.signature(cls.__init__).parameters
                if n not in ("self", "root")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for dataset {key!r}; "
                        f"accepted: {accepted}")
    return cls(root, **options)
