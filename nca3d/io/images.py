"""Image reading and writing: PNG (8/16-bit), JPEG and other Pillow formats; atomic writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import NCA3DError
from ..memory import available_memory, human_bytes
from .atomic import atomic_path

MIN_EXEMPLAR_SIZE = 16


PNG_LEVEL = 3  # zlib level: 1.5x faster than the default 6 on 4K maps, files about 20% larger

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
    """Write float (H, W[, C]) in [0, 1] as an 8- or 16-bit PNG (C = 1, 3 or 4), atomically.

    uint8 (bits 8) and uint16 (bits 16) arrays are written as they are, without a float copy."""
    if isinstance(pixels, np.ndarray) and pixels.dtype == {8: np.uint8, 16: np.uint16}.get(bits) and \
            (pixels.ndim == 2 or (bits == 8 and pixels.ndim == 3)):
        image = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", compress_level=PNG_LEVEL)
        return
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    pixels = np.clip(np.nan_to_num(pixels), 0.0, 1.0)
    if bits == 8:
        image = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    elif bits == 16:
        if pixels.ndim != 2:
            # Pillow writes 16-bit PNG only for single-channel images; colour goes through numpy.
            return _write_png16_colour(path, pixels)
        image = Image.fromarray(np.round(pixels * 65535).astype(np.uint16))
    else:
        raise ValueError("bits must be 8 or 16")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=PNG_LEVEL)


def _write_png16_colour(path, pixels: np.ndarray) -> None:
    """16-bit RGB(A) PNG written directly (Pillow cannot), zlib-compressed."""
    import struct
    import zlib

    height, width, channels = pixels.shape
    colour_type = {3: 2, 4: 6}[channels]
    data = np.round(pixels * 65535).astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in data)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    blob = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, PNG_LEVEL)) + chunk(b"IEND", b"")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)


def read_exemplar(path: str | os.PathLike, role: str = "exemplar") -> tuple[np.ndarray, bool]:
    """Read a texture exemplar as RGB float32 (H, W, 3); returns (pixels, is_grey).

    Greyscale inputs are replicated to RGB and flagged so training can keep them grey; opaque
    RGBA is accepted; transparency, tiny images and unreadable files are refused in one line.
    """
    pixels, mode = read_image(path)
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
