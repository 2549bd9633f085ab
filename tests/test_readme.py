"""The README's Python example runs as written."""
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
              if "gm.show_config()" in b]
    assert blocks, "README has no python example"
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "OpenBLAS" in out.getvalue()
    assert namespace["P"].shape == (1370, 1370)
    assert namespace["pred"].shape == (2, 2)


def test_readme_starts_using_it_with_matching_two_images(tmp_path, monkeypatch):
    """The first example of "Using it" matches two images; it runs as written
    once its file names point at small real files (random tiny weights)."""
    import numpy as np
    import pytest

    pytest.importorskip("PIL", reason="images are read with Pillow")
    pytest.importorskip("IPython", reason="matcher.show displays in IPython")
    from matcher_fixtures import write_images, write_weights

    text = (ROOT / "README.md").read_text()
    using = text.split("## Using it", 1)[1]
    first = re.search(r"```python\n(.*?)```", using, flags=re.S)
    assert first and using.index("```python") < using.index("```bash")
    code = first.group(1)
    assert "gm.Matcher(" in code and ".match(" in code
    src, trg = write_images(str(tmp_path), sizes=((240, 180), (200, 160)))
    w = write_weights(str(tmp_path), "safetensors")
    code = (code.replace("dinov2_vitb14_pretrain.pth", w).replace("cat1.jpg", src)
            .replace("cat2.jpg", trg).replace('gm.Matcher("', 'gm.Matcher(size=112, weights="'))
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["points"].shape == (2, 2)
    assert np.all(np.abs(namespace["scores"]) <= 1 + 1e-6)
    assert namespace["sim"].shape == (160, 200)
