"""geomatch's own MAT-file reader (PF-PASCAL annotations without scipy; issue 14, item 11)."""
import csv
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from geomatch.data.matfile import UnsupportedMatFile, read_mat

scipy_io = pytest.importorskip("scipy.io", reason="scipy writes the reference .mat files")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARRAYS = {
    "kps": np.array([[1.5, 2.0], [np.nan, np.nan], [3.25, -4.0]]),
    "bbox": np.array([[0.0, 1.0, 39.0, 38.0]]),
    "single": np.arange(12, dtype=np.float32).reshape(3, 4) / 3,
    "i8": np.array([[-128, 0, 127]], dtype=np.int8),
    "u8": np.array([[0, 255]], dtype=np.uint8),
    "i16": np.array([[-32768, 5]], dtype=np.int16),
    "u16": np.array([[65535, 1]], dtype=np.uint16),
    "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
    "u32": np.array([[2 ** 32 - 1]], dtype=np.uint32),
    "i64": np.array([[-2 ** 62, 7]], dtype=np.int64),
    "u64": np.array([[2 ** 63 + 5]], dtype=np.uint64),
    "cube": np.arange(24, dtype=np.float64).reshape(2, 3, 4),
    "empty": np.zeros((0, 2)),
    "flag": np.array([[True, False, True]]),
    "a_rather_long_variable_name": np.array([[9.0]]),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_matches_scipy(tmp_path, compress):
    path = tmp_path / "a.mat"
    extra = {"note": "a string", "cells": np.array([[1, "x"]], dtype=object),
             "st": {"a": 1.0}}
    scipy_io.savemat(path, {**ARRAYS, **extra}, do_compression=compress)
    ref = scipy_io.loadmat(path)
    got = read_mat(path, names=list(ARRAYS))
    assert sorted(got) == sorted(ARRAYS)
    for k in ARRAYS:
        assert got[k].dtype == ref[k].dtype, k
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    # spelled-out values as well (not only agreement with scipy)
    np.testing.assert_array_equal(got["kps"], [[1.5, 2.0], [np.nan, np.nan], [3.25, -4.0]])
    assert got["u64"][0, 0] == 2 ** 63 + 5 and got["cube"][1, 2, 3] == 23
    # variables that are not numeric matrices: refused only when asked for
    with pytest.raises(UnsupportedMatFile, match="note"):
        read_mat(path, names=["note"])


def _big_endian_mat(path):
    """A big-endian level-5 file written by hand: kps (2 x 2 double), a small
    data element for the name."""
    def el(t, data):
        return struct.pack(">II", t, len(data)) + data + b"\0" * (-len(data) % 8)

    flags = el(6, struct.pack(">II", 6, 0))
    dims = el(5, struct.pack(">ii", 2, 2))
    name = struct.pack(">I", (3 << 16) | 1) + b"kps\0"  # small element: 3 bytes of miINT8
    real = el(9, struct.pack(">4d", 1.0, 2.0, 3.0, 4.0))  # column-major
    header = b"MATLAB 5.0 MAT-file, hand-written".ljust(116, b" ") + b"\0" * 8 + b"\x01\x00MI"
    path.write_bytes(header + el(14, flags + dims + name + real))


def test_big_endian_and_small_elements(tmp_path):
    p = tmp_path / "be.mat"
    _big_endian_mat(p)
    np.testing.assert_array_equal(read_mat(p)["kps"], [[1.0, 3.0], [2.0, 4.0]])


def test_malformed_files_name_the_path(tmp_path):
    good = tmp_path / "good.mat"
    scipy_io.savemat(good, {"kps": np.ones((3, 2))}, do_compression=True)
    data = good.read_bytes()
    cases = {"short.mat": data[:60], "trunc.mat": data[:-7],
             "garbage.mat": data[:128] + b"\x0f\x00\x00\x00\x20\x00\x00\x00" + b"\xff" * 32}
    # a zlib bomb: 256 MiB of zeros declared as one compressed variable
    bomb = zlib.compress(struct.pack("<II", 14, 256 << 20) + b"\0" * (256 << 20), 9)
    cases["bomb.mat"] = data[:128] + struct.pack("<II", 15, len(bomb)) + bomb
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            read_mat(tmp_path / name)
    (tmp_path / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(512, b" "))
    with pytest.raises(UnsupportedMatFile, match="v7.3"):
        read_mat(tmp_path / "v73.mat")


def test_pfpascal_loads_without_scipy(tmp_path):
    """The PF-PASCAL loader works when scipy cannot be imported."""
    from PIL import Image

    root = tmp_path / "PF-dataset-PASCAL"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations" / "cat").mkdir(parents=True)
    for stem in ("2009_000001", "2009_000002"):
        Image.new("RGB", (40, 30), (90, 90, 90)).save(root / "JPEGImages" / f"{stem}.jpg")
        scipy_io.savemat(root / "Annotations" / "cat" / f"{stem}.mat",
                         {"kps": np.array([[1.0, 2.0], [3.0, 4.0]]),
                          "bbox": np.array([[0.0, 0.0, 39.0, 29.0]])})
    rel = lambda s: f"PF-dataset-PASCAL/JPEGImages/{s}.jpg"
    with open(root / "test_pairs_pf_pascal.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["source_image", "target_image", "class", "XA", "YA", "XB",
                                   "YB"],
                                  [rel("2009_000001"), rel("2009_000002"), "8",
                                   "1;3", "2;4", "1;3", "2;4"]])
    code = textwrap.dedent("""
        import sys
        sys.modules["scipy"] = None
        sys.modules["scipy.io"] = None
        from geomatch.data import load_dataset
        (p,) = load_dataset("pfpascal", sys.argv[1]).pairs("test")
        print(p.src.keypoints.tolist(), p.src.bbox.tolist())
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "[[1.0, 2.0], [3.0, 4.0]]" in r.stdout and "39.0" in r.stdout, r.stdout
