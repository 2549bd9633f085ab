"""``geomatch match``: outputs, agreement with gm.Matcher, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import geomatch as gm
from matcher_fixtures import write_images, write_weights

pytest.importorskip("PIL", reason="images are read with Pillow")
pytest.importorskip("matplotlib", reason="figures are drawn with matplotlib")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        GEOMATCH_NO_PROGRESS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "geomatch", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("matchcli")
    src, trg = write_images(str(d), sizes=((64, 50), (58, 70)))
    return str(d), src, trg, write_weights(str(d), "safetensors")


def test_match_writes_json_png_and_viewer(setup):
    d, src, trg, w = setup
    r = run("match", src, trg, "--weights", w, "--size", "112", "--points", "3,4", "40.5,20",
            "63,49", "--out", "out1", cwd=d)
    assert r.returncode == 0, r.stderr
    out = os.path.join(d, "out1")
    assert sorted(os.listdir(out)) == ["matches.json", "matches.png", "viewer.html"]
    doc = json.load(open(os.path.join(out, "matches.json")))
    assert set(doc) == {"source", "target", "points", "matches", "scores", "settings"}
    assert doc["points"] == [[3, 4], [40.5, 20], [63, 49]]
    want = gm.Matcher(w, size=112).match(src, trg, doc["points"])
    np.testing.assert_array_equal(doc["matches"], want.points)
    np.testing.assert_allclose(doc["scores"], want.scores, atol=1e-12)
    assert doc["settings"]["mode"] == "upsample-argmax"
    assert doc["settings"]["preprocess"] == "resize"
    from PIL import Image

    png = np.asarray(Image.open(os.path.join(out, "matches.png")).convert("RGB"))
    assert png.std() > 10
    html = open(os.path.join(out, "viewer.html"), encoding="utf-8").read()
    assert html.startswith("<!DOCTYPE html>") and "http://" not in html and "https://" not in html


def test_match_without_points_uses_a_grid_and_reads_points_files(setup):
    d, src, trg, w = setup
    r = run("match", src, trg, "--weights", w, "--size", "112", "--grid", "3", "--out", "g",
            "--preprocess", "pad", cwd=d)
    assert r.returncode == 0, r.stderr
    doc = json.load(open(os.path.join(d, "g", "matches.json")))
    assert len(doc["points"]) == 9
    # 3 x 3 cell centres of a 64 x 50 image, floored: x = 10, 32, 53 and y = 8, 25, 41
    assert doc["points"][:3] == [[10, 8], [32, 8], [53, 8]]
    assert doc["points"][-1] == [53, 41]
    with open(os.path.join(d, "pts.txt"), "w") as f:
        f.write("# x, y\n1,2\n10 20\n")
    r = run("match", src, trg, "--weights", w, "--size", "112", "--points-file", "pts.txt",
            "--out", "f", cwd=d)
    assert r.returncode == 0, r.stderr
    assert json.load(open(os.path.join(d, "f", "matches.json")))["points"] == [[1, 2], [10, 20]]


@pytest.mark.parametrize("case", ["outside", "negative", "not-image", "missing", "model",
                                  "badpoint", "head-dim", "huge-grid"])
def test_bad_input_one_line_nonzero_nothing_written(setup, case, tmp_path):
    d, src, trg, w = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG but not really")
    args = {"outside": [src, trg, "--points", "1,1", "64,3"],
            "negative": [src, trg, "--points", "-1,3"],
            "not-image": [src, str(junk), "--points", "1,1"],
            "missing": [str(tmp_path / "nope.jpg"), trg, "--points", "1,1"],
            "model": [src, trg, "--model", "vits14", "--points", "1,1"],
            "badpoint": [src, trg, "--points", "1;2;3"],
            "head-dim": [src, trg, "--points", "1,1", "--head", str(tmp_path / "h.npz")],
            # QA: a million points ran for minutes (matching, then a figure of them all)
            "huge-grid": [src, trg, "--grid", "1000"]}[case]
    if case == "head-dim":
        gm.head.AttentionHead(in_dim=48, dim=16, out_dim=8, num_heads=2, mlp_dim=16,
                              attn_dim=16).save(tmp_path / "h.npz")
    r = run("match", *args, "--weights", w, "--size", "112", "--out", str(out), cwd=d)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    expect = {"outside": "point 1", "negative": "point 0", "not-image": "junk.png", "missing": "nope.jpg",
              "model": "vits14", "badpoint": "1;2;3", "head-dim": "h.npz",
              "huge-grid": "--grid"}[case]
    assert expect in lines[0]
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".geomatch-match-")]


def test_match_other_mode_and_float32_viewer(setup):
    d, src, trg, w = setup
    r = run("match", src, trg, "--weights", w, "--size", "112", "--points", "3,4", "50,30",
            "--mode", "soft-argmax", "--viewer-precision", "float32", "--out", "soft", cwd=d)
    assert r.returncode == 0, r.stderr
    doc = json.load(open(os.path.join(d, "soft", "matches.json")))
    assert doc["settings"]["mode"] == "soft-argmax"
    want = gm.Matcher(w, size=112).match(src, trg, doc["points"], mode="soft-argmax").points
    np.testing.assert_allclose(doc["matches"], want, rtol=0, atol=1e-6)
    html = open(os.path.join(d, "soft", "viewer.html"), encoding="utf-8").read()
    assert '"precision":"float32"' in html


def test_negative_point_is_a_point_not_an_option():
    """`--points -1,3` used to stop argparse ('expected at least one
    argument'): a token that looks like a point is a value."""
    from geomatch.cli import build_parser

    p = build_parser()
    args = p.parse_args(["match", "a.png", "b.png", "--weights", "w.pth",
                         "--points", "-1,3", "4,-5.5", "-2.5e-1,7"])
    assert args.points == ["-1,3", "4,-5.5", "-2.5e-1,7"]
    args = p.parse_args(["match", "a.png", "b.png", "--weights", "w.pth", "--points", "1,2",
                         "--grid", "3"])
    assert args.points == ["1,2"] and args.grid == 3
