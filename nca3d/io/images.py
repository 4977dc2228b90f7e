"""Image reading and writing: PNG (8/16-bit, written by our own encoder, in parallel), JPEG and other
Pillow formats; atomic writes."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import NCA3DError
from ..memory import available_memory, human_bytes
from .atomic import atomic_path

MIN_EXEMPLAR_SIZE = 16


PNG_LEVEL = 2  # zlib level: on 4K maps 0.8x the CPU time of level 3 for files 2% larger (6: 20% smaller, 1.5x slower)

MAX_IMAGE_PIXELS = 16384 * 16384  # the largest image read; Pillow's own bomb limit is lower (about 9459^2)
READ_BYTES_PER_SAMPLE = 9  # decoded (up to 2 bytes), float32 copy and the clipped float32 result


def check_image_size(path, width: int, height: int, channels: int) -> None:
    """Refuse an image whose header claims more pixels than MAX_IMAGE_PIXELS (a decompression bomb:
    a tiny file with a huge header) or more than the free memory can hold once decoded."""
    pixels = int(width) * int(height)
    if pixels > MAX_IMAGE_PIXELS:
        side = int(MAX_IMAGE_PIXELS ** 0.5)
        raise NCA3DError(f"image '{path}' claims {width}x{height} px, more than the {side}x{side} px nca3d reads "
                         f"(a damaged file or a decompression bomb); use an image of at most {side}x{side} px")
    need = pixels * int(channels) * READ_BYTES_PER_SAMPLE
    available, _ = available_memory()
    if available is not None and need > available:
        raise NCA3DError(f"image '{path}' is {width}x{height} px: reading it needs about {human_bytes(need)} of "
                         f"memory but only {human_bytes(available)} is available; downscale it (4096 px is plenty)")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read an image as float32 (H, W, C) in [0, 1]; returns (pixels, Pillow mode).

    8- and 16-bit, greyscale, palette, RGB and RGBA inputs are all read; C is 1, 2, 3 or 4.
    The size in the header is checked (`check_image_size`) before anything is decoded.
    """
    path = Path(path)
    if not path.exists():
        raise NCA3DError(f"image '{path}' not found; check the path")
    if not path.is_file():
        raise NCA3DError(f"image '{path}' is not a file")
    try:
        with _own_size_limit(), Image.open(path) as image:
            check_image_size(path, *image.size, len(image.getbands()))
            image.load()
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # ValueError: Pillow's limit on decompressed text chunks; OSError: truncated or corrupt data
        raise NCA3DError(f"'{path}' is not a readable image ({exc}); use a PNG or JPEG file") from None
    except MemoryError:
        raise NCA3DError(f"image '{path}' does not fit in memory once decoded; downscale it (4096 px is plenty)") from None
    if array.dtype == np.bool_:
        pixels = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        peak = 65535.0 if mode.startswith("I") or array.dtype == np.uint16 else 255.0
        pixels = array.astype(np.float32) / peak
    else:
        pixels = array.astype(np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return np.clip(pixels, 0.0, 1.0), mode


@contextlib.contextmanager
def _own_size_limit():
    """Pillow's bomb check off while opening: `check_image_size` applies nca3d's limit (larger than
    Pillow's, and a one-line error instead of an exception or a warning)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def write_png(path: str | os.PathLike, pixels: np.ndarray, bits: int = 8) -> None:
    """Write float (H, W[, C]) in [0, 1] as an 8- or 16-bit PNG (C = 1 to 4), atomically.

    uint8 (bits 8) and uint16 (bits 16) arrays are written as they are, without a float copy."""
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    dtype = np.uint8 if bits == 8 else np.uint16
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == dtype):
        pixels = np.clip(np.nan_to_num(np.asarray(pixels, dtype=np.float32)), 0.0, 1.0)
        pixels = np.round(pixels * ((1 << bits) - 1)).astype(dtype)
    data = encode_png(pixels)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_pngs(images: list[tuple[str | os.PathLike, np.ndarray, int]]) -> None:
    """`write_png(path, pixels, bits)` for each item, on up to one thread per core: zlib and numpy
    release the GIL, so a frame's maps encode in parallel. Every file is atomic; the first error
    is raised once all have finished."""
    if len(images) <= 1:
        for item in images:
            write_png(*item)
        return
    with ThreadPoolExecutor(min(len(images), os.cpu_count() or 1)) as pool:
        for future in [pool.submit(write_png, *item) for item in images]:
            future.result()


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 or uint16 pixels (H, W[, C]), C = 1 to 4 (grey, grey + alpha, RGB, RGBA) -> PNG bytes.

    Every row takes PNG filter 2 ("up": minus the row above, one numpy subtraction), then zlib at
    PNG_LEVEL. Pillow tries 5 filters per row and holds the GIL: at the same zlib level it took 1.6x
    the CPU time on 4K maps, for files 2.5% smaller."""
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3) or not 1 <= channels <= 4:
        raise ValueError(f"PNG pixels must be uint8 or uint16 (H, W[, 1-4]), not {pixels.dtype} {pixels.shape}")
    rows = pixels.astype(">u2" if pixels.dtype == np.uint16 else np.uint8).reshape(height, -1).view(np.uint8)
    raw = np.empty((height, rows.shape[1] + 1), np.uint8)
    raw[:, 0] = 2
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, pixels.dtype.itemsize * 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, PNG_LEVEL))
            + chunk(b"IEND", b""))


def read_exemplar(path: str | os.PathLike, role: str = "exemplar") -> tuple[np.ndarray, bool]:
    """Read a texture exemplar as RGB float32 (H, W, 3); returns (pixels, is_grey).

    Greyscale inputs are replicated to RGB and flagged so training can keep them grey; opaque
    RGBA is accepted; transparency, tiny images and unreadable files are refused in one line.
    """
    pixels, _ = read_image(path)
    height, width, channels = pixels.shape
    if min(height, width) < MIN_EXEMPLAR_SIZE:
        raise NCA3DError(f"{role} '{path}' is only {width}x{height} px; use an image of at least "
                         f"{MIN_EXEMPLAR_SIZE}x{MIN_EXEMPLAR_SIZE} px (ideally 256 or more)")
    if channels in (2, 4):
        alpha = pixels[..., -1]
        if alpha.min() < 1.0:
            raise NCA3DError(f"{role} '{path}' has transparent pixels; flatten it onto a background "
                             f"(or drop the alpha channel) first")
        pixels = pixels[..., :-1]
    grey = pixels.shape[2] == 1
    if grey:
        pixels = np.repeat(pixels, 3, axis=2)
    else:
        grey = bool(np.abs(pixels - pixels.mean(2, keepdims=True)).max() < 1.5 / 255)
    return np.ascontiguousarray(pixels), grey
