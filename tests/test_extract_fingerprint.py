"""Weight fingerprints recorded in the feature-cache manifest.

The reference digest is spelled out here: SHA-256 over the bytes of
``config.json`` then ``model.safetensors`` for a Hugging Face folder (the
file's bytes for a single checkpoint), followed by ``b"+lora:"`` and the LoRA
file's bytes when a LoRA is merged.  Any change to any of those bytes must
change the digest, so a cache of base features is never reused for a LoRA
model or for other weights.
"""
import hashlib

import pytest

from geomatch.backbone.extract import weights_sha256


def _hf_folder(tmp_path, config=b'{"hidden_size": 8}', weights=b"W" * 100):
    d = tmp_path / "hf"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_bytes(config)
    (d / "model.safetensors").write_bytes(weights)
    return d


def test_single_file_digest_is_the_file_sha256(tmp_path):
    p = tmp_path / "w.pth"
    p.write_bytes(b"checkpoint bytes")
    assert weights_sha256(p) == hashlib.sha256(b"checkpoint bytes").hexdigest()


def test_hf_folder_digest_covers_config_then_weights(tmp_path):
    d = _hf_folder(tmp_path)
    ref = hashlib.sha256(b'{"hidden_size": 8}' + b"W" * 100).hexdigest()
    assert weights_sha256(d) == ref
    _hf_folder(tmp_path, config=b'{"hidden_size": 9}')
    assert weights_sha256(d) != ref
    _hf_folder(tmp_path, weights=b"W" * 99 + b"X")
    assert weights_sha256(d) != ref


def test_lora_is_chained_after_the_weights(tmp_path):
    p = tmp_path / "w.pth"
    p.write_bytes(b"base")
    lora = tmp_path / "lora.pth"
    lora.write_bytes(b"adapter")
    ref = hashlib.sha256(b"base" + b"+lora:" + b"adapter").hexdigest()
    assert weights_sha256(p, lora=lora) == ref
    assert weights_sha256(p, lora=lora) != weights_sha256(p)
    lora.write_bytes(b"adapteR")
    assert weights_sha256(p, lora=lora) != ref
    d = _hf_folder(tmp_path)
    lora.write_bytes(b"adapter")
    ref_hf = hashlib.sha256(b'{"hidden_size": 8}' + b"W" * 100 + b"+lora:" + b"adapter")
    assert weights_sha256(d, lora=lora) == ref_hf.hexdigest()


def test_missing_files_are_named(tmp_path):
    d = _hf_folder(tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        weights_sha256(d)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        weights_sha256(tmp_path / "nope.pth")
    p = tmp_path / "w.pth"
    p.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="lora.pth"):
        weights_sha256(p, lora=tmp_path / "lora.pth")
