"""Errors of the C core as Python sees them: the kernel validates, the
binding maps its status to one exception type and shows the numbers.

Expected texts are the inputs' own values, written out here."""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import geomatch as gm
from geomatch import _core

ROOT = Path(__file__).resolve().parents[1]


def test_unequal_masses_name_both_sums():
    C = np.zeros((2, 2), np.float32)
    a = np.array([0.25, 0.5], np.float32)    # sum 0.75
    b = np.array([0.5, 0.75], np.float32)    # sum 1.25
    with pytest.raises(ValueError) as exc:
        gm.sinkhorn(C, a, b, 0.1)
    assert type(exc.value) is ValueError
    msg = str(exc.value)
    assert "sum(a)=0.75," in msg and "sum(b)=1.25 " in msg
    assert "%" not in msg


@pytest.mark.parametrize("mode", ["upsample-argmax", "grid-argmax", "soft-argmax"])
def test_keypoint_outside_the_image_shows_its_coordinates(mode):
    f = np.ones((4, 5, 3), np.float32)
    kp = np.array([[1.0, 2.0], [612.5, 3.25]])
    with pytest.raises(ValueError) as exc:
        gm.transfer_keypoints(f, f, kp, (500, 375), (500, 375), mode=mode)
    assert type(exc.value) is ValueError
    msg = str(exc.value)
    assert msg.startswith("src_kps: keypoint 1 of pair 0, (x, y) = (612.5, 3.25)")
    assert "(W, H) = (500, 375)" in msg


@pytest.mark.parametrize("mode", ["upsample-argmax", "grid-argmax"])
@pytest.mark.parametrize("arg,size", [("trg_size", (2**30, 10)), ("src_size", (10, 2**30)),
                                      ("trg_size", (65537, 4)), ("src_size", (0, 4))])
def test_size_policy_names_the_argument(mode, arg, size):
    f = np.ones((4, 5, 3), np.float32)
    sizes = {"src_size": (20, 20), "trg_size": (20, 20), arg: size}
    with pytest.raises(ValueError) as exc:
        gm.transfer_keypoints(f, f, np.array([[1.0, 1.0]]), sizes["src_size"],
                              sizes["trg_size"], mode=mode)
    msg = str(exc.value)
    assert msg.startswith(f"{arg}: image size")
    assert str(max(size) if max(size) > 65536 else min(size)) in msg
    assert "1 to 65536" in msg


def test_largest_allowed_size_runs():
    f = np.random.default_rng(0).random((3, 4, 8)).astype(np.float32)
    out = gm.transfer_keypoints(f, f, np.array([[3.0, 2.0]]), (8, 6), (65536, 2))
    assert out.shape == (1, 2) and 0 <= out[0, 0] < 65536 and 0 <= out[0, 1] < 2


def test_transfer_float_sizes_beyond_int64_are_out_of_range_not_wrapped():
    f = np.ones((4, 5, 3), np.float32)
    with pytest.raises(ValueError, match="trg_size: image size W = 4611686018427387904"):
        gm.transfer_keypoints(f, f, np.array([[1.0, 1.0]]), (20, 20), (1e30, 4.0))


def test_loss_bounds_show_lo_and_hi():
    P = np.full((3, 3), 0.1, np.float32)
    m = np.array([True, False])
    with pytest.raises(ValueError, match=r"need 0 <= lo < hi < 1, got lo=0\.7, hi=0\.2"):
        _core.loss_fgbg(P, m, m, 0.7, 0.2, 1.0, False)


def test_unsafe_kernel_method_is_a_value_error():
    S = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    mu = np.full(3, 1 / 3, np.float32)
    with pytest.raises(ValueError, match="method='kernel' is unsafe .* exceeds 30 for float32"):
        gm.dustbin_sinkhorn(S, mu, mu, reg=1e-3, method="kernel")


def test_vjp_overflow_raises_like_the_forward():
    r = np.random.default_rng(0)
    S = (r.random((30, 20)) * 2 - 1).astype(np.float32)
    mu = np.full(31, 1 / 31, np.float32)
    nu = np.full(21, 1 / 21, np.float32)
    G = r.standard_normal((31, 21)).astype(np.float32)
    with pytest.raises(FloatingPointError, match="reg=1e-30"):
        gm.dustbin_sinkhorn_vjp(S, mu, nu, G, reg=1e-30)
    with pytest.raises(FloatingPointError, match="gradient overflowed"):
        gm.dustbin_sinkhorn_vjp(S, mu, nu, G * np.float32(1e38))


@pytest.mark.parametrize("dtype,tiny", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_cosine_of_tiny_rows_is_finite(dtype, tiny):
    x = np.array([[tiny, 2 * tiny, 0.0], [3.0, 0.0, 4.0]], dtype)
    y = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype)
    S = gm.cosine_similarity(x, y)
    expect = np.array([[1.0, 0.0], [3 / 5 / np.sqrt(5), 0.8]])
    np.testing.assert_allclose(S, expect, rtol=1e-6, atol=1e-7)
    assert np.isfinite(gm.cosine_similarity(x, x)).all()


@pytest.mark.parametrize("shape", [(2, 2), (5, 7), (30, 40)])
def test_float32_sinkhorn_default_tol_converges(shape):
    r = np.random.default_rng(1)
    n, m = shape
    C = r.random(shape).astype(np.float32)
    a = np.full(n, 1 / n, np.float32)
    b = np.full(m, 1 / m, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P, f, g, n_iter = gm.sinkhorn(C, a, b, 0.1, return_potentials=True)
    assert n_iter < 1000
    np.testing.assert_allclose(P.sum(0), b, atol=1e-6)


@pytest.mark.parametrize("dtype", [int, np.int32, bool, "U3", np.complex64])
def test_dustbin_marginals_refuses_non_float_dtypes(dtype):
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        gm.dustbin_marginals(np.ones((2, 2), bool), 1, 2, dtype=dtype)


def test_dustbin_marginals_float_dtypes():
    for dt in (np.float32, np.float64, "float64"):
        out = gm.dustbin_marginals(np.ones((2, 2), bool), 2, 2, dtype=dt)
        assert out.dtype == np.dtype(dt) and abs(float(out.sum()) - 1.0) < 1e-6


def test_every_binding_format_string_names_its_function():
    src = (ROOT / "geomatch" / "_core.c").read_text()
    formats = re.findall(r'PyArg_Parse\w*\(\s*args\s*,\s*(?:kwds\s*,\s*)?"([^"]*)"', src)
    assert len(formats) >= 20
    assert all(re.fullmatch(r"[^:]*:\w+", f) for f in formats), formats
    # PyErr_Format has no %g: numbers are formatted by the kernels
    assert not re.search(r"PyErr_Format\w*\([^;]*%[.0-9]*g", src)
    assert "@@" not in src
