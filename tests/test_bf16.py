"""The opt-in bfloat16 backbone path: kernels against NumPy references that
round to bfloat16 the same way (round to nearest even), the DinoV2 model in
bf16 against float32, the CLI and the cache manifest, and the clear refusal
on CPUs without AVX512-BF16."""
import math
import subprocess
import sys

import numpy as np
import pytest

from geomatch import _core
from geomatch.backbone import DinoV2
from geomatch.backbone import dinov2 as dv
from test_backbone_extract import SMALL
from test_backbone_extract import _random_state as _state

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
def test_linear_same_for_any_thread_count(at_threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 96)).astype(np.float32)
    w = rng.standard_normal((200, 96)).astype(np.float32)
    p = _core.bf16_pack(w)
    outs = at_threads(lambda: _core.nn_linear_bf16(x, p, act=1), counts=(1, 2, 3))
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
def test_attention_one_key_block_softmax_and_thread_count(at_threads):
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((1, 200, 3 * 2 * 64)).astype(np.float32)
    qkv[0, :, :128] *= 6.0       # peaked softmax: the online rescaling matters
    a, b = at_threads(lambda: _core.nn_attention_bf16(qkv, 2))
    assert np.array_equal(a, b)
    ref = _attention_reference(qkv, 2)
    assert np.abs(a - ref).max() <= 4e-3 * np.abs(ref).max()


@needs_bf16
@pytest.mark.parametrize("n", [7, 64, 65, 131])
def test_attention_nan_query_gives_nan_row_only(n, at_threads):
    rng = np.random.default_rng(n)
    qkv = rng.standard_normal((1, n, 3 * 2 * 64)).astype(np.float32)
    qkv[0, 3, 5] = np.nan                     # query 3 of head 0
    a, b = at_threads(lambda: _core.nn_attention_bf16(qkv, 2))
    assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(a[0, 3, :64]).all()
    ok = np.ones((n, 128), bool)
    ok[3, :64] = False
    assert np.isfinite(a[0][ok]).all()
    ref = _attention_reference(np.nan_to_num(qkv), 2)
    assert np.abs(a[0][ok] - ref[0][ok]).max() <= 4e-3 * np.abs(ref).max()


@needs_bf16
def test_attention_rejects_other_head_dims():
    with pytest.raises(ValueError, match="head dimension 64"):
        _core.nn_attention_bf16(np.ones((1, 4, 3 * 2 * 32), np.float32), 2)


@needs_bf16
def test_dinov2_bf16_close_to_float32_and_thread_independent(at_threads):
    st = _state(SMALL)
    px = np.random.default_rng(2).standard_normal((2, 70, 56, 3)).astype(np.float32)
    f32 = DinoV2(SMALL, st).features(px)
    net = DinoV2(SMALL, st, precision="bf16")
    assert net.precision == "bfloat16" and net.engine == "c-bfloat16"
    assert "bfloat16" in repr(net)
    a, b = at_threads(lambda: net.features(px))
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
def test_extract_cli_bf16_records_precision_in_manifest(spair, weights, tmp_path, capsys):
    from geomatch.cli import main
    from geomatch.data.cache import FeatureCache

    base = ["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
            "--weights", str(weights), "--preprocess", "pad", "--size", "56"]
    out = tmp_path / "bf"
    assert main(base + ["--out", str(out), "--precision", "bf16"]) == 0
    assert "engine c-bfloat16" in capsys.readouterr().out
    cache = FeatureCache.open(out)
    assert cache.manifest["engine"] == "c-bfloat16"
    assert sorted(cache.keys()) == ["cat/a1", "cat/a2", "dog/b1"]
    # float32 features never go into the bf16 cache
    assert main(base + ["--out", str(out)]) == 1
    assert "engine" in capsys.readouterr().err
    # the C engine has no float16
    assert main(base + ["--out", str(tmp_path / "h"), "--precision", "float16"]) == 1
    assert "--engine torch" in capsys.readouterr().err


