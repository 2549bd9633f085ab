"""Scale-out: extract and eval on a Dask LocalCluster of 2 worker processes
(byte-identical to a single-process run, also after a worker is killed),
``--shard I/N``, bad scheduler addresses and paths that workers cannot see.

The cluster tests share one LocalCluster (module fixture) and use the tiny
SPair-71k tree and random-weight model of test_backbone_extract.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from geomatch.backbone.extract import BackboneSpec, extract_features, parse_shard, shard_of
from geomatch.backbone.extract import weights_sha256
from geomatch.cli import main
from geomatch.data import load_dataset
from geomatch.data.cache import FeatureCache
from geomatch.runtime.distributed import parse_address
from test_backbone_extract import SMALL, _image, _random_state

ROOT = Path(__file__).resolve().parents[1]


def _files(path):
    """{relative path: bytes} of every file under path (tmp files excluded)."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and not p.name.startswith(".tmp-"):
            out[str(p.relative_to(path))] = p.read_bytes()
    return out


@pytest.fixture
def more_images(spair):
    """Six more cat images (nine in all), so the cluster has work to spread."""
    for i in range(6):
        p = spair / "JPEGImages" / "cat" / f"x{i}.jpg"
        Image.fromarray(_image(30 + 3 * i, 40 - i, 100 + i)).save(p)
    return spair


def _records(root):
    from types import SimpleNamespace

    recs = load_dataset("spair", root).images_of_splits(["test"])
    for p in sorted((root / "JPEGImages" / "cat").glob("x*.jpg")):
        recs.append(SimpleNamespace(key=f"cat/{p.stem}", path=str(p)))
    return recs


# --------------------------------------------------------------------------
# no cluster needed


def test_parse_address():
    assert parse_address("local:2") == ("local", 2)
    assert parse_address("tcp://10.1.2.3:8786") == ("remote", "tcp://10.1.2.3:8786")
    assert parse_address("node7:8786") == ("remote", "tcp://node7:8786")
    for bad in ("", "local:0", "local:x", "local", "tcp://host", "tcp://:8786"):
        with pytest.raises(ValueError, match="address"):
            parse_address(bad)


def test_worker_cached_loads_once_and_keeps_the_latest_of_each_kind():
    from geomatch.runtime import distributed as D

    calls = []

    def make(v):
        return lambda: calls.append(v) or v

    kind = f"test-kind-{time.time_ns()}"
    assert D.worker_cached((kind, 1), make(1)) == 1
    assert D.worker_cached((kind, 1), make(99)) == 1            # cached: no call
    assert D.worker_cached((kind + "-other", 1), make(2)) == 2   # another kind
    assert D.worker_cached((kind, 2), make(3)) == 3             # replaces (kind, 1)
    assert D.worker_cached((kind + "-other", 1), make(98)) == 2  # other kind kept
    assert D.worker_cached((kind, 1), make(4)) == 4             # was dropped: built again
    assert calls == [1, 2, 3, 4]
    assert D.worker_cached((kind, 5), make(5), keep=2) == 5
    assert D.worker_cached((kind, 1), make(97)) == 4            # kept with keep=2
    assert D.FACTORY_CALLS[(kind, 1)] == 2


def test_shard_partition_is_fixed_disjoint_and_complete():
    keys = [f"cat/{i:04d}" for i in range(200)] + ["dog/a b", "x%2F/y"]
    n = 5
    parts = [{k for k in keys if shard_of(k, n) == i} for i in range(n)]
    assert set().union(*parts) == set(keys)
    assert sum(len(p) for p in parts) == len(keys)
    assert all(len(p) > 10 for p in parts)          # none empty at this size
    # a fixed function of the key: another list (subset, other order) agrees
    sub = keys[::-7]
    assert all(shard_of(k, n) == next(i for i, p in enumerate(parts) if k in p) for k in sub)
    # independent reference: first 8 bytes of SHA-256, big-endian, mod n
    import hashlib
    k = "cat/0007"
    assert shard_of(k, 3) == int(hashlib.sha256(k.encode()).hexdigest()[:16], 16) % 3
    assert parse_shard("2/4") == (2, 4) and parse_shard((0, 1)) == (0, 1) and parse_shard(None) is None
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b", "1/2/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_shards_compose_to_a_full_run(more_images, weights, tmp_path):
    recs = _records(more_images)
    spec = BackboneSpec(str(weights), sha256=weights_sha256(weights))
    kw = dict(preprocess="pad", size=56, progress=False)
    full = extract_features(recs, spec, tmp_path / "full", **kw)
    assert full["computed"] == len(recs) == 9
    counts = []
    for i in range(3):
        r = extract_features(recs, spec, tmp_path / "sharded", shard=f"{i}/3", **kw)
        counts.append(r["computed"])
    assert sum(counts) == len(recs)
    assert _files(tmp_path / "sharded") == _files(tmp_path / "full")


