"""The ``geomatch`` command line: ``geomatch <command> [options]``.

Each command lives in the module that holds its work and provides
``configure_parser(parser)`` and ``run_cli(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> (module, one-line help)
COMMANDS = {
    "eval": ("geomatch.eval.evaluate", "evaluate keypoint transfer (PCK tables, JSON/CSV, figures)"),
    "extract": ("geomatch.backbone.extract",
                "compute DINOv2 features (and flipped ones) of a dataset split into a feature cache"),
    "train": ("geomatch.model.train", "train the attention head on cached features (GECO OT loss)"),
    "demo": ("geomatch.demo.run", "run the offline end-to-end demo (synthetic data, training, report, figures)"),
}


#: Largest ``--threads`` (the core's own limit; docs/limits.md).
MAX_THREADS = 4096


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2);
    ``geomatch COMMAND --help`` shows the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="geomatch",
        description="Geometry-aware semantic correspondences (GECO) with a fast C core.")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"number of threads, 1 to {MAX_THREADS} "
                             "(default: all cores or OMP_NUM_THREADS)")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of errors (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("config", help="print the BLAS, OpenMP and SIMD configuration")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure_parser(p)
    return parser


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
USER_ERRORS = (OSError, ValueError, TypeError, KeyError)


def main(argv=None) -> int:
    """Run ``geomatch <command>``; returns the exit status.

    Errors caused by the input (a missing or unreadable path, a bad value, a
    full disk) are printed as one line ``geomatch <command>: error: ...`` on
    stderr with exit status 1 (2 for command-line syntax); ``--traceback``
    shows the full traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}")
    if args.command is None:
        parser.print_help()
        return 2
    name = f"geomatch {args.command}"
    try:
        import geomatch as gm

        if args.threads is not None:
            gm.set_num_threads(args.threads)
        if args.command == "config":
            gm.show_config()
            return 0
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run_cli(args) or 0)
    except USER_ERRORS as exc:
        if args.traceback:
            raise
        print(f"{name}: error: {_describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
