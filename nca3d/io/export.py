"""Textured mesh export: binary glTF 2.0 (.glb, PBR material, PNGs embedded) and OBJ + MTL.

`maps` name the texture PNGs by role: "albedo" (required, sRGB), "normal" (tangent space,
OpenGL +Y), "roughness", "ao", "orm" (R = ao, G = roughness, B = metallic) and "height"
(which neither format has a slot for, so it is not referenced).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from ..errors import NCA3DError
from ..ops.bake import vertex_normals
from .atomic import atomic_path, write_bytes_atomic
from .mesh import SurfaceMesh

MAP_ROLES = ("albedo", "normal", "roughness", "height", "ao", "orm")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_ROUGHNESS = 0.5

# glTF constants
FLOAT, UNSIGNED_INT = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, REPEAT = 9729, 9987, 10497
TRIANGLES = 4


def _checked(mesh: SurfaceMesh, maps: dict[str, Path]) -> dict[str, Path]:
    """The maps as resolved paths after checking the mesh has UVs and every map is a PNG file."""
    unknown = set(maps) - set(MAP_ROLES)
    if unknown:
        raise ValueError(f"unknown map names {sorted(unknown)}; use {', '.join(MAP_ROLES)}")
    if "albedo" not in maps:
        raise NCA3DError("exporting a textured mesh needs an albedo map; bake the textures first")
    if mesh.uv is None:
        raise NCA3DError(f"mesh '{mesh.name}' has no UV coordinates, so its textures cannot be exported; "
                         f"unwrap it first")
    if mesh.uv.shape != (len(mesh.vertices), 2):
        raise ValueError(f"mesh uv must have shape ({len(mesh.vertices)}, 2), got {mesh.uv.shape}")
    if len(mesh.faces) == 0:
        raise NCA3DError(f"mesh '{mesh.name}' has no faces; nothing to export")
    resolved = {}
    for role, path in maps.items():
        path = Path(path)
        if not path.is_file():
            raise NCA3DError(f"{role} map '{path}' not found; bake the textures again")
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                raise NCA3DError(f"{role} map '{path}' is not a PNG file; export needs PNG textures")
        resolved[role] = path.resolve()
    return resolved


def _unit_normals(mesh: SurfaceMesh, normals: np.ndarray | None) -> np.ndarray:
    if normals is None:
        return vertex_normals(mesh.vertices, mesh.faces)
    normals = np.asarray(normals, dtype=np.float64)
    if normals.shape != mesh.vertices.shape or not np.isfinite(normals).all():
        raise ValueError(f"normals must be finite with shape {mesh.vertices.shape}, got {normals.shape}")
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    if (length < 1e-12).any():
        raise ValueError("normals must not contain zero vectors")
    return normals / length


def encode_glb(mesh: SurfaceMesh, maps: dict[str, Path], normals: np.ndarray | None = None) -> bytes:
    """The bytes of a binary glTF 2.0 file: one mesh, one PBR material, the PNG maps embedded."""
    maps = _checked(mesh, maps)
    normals = _unit_normals(mesh, normals)
    blobs: list[bytes] = []
    views: list[dict] = []
    accessors: list[dict] = []
    offset = 0

    def add_view(data: bytes, target: int | None = None) -> int:
        nonlocal offset
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        padded = data + b"\0" * (-len(data) % 4)  # every view starts 4-byte aligned
        blobs.append(padded)
        offset += len(padded)
        views.append(view)
        return len(views) - 1

    def add_accessor(array: np.ndarray, kind: str, component: int, target: int, bounds: bool = False) -> int:
        accessor = {"bufferView": add_view(array.tobytes(), target), "componentType": component,
                    "count": len(array), "type": kind}
        if bounds:
            accessor["min"] = array.min(axis=0).tolist()
            accessor["max"] = array.max(axis=0).tolist()
        accessors.append(accessor)
        return len(accessors) - 1

    positions = np.ascontiguousarray(mesh.vertices, dtype="<f4")
    uv = np.asarray(mesh.uv, dtype=np.float64)
    texcoords = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype("<f4")  # glTF's v runs down the image
    attributes = {
        "POSITION": add_accessor(positions, "VEC3", FLOAT, ARRAY_BUFFER, bounds=True),
        "NORMAL": add_accessor(normals.astype("<f4"), "VEC3", FLOAT, ARRAY_BUFFER),
        "TEXCOORD_0": add_accessor(texcoords, "VEC2", FLOAT, ARRAY_BUFFER),
    }
    indices = add_accessor(np.asarray(mesh.faces, dtype="<u4").reshape(-1), "SCALAR", UNSIGNED_INT,
                           ELEMENT_ARRAY_BUFFER)

    images: list[dict] = []
    image_of: dict[Path, int] = {}

    def texture(role: str) -> dict:
        path = maps[role]
        if path not in image_of:
            image_of[path] = len(images)
            images.append({"bufferView": add_view(path.read_bytes()), "mimeType": "image/png", "name": path.stem})
        return {"index": image_of[path]}

    pbr = {"baseColorTexture": texture("albedo"), "metallicFactor": 0.0, "roughnessFactor": DEFAULT_ROUGHNESS}
    material = {"name": mesh.name, "pbrMetallicRoughness": pbr}
    if "orm" in maps:
        pbr.update(metallicRoughnessTexture=texture("orm"), metallicFactor=1.0, roughnessFactor=1.0)
        material["occlusionTexture"] = texture("orm")
    else:
        if "roughness" in maps:  # a grey PNG: glTF reads roughness from G, metallic (factor 0) from B
            pbr.update(metallicRoughnessTexture=texture("roughness"), roughnessFactor=1.0)
        if "ao" in maps:
            material["occlusionTexture"] = texture("ao")
    if "normal" in maps:
        material["normalTexture"] = texture("normal")

    document = {
        "asset": {"version": "2.0", "generator": "nca3d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": mesh.name}],
        "meshes": [{"name": mesh.name, "primitives": [
            {"attributes": attributes, "indices": indices, "material": 0, "mode": TRIANGLES}]}],
        "materials": [material],
        "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": REPEAT, "wrapT": REPEAT}],
        "textures": [{"sampler": 0, "source": k} for k in range(len(images))],
        "images": images,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary = b"".join(blobs)
    length = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([struct.pack("<4sII", b"glTF", 2, length),
                     struct.pack("<I4s", len(text), b"JSON"), text,
                     struct.pack("<I4s", len(binary), b"BIN\0"), binary])


def write_glb(path: str | os.PathLike, mesh: SurfaceMesh, maps: dict[str, Path],
              normals: np.ndarray | None = None) -> None:
    """Write `mesh` with its texture maps as a binary glTF 2.0 file, atomically.

    normals (V, 3): per-vertex normals; None computes area-weighted ones (`vertex_normals`).
    """
    write_bytes_atomic(path, encode_glb(mesh, maps, normals))


def _material_name(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip()) or "mesh"


def write_obj(path: str | os.PathLike, mesh: SurfaceMesh, maps: dict[str, Path]) -> None:
    """Write `mesh` as OBJ (v, vt, vn, f v/vt/vn) plus a .mtl beside it naming the maps, both atomically.

    Map paths in the .mtl are relative to the OBJ's folder. The material uses the PBR extension
    keys (Pr/map_Pr roughness, Pm 0, norm) and also `map_Bump -bm 1` for the normal map, which
    Blender reads as a tangent-space normal map.
    """
    maps = _checked(mesh, maps)
    path = Path(path)
    mtl_path = path.with_suffix(".mtl")
    folder = path.parent.resolve()
    name = _material_name(mesh.name)

    def relative(role: str) -> str:
        return Path(os.path.relpath(maps[role], folder)).as_posix()

    mtl = ["# nca3d PBR material", f"newmtl {name}", "Ka 0 0 0", "Kd 1 1 1", "Ks 0.5 0.5 0.5", "illum 2",
           f"map_Kd {relative('albedo')}", "Pm 0"]
    mtl += [f"map_Pr {relative('roughness')}"] if "roughness" in maps else [f"Pr {DEFAULT_ROUGHNESS}"]
    if "normal" in maps:
        mtl += [f"norm {relative('normal')}", f"map_Bump -bm 1 {relative('normal')}"]
    write_bytes_atomic(mtl_path, ("\n".join(mtl) + "\n").encode())

    normals = vertex_normals(mesh.vertices, mesh.faces)
    corners = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 1) + 1
    text = io.StringIO()
    text.write(f"# nca3d\nmtllib {mtl_path.name}\no {name}\n")
    np.savetxt(text, np.asarray(mesh.vertices, dtype=np.float64) + 0.0, fmt="v %.9g %.9g %.9g")  # + 0: no "-0"
    np.savetxt(text, np.asarray(mesh.uv, dtype=np.float64), fmt="vt %.9g %.9g")
    np.savetxt(text, normals + 0.0, fmt="vn %.6f %.6f %.6f")
    text.write(f"usemtl {name}\n")
    np.savetxt(text, np.repeat(corners, 3, axis=1).reshape(-1, 9), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
