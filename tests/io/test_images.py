"""read_image / read_exr: huge headers (decompression bombs) and images too large for memory are
refused in one line before anything is decoded, by every command that reads images; PNGs written
by nca3d's own encoder read back exactly."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from nca3d.bench import main as bench_main
from nca3d.cli import main
from nca3d.errors import NCA3DError
from nca3d.io import images
from nca3d.io.exr import read_exr, write_exr
from nca3d.io.images import MAX_IMAGE_PIXELS, read_exemplar, read_image
from tests.conftest import optional_import
from tests.train.test_trainer import make_exemplar


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def bomb_png(path, width: int = 60000, height: int = 60000):
    """A PNG of a few hundred bytes whose header claims width x height RGB pixels (its one IDAT
    holds the first rows of zeros, as a real bomb's would)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def test_a_huge_header_is_refused_before_decoding(tmp_path):
    path = bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 2000
    with pytest.raises(NCA3DError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and "60000x60000" in message and "decompression bomb" in message
    assert "at most 16384x16384 px" in message
    # one pixel over the limit is refused, the limit itself passes the header check
    over = bomb_png(tmp_path / "over.png", 16384, 16385)
    with pytest.raises(NCA3DError, match="claims 16384x16385 px"):
        read_image(over)
    images.check_image_size("limit.png", 16384, 16384, 0)


def test_an_image_larger_than_free_memory_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300), (10, 20, 30)).save(path)
    need = 400 * 300 * 3 * images.READ_BYTES_PER_SAMPLE
    monkeypatch.setattr(images, "available_memory", lambda: (need - 1, 8 << 30))
    with pytest.raises(NCA3DError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and "400x300 px" in message and "downscale it" in message
    monkeypatch.setattr(images, "available_memory", lambda: (need, 8 << 30))
    assert read_image(path)[0].shape == (300, 400, 3)
    monkeypatch.setattr(images, "available_memory", lambda: (None, None))  # unknown: no refusal
    assert read_image(path)[0].shape == (300, 400, 3)


def test_pillows_own_limit_is_replaced_not_lowered(tmp_path, monkeypatch):
    """Above Pillow's bomb limit (but within ours) the image is read, with no Pillow warning, and
    Pillow's setting is left as it was."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse 64x64 (> 2x the limit)
    path = tmp_path / "ok.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, _ = read_image(path)
    assert pixels.shape == (64, 64, 3) and Image.MAX_IMAGE_PIXELS == 1000


def test_a_huge_exr_header_is_refused(tmp_path):
    path = tmp_path / "small.exr"
    write_exr(path, np.zeros((4, 5, 3), np.float32))
    blob = bytearray(path.read_bytes())
    window = struct.pack("<iiii", 0, 0, 4, 3)  # the data window as written: (0, 0) to (4, 3)
    assert blob.count(window) >= 1
    blob[blob.index(window):blob.index(window) + 16] = struct.pack("<iiii", 0, 0, 59999, 59999)
    (tmp_path / "bomb.exr").write_bytes(bytes(blob))
    with pytest.raises(NCA3DError, match="claims 60000x60000 px"):
        read_exr(tmp_path / "bomb.exr")


def test_pillow_text_chunk_bombs_are_one_line(tmp_path):
    """A PNG whose compressed text chunk inflates past Pillow's limit raises ValueError in Pillow."""
    path = tmp_path / "text.png"
    Image.new("RGB", (32, 32)).save(path)
    blob = path.read_bytes()
    text = _chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"a" * (2 ** 24), 9))
    path.write_bytes(blob[:33] + text + blob[33:])  # after the 8-byte signature and the 25-byte IHDR
    with pytest.raises(NCA3DError, match="not a readable image"):
        read_exemplar(path)


