"""Build script for geomatch's C extension.

BLAS: a system OpenBLAS found by pkg-config is used when present; otherwise
the scipy-openblas32 wheel (a build requirement) provides CBLAS with its
``scipy_`` symbol prefix, and becomes a runtime dependency that
``geomatch/_blas.py`` loads before the extension.  There is no silent fallback
to a reference BLAS: if neither is found the build stops with an error.

Environment knobs:
  GEOMATCH_BLAS=system|scipy-openblas32   force one BLAS source
  GEOMATCH_NATIVE=0                       do not compile with -march=native
  GEOMATCH_DEBUG=1                        -O0 -g build
"""
import glob
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup


def _pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.strip()


def find_blas():
    """Return (kind, include_dirs, library_dirs, libraries, extra_link, macros, deps)."""
    choice = os.environ.get("GEOMATCH_BLAS", "").strip().lower()
    if choice in ("", "system") and _pkg_config("--exists", "openblas") is not None:
        cflags = shlex.split(_pkg_config("--cflags", "openblas") or "")
        libs = shlex.split(_pkg_config("--libs", "openblas") or "")
        inc = [f[2:] for f in cflags if f.startswith("-I")]
        ldirs = [f[2:] for f in libs if f.startswith("-L")]
        names = [f[2:] for f in libs if f.startswith("-l")]
        version = _pkg_config("--modversion", "openblas") or "unknown"
        return ("system-openblas " + version, inc, ldirs, names, [], [], [])
    if choice == "system":
        sys.exit("GEOMATCH_BLAS=system but pkg-config cannot find openblas")
    try:
        import scipy_openblas32 as sob
    except ImportError:
        sys.exit("geomatch needs OpenBLAS: install a system OpenBLAS with its "
                 "pkg-config file (e.g. apt-get install libopenblas-dev) or "
                 "the scipy-openblas32 wheel (pip install scipy-openblas32)")
    version = getattr(sob, "__version__", "unknown")
    return ("scipy-openblas32 " + version, [sob.get_include_dir()],
            [sob.get_lib_dir()], [sob.get_library()], [],
            [("GM_BLAS_SCIPY_OPENBLAS", "1")],
            ["scipy-openblas32>=0.3.27"])


def main():
    import numpy as np

    kind, inc, ldirs, libs, link, macros, deps = find_blas()
    debug = os.environ.get("GEOMATCH_DEBUG") == "1"
    # ISO C11 + OpenMP + POSIX, as csrc/Makefile; -ffp-contract=fast keeps
    # the FMA contraction of GNU modes (results identical to the C tests).
    cflags = ["-std=c11", "-ffp-contract=fast", "-fopenmp", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-Wno-unused-function"]
    cflags += ["-O0", "-g"] if debug else ["-O3"]
    if os.environ.get("GEOMATCH_NATIVE", "1") != "0":
        cflags.append("-march=native")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "geomatch", "_build_config.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"BLAS = {kind!r}\n")
        f.write(f"CFLAGS = {' '.join(cflags)!r}\n")
    sources = sorted(glob.glob("csrc/*.c")) + ["geomatch/_core.c"]
    ext = Extension(
        "geomatch._core",
        sources=sources,
        depends=sorted(glob.glob("csrc/*.h")),
        include_dirs=["csrc", np.get_include(), *inc],
        library_dirs=ldirs,
        libraries=libs + ["m"],
        define_macros=macros + [("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION")],
        extra_compile_args=cflags,
        extra_link_args=["-fopenmp", *link],
    )
    setup(ext_modules=[ext], install_requires=["numpy>=1.26", "tqdm>=4.60",
                                               "matplotlib>=3.6", "pillow>=9",
                                               "tomli>=1.1; python_version < '3.11'"] + deps)


main()
