"""The end-to-end demo: ``geomatch demo --quick`` writes a report with numbers
and valid figures, and its trained head confuses left and right less often
than the raw features."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from geomatch import cli
from geomatch.demo import run as D


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    rc = cli.main(["demo", "--quick", "--out", str(out), "--no-progress"])
    return rc, out


def _table_rows(text, first_cell):
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]


def _numbers(row):
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    return cells


def test_demo_writes_report_with_numbers(quick_run, capsys):
    rc, out = quick_run
    assert rc == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    # PCK table: one row per model and kind, three alphas, all numbers in [0, 100]
    assert "| | PCK@0.05 | PCK@0.10 | PCK@0.15 |" in report
    for label in ("raw features", "trained head"):
        rows = _table_rows(report, f"{label}, per point")
        assert len(rows) == 1
        vals = [float(v) for v in _numbers(rows[0])[1:]]
        assert len(vals) == 3 and all(0.0 <= v <= 100.0 for v in vals)
        assert vals[0] <= vals[1] <= vals[2]        # PCK grows with alpha
    # geometry breakdown: 2 models x 3 alphas, integer counts
    bd_rows = [r for r in report.splitlines()
               if re.match(r"\| (raw features|trained head) \| 0\.(05|10|15) \|", r)]
    assert len(bd_rows) == 6
    for r in bd_rows:
        cells = _numbers(r)
        counts = [int(c) for c in cells[2:13]]
        n11, n11_hat, n11_tilde, n11_bar = counts[:4]
        assert n11 > 0 and 0 <= n11_hat <= n11 and 0 <= n11_bar <= n11 - n11_hat
        assert n11_tilde <= n11_hat
    assert "n̄₁₁" in report and "n₁₀" in report and "n₁ₓ" in report
    # next steps on the real dataset
    assert "geomatch extract --dataset spair" in report
    assert "geomatch train --dataset spair" in report
    assert "geomatch eval --dataset spair" in report


def test_demo_figures_are_valid_pngs(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    names = {p.split("/")[-1] for p in linked}
    assert {"confusions.png", "training.png"} <= names
    assert any(n.startswith("transfer_") for n in names)
    for rel in linked:
        path = out / rel
        assert path.is_file(), rel
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
            arr = np.asarray(im.convert("RGB"))
        assert arr.std() > 10          # not a blank canvas


def test_trained_head_reduces_left_right_confusions(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text(encoding="utf-8")
    counts = {}
    for label in ("raw features", "trained head"):
        row = _table_rows(report, f"{label} | 0.10 |")
        assert len(row) == 1
        cells = _numbers(row[0])
        counts[label] = (int(cells[2]), int(cells[5]))       # n11, n11_bar
    (n11_raw, bar_raw), (n11_head, bar_head) = counts["raw features"], counts["trained head"]
    assert n11_raw == n11_head > 20
    assert bar_raw > 0
    assert bar_head < bar_raw
    # the run's summary file agrees with the report
    meta = json.loads((out / D._MARKER).read_text())
    assert meta["confusions"]["raw"] == {"n11": n11_raw, "n11_bar": bar_raw}
    assert meta["confusions"]["head"] == {"n11": n11_head, "n11_bar": bar_head}


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="out_dir"):
        D.run_demo(tmp_path, quick=True, verbose=False, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_demo_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="seed"):
        D.run_demo(tmp_path / "x", seed=1.5, verbose=False)
    with pytest.raises(TypeError, match="settings"):
        D.run_demo(tmp_path / "y", settings={"steps": 3}, verbose=False)
    (tmp_path / "f.txt").write_text("a file")
    assert cli.main(["demo", "--out", str(tmp_path / "f.txt"), "--quick"]) == 1


def test_next_steps_commands_parse():
    """The printed SPair-71k commands are accepted by the CLI's parser."""
    parser = cli.build_parser()
    text = D.next_steps().replace("\\\n", " ")
    cmds = [line.split()[1:] for line in text.splitlines()
            if line.startswith("geomatch ")]
    assert [c[0] for c in cmds] == ["extract", "train", "eval", "eval"]
    for c in cmds:
        if c[0] not in cli.COMMANDS:      # a command whose branch has not landed
            continue
        parser.parse_args(c)
