"""gm.Matcher on real image files with random DINOv2 weights in each format.

References are written here in plain NumPy: the feature maps are upsampled
bilinearly (PyTorch's align_corners=False rule, written out below) to the
size of the region the grid covers, the cosine argmax is taken over every
pixel, and keypoints are mapped with the GeoAware-SC padding rule spelled out
with its own constants.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import geomatch as gm
from matcher_fixtures import tiny_state, write_images, write_weights

pytest.importorskip("PIL", reason="Pillow reads the image files")


def ref_upsample(feat, out_h, out_w):
    """Bilinear, align_corners=False, in float64: (h, w, D) -> (out_h, out_w, D)."""
    f = np.asarray(feat, dtype=np.float64)

    def taps(n_in, n_out):
        s = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(s).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, s - np.floor(s)

    r0, r1, wy = taps(f.shape[0], out_h)
    c0, c1, wx = taps(f.shape[1], out_w)
    rows = f[r0] * (1 - wy)[:, None, None] + f[r1] * wy[:, None, None]
    return rows[:, c0] * (1 - wx)[None, :, None] + rows[:, c1] * wx[None, :, None]


def ref_frame(size, mode, s):
    """(x0, y0, fw, fh) of the grid's region: whole image, or GeoAware-SC's pad."""
    w, h = size
    if mode == "resize":
        return 0.0, 0.0, w, h
    long_side = max(w, h)
    scale = s / long_side
    if w >= h:
        new_h = int(np.around(s * h / w))
        return 0.0, -((s - new_h) // 2) / scale, long_side, long_side
    new_w = int(np.around(s * w / h))
    return -((s - new_w) // 2) / scale, 0.0, long_side, long_side


def ref_match(sf, tf, pts, ssize, tsize, mode, s):
    sx0, sy0, sfw, sfh = ref_frame(ssize, mode, s)
    tx0, ty0, tfw, tfh = ref_frame(tsize, mode, s)
    su = ref_upsample(sf, int(round(sfh)), int(round(sfw)))
    tu = ref_upsample(tf, int(round(tfh)), int(round(tfw)))
    tn = tu / np.maximum(np.linalg.norm(tu, axis=-1, keepdims=True), 1e-300)
    out, sims = [], []
    for x, y in pts:
        xf, yf = np.float32(x - sx0), np.float32(y - sy0)
        q = su[int(np.floor(yf)), int(np.floor(xf))]
        sim = tn @ (q / np.linalg.norm(q))
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        out.append([j + tx0, i + ty0])
        sims.append(sim)
    return np.array(out), sims


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("matcher")
    src, trg = write_images(str(d), sizes=((61, 47), (52, 66)))
    return str(d), src, trg


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "hf"])
def test_every_weights_format_gives_the_same_features(files, fmt):
    d, src, trg = files
    pytest.importorskip("safetensors", reason="the reference file is written with safetensors (test extra)")
    if fmt == "pth":
        pytest.importorskip("torch", reason="the .pth file is written with torch.save (test extra)")
    sub = os.path.join(d, fmt)
    os.makedirs(sub, exist_ok=True)
    m = gm.Matcher(write_weights(sub, fmt), size=112)
    feat, frame = m.features(src)
    assert feat.shape == (8, 8, 64) and feat.dtype == np.float32
    assert frame.image_size == (61, 47)
    # the same random state run directly through the backbone
    from geomatch.backbone.dinov2 import DinoV2, DinoV2Config
    from geomatch.backbone.preprocess import preprocess_image

    # Hugging Face's Dinov2Model resizes the position embedding to the size
    # (no +0.1 offset), as geomatch's loader does for such directories
    kw = dict(interpolation="size", interpolate_offset=0.0) if fmt == "hf" else {}
    ref = DinoV2(DinoV2Config(embed_dim=64, depth=2, num_heads=1, pos_grid=4, **kw),
                 tiny_state(0)).features(preprocess_image(src, "resize", 112)[0])
    np.testing.assert_allclose(feat, ref, rtol=1e-4, atol=1e-4)
    pts, scores = m.match(src, trg, [[3, 4], [60, 46]])
    assert pts.shape == (2, 2) and scores.shape == (2,)


@pytest.mark.parametrize("mode,size", [("resize", 112), ("pad", 126)])
def test_match_equals_numpy_upsample_argmax(files, mode, size):
    d, src, trg = files
    m = gm.Matcher(write_weights(d, "safetensors"), preprocess=mode, size=size)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.integers(0, 61, 12), rng.integers(0, 47, 12)]).astype(float)
    pts = np.vstack([pts, [[0, 0], [60, 46], [60.9, 46.9]]])
    got, scores = m.match(src, trg, pts)
    sf, _ = m.features(src)
    tf, _ = m.features(trg)
    want, sims = ref_match(sf, tf, pts, (61, 47), (52, 66), mode, size)
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(scores, [s.max() for s in sims], atol=1e-5)
    if mode == "resize":
        # similarity(): the whole map, whose argmax is the match
        sim = m.similarity(src, trg, pts[0])
        assert sim.shape == (66, 52)
        np.testing.assert_allclose(sim, sims[0], atol=1e-5)


def test_match_equals_the_evaluation_pipeline(files, tmp_path):
    """Features written to a cache and evaluated give Matcher.match's points."""
    from types import SimpleNamespace

    from geomatch.data.cache import FeatureCache
    from geomatch.eval.evaluate import transfer_pair

    d, src, trg = files
    m = gm.Matcher(write_weights(d, "safetensors"), preprocess="pad", size=126)
    pts = np.array([[5.0, 7.0], [30.5, 20.25], [59.0, 1.0]])
    got, _ = m.match(src, trg, pts)
    manifest = gm.datasets.feature_manifest(backbone="tiny", dim=64, grid=(9, 9),
                                            preprocess="pad", resolution=(126, 126))
    cache = gm.datasets.write_features(tmp_path / "c", {"a/src": m.features(src)[0],
                                                        "a/trg": m.features(trg)[0]}, manifest)
    cache = FeatureCache.open(cache.path)
    pair = SimpleNamespace(src=SimpleNamespace(keypoints=pts, visible=np.ones(3, bool),
                                               size=(61, 47)),
                           trg=SimpleNamespace(size=(52, 66)))
    pred = transfer_pair(pair, np.asarray(cache.get("a/src")), np.asarray(cache.get("a/trg")),
                         cache.manifest)
    np.testing.assert_array_equal(got, pred)