def test_shards_running_at_once_into_one_cache(spair, weights, tmp_path):
    """Three shard jobs started together (as a SLURM array does) on one new
    cache: the manifest, the features and the index equal a full run's."""
    code = "import sys; from geomatch.cli import main; sys.exit(main(sys.argv[1:]))"
    base = ["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
            "--weights", str(weights), "--size", "42"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", code, *base, "--out", str(tmp_path / "s"),
                               "--shard", f"{i}/3"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert main(base + ["--out", str(tmp_path / "full")]) == 0
    sharded = FeatureCache.open(tmp_path / "s")          # opening rebuilds the index
    assert sharded.keys() == FeatureCache.open(tmp_path / "full").keys()
    assert _files(tmp_path / "s") == _files(tmp_path / "full")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_fails_fast_and_writes_nothing(spair, weights, tmp_path, capsys):
    pytest.importorskip("distributed", reason="Dask is an optional extra (geomatch[dask])")
    out = tmp_path / "cache"
    addr = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc = main(["extract", "--dataset", "spair", "--root", str(spair), "--weights", str(weights),
               "--out", str(out), "--dask", addr])
    assert rc == 1 and time.monotonic() - t0 < 60   # (only a hang guard)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Dask scheduler" in err[0] and addr in err[0]
    assert not out.exists()
    assert main(["eval", "--dataset", "spair", "--root", str(spair), "--cache", str(out),
                 "--dask", "local:0"]) == 1
    assert "local:0" in capsys.readouterr().err


def test_silent_server_is_not_waited_on_forever(run_python):
    """A port that accepts connections but never answers (a hung scheduler, a
    firewall): connect gives up after its timeout."""
    pytest.importorskip("distributed", reason="Dask is an optional extra (geomatch[dask])")
    from geomatch.runtime.distributed import connect

    script = (
        "import socket\n"
        "from geomatch.runtime.distributed import connect\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n"
        "addr = 'tcp://127.0.0.1:%d' % s.getsockname()[1]\n"
        "try:\n"
        "    connect(addr, timeout=1.5)\n"
        "except ConnectionError as e:\n"
        "    print('refused:', e)\n")
    r = run_python(script)
    assert "refused: cannot reach the Dask scheduler" in r.stdout, r.stderr[-2000:]
    assert "no answer" in r.stdout
    with pytest.raises(ConnectionError, match="cannot reach"):
        connect(f"tcp://127.0.0.1:{_free_port()}", timeout=1.0)


def test_cli_rejects_torch_options_without_torch_engine(spair, weights, tmp_path, capsys):
    rc = main(["extract", "--dataset", "spair", "--root", str(spair), "--weights", str(weights),
               "--out", str(tmp_path / "c"), "--device", "cuda"])
    assert rc == 1 and "--engine torch" in capsys.readouterr().err
    rc = main(["extract", "--dataset", "spair", "--root", str(spair), "--weights", str(weights),
               "--out", str(tmp_path / "c"), "--shard", "3/3"])
    assert rc == 1 and "shard" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------------------
# on a LocalCluster of 2 processes


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed",
                                      reason="Dask is an optional extra (geomatch[dask])")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _kill_once(client, marker, prefix):
    """Register a worker plugin: the first task whose key starts with
    ``prefix`` to start executing on any worker kills that worker's process
    (once: the marker file records it)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnce(WorkerPlugin):   # defined here: pickled by value to the workers
        def __init__(self, marker, prefix):
            self.marker, self.prefix = str(marker), prefix

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith(self.prefix):
                try:
                    fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return
                os.write(fd, str(key).encode())
                os.close(fd)
                os._exit(1)

    client.register_plugin(KillOnce(marker, prefix), name=f"kill-{Path(marker).name}")


def test_extract_on_cluster_is_byte_identical_also_after_a_worker_dies(
        client, more_images, weights, tmp_path):
    recs = _records(more_images)
    sha = weights_sha256(weights)
    kw = dict(preprocess="pad", size=56, progress=False)
    ref = extract_features(recs, BackboneSpec(str(weights), sha256=sha), tmp_path / "ref", **kw)
    assert ref["computed"] == 9
    want = _files(tmp_path / "ref")
    assert len(want) == 2 + 18   # manifest, index, 9 images and their flips

    spec = BackboneSpec(str(weights), sha256=sha)
    res = extract_features(recs, spec, tmp_path / "dask", client=client, **kw)
    assert res["computed"] == 9 and res["engine"] == "c"
    assert _files(tmp_path / "dask") == want
    # weights loaded once per worker process, whatever the number of its tasks
    def loads():
        from geomatch.runtime.distributed import FACTORY_CALLS
        return FACTORY_CALLS.get(("backbone", spec), 0)

    loaded = client.run(loads)
    assert len(loaded) == 2 and all(v <= 1 for v in loaded.values())
    assert sum(loaded.values()) >= 1

    # a worker dies at the start of a task: Dask reruns it elsewhere
    marker = tmp_path / "killed"
    _kill_once(client, marker, "extract_task")
    res = extract_features(recs, spec, tmp_path / "killed-run", client=client, batch_size=2, **kw)
    assert marker.exists(), "no worker was killed"
    assert res["computed"] == 9
    assert _files(tmp_path / "killed-run") == want
    client.wait_for_workers(2, timeout=60)

    # an interrupted run resumes from what the cache holds
    part = tmp_path / "partial"
    extract_features(recs[:4], spec, part, client=client, **kw)
    res = extract_features(recs, spec, part, client=client, **kw)
    assert (res["computed"], res["skipped"]) == (5, 4)
    assert _files(part) == want


def test_connect_to_a_running_scheduler(client):
    from geomatch.runtime.distributed import close, connect, n_workers

    c = connect(client.scheduler.address, timeout=10)
    try:
        assert n_workers(c) == 2
        assert c.submit(sum, [1, 2]).result() == 3
    finally:
        close(c)


def test_extract_on_cluster_in_memory_model_and_cli(client, spair, weights, tmp_path, capsys):
    from geomatch.backbone import DinoV2

    recs = _records(spair)
    model = DinoV2(SMALL, _random_state(SMALL))   # no file: sent to each worker
    kw = dict(preprocess="resize", size=42, progress=False, sha256="x")
    extract_features(recs, model, tmp_path / "a", **kw)
    extract_features(recs, model, tmp_path / "b", client=client, **kw)
    assert _files(tmp_path / "b") == _files(tmp_path / "a")


def test_worker_that_cannot_see_a_path_names_it_and_itself(client, spair, weights, tmp_path):
    from types import SimpleNamespace

    recs = _records(spair)
    spec = BackboneSpec(str(weights), sha256=weights_sha256(weights))
    bad = recs[:1] + [SimpleNamespace(key="cat/gone", path=str(tmp_path / "gone.jpg"))]
    with pytest.raises(FileNotFoundError) as ei:
        extract_features(bad, spec, tmp_path / "c", client=client, preprocess="pad", size=56,
                         progress=False)
    msg = str(ei.value)
    assert "gone.jpg" in msg and "on worker tcp://127.0.0.1:" in msg
    # weights the workers cannot see (the digest was taken elsewhere)
    ghost = BackboneSpec(str(tmp_path / "elsewhere.safetensors"), sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="elsewhere.safetensors") as ei:
        extract_features(recs, ghost, tmp_path / "d", client=client, progress=False)
    assert "on worker" in str(ei.value) and not (tmp_path / "d").exists()
    # eval: a cache path the workers cannot see
    from geomatch.eval.evaluate import transfer_block

    fut = client.submit(transfer_block, [], str(tmp_path / "nocache"), {}, None, "grid-argmax")
    with pytest.raises(FileNotFoundError, match="nocache") as ei:
        fut.result()
    assert "on worker tcp://" in str(ei.value)
    # a file of other bytes at the weights path is refused by its digest
    other = BackboneSpec(str(weights), sha256="f" * 64)
    with pytest.raises(ValueError, match="SHA-256"):
        extract_features(recs, other, tmp_path / "e", client=client, progress=False)


def test_worker_that_cannot_read_an_image_names_it_and_itself(client, spair, weights, tmp_path):
    """QA: an image file PIL cannot read (an OSError, not FileNotFoundError)
    came back without the worker's name."""
    from types import SimpleNamespace

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    recs = _records(spair)[:1] + [SimpleNamespace(key="cat/junk", path=str(junk))]
    spec = BackboneSpec(str(weights), sha256=weights_sha256(weights))
    with pytest.raises(OSError) as ei:
        extract_features(recs, spec, tmp_path / "c", client=client, preprocess="pad", size=56,
                         progress=False)
    msg = str(ei.value)
    assert "junk.jpg" in msg and "on worker tcp://127.0.0.1:" in msg


