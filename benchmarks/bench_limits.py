"""The machine's own limits (sgemm rate, one read pass), as every benchmark
measures them; with ``--coretypes``, the sgemm rate under each OpenBLAS
kernel set (``OPENBLAS_CORETYPE``), each in a fresh process.

    python benchmarks/bench_limits.py [--threads 2] [--coretypes Haswell SkylakeX]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--coretypes", nargs="*", default=None,
                    help="OpenBLAS kernel sets to compare (default: only the current one)")
    args = ap.parse_args()
    from geomatch.testing.limits import measure, print_limits, print_machine

    if args.coretypes:
        for core in args.coretypes:
            env = dict(os.environ, OPENBLAS_CORETYPE=core)
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                  "--repeat", str(args.repeat)], env=env,
                                 capture_output=True, text=True)
            print(f"OPENBLAS_CORETYPE={core}:\n{out.stdout.strip()}{out.stderr[-500:]}")
        return
    print_machine(args.threads)
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print_limits(measure(args.threads, repeat=args.repeat))


if __name__ == "__main__":
    main()
