"""Malformed and hostile weight files (issue 14, items 3 and 7).

The ``.pth`` files are written by hand (pickle opcodes spelled out, raw
storages in a zip archive, as ``torch.save`` lays them out), so these tests
need no torch.  Cases that could exhaust memory run in a subprocess with an
address-space limit and a timeout.
"""
import json
import math
import os
import struct
import zipfile

import numpy as np
import pytest

from geomatch.backbone import checkpoints as ck
from geomatch.backbone.checkpoints import read_safetensors, read_torch_file
from memlimit import read_with_memory_limit


# ---------------------------------------------------------------------------
# a tiny pickle writer (protocol 2 opcodes)

def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(n):
    return b"L" + str(int(n)).encode() + b"L\n"


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _tensor(key, numel, size, stride, offset=0, storage="FloatStorage", size_ops=None):
    """Opcodes of torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})."""
    persid = _tuple(_str("storage"), _global("torch", storage), _str(key), _str("cpu"),
                    _int(numel)) + b"Q"
    size_b = size_ops if size_ops is not None else _tuple(*[_int(s) for s in size])
    return (_global("torch._utils", "_rebuild_tensor_v2")
            + _tuple(persid, _int(offset), size_b, _tuple(*[_int(s) for s in stride]),
                     b"\x89", _global("collections", "OrderedDict") + b")R")
            + b"R")


def _state(items):
    """Pickle of {name: opcodes} as a plain dict."""
    body = b"".join(_str(k) + v for k, v in items.items())
    return b"\x80\x02}(" + body + b"u."


def _write_pth(path, pkl, storages=(), compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for key, raw in storages:
            zf.writestr(f"archive/data/{key}", raw)
    return str(path)


def test_handwritten_pth_is_read(tmp_path):
    """The writer above produces what the reader accepts (so the cases below
    fail for the reason they name)."""
    data = np.arange(6, dtype="<f4")
    path = _write_pth(tmp_path / "ok.pth", _state({"w": _tensor("0", 6, (2, 3), (3, 1))}),
                      [("0", data.tobytes())])
    out = read_torch_file(path)
    np.testing.assert_array_equal(out["w"], [[0, 1, 2], [3, 4, 5]])


# ---------------------------------------------------------------------------
# item 7: every reader error is a ValueError naming the path

def test_corrupt_crc_is_valueerror_naming_path(tmp_path):
    data = np.arange(6, dtype="<f4").tobytes()
    path = _write_pth(tmp_path / "crc.pth", _state({"w": _tensor("0", 6, (6,), (1,))}),
                      [("0", data)])
    blob = bytearray(open(path, "rb").read())
    i = blob.index(data)
    blob[i + 5] ^= 0xFF  # flip a byte of the stored data: the CRC no longer matches
    open(path, "wb").write(bytes(blob))
    with pytest.raises(ValueError, match="crc.pth"):
        read_torch_file(path)


def test_deep_nesting_is_valueerror_naming_path(tmp_path):
    depth = 100_000
    pkl = b"\x80\x02" + (b"}" + _str("model")) * depth + b"}" + b"s" * depth + b"."
    path = _write_pth(tmp_path / "deep.pth", pkl)
    with pytest.raises(ValueError, match="deep.pth"):
        read_torch_file(path)
    st = tmp_path / "deep.safetensors"
    header = b"[" * depth + b"]" * depth
    st.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match="deep.safetensors"):
        read_safetensors(st)


def test_infinite_size_is_valueerror_naming_path(tmp_path):
    inf = b"G" + struct.pack(">d", math.inf)
    pkl = _state({"w": _tensor("0", 1, None, (1,), size_ops=_tuple(inf))})
    path = _write_pth(tmp_path / "inf.pth", pkl, [("0", b"\0" * 4)])
    with pytest.raises(ValueError, match="inf.pth"):
        read_torch_file(path)
    # an infinite element count in the storage id as well
    pkl = _state({"w": _tensor("0", 1, (1,), (1,)).replace(_int(1) + b"tQ", inf + b"tQ", 1)})
    path = _write_pth(tmp_path / "inf2.pth", pkl, [("0", b"\0" * 4)])
    with pytest.raises(ValueError, match="inf2.pth"):
        read_torch_file(path)


def test_hf_config_that_is_not_json_names_the_file(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(ValueError, match="config.json"):
        ck.read_hf_dir(d)


@pytest.mark.parametrize("entry, why", [
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "negative"),
    ({"dtype": "F32", "shape": [-2, -3], "data_offsets": [0, 24]}, "negative"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}, "offsets"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}, "offsets"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}, "offsets"),
    ({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}, "header entry"),
    ({"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 8]}, "limit"),
])
def test_safetensors_bad_shapes_and_offsets(tmp_path, entry, why):
    header = json.dumps({"t": entry}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ValueError, match=why) as ei:
        read_safetensors(path)
    assert "bad.safetensors" in str(ei.value)


