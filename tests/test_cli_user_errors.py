"""Every CLI user error is one line on stderr, a non-zero exit and no
traceback (issue 14, items 3 and 9).

Each invocation runs ``python -m geomatch`` in its own subprocess with a
timeout, on small real-format data: a synthetic SPair-layout dataset, a
feature cache and random DINOv2 weights of a tiny architecture written as
``.safetensors``.
"""
import errno
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_safetensors(path, state):
    header, blobs, off = {}, [], 0
    for k, v in state.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from geomatch.backbone.dinov2 import DinoV2Config
    from geomatch.data import load_dataset
    from geomatch.data.cache import FeatureCache
    from geomatch.demo.synthetic import generate_spair_like

    d = tmp_path_factory.mktemp("cli")
    root = d / "spair"
    generate_spair_like(root, n_images_per_category=6, n_pairs=2, categories=["dog"],
                        size=(64, 48))
    ds = load_dataset("spair", root)
    manifest = dict(backbone="test", weights_sha256="", resolution=[28, 28],
                    preprocess="resize", grid=[2, 2], dim=4, dtype="float32")
    rng = np.random.default_rng(0)
    with FeatureCache.create(d / "cache", manifest) as cache:
        for split in ("trn", "val", "test"):
            for rec in ds.images(split):
                cache.put(rec.key, rng.standard_normal((2, 2, 4)).astype(np.float32))
                cache.put(rec.key, rng.standard_normal((2, 2, 4)).astype(np.float32),
                          flipped=True)
    cfg = DinoV2Config(embed_dim=64, depth=2, num_heads=1, pos_grid=2)
    state = {k: (rng.standard_normal(s) * 0.02).astype(np.float32)
             for k, s in cfg.expected_shapes().items()}
    _write_safetensors(d / "tiny.safetensors", state)
    (d / "existing_file").write_text("x")
    return d


def _cli(args, d, extra_code=""):
    code = textwrap.dedent(extra_code) + textwrap.dedent("""
        import sys
        from geomatch.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = dict(os.environ, PYTHONPATH=ROOT, GEOMATCH_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    img = sorted(os.listdir(os.path.join(d, "spair", "JPEGImages", "dog")))[0]
    argv = [a.format(d=d, img=img) for a in args]
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=180, env=env, cwd=str(d))


_EXTRACT = ["extract", "--dataset", "spair", "--root", "{d}/spair",
            "--weights", "{d}/tiny.safetensors", "--out", "{d}/feats"]
_TRAIN = ["train", "--dataset", "spair", "--root", "{d}/spair", "--cache", "{d}/cache",
          "--out", "{d}/run", "--steps", "2"]
_EVAL = ["eval", "--dataset", "spair", "--root", "{d}/spair", "--cache", "{d}/cache"]

CASES = [
    ("threads-huge", ["--threads", "100000", "config"], "--threads"),
    ("threads-zero", ["--threads", "0", "config"], "--threads"),
    ("threads-not-int", ["--threads", "many", "config"], "--threads"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("size-zero", _EXTRACT + ["--size", "0"], "--size"),
    ("size-huge", _EXTRACT + ["--size", "140000"], "--size"),
    ("size-not-multiple", _EXTRACT + ["--size", "100"], "--size"),
    ("match-size-zero", ["match", "{d}/spair/JPEGImages/dog/{img}", "{d}/spair/JPEGImages/dog/{img}",
                         "--weights", "{d}/tiny.safetensors", "--out", "{d}/m", "--size", "0"],
     "--size"),
    ("match-size-huge", ["match", "{d}/spair/JPEGImages/dog/{img}", "{d}/spair/JPEGImages/dog/{img}",
                         "--weights", "{d}/tiny.safetensors", "--out", "{d}/m", "--size",
                         "140000"], "--size"),
    ("weights-missing", ["extract", "--dataset", "spair", "--root", "{d}/spair",
                         "--weights", "{d}/nope.pth", "--out", "{d}/feats"], "nope.pth"),
    ("weights-junk", ["extract", "--dataset", "spair", "--root", "{d}/spair",
                      "--weights", "{d}/existing_file", "--out", "{d}/feats"], "existing_file"),
    ("weights-other-model", _EXTRACT + ["--model", "vits14"], "tiny.safetensors"),
    ("root-missing", ["extract", "--dataset", "spair", "--root", "{d}/no_root",
                      "--weights", "{d}/tiny.safetensors", "--out", "{d}/feats"], "no_root"),
    ("val-every-zero", _TRAIN + ["--val-every", "0"], "val_every"),
    ("train-out-is-file", _TRAIN[:-4] + ["--out", "{d}/existing_file", "--steps", "1"],
     "existing_file"),
    ("eval-out-existing-file", _EVAL + ["--out", "{d}/existing_file"], "existing_file"),
    ("eval-head-missing", _EVAL + ["--head", "{d}/nohead.npz", "--out", "{d}/ev"],
     "nohead.npz"),
    ("eval-cache-missing", ["eval", "--dataset", "spair", "--root", "{d}/spair",
                            "--cache", "{d}/nocache"], "nocache"),
]


@pytest.mark.parametrize("name, args, needle", CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line(data, name, args, needle):
    r = _cli(args, data)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], lines[0]
    assert len(lines[0]) < 1000, len(lines[0])


def test_full_disk_during_extract_names_the_file(data):
    """write_array raising ENOSPC (a full disk): one line naming the cache file."""
    patch = f"""
        import errno, numpy as np
        def full(*a, **k):
            raise OSError({errno.ENOSPC}, "No space left on device")
        np.lib.format.write_array = full
    """
    r = _cli(_EXTRACT[:-1] + ["{d}/feats_full", "--size", "28"], data, patch)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert "No space left on device" in lines[0]
    assert os.path.join(str(data), "feats_full", "features") in lines[0], lines[0]


def test_internal_errors_keep_their_traceback(data):
    """A bug (not a user error) still shows the traceback."""
    patch = """
        import geomatch.eval.evaluate as ev
        def boom(*a, **k):
            raise ZeroDivisionError("internal")
        ev.evaluate = boom
    """
    r = _cli(_EVAL + ["--out", "{d}/ev2"], data, patch)
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr


def test_size_policy_in_the_api():
    from geomatch.backbone.preprocess import MAX_INPUT_SIZE, check_input_size, make_frame

    assert MAX_INPUT_SIZE == 2072
    assert check_input_size(2072) == 2072
    for bad in (0, -14, 100, 2086, 140000):
        with pytest.raises(ValueError, match="size"):
            check_input_size(bad)
        with pytest.raises(ValueError, match="size"):
            make_frame((640, 480), "resize", bad)
    with pytest.raises(TypeError, match="size"):
        check_input_size(518.0)
    assert make_frame((640, 480), "resize").input_size == (518, 518)
    assert make_frame((640, 480), "pad").input_size == (840, 840)


def test_matcher_size_policy(data):
    import geomatch as gm

    for bad in (0, 140000):
        with pytest.raises(ValueError, match="size"):
            gm.Matcher(str(data / "tiny.safetensors"), size=bad)
    assert gm.Matcher(str(data / "tiny.safetensors"), size=28).size == 28
