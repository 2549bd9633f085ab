"""The end-to-end demo (``geomatch demo``) on a small configuration: the JSON
summary's fields, the report's headline rows against an independent NumPy
computation, the figure-selection rule, folder handling (resume / start over)
and bad arguments.  The seed sweep over the real full/quick settings is a
script (``python -m geomatch.demo.sweep``), not a test."""
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from geomatch import cli
from geomatch import demo as D
from geomatch.demo import sweep
from geomatch.eval.metrics import BREAKDOWN_KEYS

ALPHAS = (0.05, 0.10, 0.15)

# A small configuration of the real pipeline (the quick run's world, featurizer
# and head; fewer images and steps) so the default suite stays fast.
SMALL = dataclasses.replace(D.QUICK, n_images_per_category=14, n_pairs=12, steps=6,
                            val_subset=20, val_every=3)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    res = D.run_demo(out, settings=SMALL, seed=1, progress=False, verbose=False)
    return out, res


def _rows(report, first):
    return [line for line in report.splitlines() if line.startswith(f"| {first}")]


def _cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _independent(pairs, preds, alpha):
    """PCK per point, per image and the left/right counts n11 / n11_bar /
    n11_hat, written out with plain NumPy."""
    ok = tot = n11 = bar = hat = 0
    per_image = []
    for p, pred in zip(pairs, preds):
        sv, tv = np.asarray(p.src.visible, bool), np.asarray(p.trg.visible, bool)
        gt = np.asarray(p.trg.keypoints, float)
        x1, y1, x2, y2 = np.asarray(p.trg.bbox, float)
        t = alpha * max(x2 - x1, y2 - y1)
        d = np.sqrt(((np.asarray(pred, float) - gt) ** 2).sum(1))
        both = sv & tv
        good = both & (d <= t)
        ok += good.sum()
        tot += both.sum()
        if both.sum():
            per_image.append(good.sum() / both.sum())
        perm = np.asarray(p.flip_perm)
        for k in np.flatnonzero(both):
            j = perm[k]
            if j == k or not tv[j]:
                continue
            n11 += 1
            dj = np.sqrt(((np.asarray(pred[k], float) - gt[j]) ** 2).sum())
            hat += d[k] <= t
            bar += (d[k] > t) and (dj <= t)
    return ok / tot, float(np.mean(per_image)), n11, bar, hat


def test_summary_json_has_the_metrics(small_run):
    out, res = small_run
    s = json.loads((out / D.MARKER).read_text())
    assert s["status"] == "done" and s["seed"] == 1 and s["start"] == "new"
    assert s["alphas"] == pytest.approx(list(ALPHAS))
    cats = sorted({p.category for p in res["dataset"].pairs("test")})
    for who in ("raw", "head"):
        m = s["metrics"][who]
        assert set(m) == {"pck_point", "pck_image", "pck_geo", "breakdown", "per_category"}
        for k in ("pck_point", "pck_image", "pck_geo"):
            assert len(m[k]) == len(ALPHAS)
            assert all(0.0 <= v <= 1.0 for v in m[k])
        assert list(m["breakdown"]) == list(BREAKDOWN_KEYS)
        assert all(isinstance(v, int) and v >= 0 for v in m["breakdown"].values())
        assert sorted(m["per_category"]) == cats
        for c in cats:
            assert len(m["per_category"][c]["pck_point"]) == len(ALPHAS)
    assert s["n_val_pairs"] == len(res["dataset"].pairs("val", subsample=20, seed=0))


@pytest.mark.parametrize("who", ["raw", "head"])
def test_metrics_match_an_independent_computation(small_run, who):
    out, res = small_run
    s = json.loads((out / D.MARKER).read_text())
    pairs = list(res["dataset"].pairs("test"))
    preds = D.predictions(pairs, res["cache"], None if who == "raw" else res["head"])
    m = s["metrics"][who]
    for i, a in enumerate(ALPHAS):
        pck_point, pck_image, n11, bar, hat = _independent(pairs, preds, a)
        assert m["pck_point"][i] == pytest.approx(pck_point, abs=1e-9)
        assert m["pck_image"][i] == pytest.approx(pck_image, abs=1e-9)
        if a == 0.10:
            assert (m["breakdown"]["11"], m["breakdown"]["11_bar"], m["breakdown"]["11_hat"]) \
                == (n11, bar, hat)


