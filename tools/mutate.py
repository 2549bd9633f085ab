"""Mutation testing of geomatch's Python glue.

Applies each mutation of ``tools/mutations.py`` (a small, realistic bug: an
exact snippet of a source file replaced by another) to a scratch copy of the
working tree, runs the tests named for it there, and reports which mutations
the tests kill and which survive.  The C extension is copied as built, so
build it in place first (``python setup.py build_ext --inplace``).

Usage::

    python tools/mutate.py                 # every mutation
    python tools/mutate.py -k cache        # ids containing "cache"
    python tools/mutate.py --list

Exit status: 0 when every applicable mutation was killed, 1 otherwise, 2 when
a mutation's snippet no longer occurs exactly once (the list needs updating).
Slow (one pytest run per mutation): not part of the default test suite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from mutations import MUTATIONS  # noqa: E402


def _tracked_files():
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    files = [f for f in out if f and os.path.isfile(os.path.join(ROOT, f))]
    built = [os.path.join("geomatch", f) for f in os.listdir(os.path.join(ROOT, "geomatch"))
             if f.startswith("_core") and f.endswith(".so")]
    if not built:
        sys.exit("mutate: no built extension in geomatch/: run "
                 "`python setup.py build_ext --inplace` first")
    extra = [f for f in ("geomatch/_build_config.py",) if os.path.isfile(os.path.join(ROOT, f))]
    return sorted(set(files + built + extra))


def _copy_tree(dest):
    for rel in _tracked_files():
        os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dest, rel))


def _run_tests(tree, tests, timeout):
    env = dict(os.environ, PYTHONPATH=tree, GEOMATCH_ALLOW_SKIPS="1",
               GEOMATCH_NO_PROGRESS="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "passed" if proc.returncode == 0 else "failed"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="run only mutations whose id contains this")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    args = ap.parse_args(argv)
    muts = [m for m in MUTATIONS if args.k in m["id"]]
    if args.list:
        for m in muts:
            print(f"{m['id']:40s} {m['file']}")
        return 0
    with tempfile.TemporaryDirectory(prefix="geomatch-mutate-") as tree:
        _copy_tree(tree)
        # the unmutated tree must pass every test named, or "killed" means nothing
        tests = sorted({t for m in muts for t in m["tests"]})
        base = _run_tests(tree, tests, args.timeout)
        if base != "passed":
            print(f"mutate: the unmutated tree does not pass {tests} ({base}); fix that first",
                  file=sys.stderr)
            return 2
        print(f"baseline: {len(tests)} test files pass unmutated", flush=True)
        rows, stale = [], 0
        for m in muts:
            path = os.path.join(tree, m["file"])
            with open(path) as f:
                src = f.read()
            n = src.count(m["old"])
            if n != 1:
                rows.append((m["id"], "stale", f"snippet found {n} times", 0.0))
                stale += 1
                continue
            t0 = time.perf_counter()
            with open(path, "w") as f:
                f.write(src.replace(m["old"], m["new"]))
            try:
                res = _run_tests(tree, m["tests"], args.timeout)
            finally:
                with open(path, "w") as f:
                    f.write(src)
            verdict = {"failed": "killed", "timeout": "killed (timeout)",
                       "passed": "SURVIVED"}[res]
            rows.append((m["id"], verdict, m.get("why", ""), time.perf_counter() - t0))
            print(f"{m['id']:40s} {verdict:16s} {rows[-1][3]:6.1f} s", flush=True)
    killed = sum(r[1].startswith("killed") for r in rows)
    survived = [r for r in rows if r[1] == "SURVIVED"]
    print(f"\n{len(rows)} mutations: {killed} killed, {len(survived)} survived, {stale} stale")
    for r in survived:
        print(f"  survived: {r[0]} ({r[2]})")
    if stale:
        return 2
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
