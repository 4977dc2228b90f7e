"""PBR material folders as artists have them: maps found by name, read into [0, 1] arrays.

Names follow ambientCG (`Rock030_2K_Color.jpg`, `_NormalGL`, `_NormalDX`, `_Roughness`,
`_Displacement`, `_AmbientOcclusion`), Poly Haven (`rock_diff_2k.jpg`, `_nor_gl`, `_nor_dx`,
`_rough`, `_disp`, `_ao`), Substance (`_BaseColor`, `_Normal`, `_Height`) and game exports
(`_albedo`, `_gloss`, `_height`, `_nm`, `_hm`), case-insensitively, or a map's bare name (`normal.png`).
Normal maps are returned in the OpenGL convention (+Y): a DirectX map (`_NormalDX`, `_nor_dx`)
has its green channel flipped; a gloss map is inverted into roughness.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NCA3DError
from .exr import read_exr
from .images import read_exemplar, read_image

MAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")

# Name tokens per map kind, as (token, conversion); the longest token that ends a file's stem wins.
MAP_TOKENS: dict[str, tuple[tuple[str, str], ...]] = {
    "albedo": (("color", ""), ("colour", ""), ("albedo", ""), ("diff", ""), ("diffuse", ""), ("basecolor", ""),
               ("base_color", ""), ("col", "")),
    "normal": (("normalgl", "opengl"), ("normal_gl", "opengl"), ("nor_gl", "opengl"), ("normaldx", "directx"),
               ("normal_dx", "directx"), ("nor_dx", "directx"), ("normal", ""), ("nor", ""), ("nrm", ""), ("nm", "")),
    "roughness": (("roughness", ""), ("rough", ""), ("gloss", "gloss"), ("glossiness", "gloss")),
    "height": (("displacement", ""), ("height", ""), ("disp", ""), ("heightmap", ""), ("hm", "")),
    "ao": (("ambientocclusion", ""), ("ambient_occlusion", ""), ("ao", ""), ("occlusion", "")),
}
_RESOLUTION = re.compile(r"[_\-. ](\d+k|\d+x\d+|\d{3,5})$")  # _2K, -4k, _1024x1024, _2048
MIN_NORMAL_LENGTH, MAX_NORMAL_LENGTH = 0.75, 1.25  # decoded normals of a real map (8-bit, JPEG) lie within
# An unlabelled normal map is taken as DirectX only when that reading's slope curl is below this
# fraction of the OpenGL reading's. Real OpenGL sets measure 0.11-0.89 the other way round, so
# none is flipped; their DirectX copies are caught on 6 of the 10 (the others stay as named).
DIRECTX_CURL_RATIO = 0.6


@dataclass
class MaterialMaps:
    """The maps of a material folder: albedo path, {kind: path} of the others, and what was done."""

    folder: str
    albedo: str
    maps: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def map_kind(path: str | os.PathLike) -> tuple[str, str] | None:
    """(kind, conversion) a file's name says, or None: `Rock_2K_NormalDX.jpg` -> ("normal", "directx")."""
    stem = Path(path).stem.lower().replace("-", "_").replace(" ", "_").replace(".", "_")
    stem = _RESOLUTION.sub("", stem)
    best = None
    for kind, tokens in MAP_TOKENS.items():
        for token, conversion in tokens:
            if (stem == token or stem.endswith("_" + token)) and (best is None or len(token) > len(best[2])):
                best = (kind, conversion, token)
    return None if best is None else best[:2]


