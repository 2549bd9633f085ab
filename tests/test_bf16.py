"""The opt-in bfloat16 backbone path: kernels against NumPy references that
round to bfloat16 the same way (round to nearest even), the DinoV2 model in
bf16 against float32, the CLI and the cache manifest, and the clear refusal
on CPUs without AVX512-BF16."""
import math
import subprocess
import sys

import numpy as np
import pytest

import geomatch as gm
from geomatch import _core
from geomatch.backbone import DinoV2, DinoV2Config
from geomatch.backbone import dinov2 as dv

HAVE_BF16 = bool(_core.bf16_supported())
needs_bf16 = pytest.mark.skipif(not HAVE_BF16, reason="this CPU has no AVX512-BF16 "
                                "(the bf16 kernels cannot run here)")


def bf16_round(a):
    """float32 -> nearest bfloat16 (ties to even), returned as float64."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    u = ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)) << np.uint64(16)
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def gelu(v):
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def test_reference_rounding_spelled_out():
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa -> 1;
    # 1 + 3 * 2^-8 is a tie between 1 + 2^-7 and 1 + 2^-6: even -> 1 + 2^-6
    got = bf16_round(np.array([1.00390625, 1.01171875, 1.0078125, -3.0], np.float32))
    assert got.tolist() == [1.0, 1.015625, 1.0078125, -3.0]


@needs_bf16
def test_linear_rounds_weights_and_inputs_to_nearest_even():
    w = np.array([[1.00390625], [1.01171875], [2.0]], np.float32)   # (dout 3, din 1)
    x = np.array([[1.0], [1.00390625]], np.float32)
    y = _core.nn_linear_bf16(x, _core.bf16_pack(w))
    np.testing.assert_array_equal(y, [[1.0, 1.015625, 2.0], [1.0, 1.015625, 2.0]])


@needs_bf16
@pytest.mark.parametrize("n,din,dout", [(1, 1, 1), (3, 7, 17), (9, 33, 40), (70, 64, 48),
                                        (130, 300, 100)])
@pytest.mark.parametrize("mode", ["plain", "gelu", "accumulate", "nobias"])
def test_linear_matches_bf16_reference(n, din, dout, mode):
    rng = np.random.default_rng(n + din + dout)
    x = rng.standard_normal((n, din)).astype(np.float32)
    w = rng.standard_normal((dout, din)).astype(np.float32)
    b = rng.standard_normal(dout).astype(np.float32)
    xr, wr = bf16_round(x), bf16_round(w)
    ref = xr @ wr.T + (0 if mode == "nobias" else b)
    bound = 1e-5 * (np.abs(xr) @ np.abs(wr).T) + 1e-6     # float32 sums of exact products
    packed = _core.bf16_pack(w)
    bias = None if mode == "nobias" else b
    if mode == "gelu":
        got = _core.nn_linear_bf16(x, packed, bias, act=1)
        ref = gelu(ref)
        bound = bound + 1e-6 * np.abs(ref)
    elif mode == "accumulate":
        y0 = rng.standard_normal((n, dout)).astype(np.float32)
        got = y0.copy()
        _core.nn_linear_bf16(x, packed, bias, out=got, accumulate=True)
        ref = ref + y0
        bound = bound + 1e-6 * np.abs(ref)
    else:
        got = _core.nn_linear_bf16(x, packed, bias)
    assert got.dtype == np.float32 and got.shape == (n, dout)
    assert np.all(np.abs(got - ref) <= bound)


@needs_bf16
def test_linear_same_for_any_thread_count():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 96)).astype(np.float32)
    w = rng.standard_normal((200, 96)).astype(np.float32)
    p = _core.bf16_pack(w)
    before = gm.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            gm.set_num_threads(t)
            outs.append(_core.nn_linear_bf16(x, p, act=1))
    finally:
        gm.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@needs_bf16
def test_linear_bad_arguments_named():
    w = np.ones((4, 6), np.float32)
    p = _core.bf16_pack(w)
    with pytest.raises(ValueError, match="packed holds a .4, 6. weight; x has 5"):
        _core.nn_linear_bf16(np.ones((2, 5), np.float32), p)
    with pytest.raises(TypeError, match="packed"):
        _core.nn_linear_bf16(np.ones((2, 6), np.float32), w)
    with pytest.raises(TypeError, match="packed"):
        _core.nn_linear_bf16(np.ones((2, 6), np.float32), p[:-1].copy())
    with pytest.raises(ValueError, match="bias"):
        _core.nn_linear_bf16(np.ones((2, 6), np.float32), p, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="accumulate"):
        _core.nn_linear_bf16(np.ones((2, 6), np.float32), p, accumulate=True)
    with pytest.raises(ValueError, match="weight"):
        _core.bf16_pack(np.ones((0, 6), np.float32))


def _attention_reference(qkv, heads):
    """softmax(q k^T / 8) v per head with q, k, v rounded to bfloat16, float64."""
    b, n, c = qkv.shape
    q, k, v = (bf16_round(t).reshape(b, n, heads, 64).transpose(0, 2, 1, 3)
               for t in np.split(qkv, 3, axis=2))
    s = q @ k.transpose(0, 1, 3, 2) / 8.0
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, n, heads * 64)


@needs_bf16
@pytest.mark.parametrize("batch,n,heads", [(1, 1, 1), (1, 5, 2), (2, 67, 3), (1, 130, 1)])
def test_attention_matches_bf16_reference(batch, n, heads):
    rng = np.random.default_rng(n)
    qkv = (2 * rng.standard_normal((batch, n, 3 * heads * 64))).astype(np.float32)
    got = _core.nn_attention_bf16(qkv, heads)
    ref = _attention_reference(qkv, heads)
    # the probabilities are rounded to bfloat16 too (relative 2^-9 each)
    assert np.abs(got - ref).max() <= 4e-3 * np.abs(ref).max()
    # and it is the float32 attention up to that rounding
    f32 = _core.nn_attention(qkv, heads)
    assert np.abs(got - f32).max() <= 2e-2 * np.abs(f32).max()


@needs_bf16
def test_attention_one_key_block_softmax_and_thread_count():
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((1, 200, 3 * 2 * 64)).astype(np.float32)
    qkv[0, :, :128] *= 6.0       # peaked softmax: the online rescaling matters
    before = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        a = _core.nn_attention_bf16(qkv, 2)
        gm.set_num_threads(2)
        b = _core.nn_attention_bf16(qkv, 2)
    finally:
        gm.set_num_threads(before)
    assert np.array_equal(a, b)
    ref = _attention_reference(qkv, 2)
    assert np.abs(a - ref).max() <= 4e-3 * np.abs(ref).max()


@needs_bf16
def test_attention_rejects_other_head_dims():
    with pytest.raises(ValueError, match="head dimension 64"):
        _core.nn_attention_bf16(np.ones((1, 4, 3 * 2 * 32), np.float32), 2)


SMALL = DinoV2Config(embed_dim=128, depth=2, num_heads=2, pos_grid=4)


def _state(cfg, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in cfg.expected_shapes().items():
        a = rng.standard_normal(shape) / np.sqrt(shape[-1])
        if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
            a = 1 + 0.1 * a
        out[name] = a.astype(np.float32)
    return out


@needs_bf16
def test_dinov2_bf16_close_to_float32_and_thread_independent():
    st = _state(SMALL)
    px = np.random.default_rng(2).standard_normal((2, 70, 56, 3)).astype(np.float32)
    f32 = DinoV2(SMALL, st).features(px)
    net = DinoV2(SMALL, st, precision="bf16")
    assert net.precision == "bfloat16" and net.engine == "c-bfloat16"
    assert "bfloat16" in repr(net)
    before = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        a = net.features(px)
        gm.set_num_threads(2)
        b = net.features(px)
    finally:
        gm.set_num_threads(before)
    assert np.array_equal(a, b)
    rel = np.abs(a - f32).max() / np.abs(f32).max()
    assert 0 < rel <= 1e-2
    # the float32 model is untouched by the option
    assert DinoV2(SMALL, st).engine == "c"
    np.testing.assert_array_equal(DinoV2(SMALL, st, precision="float32").features(px), f32)


def test_precision_argument_checked():
    with pytest.raises(ValueError, match="precision"):
        DinoV2(SMALL, _state(SMALL), precision="float16")
    assert dv.normalize_precision("bf16") == "bfloat16"
    assert dv.normalize_precision("FP32") == "float32"


def test_bf16_refused_clearly_without_the_instructions(monkeypatch):
    monkeypatch.setattr(dv, "bf16_available", lambda: False)
    with pytest.raises(ValueError, match="AVX512-BF16"):
        DinoV2(SMALL, _state(SMALL), precision="bf16")


def test_cli_bf16_refused_in_one_line_without_the_instructions(tmp_path):
    # a fresh process whose CPU check says no: one line on stderr, exit 1
    code = ("import sys; import geomatch.backbone.dinov2 as d; "
            "d.bf16_available = lambda: False; from geomatch.cli import main; "
            f"sys.exit(main(['extract', '--dataset', 'spair', '--root', {str(tmp_path)!r}, "
            f"'--weights', {str(tmp_path / 'w.safetensors')!r}, '--out', "
            f"{str(tmp_path / 'c')!r}, '--precision', 'bf16']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "AVX512-BF16" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@needs_bf16
def test_extract_cli_bf16_records_precision_in_manifest(tmp_path, capsys):
    from PIL import Image
    from safetensors.numpy import save_file

    from geomatch.cli import main
    from geomatch.data.cache import FeatureCache
    import json

    root = tmp_path / "SPair-71k"
    for name, (w, h) in {"a1": (40, 30), "a2": (30, 44)}.items():
        p = root / "JPEGImages" / "cat" / f"{name}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(w)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        a = root / "ImageAnnotation" / "cat" / f"{name}.json"
        a.parent.mkdir(parents=True, exist_ok=True)
        a.write_text(json.dumps({"filename": f"{name}.jpg", "image_width": w,
                                 "image_height": h, "bndbox": [1, 1, w - 2, h - 2],
                                 "azimuth_id": 0, "kps": {"0": [5, 6], "1": None}}))
    (root / "Layout" / "large").mkdir(parents=True)
    (root / "Layout" / "large" / "test.txt").write_text("1-a1-a2:cat")
    d = {"pair_id": 1, "src_imname": "a1.jpg", "trg_imname": "a2.jpg",
         "src_imsize": [40, 30, 3], "trg_imsize": [30, 44, 3], "src_bndbox": [1, 1, 38, 28],
         "trg_bndbox": [1, 1, 28, 42], "category": "cat", "kps_ids": [0],
         "src_kps": [[5, 6]], "trg_kps": [[5, 6]], "mirror": 0, "viewpoint_variation": 0}
    p = root / "PairAnnotation" / "test" / "1-a1-a2:cat.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps(d))
    w = tmp_path / "small.safetensors"
    save_file(_state(SMALL), str(w))
    base = ["--threads", "1", "extract", "--dataset", "spair", "--root", str(root),
            "--weights", str(w), "--preprocess", "pad", "--size", "56"]
    out = tmp_path / "bf"
    assert main(base + ["--out", str(out), "--precision", "bf16"]) == 0
    assert "engine c-bfloat16" in capsys.readouterr().out
    cache = FeatureCache.open(out)
    assert cache.manifest["engine"] == "c-bfloat16"
    # float32 features never go into the bf16 cache
    assert main(base + ["--out", str(out)]) == 1
    assert "engine" in capsys.readouterr().err
    # the C engine has no float16
    assert main(base + ["--out", str(tmp_path / "h"), "--precision", "float16"]) == 1
    assert "--engine torch" in capsys.readouterr().err
