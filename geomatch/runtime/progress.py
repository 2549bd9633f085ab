"""Progress bars for long work (tqdm), silenced with GEOMATCH_NO_PROGRESS=1."""
from __future__ import annotations

import os
from typing import Iterable, Optional, TypeVar

T = TypeVar("T")


def progress_enabled(disable: Optional[bool] = None) -> bool:
    if disable is not None:
        return not disable
    return os.environ.get("GEOMATCH_NO_PROGRESS", "") not in ("1", "true", "yes")


class _Silent:
    """A disabled progress bar: iterates over ``iterable``; every tqdm method is a no-op."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def __len__(self):
        return len(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):       # update, close, set_postfix, refresh, ...
        return lambda *args, **kwargs: None


def progress(iterable: Iterable[T], *, desc: str = "", total: Optional[int] = None,
             unit: str = "it", disable: Optional[bool] = None, **kwargs) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar unless progress is disabled.

    Disabled, a silent stand-in with tqdm's methods (iteration, ``update``,
    ``set_postfix``, ``close``, context manager) is returned and tqdm is not imported (its
    notebook front end warns when ipywidgets is missing, which would put a
    warning into a notebook that asked for no progress bars).  Enabled in a
    notebook without ipywidgets, tqdm's text bar is used without that warning.
    """
    if not progress_enabled(disable):
        return _Silent(iterable)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # TqdmWarning: IProgress not found
        from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit,
                disable=not progress_enabled(disable), dynamic_ncols=True, **kwargs)