def test_safetensors_overlapping_tensors_refused(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(ValueError, match="overlap"):
        read_safetensors(path)
    # the same tensors side by side are fine
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    assert sorted(read_safetensors(path)) == ["a", "b"]


# ---------------------------------------------------------------------------
# item 7: the BUILD opcode cannot change the reader's functions

@pytest.mark.parametrize("state", [
    # (None, {"__defaults__": (True, None, None)}): slot state -> setattr
    _tuple(b"N", b"}" + _str("__defaults__") + _tuple(b"\x88", b"N", b"N") + b"s"),
    # {"__defaults__": ...}: instance dict update
    b"}" + _str("__defaults__") + _tuple(b"\x88", b"N", b"N") + b"s",
], ids=["slot-state", "dict-state"])
@pytest.mark.parametrize("target", [("torch._utils", "_rebuild_tensor_v2"),
                                    ("torch._utils", "_rebuild_parameter"),
                                    ("collections", "OrderedDict"),
                                    ("torch", "FloatStorage")], ids=lambda t: t[1])
def test_build_opcode_on_whitelisted_names_refused(tmp_path, state, target):
    before = {f: (f.__defaults__, dict(f.__dict__)) for f in
              (ck._rebuild_tensor_v2, ck._rebuild_parameter, ck._rebuild_parameter_with_state)}
    pkl = b"\x80\x02" + _global(*target) + state + b"b" + b"0" + b"}."
    path = _write_pth(tmp_path / "build.pth", pkl)
    with pytest.raises(ValueError, match="build.pth"):
        read_torch_file(path)
    after = {f: (f.__defaults__, dict(f.__dict__)) for f in before}
    assert after == before
    # and a normal file still reads with the defaults intact
    data = np.arange(2, dtype="<f4")
    ok = _write_pth(tmp_path / "ok.pth", _state({"w": _tensor("0", 2, (2,), (1,))}),
                    [("0", data.tobytes())])
    np.testing.assert_array_equal(read_torch_file(ok)["w"], [0, 1])


def test_build_on_ordered_dict_instance_still_allowed(tmp_path):
    """torch's state dicts are OrderedDicts with a ``_metadata`` attribute set
    by BUILD on the instance: that stays readable."""
    data = np.arange(2, dtype="<f4")
    body = _str("w") + _tensor("0", 2, (2,), (1,))
    pkl = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
           + b"}" + _str("_metadata") + b"}" + b"s" + b"b"
           + b"(" + body + b"u.")
    path = _write_pth(tmp_path / "od.pth", pkl, [("0", data.tobytes())])
    np.testing.assert_array_equal(read_torch_file(path)["w"], [0, 1])


# ---------------------------------------------------------------------------
# item 3: no huge allocation from a small file

def _run_limited(path):
    return read_with_memory_limit("geomatch.backbone.checkpoints.read_torch_file", path)


def test_stride_zero_huge_shape_refused_before_allocating(tmp_path):
    pkl = _state({"w": _tensor("0", 1, (50000, 50000), (0, 0))})
    path = _write_pth(tmp_path / "stride0.pth", pkl, [("0", b"\0" * 4)])
    assert os.path.getsize(path) < 2048
    out = _run_limited(path)
    assert "VALUEERROR" in out and "stride0.pth" in out, out


def test_huge_declared_storage_refused(tmp_path):
    pkl = _state({"w": _tensor("0", 1 << 40, (4,), (1,))})
    path = _write_pth(tmp_path / "huge.pth", pkl, [("0", b"\0" * 16)])
    out = _run_limited(path)
    assert "VALUEERROR" in out and "huge.pth" in out, out


def test_deflate_bomb_not_inflated(tmp_path):
    """A deflated entry far larger than its declared element count is refused
    from the zip directory's sizes, before inflating."""
    import tracemalloc

    pkl = _state({"w": _tensor("0", 4, (4,), (1,))})
    path = _write_pth(tmp_path / "bomb.pth", pkl, [("0", b"\0" * (48 << 20))],
                      compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < (1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="bomb.pth"):
            read_torch_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (8 << 20), peak


def test_other_model_message_is_short(tmp_path):
    """Weights of another architecture: counts and a few names, not a list of
    every tensor."""
    from geomatch.backbone.checkpoints import check_state

    expected = {f"blocks.{i}.w{j}": (8, 8) for i in range(40) for j in range(5)}
    state = {f"blocks.{i}.w{j}": np.zeros((4, 4), np.float32) for i in range(40)
             for j in range(5)}
    with pytest.raises(ValueError) as ei:
        check_state(state, expected, "other.pth")
    msg = str(ei.value)
    assert "wrong shape 200" in msg and "196 more" in msg
    assert len(msg) < 600, len(msg)


@pytest.mark.parametrize("config", [{}, {"hidden_size": "wide", "num_hidden_layers": 1,
                                         "num_attention_heads": 1}],
                         ids=["empty", "not-a-number"])
def test_hf_config_without_fields_names_the_file(tmp_path, config):
    from geomatch.backbone.dinov2 import load_dinov2

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(ValueError, match="config.json"):
        load_dinov2(d)
