"""The PyTorch extraction engine: same readers, same preprocessing, features
within 1e-4 (relative) of the C engine on CPU for every supported model size
(random weights, one block), LoRA merged, registers; ``extract --engine torch``
writes the same cache format with ``engine`` in the manifest, and caches of
two engines are never mixed."""
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch engine is an optional extra "
                            "(geomatch[torch])")

from geomatch.backbone import DinoV2, DinoV2Config, MODEL_NAMES, load_dinov2  # noqa: E402
from geomatch.backbone.preprocess import preprocess_image  # noqa: E402
from geomatch.backbone.torch_engine import TorchDinoV2, load_dinov2_torch  # noqa: E402
from geomatch.cli import main  # noqa: E402
from geomatch.data.cache import FeatureCache  # noqa: E402
from test_backbone_extract import SMALL, _random_state  # noqa: E402


def _rel(a, b):
    """max |a - b| / max |b|."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def _state(cfg, seed):
    st = _random_state(cfg, seed)
    for k in st:
        if k.endswith("gamma"):   # LayerScale of released models is small
            st[k] = (0.1 + 0.05 * st[k]).astype(np.float32)
    return st


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_size_matches_the_c_engine_on_cpu(name):
    cfg = replace(DinoV2Config.from_name(name), depth=1)
    st = _state(cfg, 3)
    x = np.random.default_rng(1).standard_normal((2, 42, 70, 3)).astype(np.float32)
    want = DinoV2(cfg, st).features(x)          # non-square: interpolated positions
    got = TorchDinoV2(cfg, st).features(x)
    assert got.shape == want.shape == (2, 3, 5, cfg.embed_dim) and got.dtype == np.float32
    assert _rel(got, want) < 1e-4
    single = TorchDinoV2(cfg, st).features(x[1])
    assert single.shape == (3, 5, cfg.embed_dim) and _rel(single, want[1]) < 1e-4


def test_lora_and_files_through_the_same_readers(tmp_path):
    from safetensors.numpy import save_file

    cfg = replace(SMALL, num_register_tokens=4, interpolation="antialias",
                  interpolate_offset=0.0)
    st = _state(cfg, 5)
    save_file(st, str(tmp_path / "w.safetensors"))
    rng = np.random.default_rng(2)
    lora = {}
    for j in range(2 * cfg.depth):
        lora[f"w_a_{j:03d}"] = torch.tensor(rng.standard_normal((3, 128)) * 0.1, dtype=torch.float32)
        lora[f"w_b_{j:03d}"] = torch.tensor(rng.standard_normal((128, 3)) * 0.1, dtype=torch.float32)
    torch.save(lora, tmp_path / "best_lora_weights.pth")
    x = np.random.default_rng(4).standard_normal((56, 56, 3)).astype(np.float32)
    c = load_dinov2(tmp_path / "w.safetensors", lora=tmp_path / "best_lora_weights.pth")
    t = load_dinov2_torch(tmp_path / "w.safetensors", lora=tmp_path / "best_lora_weights.pth")
    assert t.config == c.config and t.engine == "torch-float32"
    assert _rel(t.features(x), c.features(x)) < 1e-4
    # the LoRA changes the features (the test would notice a merge left out)
    plain = load_dinov2_torch(tmp_path / "w.safetensors").features(x)
    assert _rel(plain, c.features(x)) > 1e-3   # ten times the tolerance above


def test_low_precision_on_cpu_stays_close():
    st = _state(SMALL, 6)
    x = np.random.default_rng(5).standard_normal((1, 56, 56, 3)).astype(np.float32)
    ref = DinoV2(SMALL, st).features(x)
    for dt, tol in (("bfloat16", 5e-2), ("float16", 1e-2)):
        m = TorchDinoV2(SMALL, st, dtype=dt)
        assert m.engine == f"torch-{dt}"
        got = m.features(x)
        assert got.dtype == np.float32
        err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert 0 < err < tol, (dt, err)


def test_bad_device_and_precision():
    st = _state(SMALL, 0)
    with pytest.raises(ValueError, match="device"):
        TorchDinoV2(SMALL, st, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            TorchDinoV2(SMALL, st, device="cuda")
    with pytest.raises(ValueError, match="dtype"):
        TorchDinoV2(SMALL, st, dtype="float64")
    with pytest.raises(ValueError, match="multiples of 14"):
        TorchDinoV2(SMALL, st).features(np.zeros((50, 56, 3), np.float32))


def test_extract_engine_torch_cli_and_no_mixing(spair, tmp_path, capsys):
    from safetensors.numpy import save_file

    w = tmp_path / "small.safetensors"
    save_file(_state(SMALL, 7), str(w))
    base = ["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
            "--weights", str(w), "--preprocess", "pad", "--size", "56"]
    ct, cc = tmp_path / "torch", tmp_path / "c"
    assert main(base + ["--out", str(ct), "--engine", "torch", "--device", "cpu",
                        "--batch-size", "2"]) == 0
    assert "engine torch-float32" in capsys.readouterr().out
    assert main(base + ["--out", str(cc)]) == 0
    capsys.readouterr()
    t, c = FeatureCache.open(ct), FeatureCache.open(cc)
    assert t.manifest["engine"] == "torch-float32" and c.manifest["engine"] == "c"
    assert {k: v for k, v in t.manifest.items() if k != "engine"} == \
        {k: v for k, v in c.manifest.items() if k != "engine"}
    assert t.keys() == c.keys() == ["cat/a1", "cat/a2", "dog/b1"]
    for key in t.keys():
        for flipped in (False, True):
            assert _rel(t.get(key, flipped), np.asarray(c.get(key, flipped))) < 1e-4
    # the same preprocessing: a C forward pass of the image agrees too
    px, _ = preprocess_image(spair / "JPEGImages" / "dog" / "b1.jpg", "pad", 56)
    assert _rel(t.get("dog/b1"), load_dinov2(w).features(px)) < 1e-4
    # one cache, one engine: the manifest check refuses the other engine and precision
    assert main(base + ["--out", str(ct)]) == 1
    err = capsys.readouterr().err
    assert "engine" in err and "torch-float32" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--out", str(cc), "--engine", "torch", "--precision", "bfloat16"]) == 1
    assert "engine" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x"), "--engine", "torch",
                        "--device", "nonsense"]) == 1
    assert "nonsense" in capsys.readouterr().err