def test_features_are_cached(files):
    d, src, trg = files
    backbone = gm.Matcher(write_weights(d, "safetensors"), size=112).backbone
    calls = []

    class Counting:
        patch_size, embed_dim, config = backbone.patch_size, backbone.embed_dim, backbone.config

        def features(self, pixels):
            calls.append(1)
            return backbone.features(pixels)

    m = gm.Matcher(Counting(), size=112, cache_size=2)
    m.match(src, trg, [[1, 1]])
    m.match(src, trg, [[2, 2], [3, 3]])
    m.similarity(src, trg, (4, 4))
    assert len(calls) == 2
    from PIL import Image

    third = np.asarray(Image.open(src))[::-1].copy()
    m.features(third)                 # evicts the least recently used
    m.features(trg)
    assert len(calls) == 3
    m.features(src)
    assert len(calls) == 4
    # a file rewritten with other pixels is read and featurized again
    import shutil

    changed = os.path.join(d, "changed.png")
    shutil.copy(src, changed)
    a = m.features(changed)[0].copy()
    assert len(calls) == 4                       # same pixels as src: cached
    Image.fromarray(third).save(changed)
    os.utime(changed, ns=(1, 10**18))
    b = m.features(changed)[0]
    assert len(calls) == 5 and not np.array_equal(a, b)


def test_changing_returned_features_leaves_the_cache_intact(files):
    """QA: features() handed out the cached array itself, so normalising it in
    place (feat /= norm) silently changed every later match of that image."""
    d, src, trg = files
    m = gm.Matcher(write_weights(d, "safetensors"), size=112)
    before = m.match(src, trg, [[10, 12], [30, 20]])
    feat, _ = m.features(src)
    feat *= 0.0
    feat_t, _ = m.features(trg)
    feat_t[:] = 1.0
    after = m.match(src, trg, [[10, 12], [30, 20]])
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert np.any(m.features(src)[0] != 0)


def test_quantized_features_change_few_matches(files):
    d, src, trg = files
    m = gm.Matcher(write_weights(d, "safetensors"), size=112)
    pts = np.array([[x, y] for x in range(0, 61, 6) for y in range(0, 47, 6)], float)
    a = m.match(src, trg, pts).points
    b = m.match(src, trg, pts, quantize="float16").points
    # float16 moves a match only where two pixels are almost equally similar
    assert np.mean(np.all(a == b, axis=1)) > 0.5


def test_bad_input_names_the_path_or_point(files, tmp_path):
    d, src, trg = files
    w = write_weights(d, "safetensors")
    m = gm.Matcher(w, size=112)
    with pytest.raises(ValueError, match=r"point 1 \(x, y\) = \(61, 3\)"):
        m.match(src, trg, [[1, 1], [61, 3]])
    with pytest.raises(ValueError, match="point 0"):
        m.match(src, trg, [[-0.5, 3]])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="junk.jpg"):
        m.match(src, str(junk), [[1, 1]])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        m.features(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="vitb14"):
        gm.Matcher(w, model="vitb14")
    with pytest.raises(ValueError, match="not vits14"):
        gm.Matcher(m.backbone, model="vits14")
    head = gm.head.AttentionHead(in_dim=32, dim=16, out_dim=8, num_heads=2, mlp_dim=16,
                                 attn_dim=16)
    hp = tmp_path / "head32.npz"
    head.save(hp)
    with pytest.raises(ValueError, match="head32.npz.*32-dimensional"):
        gm.Matcher(w, head=str(hp))
    with pytest.raises(ValueError, match="preprocess"):
        gm.Matcher(w, preprocess="crop")


