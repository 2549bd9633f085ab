"""The CLI paths outside the subcommands' work: config, no subcommand, bad --threads."""
import subprocess
import sys

import pytest


def _cli(*args, timeout=120):
    code = "import sys; from geomatch.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_config_prints_blas_threads_and_simd():
    proc = _cli("config")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.lower()
    assert "blas" in out and "thread" in out


def test_no_subcommand_prints_usage_and_fails():
    proc = _cli()
    assert proc.returncode != 0
    assert "usage" in (proc.stdout + proc.stderr).lower()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_bad_thread_count_is_a_one_line_error(value):
    proc = _cli("--threads", value, "config")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "--threads" in proc.stderr
    assert proc.stdout == ""


def test_threads_option_reaches_the_kernels():
    code = ("import sys; import geomatch as gm; from geomatch.cli import main; "
            "main(['--threads', '1', 'config']); print('THREADS', gm.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "THREADS 1" in proc.stdout