@pytest.mark.parametrize("role", ["exemplar", "normal", "height", "roughness", "ao"])
def test_train_refuses_a_bomb_in_any_image(tmp_path, capsys, role):
    bomb = bomb_png(tmp_path / "bomb.png")
    good = make_exemplar(tmp_path / "good.png")
    args = ["train", str(bomb if role == "exemplar" else good), "--out", str(tmp_path / "m.nca3d"),
            "--iters", "1", "--features", "patches"]
    if role != "exemplar":
        args += [f"--{role}", str(bomb)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bomb.png' claims 60000x60000 px" in err[0], err
    assert not (tmp_path / "m.nca3d").exists() and not (tmp_path / "m.ckpt").exists()


def test_the_real_command_line_exits_2_without_a_traceback(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    result = subprocess.run([sys.executable, "-m", "nca3d", "train", str(bomb), "--out", str(tmp_path / "m.nca3d"),
                             "--features", "patches"], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        (f"nca3d: error: image '{bomb}' claims 60000x60000 px, more than the 16384x16384 px nca3d reads (a damaged "
         f"file or a decompression bomb); use an image of at most 16384x16384 px")]
    assert MAX_IMAGE_PIXELS == 16384 ** 2


def test_the_quality_bench_refuses_a_bomb_exemplar(tmp_path, capsys):
    optional_import("plenoptic", "the quality bench needs plenoptic (pip install 'nca3d[bench]')")
    data = tmp_path / "data"
    data.mkdir()
    bomb_png(data / "bomb.png")
    assert bench_main(["quality", "--data", str(data), "--out", str(tmp_path / "q"), "--minutes", "0.01",
                       "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "claims 60000x60000 px" in err[0], err


@pytest.mark.parametrize("shape, dtype", [((9, 13), np.uint8), ((9, 13, 2), np.uint8), ((9, 13, 3), np.uint8),
                                          ((9, 13, 4), np.uint8), ((9, 13), np.uint16), ((9, 13, 3), np.uint16)])
def test_written_pngs_read_back_exactly(tmp_path, shape, dtype):
    """Own encoder ("up" filter + zlib): Pillow reads every pixel back (16-bit colour: Pillow keeps
    the high byte), and `read_image` reads 16-bit grey exactly."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    path = tmp_path / "x.png"
    images.write_png(path, pixels, bits=16 if dtype == np.uint16 else 8)
    with Image.open(path) as image:
        back = np.asarray(image)
    if dtype == np.uint16 and len(shape) == 3:
        assert np.array_equal(back, (pixels >> 8).astype(np.uint8))
    else:
        assert np.array_equal(back.reshape(shape), pixels)
    if dtype == np.uint16 and len(shape) == 2:
        read, _ = images.read_image(path)
        assert np.abs(read.reshape(shape) * 65535 - pixels).max() < 0.02
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary left


def test_float_pixels_are_quantised_like_before(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, np.nan, 2.0, -1.0, 1 / 255 * 0.49, 1 / 255 * 0.51]], np.float32)
    images.write_png(tmp_path / "g.png", values)
    with Image.open(tmp_path / "g.png") as image:
        assert np.asarray(image).tolist() == [[0, 128, 255, 0, 255, 0, 0, 1]]


def test_write_pngs_writes_all_files_in_parallel_and_raises_the_first_error(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    jobs = [(tmp_path / f"m{k}.png", rng.integers(0, 256, (16, 8, 3), dtype=np.uint8), 8) for k in range(5)]
    images.write_pngs(jobs)
    for path, pixels, _ in jobs:
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(image), pixels)
    real = images.encode_png

    def full_disk(pixels):
        if pixels.shape[1] == 9:
            raise OSError("disk full")
        return real(pixels)

    monkeypatch.setattr(images, "encode_png", full_disk)
    bad = [(tmp_path / "n0.png", np.zeros((4, 4), np.uint8), 8), (tmp_path / "n1.png", np.zeros((4, 9), np.uint8), 8)]
    with pytest.raises(OSError, match="disk full"):
        images.write_pngs(bad)
    assert (tmp_path / "n0.png").exists() and not (tmp_path / "n1.png").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]
