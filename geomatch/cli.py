"""The ``geomatch`` command line: ``geomatch <command> [options]``.

Each command lives in the module that holds its work and provides
``configure_parser(parser)`` and ``run_cli(args) -> int``.

Conventions: ``python -m geomatch`` is the same program; ``--version``;
global options (``--threads``) are accepted before or after the command;
every option's help states its default (``tests/test_cli_conventions.py``
walks the parsers); ``train`` and ``eval`` take ``--config FILE``, a TOML file
whose keys are the long option names, inserted before the command line's own
flags so that those win.  Every command takes ``--no-progress``.  A user
error (bad arguments, missing or unreadable files, a full disk, unreachable
schedulers) is one line ``geomatch <command>: error: ...`` on stderr with exit
status 1 (2 for command-line syntax); Ctrl-C exits with 130, also without a
traceback; ``--traceback`` shows the traceback of an error; bugs keep theirs
(``tests/test_cli_user_errors.py``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> (module, one-line help)
COMMANDS = {
    "eval": ("geomatch.eval.evaluate", "evaluate keypoint transfer (PCK tables, JSON/CSV, figures)"),
    "rescore": ("geomatch.eval.predictions",
                "recompute every metric from a predictions.npz of an evaluation run"),
    "extract": ("geomatch.backbone.extract",
                "compute DINOv2 features (and flipped ones) of a dataset split into a feature cache"),
    "train": ("geomatch.model.train", "train the attention head on cached features (GECO OT loss)"),
    "seg-eval": ("geomatch.eval.segmentation",
                 "PASCAL-Part part segmentation by nearest centroid (GECO's dense evaluation)"),
    "profile": ("geomatch.runtime.profile",
                "parameter count, size, time per image and per pair, peak memory (GECO's table)"),
    "demo": ("geomatch.demo.run", "run the offline end-to-end demo (synthetic data, training, report, figures)"),
    "match": ("geomatch.match.command",
              "match points between two image files (matches.json, matches.png, viewer.html)"),
}

# commands that read their options from a TOML file too (``--config FILE``)
CONFIG_COMMANDS = ("train", "eval")

#: Largest ``--threads`` (the core's own limit; docs/limits.md).
MAX_THREADS = 4096


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2);
    ``geomatch COMMAND --help`` shows the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _add_global_options(parser, *, in_subcommand: bool) -> None:
    """Options accepted before and after the subcommand.  After it they
    default to SUPPRESS, so that a value given before it is kept."""
    default = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument("--threads", type=int, default=default,
                        help=f"number of threads, 1 to {MAX_THREADS} "
                             "(default: all cores or OMP_NUM_THREADS)")
    parser.add_argument("--traceback", action="store_true",
                        default=argparse.SUPPRESS if in_subcommand else False,
                        help="show the full traceback of errors, for bug reports (default: "
                             "one line)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="geomatch",
        description="Geometry-aware semantic correspondences (GECO) with a fast C core.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"geomatch {__version__}",
                        help="print the version and exit")
    _add_global_options(parser, in_subcommand=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("config", help="print the BLAS, OpenMP and SIMD configuration")
    _add_global_options(p, in_subcommand=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure_parser(p)
        if name in CONFIG_COMMANDS:
            p.add_argument("--config", default=None, metavar="FILE",
                           help="TOML file of options: keys are the long option names "
                                "(e.g. batch-pairs = 8); flags given on the command line win "
                                "(default: none)")
        _add_global_options(p, in_subcommand=True)
    for p in sub.choices.values():
        if "--no-progress" not in p._option_string_actions:
            p.add_argument("--no-progress", action="store_true",
                           help="no progress bars (also GEOMATCH_NO_PROGRESS=1)")
    return parser


def _config_tokens(subparser, path: str) -> list:
    """The options of a TOML file as command-line tokens for ``subparser``."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: file not found: {path}")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config: {path} is not valid TOML ({exc})") from None
    flags = {}
    for action in subparser._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in ("--help", "--config"):
                flags[opt[2:]] = (opt, action)
    tokens = []
    for key, value in doc.items():
        name = str(key).replace("_", "-")
        if name not in flags:
            raise ValueError(f"--config: {path}: unknown option {key!r} (known: "
                             + ", ".join(sorted(flags)) + ")")
        opt, action = flags[name]
        if action.nargs == 0:  # store_true / store_false
            if not isinstance(value, bool):
                raise ValueError(f"--config: {path}: {key} must be true or false")
            if value == isinstance(action, argparse._StoreTrueAction):
                tokens.append(opt)
        elif isinstance(value, list):
            tokens += [opt] + [str(v) for v in value]
        elif isinstance(value, dict):
            raise ValueError(f"--config: {path}: {key} must be a value or a list, not a table")
        else:
            tokens += [opt, str(value).lower() if isinstance(value, bool) else str(value)]
    return tokens


