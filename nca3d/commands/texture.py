"""`nca3d texture`: grow a model on any mesh and bake PBR maps; `nca3d maps`: tileable 2D map sets.

texture: load the mesh -> unwrap it when it has no usable UVs -> build a uniform cell lattice
(mesh models) -> grow the NCA -> bake every texel (closest lattice point, decode) -> dilate
seams -> write the maps, a .glb, an .obj + .mtl, a preview and NAME.json (the resolved
settings); with --displace also NAME_displaced.glb/.obj, moved along the normals by the height
(ops.displace). A volume model textures the mesh as a solid texture: each texel decodes at its 3D
position, `--scale` mesh units per cell.

Everything is written into a hidden staging folder inside --out and moved into place at the
end, so an interrupted or failed run leaves no partial files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import NCA3DError
from ..export.maps import bake_sequence, prepare_out
from ..export.mesh import export_mesh
from ..io.images import write_png
from ..models import load_named_model
from ..progress import Progress
from ..render.maps import GridBaker, MapsConfig, MapSet, MeshBaker, TextureConfig


def add_texture_arguments(parser) -> None:
    """The options of `nca3d texture`."""
    parser.add_argument("mesh", help="OBJ, PLY, STL, OFF, GLB or glTF file, or a demo mesh: rock, torus or capsule")
    _bake_options(parser)
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="texture scale: cell spacing in mesh units")
    scale.add_argument("--cells", type=int, help="texture scale: lattice cells over the surface (default: a mesh model's training "
                       "icosphere count, times its zoom squared where that is below 1; 40962 for volume models)")
    parser.add_argument("--margin", type=int, default=0, help="seam dilation in px (default size/128, >= 4)")
    parser.add_argument("--object-normals", dest="object_normals", action="store_true",
                        help="also write an object-space normal map NAME_normal_object.png")
    parser.add_argument("--displace", action="store_true",
                        help="also write NAME_displaced.glb/.obj: vertices moved along their normals by "
                             "strength x (height - 0.5) (needs a model with a height map)")
    parser.add_argument("--displace-strength", dest="displace_strength", type=float, metavar="S",
                        help="displacement strength in mesh units (implies --displace; default 2%% of the "
                             "bounding-box diagonal, capped at half the strength at which a triangle could flip)")
    parser.set_defaults(run=run_texture)


def add_maps_arguments(parser) -> None:
    """The options of `nca3d maps`."""
    _bake_options(parser)
    parser.set_defaults(run=run_maps)


def _bake_options(parser) -> None:
    """Options shared by `texture` and `maps`."""
    parser.add_argument("--model", required=True, help="a .nca3d file or a bundled model name")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--name", default="", help="output file stem")
    parser.add_argument("--size", type=int, default=2048, help="map size in pixels (16-8192, default 2048)")
    parser.add_argument("--steps", type=int, default=96, help="NCA steps grown from the seed (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: another seed, another variation")
    parser.add_argument("--frames", type=int, default=0, metavar="N",
                        help="write an animated sequence NAME_albedo.0001.png ... of N frames")
    parser.add_argument("--every", type=int, default=8, metavar="K", help="NCA steps between frames (default 8)")
    parser.add_argument("--normal-convention", dest="normal_convention", choices=["opengl", "directx"],
                        default="opengl", help="tangent-space normal map green axis: +Y (opengl) or -Y (directx)")
    parser.add_argument("--exr", action="store_true", help="height as a 32-bit float EXR (default 16-bit PNG)")
    parser.add_argument("--preview-size", dest="preview_size", type=int, default=512,
                        help="preview PNG size (0: none)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="bar (stderr), json (JSON lines on stdout, for the Blender add-on) or none")


def run_texture(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in TextureConfig.__dataclass_fields__ and v is not None}
    progress = Progress(args.progress)
    progress.done(texture_mesh(TextureConfig(**options), progress))
    return 0


def run_maps(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in MapsConfig.__dataclass_fields__ and v is not None}
    progress = Progress(args.progress)
    progress.done(tileable_maps(MapsConfig(**options), progress))
    return 0


def texture_mesh(config: TextureConfig, progress: Progress | None = None) -> list[str]:
    """Run `nca3d texture`; returns the written files (all appear at the end, or none)."""
    from ..ops.demo_meshes import load_demo_or_mesh
    from ..ops.uv import has_usable_uv, unwrap

    progress = progress or Progress("bar")
    model = load_named_model(config.model, config.device, ("mesh", "volume"),
                             f"it makes tileable maps, not mesh textures; use `nca3d maps --model {config.model}` "
                             f"or a mesh or volume model")
    if config.displace and "height" not in model.channel_slices():
        raise NCA3DError(f"'{config.model}' has no height output, so --displace has nothing to displace by; "
                         f"use a PBR model with a height map (see `nca3d models`) or drop --displace")
    progress.update("load", 0.0, f"reading {config.mesh}", force=True)
    mesh = load_demo_or_mesh(config.mesh)
    progress.update("load", 1.0, f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces", force=True)
    folder = prepare_out(config.out)
    unwrapped = not has_usable_uv(mesh)
    if unwrapped:
        progress.update("unwrap", 0.0, "no usable UVs: unwrapping", force=True)
        mesh = unwrap(mesh, resolution=config.size, padding=max(2, config.margin // 2))
        progress.update("unwrap", 1.0, "unwrapped", force=True)
    baker = MeshBaker(model, mesh, config, progress)

    def export(staging: Path, maps: MapSet, written: dict[str, Path]) -> dict:
        extra = export_mesh(mesh, maps, written, staging, config, progress)
        return {"unwrapped": unwrapped, "lattice": baker.lattice_stats, **extra}

    return bake_sequence(model, baker.lattice, baker.bake, config, folder, progress, export)


def tileable_maps(config: MapsConfig, progress: Progress | None = None) -> list[str]:
    """Run `nca3d maps`: a seamless PBR map set from a 2D model; returns the written files."""
    progress = progress or Progress("bar")
    model = load_named_model(config.model, config.device, ("2d",),
                             f"`nca3d maps` needs a 2D model (use `nca3d texture MESH --model {config.model}` "
                             f"for meshes)")
    folder = prepare_out(config.out)
    baker = GridBaker(model, config, progress)

    def export(staging: Path, maps: MapSet, written: dict[str, Path]) -> dict:
        if config.preview_size:
            from PIL import Image

            tile = Image.fromarray(maps.arrays["albedo"]).resize((config.preview_size // 2,) * 2, Image.BILINEAR)
            preview = np.tile(np.asarray(tile), (2, 2, 1))  # 2 x 2 copies: any seam would show
            write_png(staging / f"{config.name}_preview.png", preview)
        record = {"lattice": {"grid": list(baker.lattice.sizes_xyz)}}
        if "normal" in maps.arrays and "height" in maps.arrays:
            record["normal_height_agreement"] = _agreement(maps, config.normal_convention)
        return record

    return bake_sequence(model, baker.lattice, baker.bake, config, folder, progress, export)


def _agreement(maps: MapSet, convention: str) -> dict:
    """How well a tileable map set's normal map agrees with its height (ops.pbr)."""
    from ..ops.pbr import normal_height_agreement

    normal = maps.arrays["normal"].astype(np.float32) / 255.0
    if convention == "directx":
        normal[..., 1] = 1.0 - normal[..., 1]
    height = maps.arrays["height"]
    height = height / 65535.0 if height.dtype == np.uint16 else height
    return {key: round(value, 4) for key, value in normal_height_agreement(normal, height).items()}

