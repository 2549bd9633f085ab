"""A trained head outside geomatch: safetensors + PyTorch module, and back."""
import os
import subprocess
import sys

import numpy as np
import pytest

import geomatch as gm


def _head(seed=0):
    h = gm.head.AttentionHead(in_dim=48, dim=32, out_dim=40, num_heads=2, num_blocks=2,
                              mlp_dim=64, attn_dim=24, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for v in h.parameters().values():          # move off the initialization (LN gains etc.)
        v += (0.1 * rng.normal(size=v.shape)).astype(v.dtype)
    return h


def test_safetensors_round_trip_without_torch(tmp_path):
    h = _head()
    path = gm.head.save_safetensors(h, tmp_path / "head.safetensors")
    back = gm.head.load_safetensors(path)
    assert back.config == h.config
    for k, v in h.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)
    x = np.random.default_rng(2).normal(size=(4, 6, 48)).astype(np.float32)
    np.testing.assert_array_equal(back(x), h(x))
    junk = tmp_path / "other.safetensors"
    from geomatch.backbone.checkpoints import write_safetensors

    write_safetensors(junk, {"w": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="other.safetensors"):
        gm.head.load_safetensors(junk)


def test_to_torch_matches_to_1e5():
    torch = pytest.importorskip("torch", reason="the PyTorch module")
    h = _head(3)
    x = np.random.default_rng(4).normal(size=(2, 7, 5, 48)).astype(np.float32)
    module = gm.head.to_torch(h)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
        y1 = module(torch.from_numpy(x[0])).numpy()
    np.testing.assert_allclose(y, h(x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(y1, h(x[0]), atol=1e-5, rtol=0)


def test_exported_module_runs_without_geomatch(tmp_path):
    pytest.importorskip("torch", reason="the PyTorch module")
    pytest.importorskip("safetensors", reason="reading the file in PyTorch")
    h = _head(5)
    files = gm.head.export_head(h, tmp_path / "export")
    x = np.random.default_rng(6).normal(size=(3, 4, 48)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, torch\n"
        "sys.modules['geomatch'] = None  # prove the module does not need geomatch\n"
        f"sys.path.insert(0, {str(tmp_path / 'export')!r})\n"
        "from geomatch_head import GeomatchHead\n"
        f"m = GeomatchHead.from_safetensors({files['weights']!r})\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "with torch.no_grad():\n"
        f"    np.save({str(tmp_path / 'y.npy')!r}, m(x).numpy())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), h(x), atol=1e-5, rtol=0)
    assert sorted(os.listdir(tmp_path / "export")) == ["geomatch_head.py", "head.safetensors"]


def test_load_head_reads_the_exported_safetensors_file(tmp_path):
    """QA: ``--head head.safetensors`` (match, eval, seg-eval) and
    ``Matcher(head=...)`` go through load_head, which took only .npz files and
    called the export 'pickled (object) data'."""
    h = _head(5)
    path = gm.head.export_head(h, tmp_path / "exported")["weights"]
    back = gm.head.load_head(path)
    assert back.config == h.config
    for k, v in h.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)
    with pytest.raises(ValueError, match="does not match the requested"):
        gm.head.load_head(path, config=gm.head.HeadConfig(in_dim=64))


def test_load_head_names_a_file_that_is_no_head(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError) as e:
        gm.head.load_head(text)
    assert "notes.txt" in str(e.value) and "pickle" not in str(e.value)
    other = tmp_path / "weights.safetensors"
    from geomatch.backbone.checkpoints import write_safetensors

    write_safetensors(other, {"cls_token": np.zeros((1, 1, 8), np.float32)})
    with pytest.raises(ValueError, match="weights.safetensors.*not a geomatch head"):
        gm.head.load_head(other)


def test_exported_head_with_nan_is_refused(tmp_path):
    h = _head(6)
    h.parameters()["out_proj.bias"][0] = np.nan
    path = gm.head.save_safetensors(h, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match="nan.safetensors.*non-finite.*out_proj.bias"):
        gm.head.load_head(path)