def _apply_config(parser, argv: list) -> list:
    """Insert the options of ``--config FILE`` right after the subcommand, so
    that flags given on the command line (parsed later) win."""
    cmd_at = None
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--threads":
            i += 2
            continue
        if not tok.startswith("-"):
            cmd_at = i
            break
        i += 1
    if cmd_at is None or argv[cmd_at] not in CONFIG_COMMANDS:
        return argv
    rest = argv[cmd_at + 1:]
    path = None
    for j, tok in enumerate(rest):
        if tok == "--config" and j + 1 < len(rest):
            path = rest[j + 1]
        elif tok.startswith("--config="):
            path = tok.split("=", 1)[1]
    if path is None:
        return argv
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    tokens = _config_tokens(sub.choices[argv[cmd_at]], path)
    return argv[:cmd_at + 1] + tokens + rest


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException) -> str:
    """One line for an error caused by the user's input."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return _one_line(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror and not str(exc).startswith("[Errno"):
        return _one_line(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = os.fspath(exc.filename) if exc.filename is not None else ""
        if where and str(where) not in exc.strerror:
            return _one_line(f"{exc.strerror}: {where}")
        return _one_line(exc.strerror)
    return _one_line(exc) or type(exc).__name__


# Errors that come from what the user gave (paths, files, arguments): one line
# on stderr and exit status 1.  Anything else is a bug and keeps its traceback.
# (ImportError: an optional dependency the chosen option needs, e.g. dask.)
USER_ERRORS = (OSError, ValueError, TypeError, KeyError, ImportError)


def main(argv=None) -> int:
    """Run ``geomatch <command>``; returns the exit status.

    Errors caused by the input (a missing or unreadable path, a bad value, a
    full disk) are printed as one line ``geomatch <command>: error: ...`` on
    stderr with exit status 1 (2 for command-line syntax and ``--config``
    files); ``--traceback`` shows the full traceback instead.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _apply_config(parser, argv)
    except (OSError, ValueError) as exc:
        print(f"geomatch: error: {_describe(exc)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}")
    if args.command is None:
        parser.print_help()
        return 2
    name = f"geomatch {args.command}"
    saved = os.environ.get("GEOMATCH_NO_PROGRESS")
    if getattr(args, "no_progress", False):
        # every bar of the command (loaders, workers' clients) reads this
        os.environ["GEOMATCH_NO_PROGRESS"] = "1"
    try:
        import geomatch as gm

        if args.threads is not None:
            gm.set_num_threads(args.threads)
        if args.command == "config":
            gm.show_config()
            sys.stdout.flush()
            return 0
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run_cli(args) or 0)
    except BrokenPipeError:
        # the reader of stdout went away (``geomatch ... | head``): not an error of ours
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        # OSError covers FileNotFoundError, ConnectionError, NotADirectoryError,
        # PermissionError, a full disk: their messages name the path
        if args.traceback:
            raise
        print(f"{name}: error: {_describe(exc)}", file=sys.stderr)
        return 1
    finally:
        if saved is None:
            os.environ.pop("GEOMATCH_NO_PROGRESS", None)
        else:
            os.environ["GEOMATCH_NO_PROGRESS"] = saved


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush of a
    closed pipe does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
