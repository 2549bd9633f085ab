"""The ``geomatch`` command line: ``geomatch <command> [options]``.

Each command lives in the module that holds its work and provides
``configure_parser(parser)`` and ``run_cli(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS = {
    "eval": ("geomatch.eval.evaluate", "evaluate keypoint transfer (PCK tables, JSON/CSV, figures)"),
    "rescore": ("geomatch.eval.predictions",
                "recompute every metric from a predictions.npz of an evaluation run"),
    "extract": ("geomatch.backbone.extract",
                "compute DINOv2 features (and flipped ones) of a dataset split into a feature cache"),
    "train": ("geomatch.model.train", "train the attention head on cached features (GECO OT loss)"),
    "demo": ("geomatch.demo.run", "run the offline end-to-end demo (synthetic data, training, report, figures)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geomatch",
        description="Geometry-aware semantic correspondences (GECO) with a fast C core.")
    parser.add_argument("--threads", type=int, default=None,
                        help="number of threads (default: all cores or OMP_NUM_THREADS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("config", help="print the BLAS, OpenMP and SIMD configuration")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure_parser(p)
    return parser


def main(argv=None) -> int:
    import geomatch as gm

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        gm.set_num_threads(args.threads)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "config":
        gm.show_config()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run_cli(args) or 0)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"geomatch {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
