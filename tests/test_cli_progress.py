"""Progress bars on the command line (found in QA): every command takes
--no-progress, and GEOMATCH_NO_PROGRESS=1 silences every command's bars."""
from geomatch import cli


def test_every_command_accepts_no_progress():
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in list(cli.COMMANDS) + ["config"]:
        action = sub.choices[name]._option_string_actions.get("--no-progress")
        assert action is not None and action.nargs == 0 and action.dest == "no_progress", name
    assert parser.parse_args(["config", "--no-progress"]).no_progress is True


def _extract(spair, weights, out, *extra):
    return cli.main(["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
                     "--weights", str(weights), "--out", str(out), "--size", "56",
                     "--split", "test", *extra])


def test_extract_no_progress_is_silent(spair, weights, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GEOMATCH_NO_PROGRESS", raising=False)
    assert _extract(spair, weights, tmp_path / "c", "--no-progress") == 0
    assert capsys.readouterr().err == ""
    assert _extract(spair, weights, tmp_path / "c2") == 0          # bars by default
    assert "extract" in capsys.readouterr().err


def test_environment_variable_silences_profile(weights, capsys, monkeypatch):
    monkeypatch.setenv("GEOMATCH_NO_PROGRESS", "1")
    assert cli.main(["--threads", "1", "profile", "--weights", str(weights), "--size", "56",
                     "--images", "2", "--pairs", "1"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("GEOMATCH_NO_PROGRESS")
    assert cli.main(["--threads", "1", "profile", "--weights", str(weights), "--size", "56",
                     "--images", "2", "--pairs", "1"]) == 0
    assert "profile" in capsys.readouterr().err