def find_material_maps(folder: str | os.PathLike) -> MaterialMaps:
    """Find the maps of a material folder by name; one line when there is no albedo or two files
    claim one map. An OpenGL and a DirectX normal map side by side (as ambientCG ships them) is
    not a conflict: the OpenGL one is used."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NCA3DError(f"material folder '{folder}' not found; check the path")
    found: dict[str, list[tuple[Path, str]]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in MAP_SUFFIXES:
            kind = map_kind(path)
            if kind is not None:
                found.setdefault(kind[0], []).append((path, kind[1]))
    notes = []
    normals = found.get("normal", [])
    if len(normals) == 2 and {c for _, c in normals} == {"opengl", "directx"}:
        dropped = next(p for p, c in normals if c == "directx")
        found["normal"] = [(p, c) for p, c in normals if c == "opengl"]
        notes.append(f"normal: {found['normal'][0][0].name} (OpenGL) used, {dropped.name} (DirectX) ignored")
    for kind, candidates in found.items():
        if len(candidates) > 1:
            names = " and ".join(p.name for p, _ in candidates)
            how = "pass the albedo image itself instead of the folder, and the other maps with --normal etc." \
                if kind == "albedo" else f"or name the one to use with --{kind} FILE"
            raise NCA3DError(f"material folder '{folder}' has {len(candidates)} {kind} maps, {names}; keep one, {how}")
    if "albedo" not in found:
        names = ", ".join(p.name for p in sorted(folder.iterdir()) if p.is_file()) or "no files"
        raise NCA3DError(f"material folder '{folder}' has no albedo map (looked for names ending in _Color, _albedo, "
                         f"_diff or _basecolor; found {names}); rename it or pass the albedo image instead of the folder")
    return MaterialMaps(str(folder), str(found.pop("albedo")[0][0]),
                        {kind: str(c[0][0]) for kind, c in sorted(found.items())}, notes)


def read_map(path: str | os.PathLike, kind: str) -> tuple[np.ndarray, str]:
    """One PBR map as float32 in [0, 1]: (H, W, 3) for albedo and normal (encoded 0.5 + n / 2,
    OpenGL), (H, W, 1) otherwise. Returns (pixels, note: "" or what was converted).

    PNG, JPEG and TIFF through Pillow; EXR through nca3d's reader (a float height is rescaled to
    [0, 1], a float albedo is taken as linear and encoded as sRGB). The file name decides the
    conversions: DirectX normals get green flipped, gloss becomes roughness (1 - gloss).
    """
    path = Path(path)
    conversion = (map_kind(path) or (kind, ""))[1]
    if path.suffix.lower() == ".exr":
        if not path.is_file():
            raise NCA3DError(f"{kind} map '{path}' not found; check the path")
        pixels = read_exr(path).astype(np.float32)
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels[..., :3]
        if kind == "height":
            low, high = float(pixels.min()), float(pixels.max())
            pixels = (pixels - low) / max(high - low, 1e-12)
        elif kind == "albedo":
            linear = np.clip(pixels, 0.0, 1.0)
            pixels = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
        pixels = np.clip(pixels, 0.0, 1.0)
        if pixels.shape[2] == 1 and kind in ("albedo", "normal"):
            pixels = np.repeat(pixels, 3, axis=2)
    elif kind == "albedo":
        pixels, _ = read_exemplar(path, role="albedo map")
    else:
        pixels, _ = read_image(path)
        if pixels.shape[2] in (2, 4):
            pixels = pixels[..., :-1]  # alpha: often a packed height; each map comes from its own file here
        if pixels.shape[2] == 1 and kind == "normal":
            pixels = np.repeat(pixels, 3, axis=2)  # refused below: a grey image is no normal map
    note = ""
    if kind in ("albedo", "normal"):
        pixels = pixels[..., :3].copy()
    else:
        pixels = pixels.mean(axis=2, keepdims=True)
    if kind == "normal":
        check_normal_map(pixels, path)
        if not conversion:  # the name does not say: a map of slopes has no curl in its own convention
            opengl, directx = slope_curls(pixels)
            if directx < DIRECTX_CURL_RATIO * opengl:
                conversion = "directx"
                note = (f"normal: {path.name} looks DirectX (-Y) (slope curl {directx:.3f} as DirectX, {opengl:.3f} "
                        f"as OpenGL): green flipped to OpenGL (+Y); name it _NormalGL or _NormalDX to decide")
        if conversion == "directx":
            pixels[..., 1] = 1.0 - pixels[..., 1]
            note = note or f"normal: {path.name} is DirectX (-Y): green flipped to OpenGL (+Y)"
    elif kind == "roughness" and conversion == "gloss":
        pixels = 1.0 - pixels
        note = f"roughness: {path.name} is a gloss map: inverted into roughness"
    return np.ascontiguousarray(pixels, dtype=np.float32), note


def check_normal_map(encoded: np.ndarray, path) -> None:
    """Refuse a 'normal map' whose decoded vectors (2 rgb - 1) are nowhere near unit length or
    mostly point into the surface: a colour or height image under a normal map's name."""
    vectors = encoded[..., :3].reshape(-1, 3) * 2.0 - 1.0
    length = np.linalg.norm(vectors, axis=1)
    unit = float(np.mean((length > MIN_NORMAL_LENGTH) & (length < MAX_NORMAL_LENGTH)))
    outward = float(np.mean(vectors[:, 2] > 0.0))
    if unit < 0.9 or outward < 0.9:
        raise NCA3DError(f"'{Path(path).name}' is not a normal map: decoded as 2 rgb - 1, only {unit:.0%} of its "
                         f"vectors are near unit length and {outward:.0%} point outwards (a real one: over 90%); "
                         f"pass the tangent-space normal map (bluish, RGB)")


def slope_curls(encoded: np.ndarray) -> tuple[float, float]:
    """Mean |curl| of the slope field (h_x, h_y) = -(n_x, n_y) / n_z that an encoded normal map
    (H, W, 3) implies, read as OpenGL (+Y) and as DirectX (-Y). The slopes of a real height field
    have no curl, so the right reading has the smaller one (periodic central differences)."""
    n = encoded[..., :3].astype(np.float64) * 2.0 - 1.0
    nz = np.clip(n[..., 2], 0.2, None)
    slope_x, slope_y = -n[..., 0] / nz, -n[..., 1] / nz  # y up: rows run down
    dsx_dy = -(np.roll(slope_x, -1, 0) - np.roll(slope_x, 1, 0)) / 2
    dsy_dx = (np.roll(slope_y, -1, 1) - np.roll(slope_y, 1, 1)) / 2
    return float(np.abs(dsx_dy - dsy_dx).mean()), float(np.abs(dsx_dy + dsy_dx).mean())
