import json
import pickle
import struct

import pytest
import torch

from nca3d.errors import NCA3DError
from nca3d.io.model_file import load_model, read_header, save_model
from tests.conftest import random_model


@pytest.fixture
def saved(tmp_path):
    model = random_model("mesh", icosphere_frequency=3)
    model.provenance.update(exemplar="granite.png", license="CC-BY-3.0", iterations=12)
    path = tmp_path / "m.nca3d"
    save_model(model, path)
    return model, path


@pytest.mark.parametrize("domain", ["2d", "mesh", "volume"])
def test_save_load_is_bit_exact(tmp_path, domain):
    model = random_model(domain)
    path = tmp_path / "m.nca3d"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b)
    assert not list(tmp_path.glob(".*part*")), "temporary file left behind"


def test_header_holds_provenance(saved):
    _, path = saved
    header, _ = read_header(path)
    assert header["schema"] == 1 and header["domain"] == "mesh"
    assert header["provenance"]["exemplar"] == "granite.png"
    assert header["provenance"]["license"] == "CC-BY-3.0"
    assert header["nca_params"] == 12416 and header["lppn_params"] == 2851
    assert load_model(path).provenance["iterations"] == 12


def _rewrite_header(path, change):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    raw = json.loads(data[8:8 + length])
    header = json.loads(raw["__metadata__"]["nca3d"])
    change(header, raw)
    raw["__metadata__"]["nca3d"] = json.dumps(header)
    blob = json.dumps(raw).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + length:])


def _refused(path, match):
    with pytest.raises(NCA3DError, match=match) as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_file_is_refused(saved):
    _, path = saved
    data = path.read_bytes()
    for size in (3, 100, len(data) - 10):
        path.write_bytes(data[:size])
        _refused(path, "truncated|corrupted")


def test_flipped_weight_byte_is_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    _refused(path, "checksum")


def test_garbled_header_is_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[20:30] = b"\x00" * 10
    path.write_bytes(bytes(data))
    _refused(path, "header")


def test_wrong_schema_is_refused(saved):
    _, path = saved
    _rewrite_header(path, lambda header, raw: header.update(schema=99))
    _refused(path, "schema version 99")


def test_wrong_shape_is_refused(saved):
    _, path = saved

    def widen(header, raw):
        header["config"]["hidden"] = 64
    _rewrite_header(path, widen)
    _refused(path, "shape")


def test_pickle_files_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name, writer in (("p.pkl", lambda f: pickle.dump(Exploit(), f)),
                         ("t.pt", lambda f: torch.save({"x": torch.zeros(2)}, f))):
        path = tmp_path / name
        with open(path, "wb") as f:
            writer(f)
        _refused(path, "pickle")
    assert not marker.exists()


def test_a_header_length_that_starts_like_a_pickle_still_loads(tmp_path):
    """A safetensors file starts with its header length: its first byte is 0x80 for 1 model in 256."""
    model = random_model("2d")
    path = tmp_path / "m.nca3d"
    for pad in range(512):
        model.provenance["note"] = "x" * pad
        save_model(model, path)
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert load_model(path).provenance["note"] == model.provenance["note"]


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(NCA3DError, match="not found"):
        load_model(tmp_path / "nope.nca3d")
    _refused(tmp_path, "not a file")


def test_plain_safetensors_without_header_is_refused(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, path)
    _refused(path, "no readable nca3d header")
