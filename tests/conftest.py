import os

import numpy as np
import pytest
from hypothesis import settings

# Fuzzing is derandomized by default so that a CI run is reproducible; set
# GEOMATCH_HYPOTHESIS=explore to draw new random examples on every run.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile("explore" if os.environ.get("GEOMATCH_HYPOTHESIS") == "explore"
                      else "deterministic")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_configure(config):
    # Keep the suite reproducible and quiet.
    os.environ.setdefault("GEOMATCH_NO_PROGRESS", "1")


@pytest.fixture
def at_threads():
    """``at_threads(fn, counts=(1, 2))``: the results of ``fn()`` with geomatch's
    kernels at each thread count, the previous count restored afterwards."""
    import geomatch as gm

    before = gm.get_num_threads()

    def run(fn, counts=(1, 2)):
        out = []
        for n in counts:
            gm.set_num_threads(n)
            out.append(fn())
        return out

    yield run
    gm.set_num_threads(before)


# A skipped test hides a missing feature or dependency.  The README's test
# command installs every optional dependency (the ``test`` extra), so any
# skip there is a failure; set GEOMATCH_ALLOW_SKIPS=1 to run a partial
# installation (the reasons are still printed by ``-ra``).
def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("GEOMATCH_ALLOW_SKIPS") == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        reasons = sorted({str(r.longrepr[-1]) if isinstance(r.longrepr, tuple) else str(r.longrepr)
                          for r in skipped})
        reporter.write_line(f"FAILED: {len(skipped)} test(s) skipped; every optional dependency "
                            "is in the 'test' extra, so nothing may be skipped "
                            "(GEOMATCH_ALLOW_SKIPS=1 allows it): " + "; ".join(reasons), red=True)
        session.exitstatus = 1


@pytest.fixture
def spair(tmp_path):
    """A tiny SPair-71k tree (three images, two test pairs) in the real on-disk format."""
    from test_backbone_extract import make_spair_tree

    return make_spair_tree(tmp_path)


@pytest.fixture
def weights(tmp_path):
    """A safetensors file of random weights for the small DINOv2 of the tests."""
    from test_backbone_extract import make_weights_file

    return make_weights_file(tmp_path)


@pytest.fixture
def run_python():
    """``run_python(code, timeout=120)``: run ``python -c code`` in a fresh
    interpreter that imports geomatch from this tree (PYTHONPATH = the repository
    root); returns the CompletedProcess (text stdout/stderr, never raises on a
    non-zero exit)."""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])

    def run(code, timeout=120):
        env = dict(os.environ, PYTHONPATH=root)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout, env=env)

    return run
