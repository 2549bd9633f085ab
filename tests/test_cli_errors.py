"""Errors the CLI meets outside the subcommands' own checks (found in QA):
operating-system errors while writing, Ctrl-C, a closed output pipe.  Each is
one line on stderr, a non-zero exit and no traceback."""
import subprocess
import sys

import pytest

from geomatch import cli


def _cli(*args, timeout=120):
    code = "import sys; from geomatch.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(proc, command):
    assert proc.returncode not in (0, None), proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "\r" not in ln
             and not ln.lstrip().startswith(("index ", "extract ", "eval "))]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"geomatch {command}: error:"), lines[0]
    return lines[0]


def test_an_os_error_while_writing_is_one_line(spair, weights, tmp_path):
    # --out below a regular file: os.makedirs raises NotADirectoryError
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "cache"
    proc = _cli("--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
                "--weights", str(weights), "--out", str(out), "--size", "56", "--split", "test")
    line = _one_line_error(proc, "extract")
    assert str(out) in line
    assert blocker.read_text() == "x"


def test_os_error_from_a_command_is_one_line(monkeypatch, capsys):
    mod = __import__(cli.COMMANDS["profile"][0], fromlist=["run_cli"])

    def boom(args):
        raise NotADirectoryError(20, "Not a directory", "/tmp/x/file/out")

    monkeypatch.setattr(mod, "run_cli", boom)
    assert cli.main(["profile", "--weights", "w.pth"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("geomatch profile: error:")
    assert "/tmp/x/file/out" in err


def test_keyboard_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    mod = __import__(cli.COMMANDS["profile"][0], fromlist=["run_cli"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "run_cli", interrupted)
    assert cli.main(["profile", "--weights", "w.pth"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err


def test_closed_stdout_pipe_is_not_a_traceback():
    code = ("import sys; from geomatch.cli import main; sys.exit(main(['config']))")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()                       # like `geomatch config | head -0`
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err, err


def _head_file(path, in_dim):
    from geomatch.model.head import AttentionHead, HeadConfig

    AttentionHead(HeadConfig(in_dim=in_dim, dim=32, out_dim=16, num_heads=1,
                             mlp_dim=32)).save(path)
    return path


def test_eval_with_a_head_of_another_feature_dimension_names_the_head(spair, weights,
                                                                       tmp_path, capsys):
    cache = tmp_path / "cache"
    assert cli.main(["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
                     "--weights", str(weights), "--out", str(cache), "--size", "56",
                     "--split", "test", "--no-flip"]) == 0
    capsys.readouterr()
    head = _head_file(tmp_path / "head64.npz", 64)          # the cache holds 128 channels
    out = tmp_path / "results"
    assert cli.main(["eval", "--dataset", "spair", "--root", str(spair), "--cache", str(cache),
                     "--split", "test", "--head", str(head), "--out", str(out),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "head64.npz" in err and "64" in err and "128" in err
    assert not out.exists()


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (Pillow reads the size first)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def test_image_beyond_pillows_pixel_limit_is_a_one_line_error(tmp_path):
    """QA: Pillow's DecompressionBombError (neither OSError nor ValueError)
    came out of `geomatch match` as a traceback."""
    bomb = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    ok = tmp_path / "ok.png"
    from PIL import Image

    Image.new("RGB", (20, 16), (200, 10, 10)).save(ok)
    out = tmp_path / "out"
    proc = _cli("match", str(bomb), str(ok), "--weights", str(tmp_path / "w.safetensors"),
                "--points", "1,1", "--out", str(out))
    line = _one_line_error(proc, "match")
    assert "huge.png" in line
    assert not out.exists()


def test_loaders_name_an_image_beyond_the_pixel_limit(tmp_path):
    from geomatch.backbone.preprocess import preprocess_image
    from geomatch.data.base import image_size
    from geomatch.match.matcher import load_rgb

    bomb = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    for read in (lambda: preprocess_image(bomb, "resize", 56), lambda: image_size(bomb),
                 lambda: load_rgb(bomb, "SRC")):
        with pytest.raises(ValueError, match="huge.png"):
            read()


@pytest.mark.parametrize("size", ["0", "-14"])
def test_size_zero_or_negative_is_refused(spair, weights, tmp_path, capsys, size):
    """QA: --size 0 silently meant the default size (518) in extract and
    profile, and extract took negative multiples of 14."""
    out = tmp_path / "cache"
    assert cli.main(["extract", "--dataset", "spair", "--root", str(spair), "--weights",
                     str(weights), "--out", str(out), "--size", size, "--split", "test",
                     "--no-progress"]) == 1
    assert "size" in capsys.readouterr().err and not out.exists()
    assert cli.main(["profile", "--weights", str(weights), "--size", size, "--images", "2",
                     "--pairs", "1", "--no-progress"]) == 1
    assert "size" in capsys.readouterr().err


def test_preprocess_refuses_size_zero():
    import numpy as np

    from geomatch.backbone.preprocess import make_frame, preprocess_image

    img = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="size"):
        preprocess_image(img, "resize", 0)
    with pytest.raises(ValueError, match="size"):
        make_frame((30, 20), "pad", 0)


def test_eval_names_the_image_whose_cached_features_are_not_finite(spair, weights, tmp_path,
                                                                   capsys):
    """QA: a cache entry holding NaN gave 'src_feat contains NaN or infinite
    values' without saying which image."""
    import numpy as np

    from geomatch.data.cache import key_to_filename

    cache = tmp_path / "cache"
    assert cli.main(["--threads", "1", "extract", "--dataset", "spair", "--root", str(spair),
                     "--weights", str(weights), "--out", str(cache), "--size", "56",
                     "--split", "test", "--no-flip", "--no-progress"]) == 0
    capsys.readouterr()
    fn = cache / "features" / key_to_filename("cat/a2")
    arr = np.load(fn)
    arr[1, 2, 3] = np.nan
    np.save(fn, arr)
    out = tmp_path / "results"
    assert cli.main(["eval", "--dataset", "spair", "--root", str(spair), "--cache", str(cache),
                     "--split", "test", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cat/a2" in err, err
    assert not out.exists()
