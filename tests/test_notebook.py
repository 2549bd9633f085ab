"""notebooks/quickstart.ipynb runs offline from top to bottom without an error,
with the demo's quick settings, and its saved outputs are clean (no warnings,
no progress bars, no errors)."""
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def _outputs(nb):
    return [o for cell in nb["cells"] if cell["cell_type"] == "code"
            for o in cell.get("outputs", [])]


def _check_clean(outputs):
    assert not [o for o in outputs if o.get("output_type") == "error"]
    stderr = [o for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, "".join("".join(o.get("text", "")) for o in stderr)[:500]
    text = "".join("".join(o.get("text", "")) for o in outputs
                   if o.get("output_type") == "stream")
    for noise in ("Warning", "it/s", "\r", "%|"):
        assert noise not in text, noise
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert not widgets
    return text


def test_saved_notebook_output_is_clean_and_uses_the_quick_settings():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    src = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "settings = demo.QUICK" in src and "SEED = 0" in src
    outputs = _outputs(nb)
    assert outputs, "the notebook is saved without its outputs"
    text = _check_clean(outputs)
    assert "set SPAIR_ROOT" in text
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 4


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat runs the notebook")
    nbclient = pytest.importorskip("nbclient", reason="nbclient runs the notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel imports this checkout's geomatch
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()      # raises CellExecutionError on the first failing cell
    text = _check_clean(_outputs(nb))
    assert "set SPAIR_ROOT" in text   # the SPair-71k cell is guarded and skipped offline
    assert len([o for o in _outputs(nb) if "image/png" in o.get("data", {})]) >= 4
    assert (tmp_path / "quickstart-output" / "train" / "last.npz").is_file()


def test_your_images_notebook_runs(tmp_path, monkeypatch):
    """notebooks/your_images.ipynb builds a Matcher (random weights), matches two
    image files, draws the figures and shows the viewer as plain HTML."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat runs the notebook")
    nbclient = pytest.importorskip("nbclient", reason="nbclient runs the notebook")
    nb = nbformat.read(REPO / "notebooks" / "your_images.ipynb", as_version=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("GEOMATCH_NO_PROGRESS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for var in ("DINOV2_WEIGHTS", "GECO_LORA", "GEOMATCH_HEAD"):
        monkeypatch.delenv(var, raising=False)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 2
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any('class="gm-viewer"' in h and "gm-src" in h for h in html)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "random weights:" in text and "cosine" in text
    assert (tmp_path / "your-images-output" / "viewer.html").is_file()