def test_eval_on_cluster_matches_single_process(client, more_images, weights, tmp_path):
    from geomatch.eval.evaluate import evaluate

    root = more_images
    recs = _records(root)
    spec = BackboneSpec(str(weights), sha256=weights_sha256(weights))
    extract_features(recs, spec, tmp_path / "cache", preprocess="pad", size=56, progress=False)
    ds = load_dataset("spair", root)
    ref = evaluate(ds, "test", tmp_path / "cache", out_dir=tmp_path / "ref", progress=False,
                   workers=1)
    marker = tmp_path / "killed-eval"
    _kill_once(client, marker, "transfer_block")
    got = evaluate(ds, "test", tmp_path / "cache", out_dir=tmp_path / "dask", progress=False,
                   workers=1, client=client)
    assert marker.exists(), "no worker was killed"
    client.wait_for_workers(2, timeout=60)
    assert got.n_pairs == ref.n_pairs == 2
    for name in ("results.csv", "results.md"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((tmp_path / "dask" / "results.json").read_text())
    a.pop("elapsed_s"), b.pop("elapsed_s")     # wall-clock time, the only field allowed to differ
    assert a == b
    # with a head checkpoint: loaded once per worker, the same scores
    from geomatch.model import head as head_mod

    cfg = head_mod.HeadConfig(in_dim=128, dim=8, out_dim=6, num_heads=2, num_blocks=1,
                              mlp_dim=16)
    hpath = tmp_path / "head.npz"
    head_mod.AttentionHead(cfg, seed=1).save(hpath)
    kw = dict(head=str(hpath), mode="grid-argmax", progress=False, workers=1)
    ref_h = evaluate(ds, "test", tmp_path / "cache", **kw)
    got_h = evaluate(ds, "test", tmp_path / "cache", client=client, **kw)
    assert got_h.to_dict(per_pair=True)["pairs"] == ref_h.to_dict(per_pair=True)["pairs"]
    assert got_h.summary == ref_h.summary
    assert got_h.to_dict()["summary"] != a["summary"]   # the head did change the features

    def head_loads():
        from geomatch.runtime.distributed import FACTORY_CALLS
        return sum(n for k, n in FACTORY_CALLS.items() if k[0] == "head")

    assert all(n <= 1 for n in client.run(head_loads).values())


def test_extract_and_eval_cli_on_local_cluster(spair, weights, tmp_path, capsys):
    pytest.importorskip("distributed", reason="Dask is an optional extra (geomatch[dask])")
    base = ["--threads", "1"]
    ext = ["extract", "--dataset", "spair", "--root", str(spair), "--weights", str(weights),
           "--size", "42"]
    assert main(base + ext + ["--out", str(tmp_path / "c1")]) == 0
    assert main(base + ext + ["--out", str(tmp_path / "c2"), "--dask", "local:2"]) == 0
    assert "3 images featurized" in capsys.readouterr().out.splitlines()[-1]
    assert _files(tmp_path / "c2") == _files(tmp_path / "c1")
    outs = {}
    for name, extra in (("one", []), ("dask", ["--dask", "local:2"])):
        outs[name] = tmp_path / name
        assert main(base + ["eval", "--dataset", "spair", "--root", str(spair), "--cache",
                            str(tmp_path / "c1"), "--out", str(outs[name]), "--no-progress",
                            "--workers", "1"] + extra) == 0
    capsys.readouterr()
    for f in ("results.csv", "results.md"):
        assert (outs["one"] / f).read_bytes() == (outs["dask"] / f).read_bytes()
