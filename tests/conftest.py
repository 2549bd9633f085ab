import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_configure(config):
    # Keep the suite reproducible and quiet.
    os.environ.setdefault("GEOMATCH_NO_PROGRESS", "1")
