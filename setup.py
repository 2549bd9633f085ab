"""Build script for geomatch's C extension.

BLAS: a system OpenBLAS found by pkg-config is used when present; otherwise
the scipy-openblas32 wheel (a build requirement) provides CBLAS with its
``scipy_`` symbol prefix, and becomes a runtime dependency that
``geomatch/runtime/blas.py`` loads before the extension.  There is no silent
fallback to a reference BLAS: if neither is found the build stops with an error.

Environment knobs:
  GEOMATCH_BLAS=system|scipy-openblas32   force one BLAS source
  GEOMATCH_NATIVE=0                       portable build: no -march=native
  GEOMATCH_DEBUG=1                        -O0 -g build

What the build decided (BLAS, flags, native or portable) is compiled into the
extension ``geomatch._buildinfo`` as macros; nothing is written into the source
tree.  Object files go to a folder of ``build/`` named after a hash of the
flags, and the extensions are relinked whenever the flags differ from those
of the previous build, so switching GEOMATCH_NATIVE never reuses objects
compiled with other flags (``pip install .`` builds in the source tree and
reuses ``build/``).
"""
import glob
import hashlib
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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


def _c_string(text: str) -> str:
    """A C string literal for a -D macro value."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FlagKeyedBuildExt(build_ext):
    """build_ext whose objects live in a folder keyed by the compile flags
    and that relinks when the flags changed since the last build."""

    def _key(self, ext) -> str:
        parts = [ext.name, *ext.extra_compile_args, *ext.extra_link_args,
                 *(f"{k}={v}" for k, v in ext.define_macros), *ext.libraries,
                 *ext.library_dirs, *ext.include_dirs]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    def build_extension(self, ext):
        key = self._key(ext)
        base_temp = self.build_temp
        self.build_temp = os.path.join(base_temp, "flags-" + key)
        stamp = os.path.join(base_temp, f"{ext.name}.flags")
        try:
            with open(stamp) as f:
                previous = f.read().strip()
        except OSError:
            previous = None
        if previous != key:  # other flags last time: never keep that binary
            for target in {self.get_ext_fullpath(ext.name),
                           os.path.join(self.build_lib, self.get_ext_filename(ext.name))}:
                if os.path.exists(target):
                    os.remove(target)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base_temp
        os.makedirs(base_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(key + "\n")


def main():
    import numpy as np

    kind, inc, ldirs, libs, link, macros, deps = find_blas()
    debug = os.environ.get("GEOMATCH_DEBUG") == "1"
    native = os.environ.get("GEOMATCH_NATIVE", "1") != "0"
    # ISO C11 + OpenMP + POSIX, as csrc/Makefile; -ffp-contract=fast keeps
    # the FMA contraction of GNU modes (results identical to the C tests).
    cflags = ["-std=c11", "-ffp-contract=fast", "-fopenmp", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-Wno-unused-function"]
    cflags += ["-O0", "-g"] if debug else ["-O3"]
    if native:
        cflags.append("-march=native")
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
    info = Extension(
        "geomatch._buildinfo",
        sources=["geomatch/_buildinfo.c"],
        depends=["csrc/gm_simd.h"],
        include_dirs=["csrc"],
        define_macros=[("GM_BUILD_BLAS", _c_string(kind)),
                       ("GM_BUILD_CFLAGS", _c_string(" ".join(cflags))),
                       ("GM_BUILD_NATIVE", "1" if native else "0")],
        extra_compile_args=[f for f in cflags if f != "-fopenmp"],
    )
    setup(ext_modules=[ext, info], cmdclass={"build_ext": FlagKeyedBuildExt},
          install_requires=["numpy>=1.26", "tqdm>=4.60", "matplotlib>=3.6", "pillow>=9",
                            "tomli>=1.1; python_version < '3.11'"] + deps)


main()
