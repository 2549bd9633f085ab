"""The README's Python example runs as written."""
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "OpenBLAS" in out.getvalue()
    assert namespace["P"].shape == (1370, 1370)
    assert namespace["pred"].shape == (2, 2)