def test_report_headline_rows_in_order_with_both_values(small_run):
    out, _ = small_run
    s = json.loads((out / D.MARKER).read_text())
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| metric | raw features | trained head | change | |" in report
    start = report.index("| metric | raw features")
    rows = []
    for line in report[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    names = [r[0] for r in rows]
    cats = sorted(s["metrics"]["raw"]["per_category"])
    expected = ([f"PCK@{a:.2f} {t} (%)" for t in ("per point", "per image",
                                                  "geometry-aware subset") for a in ALPHAS]
                + ["left/right confusion rate n̄₁₁/n₁₁ @0.10 (%)"]
                + [f"{n} @0.10" for n in ("n₁₁", "n̂₁₁", "ñ₁₁", "n̄₁₁", "n₁₀", "n̂₁₀", "n₁ₓ",
                                          "n̂₁ₓ", "n₀₁", "n̄₀₁", "n₀₀")]
                + [f"PCK@0.10 per point: {c} (%)" for c in cats])
    assert names == expected
    raw, head = s["metrics"]["raw"], s["metrics"]["head"]
    for r in rows[:9]:
        kind = {"per point": "pck_point", "per image": "pck_image",
                "geometry-aware subset": "pck_geo"}[re.match(r"PCK@\S+ (.*) \(%\)", r[0]).group(1)]
        i = ALPHAS.index(float(r[0][4:8]))
        assert float(r[1]) == pytest.approx(100 * raw[kind][i], abs=0.051)
        assert float(r[2]) == pytest.approx(100 * head[kind][i], abs=0.051)
        assert float(r[3]) == pytest.approx(float(r[2]) - float(r[1]), abs=0.11)
        worse = head[kind][i] < raw[kind][i]
        assert (r[4] == "**worse**") == worse
    rb, hb = raw["breakdown"], head["breakdown"]
    rate = rows[9]
    assert float(rate[1]) == pytest.approx(100 * rb["11_bar"] / rb["11"], abs=0.051)
    assert float(rate[2]) == pytest.approx(100 * hb["11_bar"] / hb["11"], abs=0.051)
    for r, key in zip(rows[10:21], BREAKDOWN_KEYS):
        assert (int(r[1]), int(r[2])) == (rb[key], hb[key])
    for r, c in zip(rows[21:], cats):
        assert float(r[1]) == pytest.approx(100 * raw["per_category"][c]["pck_point"][1], abs=0.051)
        assert float(r[2]) == pytest.approx(100 * head["per_category"][c]["pck_point"][1], abs=0.051)
    # the report names what got worse, and says how the figures were chosen
    assert ("Metrics where the trained head is worse" in report) == any(r[4] == "**worse**"
                                                                          for r in rows)
    assert "chosen without looking at any prediction" in report
    assert "What this does and does not show" in report


def test_figures_follow_the_fixed_rule_and_are_valid_pngs(small_run):
    out, res = small_run
    pairs = list(res["dataset"].pairs("test"))
    first = {}
    for i, p in enumerate(pairs):
        first.setdefault(p.category, i)
    fixed = sorted(first.values())
    rest = [i for i in range(len(pairs)) if i not in fixed]
    extra = rest[int(np.random.default_rng(SMALL.figure_seed).integers(len(rest)))]
    names = [f"transfer_{j}_{pairs[i].category}.png" for j, i in enumerate(fixed + [extra])]
    report = (out / "report.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert [p.split("/")[-1] for p in linked if "transfer_" in p] == names
    assert {"confusions.png", "training.png"} <= {p.split("/")[-1] for p in linked}
    for rel in linked:
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
            assert np.asarray(im.convert("RGB")).std() > 10


def test_select_figure_pairs_ignores_predictions():
    class P:
        def __init__(self, c):
            self.category = c

    pairs = [P(c) for c in "aabbbcaac"]
    got = D.select_figure_pairs(pairs, seed=7)
    rest = [1, 3, 4, 7, 8]
    assert got == [0, 2, 5, rest[int(np.random.default_rng(7).integers(len(rest)))]]
    assert D.select_figure_pairs([P("a")], seed=7) == [0]


def test_interrupted_run_resumes_and_finished_run_starts_over(small_run, tmp_path, capsys):
    out, _ = small_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    s = json.loads((again / D.MARKER).read_text())
    # a run killed during training: state "running", no report
    (again / D.MARKER).write_text(json.dumps({"status": "running", "run": s["run"]}))
    (again / "report.md").unlink()
    res = D.run_demo(again, settings=SMALL, seed=1, progress=False, verbose=True)
    said = capsys.readouterr().out
    assert res["start"] == "resume" and "Resuming the interrupted demo" in said
    s2 = json.loads((again / D.MARKER).read_text())
    assert s2["status"] == "done" and s2["metrics"] == s["metrics"]
    # an interrupted run of other settings, or a finished run: start over
    other = dataclasses.replace(SMALL, steps=4)
    (again / D.MARKER).write_text(json.dumps({"status": "running", "run": s["run"]}))
    res = D.run_demo(again, settings=other, seed=1, progress=False, verbose=True)
    assert res["start"] == "restart" and "Starting over" in capsys.readouterr().out
    assert json.loads((again / D.MARKER).read_text())["settings"]["steps"] == 4


def test_unreadable_state_file_starts_over(tmp_path):
    (tmp_path / D.MARKER).write_text("{ half-written")
    (tmp_path / "data").mkdir()
    assert D.steps.prepare_out(tmp_path, {"seed": 0}) == "restart"
    assert not (tmp_path / "data").exists()


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="out_dir"):
        D.run_demo(tmp_path, quick=True, verbose=False, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_demo_bad_arguments(tmp_path, capsys):
    with pytest.raises(TypeError, match="seed"):
        D.run_demo(tmp_path / "x", seed=1.5, verbose=False)
    with pytest.raises(TypeError, match="settings"):
        D.run_demo(tmp_path / "y", settings={"steps": 3}, verbose=False)
    with pytest.raises(ValueError, match="threads"):
        D.run_demo(tmp_path / "z", threads=0, verbose=False)
    (tmp_path / "f.txt").write_text("a file")
    assert cli.main(["demo", "--out", str(tmp_path / "f.txt"), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "f.txt" in err and "Traceback" not in err


def test_next_steps_commands_parse():
    """The printed SPair-71k commands are accepted by the CLI's parser."""
    parser = cli.build_parser()
    text = D.next_steps().replace("\\\n", " ")
    cmds = [line.split()[1:] for line in text.splitlines() if line.startswith("geomatch ")]
    assert [c[0] for c in cmds] == ["extract", "train", "eval", "eval"]
    for c in cmds:
        if c[0] in cli.COMMANDS:
            parser.parse_args(c)


def _summary(raw_pck, head_pck, raw_bd, head_bd, raw_cat, head_cat):
    def m(p, bd, cat):
        return {"pck_point": [0, p, 0], "pck_image": [0, p, 0], "pck_geo": [0, p, 0],
                "breakdown": bd, "per_category": {"a": {"pck_point": [0, cat, 0]}}}
    return {"alphas": list(ALPHAS), "metrics": {"raw": m(raw_pck, raw_bd, raw_cat),
                                                "head": m(head_pck, head_bd, head_cat)}}


def test_sweep_criteria():
    bd0 = {"11": 100, "11_bar": 40, "11_hat": 50}
    good = {"11": 100, "11_bar": 20, "11_hat": 70}
    s = _summary(0.50, 0.60, bd0, good, 0.5, 0.5)
    assert all(sweep.criteria(s, "full").values())
    s = _summary(0.50, 0.599, bd0, good, 0.5, 0.5)
    assert not sweep.criteria(s, "full")["pck_point"] and sweep.criteria(s, "quick")["pck_point"]
    s = _summary(0.50, 0.60, bd0, {"11": 100, "11_bar": 21, "11_hat": 70}, 0.5, 0.5)
    assert not sweep.criteria(s, "full")["confusion"]
    s = _summary(0.50, 0.60, bd0, {"11": 100, "11_bar": 10, "11_hat": 50}, 0.5, 0.5)
    assert not sweep.criteria(s, "full")["n11_hat"]
    s = _summary(0.50, 0.60, bd0, good, 0.5, 0.49)
    assert not sweep.criteria(s, "full")["categories"]
    with pytest.raises(ValueError, match="mode"):
        sweep.criteria(s, "fast")
