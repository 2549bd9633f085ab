"""The benchmark scripts run against the installed package from any folder.

They import their timing helpers and references from geomatch.testing (shipped
in the package) and never edit sys.path; here each script is loaded (not run)
in a subprocess whose working directory is a temporary folder.
"""
import os
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 5 and not (BENCH / "_timing.py").exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_loads_from_another_folder(script, tmp_path):
    text = script.read_text()
    assert "sys.path" not in text, f"{script.name} edits sys.path"
    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='loaded'); "
            "print('loaded')")
    r = subprocess.run([sys.executable, "-c", code, str(script)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0 and r.stdout.strip() == "loaded", r.stderr[-2000:]
