"""Errors the CLI meets outside the subcommands' own checks (found in QA):
operating-system errors while writing, Ctrl-C, a closed output pipe.  Each is
one line on stderr, a non-zero exit and no traceback."""
import subprocess
import sys

import pytest

from geomatch import cli
from test_backbone_extract import spair, weights  # noqa: F401  (tiny SPair tree, random weights)


def _cli(*args, timeout=120):
    code = "import sys; from geomatch.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(proc, command):
    assert proc.returncode not in (0, None), proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "\r" not in ln
             and not ln.lstrip().startswith(("index ", "extract ", "eval "))]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"geomatch {command}: error:"), lines[0]
    return lines[0]


def test_an_os_error_while_writing_is_one_line(spair, weights, tmp_path):
    # --out below a regular file: os.makedirs raises NotADirectoryError
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "cache"
    proc = _cli("--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
                "--weights", str(weights), "--out", str(out), "--size", "56", "--split", "test")
    line = _one_line_error(proc, "extract")
    assert str(out) in line
    assert blocker.read_text() == "x"


def test_os_error_from_a_command_is_one_line(monkeypatch, capsys):
    mod = __import__(cli.COMMANDS["profile"][0], fromlist=["run_cli"])

    def boom(args):
        raise NotADirectoryError(20, "Not a directory", "/tmp/x/file/out")

    monkeypatch.setattr(mod, "run_cli", boom)
    assert cli.main(["profile", "--weights", "w.pth"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("geomatch profile: error:")
    assert "/tmp/x/file/out" in err


def test_keyboard_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    mod = __import__(cli.COMMANDS["profile"][0], fromlist=["run_cli"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "run_cli", interrupted)
    assert cli.main(["profile", "--weights", "w.pth"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err


def test_closed_stdout_pipe_is_not_a_traceback():
    code = ("import sys; from geomatch.cli import main; sys.exit(main(['config']))")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()                       # like `geomatch config | head -0`
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err, err


def _head_file(path, in_dim):
    from geomatch.model.head import AttentionHead, HeadConfig

    AttentionHead(HeadConfig(in_dim=in_dim, dim=32, out_dim=16, num_heads=1,
                             mlp_dim=32)).save(path)
    return path


def test_eval_with_a_head_of_another_feature_dimension_names_the_head(spair, weights,
                                                                       tmp_path, capsys):
    cache = tmp_path / "cache"
    assert cli.main(["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
                     "--weights", str(weights), "--out", str(cache), "--size", "56",
                     "--split", "test", "--no-flip"]) == 0
    capsys.readouterr()
    head = _head_file(tmp_path / "head64.npz", 64)          # the cache holds 128 channels
    out = tmp_path / "results"
    assert cli.main(["eval", "--dataset", "spair", "--root", str(spair), "--cache", str(cache),
                     "--split", "test", "--head", str(head), "--out", str(out),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "head64.npz" in err and "64" in err and "128" in err
    assert not out.exists()
