"""CLI conventions: python -m geomatch, --version, global options on either
side of the subcommand, help text for every option, --config TOML files."""
import argparse
import os
import subprocess
import sys

import pytest

import geomatch as gm
from geomatch import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def test_python_m_geomatch_and_version():
    r = subprocess.run([sys.executable, "-m", "geomatch", "--version"], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 0
    assert r.stdout.strip() == f"geomatch {gm.__version__}"
    r = subprocess.run([sys.executable, "-m", "geomatch", "--help"], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 0 and "match" in r.stdout and "train" in r.stdout


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("before", [True, False])
def test_threads_before_or_after_the_subcommand(before):
    parser = cli.build_parser()
    rest = ["eval", "--dataset", "spair", "--root", "r", "--cache", "c"]
    argv = (["--threads", "3"] + rest) if before else (rest + ["--threads", "3"])
    assert parser.parse_args(argv).threads == 3
    assert parser.parse_args(rest).threads is None
    # given on both sides: the later (after the subcommand) wins
    assert parser.parse_args(["--threads", "2"] + rest + ["--threads", "5"]).threads == 5


def test_every_option_of_every_subcommand_has_help_with_its_default():
    parser = cli.build_parser()
    missing, no_default = [], []
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            opt = f"{name} {action.option_strings[-1]}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(opt)
                continue
            takes_value = action.nargs != 0
            if takes_value and not action.required and "default" not in action.help:
                no_default.append(opt)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not state the default: {no_default}"


def test_config_file_fills_options_and_flags_win(tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text('dataset = "spair"\nroot = "/data/SPair-71k"\ncache = "feats"\n'
                   'out = "run1"\nbatch-pairs = 8\nlr = 0.0003\nno_flip = true\n'
                   'categories = ["cat", "dog"]\n')
    parser = cli.build_parser()
    argv = cli._apply_config(parser, ["train", "--config", str(cfg), "--lr", "0.001"])
    args = parser.parse_args(argv)
    # train takes one or more datasets (one root and cache each)
    assert (args.dataset, args.root, args.cache, args.out) == (["spair"], ["/data/SPair-71k"],
                                                               ["feats"], "run1")
    assert args.batch_pairs == 8 and args.no_flip is True
    assert args.categories == ["cat", "dog"]
    assert args.lr == 0.001                      # the command line wins
    ev = tmp_path / "eval.toml"
    ev.write_text('dataset = "pfpascal"\nroot = "r"\ncache = "c"\nalphas = [0.05, 0.1]\n')
    args = parser.parse_args(cli._apply_config(parser, ["--threads", "2", "eval", "--config",
                                                        str(ev)]))
    assert args.dataset == "pfpascal" and args.alphas == [0.05, 0.1] and args.threads == 2


def test_config_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "spair"\nbatch_size = 3\n')
    assert cli.main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size" in err[0] and "bad.toml" in err[0]
    assert cli.main(["eval", "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.toml" in err[0]
    broken = tmp_path / "broken.toml"
    broken.write_text("dataset = \n")
    assert cli.main(["eval", "--config", str(broken)]) == 2
    assert "broken.toml" in capsys.readouterr().err
