"""The offline end-to-end demo: synthetic SPair-format data, weight-free featurizers,
training, evaluation before/after, report and figures (``geomatch demo``)."""
from .run import *  # noqa: F401,F403
from .run import __all__  # noqa: F401
