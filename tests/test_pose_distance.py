"""GeoAware-SC's test-time-flip distances and replacement rule, against the
official formulas (``utils/utils_correspondence.py:22-72``,
``utils/utils_geoware.py:269-279``, ``pck_train.py:24-37``) written out here in
torch, independently of geomatch's NumPy implementation."""
import numpy as np
import pytest

from geomatch.eval import evaluate as E
from geomatch.geometry import foreground_grid

torch = pytest.importorskip("torch", reason="the reference distances are written in torch")
F = torch.nn.functional


def _normalize(x):                       # normalize_feats: x / (|x| + 1e-10)
    return x / (torch.linalg.norm(x, dim=-1, keepdim=True) + 1e-10)


def _official_masked(f1, f2, m1, m2, res=64):
    """get_distance on (hw, C) normalised features of an (h, w) grid and
    full-resolution 0/1 masks, spelled out as the official code does it."""
    h, w = f1.shape[0], f1.shape[1]
    a = _normalize(f1.reshape(h * w, -1)).permute(1, 0).reshape(1, -1, h, w)
    b = _normalize(f2.reshape(h * w, -1)).permute(1, 0).reshape(1, -1, h, w)
    rm1 = F.interpolate(m1[None, None], size=(res, res), mode="nearest").squeeze()
    rm2 = F.interpolate(m2[None, None], size=(res, res), mode="nearest").squeeze()
    au = F.interpolate(a, size=(res, res), mode="bilinear", align_corners=False).squeeze()
    bu = F.interpolate(b, size=(res, res), mode="bilinear", align_corners=False).squeeze()
    au = au * rm1.repeat(au.shape[0], 1, 1)
    bu = bu * rm2.repeat(au.shape[0], 1, 1)
    au[au == 0] = -100000
    bu[bu == 0] = -100000
    a2 = au.reshape(au.shape[0], -1).permute(1, 0)
    b2 = bu.reshape(bu.shape[0], -1).permute(1, 0)
    out = []
    for i in range(res * res):
        if rm1[i // res, i % res] == 1:
            d = torch.linalg.norm(b2 - a2[i], dim=1)
            out.append(d[torch.argmin(d)].item())
    return torch.tensor(out, dtype=torch.float64).mean().item()


def _official_mutual(f1, f2):
    a = _normalize(f1.reshape(1, -1, f1.shape[-1]))
    b = _normalize(f2.reshape(1, -1, f2.shape[-1]))
    d = torch.cdist(a, b)[0]
    n12, n21 = torch.argmin(d, dim=1), torch.argmin(d, dim=0)
    keep = torch.zeros_like(n12)
    for i in range(len(n12)):
        if n21[n12[i]] == i:
            keep[i] = 1
    return torch.min(d, dim=1)[0][keep == 1].mean().item()


@pytest.mark.parametrize("seed,grid,size", [(0, (6, 6), (90, 130)), (1, (5, 7), (64, 64)),
                                            (2, (9, 9), (200, 150))])
def test_masked_distance_matches_official(seed, grid, size):
    rng = np.random.default_rng(seed)
    C = 5
    f1 = rng.normal(size=grid + (C,))
    f2 = rng.normal(size=grid + (C,))
    f1[: grid[0] // 2, :, 1] = 0.0           # exact zeros survive the resize: -100000
    f2[:, :2, 3] = 0.0
    H, W = size
    m1 = (rng.random((H, W)) < 0.4).astype(np.float64)
    m2 = np.zeros((H, W))
    m2[H // 4: 3 * H // 4, W // 3:] = 1.0    # a box: the target has background cells
    ref = _official_masked(torch.tensor(f1), torch.tensor(f2), torch.tensor(m1),
                           torch.tensor(m2))
    g1 = foreground_grid((64, 64), (W, H), mask=m1)
    g2 = foreground_grid((64, 64), (W, H), mask=m2)
    got = E.pose_distance(f1, f2, "masked", g1, g2)
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-9)
    # the 64x64 masks are the official nearest resize of the full-resolution masks
    np.testing.assert_array_equal(
        g1, F.interpolate(torch.tensor(m1)[None, None], size=(64, 64),
                          mode="nearest").squeeze().numpy() == 1)


def test_masked_distance_empty_target_matches_official():
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(4, 4, 3)), rng.normal(size=(4, 4, 3))
    m1, m2 = np.ones((20, 20)), np.zeros((20, 20))
    ref = _official_masked(torch.tensor(f1), torch.tensor(f2), torch.tensor(m1),
                           torch.tensor(m2))
    got = E.pose_distance(f1, f2, "masked", foreground_grid((64, 64), (20, 20), mask=m1),
                          foreground_grid((64, 64), (20, 20), mask=m2))
    assert got == pytest.approx(ref, rel=1e-9) and got > 1e5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutual_nn_distance_matches_official(seed):
    rng = np.random.default_rng(seed)
    f1 = rng.normal(size=(6, 6, 4)) * rng.uniform(0.5, 3.0, size=(6, 6, 1))
    f2 = rng.normal(size=(6, 6, 4))
    ref = _official_mutual(torch.tensor(f1), torch.tensor(f2))
    assert E.pose_distance(f1, f2, "mutual-nn") == pytest.approx(ref, rel=1e-9, abs=1e-12)


def _official_permute(groups, vis=None):
    """permute_indices: each listed group is rotated by one, when all of it is
    visible (or vis is None)."""
    flat = [i for g in groups for i in (g if isinstance(g, list) else [g])]
    idx = list(range(max(flat) + 1))
    for g in groups:
        if isinstance(g, list) and (vis is None or all(vis[i] for i in g)):
            for j in range(len(g)):
                idx[g[j]] = g[(j + 1) % len(g)]
    return idx


def test_replacement_rule_matches_optimized_kps_1_to_2():
    groups = [[0, 1], 2, [3, 5], 4, [6, 7]]
    perm = np.array(_official_permute(groups))
    rng = np.random.default_rng(5)
    for _ in range(200):
        sv = rng.random(8) < 0.6
        tv = rng.random(8) < 0.6
        vis = sv & tv
        # optimized_kps_1_to_2: the source keypoints times co-visibility, flipped
        # with the full permutation; vis_flip = flipped[:, 2] * trg_vis * src_vis
        col = vis.astype(float)[perm]
        ref = col * tv * sv > 0
        np.testing.assert_array_equal(E.flip_replacement(sv, tv, perm), ref)
        # the rows replaced come from the mirror of perm[k] in the official
        # prediction as well (its vis-gated permutation agrees on them)
        gated = np.array(_official_permute(groups, vis))
        np.testing.assert_array_equal(gated[ref], perm[ref])


def test_normalisation_epsilon_matches_official():
    # descriptors of norm ~1e-10 are shrunk by |x| / (|x| + 1e-10), not made unit
    rng = np.random.default_rng(6)
    f1 = rng.normal(size=(4, 4, 3))
    f1[:2] *= 1e-10 / np.linalg.norm(f1[:2], axis=-1, keepdims=True)
    f2 = rng.normal(size=(4, 4, 3))
    f2[1:3] *= 3e-10 / np.linalg.norm(f2[1:3], axis=-1, keepdims=True)
    ref = _official_mutual(torch.tensor(f1), torch.tensor(f2))
    assert E.pose_distance(f1, f2, "mutual-nn") == pytest.approx(ref, rel=1e-9)
    m = np.ones((16, 16))
    ref = _official_masked(torch.tensor(f1), torch.tensor(f2), torch.tensor(m), torch.tensor(m))
    g = foreground_grid((64, 64), (16, 16), mask=m)
    assert E.pose_distance(f1, f2, "masked", g, g) == pytest.approx(ref, rel=1e-9)