def test_head_outputs_are_matched(files, tmp_path):
    d, src, trg = files
    head = gm.head.AttentionHead(in_dim=64, dim=32, out_dim=24, num_heads=2, mlp_dim=32,
                                 attn_dim=16, seed=1)
    hp = tmp_path / "head.npz"
    head.save(hp)
    m = gm.Matcher(write_weights(d, "safetensors"), head=str(hp), size=112)
    feat, _ = m.features(src)
    assert feat.shape == (8, 8, 24)
    plain = gm.Matcher(write_weights(d, "safetensors"), size=112).features(src)[0]
    np.testing.assert_allclose(feat, head(plain), rtol=1e-4, atol=1e-5)


def test_import_geomatch_does_not_load_the_matcher():
    code = ("import sys, geomatch as gm; "
            "assert 'PIL' not in sys.modules and 'geomatch.match' not in sys.modules; "
            "assert 'torch' not in sys.modules; "
            "gm.Matcher; assert 'geomatch.match.matcher' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_geco_lora_is_merged(files, tmp_path):
    """Matcher(weights, lora=...) = the backbone whose q and v rows got B @ A
    (GECO's LoRA layout, merged here by hand)."""
    torch = pytest.importorskip("torch", reason="writing GECO's LoRA file as torch.save")
    from geomatch.backbone.dinov2 import DinoV2, DinoV2Config
    from geomatch.backbone.preprocess import preprocess_image

    d, src, trg = files
    w = write_weights(d, "safetensors")
    rng = np.random.default_rng(5)
    lora = {}
    for j in range(4):                       # 2 blocks x (q, v)
        lora[f"w_a_{j:03d}"] = (0.3 * rng.normal(size=(3, 64))).astype(np.float32)
        lora[f"w_b_{j:03d}"] = (0.3 * rng.normal(size=(64, 3))).astype(np.float32)
    lp = tmp_path / "last_lora_weights.pth"
    torch.save({k: torch.from_numpy(v) for k, v in lora.items()}, lp)
    state = tiny_state(0)
    for i in range(2):
        qkv = state[f"blocks.{i}.attn.qkv.weight"].astype(np.float64)
        qkv[0:64] += lora[f"w_b_{2 * i:03d}"].astype(np.float64) @ lora[f"w_a_{2 * i:03d}"]
        qkv[128:192] += (lora[f"w_b_{2 * i + 1:03d}"].astype(np.float64)
                         @ lora[f"w_a_{2 * i + 1:03d}"])
        state[f"blocks.{i}.attn.qkv.weight"] = qkv.astype(np.float32)
    ref = DinoV2(DinoV2Config(embed_dim=64, depth=2, num_heads=1, pos_grid=4),
                 state).features(preprocess_image(src, "resize", 112)[0])
    m = gm.Matcher(w, lora=str(lp), size=112)
    np.testing.assert_allclose(m.features(src)[0], ref, rtol=1e-4, atol=1e-4)
    plain = gm.Matcher(w, size=112).features(src)[0]
    assert np.abs(plain - ref).max() > 1e-2          # the LoRA did change the features
    assert m.settings()["lora"] == str(lp)


def test_exif_orientation_and_other_modes(tmp_path):
    """A photo stored sideways with an EXIF rotation is read upright; grey,
    palette and RGBA files are read as RGB."""
    from PIL import Image

    from geomatch.match import load_rgb

    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    # EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to
    # view, i.e. they hold the upright picture turned 90 degrees counter-clockwise
    stored = np.rot90(upright, k=1)
    im = Image.fromarray(np.ascontiguousarray(stored))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif, quality=100, subsampling=0)
    got = load_rgb(tmp_path / "phone.jpg")
    assert got.shape == (30, 50, 3)
    assert np.abs(got.astype(int) - upright).mean() < 8        # JPEG, q=100
    Image.fromarray(upright[..., 0]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "grey.png"),
                                  np.repeat(upright[..., :1], 3, axis=2))
    Image.fromarray(upright).convert("RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "rgba.png"), upright)


@pytest.mark.parametrize("size", [0, 14.5, True, "518"])
def test_size_zero_or_not_an_integer_is_refused(files, size):
    """QA: size=0 silently meant the default size, 14.5 became 14."""
    d, src, trg = files
    with pytest.raises((ValueError, TypeError), match="size"):
        gm.Matcher(write_weights(d, "safetensors"), size=size)


def test_a_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    """QA: Pillow's convert("RGB") clips 16-bit values at 255, so a 16-bit
    grayscale photo became an almost white image."""
    from PIL import Image

    from geomatch.match.matcher import load_rgb

    rng = np.random.default_rng(3)
    a16 = rng.integers(0, 65536, (12, 17), dtype=np.uint16)
    a16[0, 0], a16[0, 1] = 0, 65535
    path = tmp_path / "depth16.png"
    Image.fromarray(a16).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_rgb(path, "SRC")
    want = np.round(a16.astype(np.float64) / 257.0).astype(np.uint8)
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 17, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], want)
