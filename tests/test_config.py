import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import geomatch as gm

ROOT = Path(__file__).resolve().parents[1]


def test_show_config_names_blas_threads_and_simd():
    buf = io.StringIO()
    gm.show_config(file=buf)
    text = buf.getvalue()
    assert "OpenBLAS" in text
    assert re.search(r"threads\s*:\s*\d+", text)
    assert re.search(r"SIMD level\s*:\s*\S+", text)
    info = gm.build_info()
    assert info["openmp"] == 1
    assert "reference" not in info["blas_config"].lower()


def test_set_num_threads_roundtrip_and_errors():
    before = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        assert gm.get_num_threads() == 1
        gm.set_num_threads(2)
        assert gm.get_num_threads() == 2
    finally:
        gm.set_num_threads(before)
    with pytest.raises(ValueError, match=r"^n\b.*\b0\b"):
        gm.set_num_threads(0)
    with pytest.raises(TypeError, match=r"^n\b.*float"):
        gm.set_num_threads(1.5)


def test_omp_num_threads_environment_is_honoured():
    code = "import geomatch as gm; print(gm.get_num_threads())"
    import os
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "1"


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    test_cmds = [line.strip() for b in blocks for line in b.splitlines()
                 if "pytest" in line]
    assert len(test_cmds) == 1, test_cmds
    assert test_cmds[0] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("given, expected", [
    ({}, "unset 10000"),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE unset"),
    ({"GOMP_SPINCOUNT": "5"}, "unset 5"),
])
def test_openmp_waits_spin_briefly_unless_the_user_chose(given, expected):
    import os
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(given)
    code = ("import os, geomatch; e = os.environ; "
            "print(e.get('OMP_WAIT_POLICY', 'unset'), e.get('GOMP_SPINCOUNT', 'unset'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == expected


def test_version_has_one_source():
    """geomatch/_version.py is the only place the version is written: pyproject
    reads it (setuptools dynamic version) and the package re-exports it."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    import pathlib

    from geomatch import _version

    root = pathlib.Path(__file__).resolve().parents[1]
    with open(root / "pyproject.toml", "rb") as f:
        meta = tomllib.load(f)
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "geomatch._version.__version__"}
    assert gm.__version__ is _version.__version__
    # no module reaches for the package root to learn the version
    for path in (root / "geomatch").rglob("*.py"):
        assert "from .. import __version__" not in path.read_text(), path
