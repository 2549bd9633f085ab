"""Build and run the C core's own test programs, optimized and under
AddressSanitizer + UndefinedBehaviorSanitizer."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="needs make and a C compiler")
@pytest.mark.parametrize("target", ["test", "sanitize"])
def test_c_runner(target):
    proc = subprocess.run(["make", "-j2", "-C", str(CSRC), f"PY={sys.executable}", target],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "failures" in proc.stdout and " 0 failures" in proc.stdout
