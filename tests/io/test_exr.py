"""Tests for nca3d.io.exr: exact round trips and the file structure the OpenEXR spec asks for.

When the `OpenEXR` Python package (the reference library) imports, it reads every file too.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from nca3d.errors import NCA3DError
from nca3d.io.exr import _parse_channels, _parse_header, encode_exr, read_exr, write_exr
from tests.conftest import optional_import

SHAPES = [(37, 53), (17, 5, 1), (37, 53, 3), (40, 16, 4), (1, 1)]


def _image(shape, seed=0):
    image = np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 10
    image[: shape[0] // 2] = 0.25  # a compressible half
    image.flat[0] = np.inf
    return image


@pytest.mark.parametrize("compression", ["zip", "zips", "none"])
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_is_exact(tmp_path, shape, compression):
    image = _image(shape)
    path = tmp_path / "x.exr"
    write_exr(path, image, compression=compression)
    back = read_exr(path)
    expected = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    assert back.dtype == np.float32 and back.shape == expected.shape
    np.testing.assert_array_equal(back, expected)
    assert not list(tmp_path.glob(".*part*")), "no temporary file left behind"


def test_header_and_offset_table():
    height, width = 40, 7
    blob = encode_exr(_image((height, width, 4)), compression="zip")
    assert struct.unpack_from("<ii", blob) == (20000630, 2)
    attributes, pos = _parse_header(blob)
    assert set(attributes) == {"channels", "compression", "dataWindow", "displayWindow", "lineOrder",
                               "pixelAspectRatio", "screenWindowCenter", "screenWindowWidth"}
    types = {name: kind for name, (kind, _) in attributes.items()}
    assert types["channels"] == "chlist" and types["dataWindow"] == "box2i" and types["lineOrder"] == "lineOrder"
    assert types["screenWindowCenter"] == "v2f" and types["pixelAspectRatio"] == "float"
    names = [name for name, dtype in _parse_channels(attributes["channels"][1])]
    assert names == ["A", "B", "G", "R"]  # alphabetical, as readers require
    assert struct.unpack("<iiii", attributes["dataWindow"][1]) == (0, 0, width - 1, height - 1)
    assert attributes["compression"][1] == b"\x03"
    blocks = -(-height // 16)
    offsets = np.frombuffer(blob, "<u8", blocks, pos)
    assert offsets[0] == pos + 8 * blocks
    ends = []
    for k, offset in enumerate(offsets.tolist()):
        y, size = struct.unpack_from("<ii", blob, offset)
        assert y == 16 * k
        ends.append(offset + 8 + size)
    assert ends[:-1] == offsets[1:].tolist() and ends[-1] == len(blob)


def test_zip_compresses_smooth_images():
    flat = np.full((64, 64, 3), 0.5, np.float32)
    assert len(encode_exr(flat, "zip")) < len(encode_exr(flat, "none")) // 20


def test_single_channel_is_y():
    attributes, _ = _parse_header(encode_exr(np.zeros((3, 4))))
    assert [name for name, _ in _parse_channels(attributes["channels"][1])] == ["Y"]


def test_bad_inputs(tmp_path):
    for shape in [(4,), (4, 4, 2), (0, 4, 3), (2, 2, 2, 3)]:
        with pytest.raises(ValueError):
            write_exr(tmp_path / "bad.exr", np.zeros(shape))
    with pytest.raises(ValueError, match="compression"):
        write_exr(tmp_path / "bad.exr", np.zeros((2, 2)), compression="piz")
    (tmp_path / "junk.exr").write_bytes(b"not an exr at all")
    with pytest.raises(NCA3DError, match="not an EXR file"):
        read_exr(tmp_path / "junk.exr")
    with pytest.raises(NCA3DError, match="not found"):
        read_exr(tmp_path / "missing.exr")
    assert not (tmp_path / "bad.exr").exists()


@pytest.mark.parametrize("compression", ["zip", "none"])
def test_reference_reader(tmp_path, compression):
    openexr = optional_import("OpenEXR", "pip install OpenEXR to check files with the reference reader")
    image = _image((21, 34, 4), seed=3)
    path = tmp_path / "ref.exr"
    write_exr(path, image, compression=compression)
    with openexr.File(str(path), separate_channels=True) as file:
        channels = {name: channel.pixels for name, channel in file.channels().items()}
    assert sorted(channels) == ["A", "B", "G", "R"]
    for k, name in enumerate("RGBA"):
        np.testing.assert_array_equal(channels[name], image[..., k])
