"""A textured mesh's files: the .glb, the .obj + .mtl, the ray-cast PBR preview and, with
--displace, the mesh moved along its normals by the baked height (ops.displace)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io.images import write_png
from ..progress import Progress
from ..render.maps import MapSet, TextureConfig


def export_mesh(mesh, maps: MapSet, written: dict[str, Path], folder: Path, config: TextureConfig,
            progress: Progress | None = None) -> dict:
    """Write the .glb, .obj + .mtl, preview (and with --displace the displaced .glb and .obj);
    returns what NAME.json records about them."""
    from ..io.export import write_glb, write_obj
    from ..render.preview import render_pbr_preview

    material = {kind: path for kind, path in written.items() if kind in ("albedo", "normal", "orm")}
    # the .mtl has no slot for the height (nor the ORM or object-space normals): a --exr height is no PNG
    obj_maps = {k: v for k, v in written.items() if k not in ("orm", "normal_object", "height")}
    write_glb(folder / f"{config.name}.glb", mesh, material)
    write_obj(folder / f"{config.name}.obj", mesh, obj_maps)
    record = {}
    if config.displace:
        displaced, record["displacement"] = _displaced_mesh(mesh, maps, config)
        write_glb(folder / f"{config.name}_displaced.glb", displaced, material)
        write_obj(folder / f"{config.name}_displaced.obj", displaced, obj_maps)
        if progress is not None:
            info = record["displacement"]
            progress.update("export", 0.5, f"displaced by strength {info['strength']:.4g} "
                            f"({info['rule']}); {info['flipped_faces']} triangles flipped", force=True)
    if config.preview_size:
        arrays = _preview_arrays(maps)
        image = render_pbr_preview(mesh, arrays["albedo"], normal_object=_object_normals(arrays, maps),
                                   roughness=arrays.get("roughness"), ao=arrays.get("ao"),
                                   size=config.preview_size)
        write_png(folder / f"{config.name}_preview.png", image)
    return record


def _displaced_mesh(mesh, maps: MapSet, config: TextureConfig):
    """The mesh moved along its normals by the baked height (ops.displace); the strength used
    goes into `config.displace_strength` (so NAME.json's settings show it) and the record."""
    from ..ops.bake import vertex_normals
    from ..ops.displace import (
        DEFAULT_FRACTION,
        MIDLEVEL,
        SAFE_FRACTION,
        default_strength,
        displace,
        flipped_faces,
    )

    height = maps.arrays["height"]
    height = height / 65535.0 if height.dtype == np.uint16 else np.clip(np.nan_to_num(height), 0.0, 1.0)  # as a PNG
    bounds = default_strength(mesh.vertices, mesh.faces, vertex_normals(mesh.vertices, mesh.faces))
    if config.displace_strength > 0:
        rule = "given"
    else:
        config.displace_strength = bounds["strength"]
        rule = (f"default: {DEFAULT_FRACTION:g} x the bounding-box diagonal" if bounds["strength"] == bounds["nominal"]
                else f"default: capped at {SAFE_FRACTION:g} x the no-flip bound")
    displaced, offsets = displace(mesh, height, config.displace_strength)
    record = {"strength": config.displace_strength, "midlevel": MIDLEVEL, "rule": rule,
              "nominal_strength": bounds["nominal"], "no_flip_strength": bounds["no_flip"] if math.isfinite(bounds["no_flip"]) else None,
              "max_offset": float(np.abs(offsets).max()),
              "flipped_faces": flipped_faces(mesh.vertices, displaced.vertices, mesh.faces)}
    return displaced, record


def _object_normals(arrays: dict, maps: MapSet) -> np.ndarray | None:
    if "normal_object" in arrays:
        return arrays["normal_object"] * 2.0 - 1.0
    return None


def _preview_arrays(maps: MapSet, limit: int = 1024) -> dict[str, np.ndarray]:
    """Float maps for the preview renderer, downsampled to at most `limit` px."""
    from PIL import Image

    out = {}
    for kind in ("albedo", "normal_object", "roughness", "ao"):
        array = maps.arrays.get(kind)
        if array is None:
            continue
        image = Image.fromarray(array)
        if image.width > limit:
            image = image.resize((limit, limit), Image.BILINEAR)
        out[kind] = np.asarray(image, np.float32) / 255.0
    return out
