"""The evaluation's fast path: pairs grouped by target image, one C call per
group (geomatch._core.transfer_upsample_argmax_group) on the cache's float16
maps as they are, read on the worker threads through one thread-safe LRU.  Its predictions must be those
of the per-pair path (a transfer function passed explicitly), bit for bit,
for any order of the pairs, any LRU size and any number of workers."""
from types import SimpleNamespace

import numpy as np
import pytest

import geomatch as gm
from geomatch.data.cache import FeatureCache
from geomatch.eval import evaluate as E

GRID, DIM, K = (6, 5), 24, 7


def _dataset(n_images=9, n_pairs=40, seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        w, h = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        vis = rng.random(K) < (0.0 if i == 3 else 0.7)     # image 3: nothing visible
        kps = np.stack([rng.uniform(0, w, K), rng.uniform(0, h, K)], 1).astype(np.float32)
        kps[~vis] = np.nan
        images.append(SimpleNamespace(dataset="t", category="c", key=f"c/i{i}", path=None,
                                      size=(w, h), keypoints=kps, visible=vis,
                                      bbox=np.array([0, 0, w, h], np.float32),
                                      mask_path=None))
    pairs = []
    for j in range(n_pairs):
        a, b = rng.choice(n_images, 2, replace=False)
        pairs.append(SimpleNamespace(dataset="t", split="test", category="c",
                                     pair_id=f"{j:03d}", src=images[a], trg=images[b],
                                     keypoint_names=tuple(f"k{k}" for k in range(K)),
                                     flip_perm=np.arange(K), meta={}))

    class Dataset:
        name = "t"
        skipped = 0

        def pairs(self, split, categories=None, subsample=None, seed=0):
            return pairs

    return Dataset(), images


@pytest.fixture
def setup(tmp_path):
    ds, images = _dataset()
    manifest = dict(backbone="random", weights_sha256="0" * 64, resolution=[84, 70],
                    preprocess="resize", grid=list(GRID), dim=DIM, dtype="float16")
    cache = FeatureCache.create(str(tmp_path / "cache"), manifest)
    rng = np.random.default_rng(1)
    base = rng.standard_normal(GRID + (DIM,))
    for rec in images:
        cache.put(rec.key, (0.7 * base + rng.standard_normal(GRID + (DIM,))).astype(np.float32))
    cache.flush()
    return ds, cache


def _preds(res):
    return np.stack([p.pred for p in res.predictions])


def test_grouped_path_is_the_per_pair_path(setup):
    ds, cache = setup
    ref = E.evaluate(ds, "test", cache, mode="upsample-argmax", progress=False, workers=1,
                     transfer=gm.transfer_keypoints)           # the per-pair path
    assert E._groupable(None, SimpleNamespace(mode="upsample-argmax", test_flip="off"))
    assert not E._groupable(gm.transfer_keypoints,
                            SimpleNamespace(mode="upsample-argmax", test_flip="off"))
    for workers in (1, 2):
        for lru in (768 << 20, 3 * 4 * DIM * GRID[0] * GRID[1]):   # 3 maps: evictions
            res = E.evaluate(ds, "test", cache, mode="upsample-argmax", progress=False,
                             workers=workers, lru_bytes=lru)
            np.testing.assert_array_equal(_preds(res), _preds(ref))
            assert [p.pair_id for p in res.predictions] == [p.pair_id for p in
                                                            ref.predictions]
            assert res.overall == ref.overall


def test_target_order_and_groups():
    ds, _ = _dataset(n_images=5, n_pairs=30, seed=3)
    pairs = ds.pairs("test")
    order = E._target_order(pairs)
    assert sorted(order) == list(range(len(pairs)))
    keys = [pairs[i].trg.key for i in order]
    # each target's pairs are contiguous, in input order, targets by first use
    firsts = list(dict.fromkeys(p.trg.key for p in pairs))
    assert keys == [k for k in firsts for _ in range(sum(p.trg.key == k for p in pairs))]
    for k in firsts:
        idx = [i for i in order if pairs[i].trg.key == k]
        assert idx == sorted(idx)
    groups = list(E._target_groups([pairs[i] for i in order]))
    assert sum(len(g) for g in groups) == len(pairs)
    assert all(len({p.trg.key for p in g}) == 1 and len(g) <= E._GROUP_MAX for g in groups)


def test_loader_buffers_reused_not_shared(setup):
    """A buffer is reused only once nothing else holds the evicted map."""
    ds, cache = setup
    one = 4 * DIM * GRID[0] * GRID[1]
    lru = E._FeatureLRU(cache, None, 2 * one)
    a = lru.get("c/i0")
    keep = a                                      # held: must not be overwritten
    before = a.copy()
    for i in range(1, 6):
        lru.get(f"c/i{i}")
    np.testing.assert_array_equal(keep, before)
    ref = np.asarray(cache.get("c/i5"), dtype=np.float32)
    np.testing.assert_array_equal(lru.get("c/i5"), ref)


def test_loader_refuses_nonfinite(tmp_path):
    manifest = dict(backbone="random", weights_sha256="0" * 64, resolution=[84, 70],
                    preprocess="resize", grid=list(GRID), dim=DIM, dtype="float16")
    cache = FeatureCache.create(str(tmp_path / "c"), manifest)
    cache.put("bad", np.zeros(GRID + (DIM,), np.float32))
    cache.flush()
    f = np.zeros(GRID + (DIM,), np.float16)
    f[1, 2, 3] = np.inf                           # a damaged file (put refuses these)
    np.save(cache._file("bad", False), f)
    with pytest.raises(ValueError, match="non-finite"):
        E._FeatureLRU(cache, None, 1 << 20).get("bad")


def test_loader_reads_files(setup):
    """float16 maps are read (not page-faulted through the mapping): as float32
    (NumPy's cast of the mapped array) or, for the grouped path, as float16
    (the file's values), each into its own array."""
    ds, cache = setup
    for half in (False, True):
        lru = E._FeatureLRU(cache, None, 1 << 30, half=half)
        got = [lru.get(f"c/i{i}") for i in range(6)]
        for i, g in enumerate(got):
            ref = np.asarray(cache.get(f"c/i{i}"))
            np.testing.assert_array_equal(g, ref.astype(np.float32) if not half else ref)
            assert g.dtype == (np.float16 if half else np.float32) and g.flags.c_contiguous
        assert len({id(g) for g in got}) == 6
    # a head's output is float32 whatever ``half`` says
    lru = E._FeatureLRU(cache, lambda f: np.asarray(f, np.float32) * 2, 1 << 30, half=True)
    np.testing.assert_array_equal(lru.get("c/i1"),
                                  2 * np.asarray(cache.get("c/i1"), np.float32))


def test_loader_refuses_nonfinite_half(tmp_path):
    manifest = dict(backbone="random", weights_sha256="0" * 64, resolution=[84, 70],
                    preprocess="resize", grid=list(GRID), dim=DIM, dtype="float16")
    cache = FeatureCache.create(str(tmp_path / "c"), manifest)
    for key in ("good", "bad"):
        cache.put(key, np.zeros(GRID + (DIM,), np.float32))
    cache.flush()
    f = np.zeros(GRID + (DIM,), np.float16)
    f[GRID[0] - 1, GRID[1] - 1, DIM - 1] = np.nan  # the last value: a damaged file
    np.save(cache._file("bad", False), f)
    lru = E._FeatureLRU(cache, None, 1 << 20, half=True)
    lru.get("good")                                # the header is learnt from this one
    with pytest.raises(ValueError, match="'bad' contain non-finite"):
        lru.get("bad")


def test_loader_threads(setup):
    """Many threads reading through one small LRU (evictions, reused buffers)
    get the right map every time."""
    from concurrent.futures import ThreadPoolExecutor

    ds, cache = setup
    refs = {f"c/i{i}": np.asarray(cache.get(f"c/i{i}")) for i in range(9)}
    one = 2 * DIM * GRID[0] * GRID[1]
    for half in (False, True):
        lru = E._FeatureLRU(cache, None, 2 * one, half=half)
        rng = np.random.default_rng(0)
        keys = [f"c/i{i}" for i in rng.integers(0, 9, 400)]

        def check(k):
            a = lru.get(k)
            b = a.copy()                           # held while other threads evict
            return k, b

        with ThreadPoolExecutor(4) as pool:
            for k, b in pool.map(check, keys):
                np.testing.assert_array_equal(b, refs[k].astype(b.dtype))


@pytest.mark.parametrize("preprocess", ["resize", "pad"])
def test_prepare_group_is_prepare_points(preprocess):
    """The group's keypoint preparation gives each pair's _prepare_points
    values exactly (frames, clipping at the image border, float32 rounding)."""
    ds, images = _dataset(n_images=12, n_pairs=60, seed=5)
    manifest = dict(preprocess=preprocess, resolution=[70, 70])
    pairs = ds.pairs("test")
    rng = np.random.default_rng(2)
    for rec in images[:4]:                         # keypoints on and beyond the border
        rec.keypoints[rng.random(K) < 0.5, 0] = rec.size[0]
        rec.keypoints[rng.random(K) < 0.3, 1] = -0.0
    for g in E._target_groups([pairs[i] for i in E._target_order(pairs)]):
        got = E._prepare_group(g, manifest)
        for pair, pts in zip(g, got):
            ref = E._prepare_points(pair.src.keypoints, pair.src.visible, pair.src.size,
                                    pair.trg.size, manifest)
            if ref is None:
                assert pts is None
                continue
            assert pts.kps.dtype == np.float32
            np.testing.assert_array_equal(pts.kps, ref.kps)
            np.testing.assert_array_equal(pts.vis, ref.vis)
            assert (pts.ssize, pts.tsize, pts.offset) == (ref.ssize, ref.tsize, ref.offset)
    # pairs with different keypoint counts go one by one
    a, b = pairs[0], pairs[1]
    b2 = SimpleNamespace(**{**vars(b), "src": SimpleNamespace(**{
        **vars(b.src), "keypoints": b.src.keypoints[:3], "visible": b.src.visible[:3]})})
    got = E._prepare_group([a, b2], manifest)
    ref = E._prepare_points(b2.src.keypoints, b2.src.visible, b2.src.size, b2.trg.size,
                            manifest)
    assert (got[1] is None) == (ref is None)
    if ref is not None:
        np.testing.assert_array_equal(got[1].kps, ref.kps)


def test_grouped_path_many_workers_tiny_lru(setup):
    ds, cache = setup
    ref = E.evaluate(ds, "test", cache, mode="upsample-argmax", progress=False, workers=1,
                     transfer=gm.transfer_keypoints)
    res = E.evaluate(ds, "test", cache, mode="upsample-argmax", progress=False, workers=4,
                     lru_bytes=1)
    np.testing.assert_array_equal(_preds(res), _preds(ref))




def test_heads_on_the_worker_threads(setup):
    """Maps are read (and head-transformed) on the workers: a callable that is
    not geomatch's AttentionHead is never run by two threads at once, and
    every head gives the same predictions whatever the number of workers."""
    import threading
    import time

    from geomatch.model.head import AttentionHead, HeadConfig

    ds, cache = setup
    state = {"in": 0, "overlap": 0}
    lock = threading.Lock()

    def fragile(f):                               # e.g. a head with a shared buffer
        with lock:
            state["in"] += 1
            state["overlap"] |= state["in"] > 1
        time.sleep(0.001)
        out = np.asarray(f, np.float32)[..., ::-1] * 2
        with lock:
            state["in"] -= 1
        return out

    head = AttentionHead(HeadConfig(in_dim=DIM, dim=16, out_dim=8, num_heads=2, mlp_dim=16,
                                    attn_dim=8), seed=0)
    for h in (fragile, head):
        ref = E.evaluate(ds, "test", cache, mode="upsample-argmax", progress=False,
                         workers=1, head=h)
        for workers in (2, 4):
            res = E.evaluate(ds, "test", cache, mode="upsample-argmax", progress=False,
                             workers=workers, head=h, lru_bytes=1)
            np.testing.assert_array_equal(_preds(res), _preds(ref))
    assert state["overlap"] == 0


def test_prefetch_hints(setup, monkeypatch):
    """Groups come out in order whatever the look-ahead; each group's maps
    not yet held are hinted to the OS once, ahead of their group, and
    FeatureCache.prefetch is a quiet no-op for a missing entry."""
    import os

    ds, cache = setup
    pairs = ds.pairs("test")
    groups = list(E._target_groups([pairs[i] for i in E._target_order(pairs)]))
    advised = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, off, n, how: advised.append((os.fstat(fd).st_ino, how)),
                        raising=False)
    for ahead in (0, 1, 3, 100):
        seen = []

        class Spy:
            def prefetch(self, g):
                seen.append(g)

        out = list(E._prefetched(iter(groups), Spy(), ahead))
        assert out == groups and seen == groups
    lru = E._FeatureLRU(cache, None, 1 << 30, half=True)
    lru.get("c/i0")
    lru.prefetch([p for p in pairs if p.trg.key == "c/i0" or p.src.key == "c/i0"][:1])
    inos = {os.stat(cache._file(k, False)).st_ino: k for k in cache.keys()}
    assert advised and all(how == os.POSIX_FADV_WILLNEED for _, how in advised)
    assert "c/i0" not in {inos[i] for i, _ in advised}      # held: not hinted
    cache.prefetch("no such key")                            # no error
