"""A minimal OpenEXR writer and reader: single-part scanline images of 32-bit float channels.

Files are written with ZIP compression (blocks of 16 scanlines, OpenEXR's byte interleave and
delta predictor, then zlib) or uncompressed. Channels: "Y" for (H, W) images, "R", "G", "B"
for (H, W, 3) and "R", "G", "B", "A" for (H, W, 4), stored alphabetically as the format requires.
`read_exr` reads these files back (and FLOAT or HALF channels with no, ZIPS or ZIP compression).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import NCA3DError
from .atomic import write_bytes_atomic
from .images import check_image_size

MAGIC = 20000630
COMPRESSIONS = {"none": 0, "zips": 2, "zip": 3}
LINES_PER_BLOCK = {0: 1, 2: 1, 3: 16}
CHANNELS = {1: ("Y",), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}
PIXEL_TYPES = {1: np.dtype("<f2"), 2: np.dtype("<f4")}  # HALF, FLOAT (UINT is not read)
FLOAT = 2


def _attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _zip_encode(raw: bytes) -> bytes:
    """OpenEXR ZIP: even bytes then odd bytes, a byte-wise delta predictor, then zlib."""
    data = np.frombuffer(raw, np.uint8)
    data = np.concatenate([data[0::2], data[1::2]])
    predicted = data.copy()
    predicted[1:] = (np.diff(data.astype(np.int16)) + 128) & 0xFF
    return zlib.compress(predicted.tobytes(), 6)


def _zip_decode(packed: bytes, size: int) -> bytes:
    predicted = np.frombuffer(zlib.decompress(packed), np.uint8)
    if predicted.size != size:
        raise ValueError("ZIP block has the wrong size")
    steps = predicted.astype(np.int64)
    steps[1:] -= 128
    data = (np.cumsum(steps) & 0xFF).astype(np.uint8)
    half = (size + 1) // 2
    raw = np.empty(size, np.uint8)
    raw[0::2], raw[1::2] = data[:half], data[half:]
    return raw.tobytes()


def encode_exr(image: np.ndarray, compression: str = "zip") -> bytes:
    """The bytes of an EXR file holding image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as float32."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in CHANNELS or 0 in pixels.shape[:2]:
        raise ValueError(f"write_exr needs an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {pixels.shape}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown EXR compression '{compression}'; use one of {', '.join(COMPRESSIONS)}")
    height, width, _ = pixels.shape
    names = CHANNELS[pixels.shape[2]]
    order = sorted(range(len(names)), key=lambda i: names[i])
    chlist = b"".join(names[i].encode() + b"\0" + struct.pack("<iB3xii", FLOAT, 0, 1, 1) for i in order) + b"\0"
    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    code = COMPRESSIONS[compression]
    header = b"".join([
        struct.pack("<ii", MAGIC, 2),
        _attribute("channels", "chlist", chlist),
        _attribute("compression", "compression", bytes([code])),
        _attribute("dataWindow", "box2i", window),
        _attribute("displayWindow", "box2i", window),
        _attribute("lineOrder", "lineOrder", b"\0"),
        _attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _attribute("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0)),
        _attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
        b"\0",
    ])
    # Scanline layout: per line, each channel's W values in turn.
    lines = np.ascontiguousarray(pixels[..., order].transpose(0, 2, 1), dtype="<f4")  # (H, C, W)
    step = LINES_PER_BLOCK[code]
    chunks = []
    for y in range(0, height, step):
        raw = lines[y:y + step].tobytes()
        data = _zip_encode(raw) if code else raw
        if len(data) >= len(raw):  # the format stores a block raw when compression does not help
            data = raw
        chunks.append(struct.pack("<ii", y, len(data)) + data)
    offsets = len(header) + 8 * len(chunks) + np.cumsum([0] + [len(c) for c in chunks[:-1]])
    return header + offsets.astype("<u8").tobytes() + b"".join(chunks)


def write_exr(path: str | os.PathLike, image: np.ndarray, compression: str = "zip") -> None:
    """Write image (H, W[, C]) with C = 1, 3 or 4 as a float32 scanline OpenEXR file, atomically."""
    write_bytes_atomic(path, encode_exr(image, compression))


def _parse_header(blob: bytes) -> tuple[dict[str, tuple[str, bytes]], int]:
    """Attributes {name: (type, value bytes)} and the offset just past the header."""
    magic, version = struct.unpack_from("<ii", blob, 0)
    if magic != MAGIC:
        raise ValueError("not an OpenEXR file")
    if version & 0xFF != 2 or version & 0x1A00:
        raise ValueError("only single-part scanline OpenEXR files are supported")
    attributes, pos = {}, 8
    while blob[pos] != 0:
        name_end = blob.index(b"\0", pos)
        kind_end = blob.index(b"\0", name_end + 1)
        (size,) = struct.unpack_from("<i", blob, kind_end + 1)
        start = kind_end + 5
        attributes[blob[pos:name_end].decode()] = (blob[name_end + 1:kind_end].decode(), blob[start:start + size])
        pos = start + size
    return attributes, pos + 1


def _parse_channels(chlist: bytes) -> list[tuple[str, np.dtype]]:
    channels, pos = [], 0
    while chlist[pos] != 0:
        end = chlist.index(b"\0", pos)
        pixel_type, _, x_sampling, y_sampling = struct.unpack_from("<iB3xii", chlist, end + 1)
        if pixel_type not in PIXEL_TYPES or (x_sampling, y_sampling) != (1, 1):
            raise ValueError("only unsubsampled HALF or FLOAT channels are supported")
        channels.append((chlist[pos:end].decode(), PIXEL_TYPES[pixel_type]))
        pos = end + 17
    return channels


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """Read a scanline OpenEXR file of Y, RGB or RGBA channels as float32 (H, W), (H, W, 3) or (H, W, 4)."""
    path = Path(path)
    if not path.is_file():
        raise NCA3DError(f"EXR file '{path}' not found; check the path")
    blob = path.read_bytes()
    try:
        attributes, pos = _parse_header(blob)
        channels = _parse_channels(attributes["channels"][1])
        code = attributes["compression"][1][0]
        if code not in LINES_PER_BLOCK:
            raise ValueError(f"compression type {code} is not supported (only none, ZIPS and ZIP)")
        x0, y0, x1, y1 = struct.unpack("<iiii", attributes["dataWindow"][1])
        width, height = x1 - x0 + 1, y1 - y0 + 1
        if width < 1 or height < 1:
            raise ValueError(f"its data window is {width}x{height} px")
        check_image_size(path, width, height, len(channels))
        step = LINES_PER_BLOCK[code]
        count = -(-height // step)
        offsets = np.frombuffer(blob, "<u8", count, pos)
        line = np.dtype([(name, dtype, (width,)) for name, dtype in channels])  # one scanline
        planes = {name: np.empty((height, width), np.float32) for name, _ in channels}
        for offset in offsets.tolist():
            y, size = struct.unpack_from("<ii", blob, offset)
            row = y - y0
            lines = min(step, height - row)
            data = blob[offset + 8:offset + 8 + size]
            if size < lines * line.itemsize:
                data = _zip_decode(data, lines * line.itemsize)
            block = np.frombuffer(data, line, lines)
            for name, plane in planes.items():
                plane[row:row + lines] = block[name]
    except (ValueError, KeyError, IndexError, struct.error, zlib.error) as exc:
        raise NCA3DError(f"'{path}' is not an EXR file this reader understands ({exc}); "
                         f"write it with nca3d or convert it to a float32 scanline EXR") from None
    for names in CHANNELS.values():
        if set(planes) == set(names):
            stacked = np.stack([planes[name] for name in names], axis=-1)
            return stacked[..., 0] if len(names) == 1 else stacked
    raise NCA3DError(f"'{path}' has channels {', '.join(sorted(planes))}; only Y, RGB or RGBA images can be read")
