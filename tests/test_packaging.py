"""Packaging metadata and optional dependencies (issue 14, item 11)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_license_file_and_spdx_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in text and "geomatch developers" in text
    proj = _pyproject()
    assert proj["project"]["license"] == "BSD-3-Clause"
    assert proj["project"]["license-files"] == ["LICENSE"]
    setuptools_req = [r for r in proj["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools_req == ["setuptools>=77"]  # the first to accept the SPDX string form


def test_torch_is_a_range_not_a_pin():
    extras = _pyproject()["project"]["optional-dependencies"]
    for name, reqs in extras.items():
        for r in reqs:
            assert "==" not in r, f"extra {name!r} pins {r}"
    assert any(re.fullmatch(r"torch>=[\d.]+", r) for r in extras["test"])


# A standalone PyTorch file that geomatch.model.export copies next to an
# exported head; it is meant to need torch and is never imported by geomatch.
TORCH_ONLY = ("geomatch.model.torch_head",)


def test_import_needs_no_optional_dependency(run_python):
    """geomatch and every submodule import with torch, scipy, Dask, scikit-learn,
    safetensors and POT absent."""
    code = (
        "import sys, pkgutil, importlib\n"
        "for m in ('torch', 'scipy', 'scipy.io', 'dask', 'distributed', 'safetensors', 'ot',\n"
        "          'sklearn'):\n"
        "    sys.modules[m] = None\n"
        "import geomatch\n"
        "names = [m.name for m in pkgutil.walk_packages(geomatch.__path__, 'geomatch.')\n"
        f"         if m.name not in ('geomatch.__main__',) + {TORCH_ONLY!r}]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "print(len(names))\n")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) > 20


def test_every_optional_import_in_tests_gives_a_reason():
    bare = []
    call = re.compile(r"pytest\.importorskip\((?![^)]*reason=)[^)]*\)")
    for f in sorted((ROOT / "tests").glob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if call.search(line):
                bare.append(f"{f.name}:{i}")
    assert not bare, bare


def test_setup_writes_nothing_into_the_package():
    """Build facts travel as compile-time macros (geomatch._buildinfo); the
    build test (tests/test_build.py) checks the tree after a real build."""
    setup = (ROOT / "setup.py").read_text()
    assert "_build_config" not in setup and 'open(os.path.join(here, "geomatch"' not in setup
