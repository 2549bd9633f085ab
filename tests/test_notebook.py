"""notebooks/quickstart.ipynb runs offline from top to bottom without an error."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel imports this checkout's geomatch and stays quiet
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("GEOMATCH_NO_PROGRESS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()      # raises CellExecutionError on the first failing cell
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4          # dataset, training curves, confusions, transfers
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "set SPAIR_ROOT" in text   # the SPair-71k cell is guarded and skipped offline
    assert (tmp_path / "quickstart-output" / "train" / "last.npz").is_file()


def test_your_images_notebook_runs(tmp_path, monkeypatch):
    """notebooks/your_images.ipynb builds a Matcher (random weights), matches two
    image files, draws the figures and shows the viewer as plain HTML."""
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
