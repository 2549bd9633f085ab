"""Feature cache: permissions, damaged files, concurrent creation (issue 14, item 8)."""
import errno
import json
import multiprocessing as mp
import os
import stat

import numpy as np
import pytest

from geomatch.data.cache import FeatureCache


def _manifest(**kw):
    m = {"backbone": "dinov2_vitb14", "weights_sha256": "ab" * 32, "resolution": [28, 28],
         "preprocess": "resize", "grid": [2, 2], "dim": 3, "dtype": "float32"}
    m.update(kw)
    return m


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with FeatureCache.create(tmp_path / "c", _manifest()) as c:
            c.put("cat/a", np.ones((2, 2, 3), np.float32))
            c.put("cat/a", np.ones((2, 2, 3), np.float32), flipped=True)
    finally:
        os.umask(old)
    files = [tmp_path / "c" / "manifest.json", tmp_path / "c" / "index.json"]
    files += sorted((tmp_path / "c" / "features").iterdir())
    assert len(files) == 4
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, (f, oct(f.stat().st_mode))


def test_truncated_npy_names_the_file(tmp_path):
    c = FeatureCache.create(tmp_path / "c", _manifest())
    c.put("cat/a", np.ones((2, 2, 3), np.float32))
    f = next((tmp_path / "c" / "features").iterdir())
    data = f.read_bytes()
    for cut in (len(data) - 8, 100, 20):
        f.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=str(f.name).replace("%", ".")):
            c.get("cat/a")


@pytest.mark.parametrize("content", [b"\x80\x81\xfe\xff" * 50, b"\x00" * 10, b"[" * 100000],
                         ids=["binary", "nul", "deep"])
def test_garbled_manifest_names_the_file(tmp_path, content):
    d = tmp_path / "c"
    FeatureCache.create(d, _manifest())
    (d / "manifest.json").write_bytes(content)
    with pytest.raises(ValueError, match="manifest.json"):
        FeatureCache.open(d)
    with pytest.raises(ValueError, match="manifest.json"):
        FeatureCache.create(d, _manifest())


def test_full_disk_names_the_file(tmp_path, monkeypatch):
    c = FeatureCache.create(tmp_path / "c", _manifest())

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np.lib.format, "write_array", full)
    with pytest.raises(OSError) as ei:
        c.put("cat/a", np.ones((2, 2, 3), np.float32))
    assert ei.value.errno == errno.ENOSPC
    assert "cat%2Fa.npy" in str(ei.value)
    # no temporary file left behind
    assert os.listdir(tmp_path / "c" / "features") == []


def _racer(idx, root, trials, barrier, queue):
    from geomatch.data.cache import FeatureCache as FC

    for t in range(trials):
        barrier.wait()
        try:
            FC.create(os.path.join(root, f"t{t}"), _manifest(weights_sha256=f"{idx}" * 64))
            queue.put((t, idx, "ok"))
        except ValueError as exc:
            queue.put((t, idx, "refused" if "different manifest" in str(exc) else repr(exc)))
        except Exception as exc:  # reported, then the test fails on it
            queue.put((t, idx, repr(exc)))


def test_concurrent_creation_exactly_one_wins(tmp_path):
    trials, n = 40, 3
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(i, str(tmp_path), trials, barrier, queue))
             for i in range(n)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(trials * n):
            t, idx, what = queue.get(timeout=120)
            results.setdefault(t, {})[idx] = what
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for t in range(trials):
        outcome = results[t]
        winners = [i for i, w in outcome.items() if w == "ok"]
        assert len(winners) == 1 and sorted(outcome.values()).count("refused") == n - 1, \
            (t, outcome)
        with open(tmp_path / f"t{t}" / "manifest.json") as f:
            assert json.load(f)["weights_sha256"] == f"{winners[0]}" * 64


def test_atomic_file_follows_the_umask_without_changing_it(tmp_path, monkeypatch):
    """geomatch.runtime.files.atomic_file (viewer pages, safetensors files, the
    cache's JSON files) gets the umask's permissions without setting the
    process-wide umask, which would race with threads creating files."""
    from geomatch.runtime import files

    old = os.umask(0o027)
    try:
        def no_umask(*a):
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", no_umask)
        with files.atomic_file(tmp_path / "a.json") as f:
            f.write("{}")
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["a.json"]