@needs_bf16
def test_dask_spec_of_a_bf16_model_loads_bf16(weights):
    # what a Dask worker rebuilds from the client's model: the same precision
    from geomatch.backbone import load_dinov2
    from geomatch.backbone.extract import _spec_of, weights_sha256

    net = load_dinov2(weights, precision="bf16")
    spec = _spec_of(net, weights_sha256(weights))
    assert spec.engine == "c" and spec.compute_dtype == "bfloat16"
    again = spec.load()
    assert again.precision == "bfloat16" and again.engine == "c-bfloat16"
    px = np.random.default_rng(3).standard_normal((28, 42, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.features(px), net.features(px))
    f32 = _spec_of(load_dinov2(weights), "").load()
    assert f32.precision == "float32" and f32.engine == "c"


@needs_bf16
def test_bf16_model_runs_the_bf16_kernels_in_every_block(monkeypatch):
    calls = {"nn_attention_bf16": 0, "nn_linear_bf16": 0, "nn_attention": 0, "nn_linear": 0}
    for name in calls:
        real = getattr(_core, name)

        def spy(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)
        monkeypatch.setattr(_core, name, spy)
    net = DinoV2(SMALL, _state(SMALL), precision="bf16")
    net.features(np.zeros((28, 28, 3), np.float32))
    # per block: one attention and four linear layers in bf16; only the
    # patch embedding stays a float32 linear layer
    assert calls == {"nn_attention_bf16": SMALL.depth, "nn_linear_bf16": 4 * SMALL.depth,
                     "nn_attention": 0, "nn_linear": 1}


@needs_bf16
@pytest.mark.parametrize("n,din,dout", [(1, 2, 32), (9, 33, 64), (70, 64, 96), (130, 384, 1536)])
def test_linear_bfloat16_out_and_in(n, din, dout, at_threads):
    """out of uint16: act(x W^T + b) rounded to bfloat16 there, the bits of the
    float32 result's nearest-even rounding; x of uint16: the same product as
    the float32 x of those values.  Any thread count."""
    rng = np.random.default_rng(n + din + dout)
    x = (rng.standard_normal((n, din)) * 3).astype(np.float32)
    wp = _core.bf16_pack(rng.standard_normal((dout, din)).astype(np.float32) * 0.1)
    b = rng.standard_normal(dout).astype(np.float32)
    for act in (0, 1):
        ref = _core.nn_linear_bf16(x, wp, b, act=act)
        want = bf16_round(ref).astype(np.float32).view(np.uint32) >> 16

        def run():
            out = np.empty((n, dout), np.uint16)
            assert _core.nn_linear_bf16(x, wp, b, act=act, out=out) is out
            return out
        got, got2 = at_threads(run)
        np.testing.assert_array_equal(got, want.astype(np.uint16))
        np.testing.assert_array_equal(got, got2)
    w2 = _core.bf16_pack(rng.standard_normal((48, dout)).astype(np.float32))
    as_f32 = (got.astype(np.uint32) << 16).view(np.float32)
    y0 = rng.standard_normal((n, 48)).astype(np.float32)
    a, c = y0.copy(), y0.copy()
    _core.nn_linear_bf16(as_f32, w2, None, out=a, accumulate=True)
    _core.nn_linear_bf16(got, w2, None, out=c, accumulate=True)
    np.testing.assert_array_equal(a.view(np.uint32), c.view(np.uint32))


@needs_bf16
def test_linear_bfloat16_io_bad_arguments():
    wp = _core.bf16_pack(np.ones((32, 6), np.float32))
    with pytest.raises(ValueError, match="even number of columns"):
        _core.nn_linear_bf16(np.zeros((2, 5), np.uint16), _core.bf16_pack(np.ones((32, 5),
                                                                          np.float32)))
    with pytest.raises(ValueError, match="x has 4 columns"):
        _core.nn_linear_bf16(np.zeros((2, 4), np.uint16), wp)
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.nn_linear_bf16(np.zeros((2, 6), np.float32), _core.bf16_pack(np.ones((16, 6),
                             np.float32)), out=np.zeros((2, 16), np.uint16))
    with pytest.raises(ValueError, match="accumulate"):
        _core.nn_linear_bf16(np.zeros((2, 6), np.float32), wp, out=np.zeros((2, 32), np.uint16),
                             accumulate=True)
    with pytest.raises(ValueError, match="out"):
        _core.nn_linear_bf16(np.zeros((2, 6), np.float32), wp, out=np.zeros((3, 32), np.uint16))


@needs_bf16
def test_dinov2_bf16_hidden_layer_in_bfloat16_same_bits(monkeypatch):
    """The MLP's hidden layer kept in bfloat16 (fc1's fused GELU and rounding)
    gives the features of the float32 hidden layer, bit for bit."""
    import dataclasses

    cfg = dataclasses.replace(SMALL, mlp_ratio=64 / SMALL.embed_dim * 2)   # hidden 128
    st = _state(cfg)
    px = np.random.default_rng(3).standard_normal((2, 42, 56, 3)).astype(np.float32)
    net = DinoV2(cfg, st, precision="bf16")
    assert net.blocks[0]["fc1_b"].shape[0] % 32 == 0
    a = net.features(px, layers=[0, -1])
    monkeypatch.setattr(DinoV2, "_bf16_hidden", False)
    b = net.features(px, layers=[0, -1])
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.view(np.uint32), v.view(np.uint32))
