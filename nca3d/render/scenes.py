"""Offscreen scenes: a model growing on what shows it, drawn with pyvista (VTK) under our cameras
and lights; what `nca3d render` and `nca3d view` show.

* mesh models: grown on a demo mesh (default rock; --mesh NAME|PATH), baked with the texture
  pipeline (MeshBaker) and shown with a PBR material (albedo, ORM = ao/roughness/metallic, and
  the tangent-space normal map when the model has one) under a key/fill/rim light rig and a
  sky-gradient environment, from a 3/4 view;
* volume models: a volume render of the decoded density and colour (direct RGBA mapping, opacity
  from the density as extinction), or with --mesh a solid texture on that mesh;
* 2D models: a 2 x 2 tiling of the baked maps on a plane seen from above (a seam would show);
  lit through the normal and roughness maps when the model has them, unlit albedo otherwise.
A turntable renders N frames around the vertical axis: OUT.gif is one animated GIF (written
with Pillow), OUT.png becomes OUT.0001.png ... OUT.NNNN.png.

Images are rendered at SUPERSAMPLE x the size and box-filtered down. Every file is written
under a temporary name and renamed when complete; frames appear all together or not at all.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from ..core.grow import DAMAGE_RADIUS, cell_positions, erase_ball
from ..errors import NCA3DError, require
from ..progress import Progress

DEFAULT_MESH = "rock"
RENDER_MAP_SIZE = 1024
VIEW_MAP_SIZE = 512
RENDER_VOLUME_RES = 128
VIEW_VOLUME_RES = 64
SUPERSAMPLE = 2
AZIMUTH_DEG, ELEVATION_DEG, FOV_DEG = 35.0, 25.0, 30.0
MARGIN = 1.12  # the bounding sphere fills 1 / MARGIN of the frame
GIF_FRAME_MS = 80
DEFAULT_ROUGHNESS = 0.6
BACKGROUND = ("#1d2026", "#59616e")  # bottom, top of the gradient
# Direct RGBA volumes: VTK (9.7, GPU and fixed-point mappers) reads alpha as the opacity over one
# world unit whatever the scalar opacity unit distance says (measured: a constant volume's
# transmittance follows exp(-sigma * path) with alpha = 1 - exp(-sigma) at 32^3 and 64^3 alike).
VOLUME_UNIT = 1.0


# --------------------------------------------------------------------------- helpers


def require_pyvista():
    return require("pyvista", "render", "Rendering with pyvista")


@contextlib.contextmanager
def _quiet_vtk():
    """Hide VTK's warning when it falls back from X11 to EGL/OSMesa on a machine without a display."""
    try:
        from vtkmodules.vtkCommonCore import vtkLogger
    except ImportError:  # pragma: no cover - pyvista always brings vtk
        yield
        return
    previous = vtkLogger.GetCurrentVerbosityCutoff()
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)
    try:
        yield
    finally:
        vtkLogger.SetStderrVerbosity(previous)


def new_plotter(size: int, off_screen: bool = True, supersample: int = SUPERSAMPLE):
    """A pyvista Plotter with our background and no default lights."""
    pv = require_pyvista()
    with _quiet_vtk():
        plotter = pv.Plotter(off_screen=off_screen, window_size=(size * supersample,) * 2, lighting="none")
    plotter.set_background(BACKGROUND[0], top=BACKGROUND[1])
    return plotter


def _texture(array: np.ndarray, srgb: bool = False, repeat: bool = False):
    pv = require_pyvista()
    texture = pv.Texture(np.ascontiguousarray(array))
    texture.interpolate = True
    texture.mipmap = True
    texture.repeat = repeat
    if srgb:
        texture.UseSRGBColorSpaceOn()
    return texture


def _sky_texture():
    """A small equirectangular sky-over-ground gradient: soft image-based light for PBR."""
    height, width = 32, 64
    y = np.linspace(1.0, -1.0, height)[:, None]
    sky = np.array([0.62, 0.68, 0.78]) * (0.55 + 0.45 * np.clip(y, 0, 1)) + 0.12
    ground = np.array([0.28, 0.25, 0.22]) * (1.0 + 0.5 * np.clip(y, -1, 0))
    image = np.where(y[..., None] > 0, sky[:, None, :], ground[:, None, :])
    image = np.broadcast_to(image, (height, width, 3))
    return _texture((np.clip(image, 0, 1) * 255).astype(np.uint8))


def add_lights(plotter, environment: bool = True) -> None:
    """Key (warm, upper left), fill (cool, right) and rim (behind) lights that move with the camera
    (so a turntable turns the object under fixed lighting), plus the sky environment."""
    pv = require_pyvista()
    # camera-light positions: x right, y up, z towards the viewer (the camera sits at z = 1)
    for position, colour, intensity in (((-1.0, 1.1, 1.2), (1.0, 0.95, 0.88), 1.6),
                                        ((1.4, 0.1, 0.7), (0.75, 0.82, 1.0), 0.45),
                                        ((0.3, 1.0, -1.2), (1.0, 1.0, 1.0), 0.7)):
        plotter.add_light(pv.Light(position=position, focal_point=(0, 0, 0), color=colour, intensity=intensity,
                                   light_type="camera light"))
    if environment:
        with _quiet_vtk():
            plotter.set_environment_texture(_sky_texture(), is_srgb=True, show_background=False)


def orbit_camera(plotter, centre, radius: float, azimuth: float = AZIMUTH_DEG, elevation: float = ELEVATION_DEG
                 ) -> None:
    """Look at a bounding sphere (centre, radius) from azimuth/elevation degrees, Y up."""
    a, e = math.radians(azimuth), math.radians(elevation)
    distance = radius * MARGIN / math.sin(math.radians(FOV_DEG) / 2)
    offset = (math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a))
    camera = plotter.camera
    camera.parallel_projection = False
    camera.focal_point = tuple(np.asarray(centre, float))
    camera.position = tuple(np.asarray(centre, float) + distance * np.asarray(offset))
    camera.up = (0.0, 1.0, 0.0)
    camera.view_angle = FOV_DEG
    camera.clipping_range = (max(distance - 2 * radius, 1e-3), distance + 2 * radius)


def screenshot(plotter, size: int) -> np.ndarray:
    """The current image (size, size, 3) uint8, box-filtered down from the supersampled window."""
    from PIL import Image

    with _quiet_vtk():
        plotter.render()  # after the first image, screenshot alone would grab the old frame again
        image = plotter.screenshot(None, return_img=True)
    image = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    if image.width != size:
        factor = image.width // size
        image = image.reduce(factor) if factor * size == image.width else image.resize((size, size), Image.BOX)
    return np.asarray(image)


def _polydata(vertices, faces, uv, normals, tangents):
    """A pyvista PolyData with UVs, point normals and point tangents (for the normal map)."""
    pv = require_pyvista()
    cells = np.hstack([np.full((len(faces), 1), 3), faces]).astype(np.int64).ravel()
    poly = pv.PolyData(np.asarray(vertices, np.float32), cells)
    poly.active_texture_coordinates = np.asarray(uv, np.float32)
    poly.point_data["Normals"] = np.asarray(normals, np.float32)
    poly.point_data.active_normals_name = "Normals"
    poly.point_data["Tangents"] = np.asarray(tangents, np.float32)
    poly.GetPointData().SetTangents(poly.GetPointData().GetArray("Tangents"))
    poly.set_active_scalars(None)
    return poly


def display_tangents(frames, faces: np.ndarray) -> np.ndarray:
    """Per-vertex tangents for VTK's normal mapping, which takes the bitangent as N x T with no
    handedness: on mirrored UV islands (xatlas, which made the shipped demo meshes' UVs, makes many) the tangent is negated so that N x T
    is the bake's bitangent; the normal map's red channel is flipped there to match (see
    mirrored_texels)."""
    sign = np.ones(len(frames.tangent))
    sign[faces[frames.sign < 0].ravel()] = -1.0
    return frames.tangent * sign[:, None]


def mirrored_texels(mesh, faces_sign: np.ndarray, size: int, margin: int) -> np.ndarray | None:
    """(S, S) bool: texels of mirrored UV faces (seam margins dilated like the bake); None if none."""
    from ..ops.bake import UVRasteriser, dilate

    mirrored = faces_sign < 0
    if not mirrored.any():
        return None
    rasteriser = UVRasteriser(mesh.uv, mesh.faces, size)
    mask = np.zeros(size * size, np.uint8)
    for texels in rasteriser:
        mask[texels.index] = mirrored[texels.face]
    mask = mask.reshape(size, size)
    dilate([mask], rasteriser.covered, margin)
    return mask.astype(bool)


# --------------------------------------------------------------------------- scenes


class Scene:
    """A model growing on what shows it. add_to(plotter) puts it in a plotter; refresh() decodes
    the current state again and updates the plotter's data; advance(k) runs k more NCA steps."""

    def __init__(self, model, seed: int = 0, progress: Progress | None = None):
        from ..core.nca import make_generator

        self.model, self.seed_value = model, seed
        self.progress = progress or Progress("none")
        self.generator = make_generator(seed, model.device)
        self.steps_done = 0
        self.state = None  # set by subclasses once their lattice exists

    def reset(self) -> None:
        from ..core.nca import make_generator

        self.generator = make_generator(self.seed_value, self.model.device)
        self.state = self.model.seed(self.lattice)
        self.steps_done = 0

    def advance(self, steps: int, report: bool = False) -> None:
        """Run `steps` more NCA steps (reporting stage 'grow' to the progress when `report`)."""
        from ..core.grow import grow

        if steps:
            self.state = grow(self.model, self.state, self.lattice, steps, self.generator,
                              self.progress if report else None)
            self.steps_done += steps

    def damage(self, radius: float = DAMAGE_RADIUS) -> int:
        """Erase a ball of cells around the lattice's middle; returns how many."""
        positions = cell_positions(self.lattice)
        centre = self.damage_centre(positions)
        extent = float((positions.max(0).values - positions.min(0).values).max())
        return int(erase_ball(self.state, self.lattice, centre, radius * extent).sum())

    def damage_centre(self, positions) -> torch.Tensor:
        return (positions.max(0).values + positions.min(0).values) / 2

    # subclasses ------------------------------------------------------------------------------
    bounds: tuple = ((0.0, 0.0, 0.0), 1.0)  # bounding sphere (centre, radius)

    def add_to(self, plotter) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        raise NotImplementedError

    def place_camera(self, plotter, turn: float | None = None) -> None:
        """The still view (turn None), or the turntable's, turned `turn` degrees about the vertical."""
        centre, radius = self.bounds
        orbit_camera(plotter, centre, radius, AZIMUTH_DEG + (turn or 0.0), ELEVATION_DEG)


class MeshScene(Scene):
    """A mesh or volume model on a UV-mapped mesh, baked with MeshBaker, shown with a PBR material."""

    def __init__(self, model, mesh, map_size: int = RENDER_MAP_SIZE, cells: int = 0, seed: int = 0,
                 progress: Progress | None = None):
        from ..ops.uv import has_usable_uv, unwrap
        from .maps import MeshBaker, TextureConfig

        super().__init__(model, seed, progress)
        if model.config.domain == "2d":
            raise NCA3DError("a 2D model makes tileable maps, not mesh textures; render it without --mesh")
        if not has_usable_uv(mesh):
            self.progress.update("unwrap", 0.0, "no usable UVs: unwrapping", force=True)
            mesh = unwrap(mesh, resolution=map_size, padding=max(2, map_size // 256))
        self.mesh = mesh
        config = TextureConfig(mesh=mesh.name, model="", out=".", size=map_size, cells=cells,
                               preview_size=0)
        self.baker = MeshBaker(model, mesh, config, self.progress, keep_geometry=True)
        self.lattice = self.baker.lattice
        self.state = model.seed(self.lattice)
        centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
        self.bounds = (centre, float(np.linalg.norm(mesh.vertices - centre, axis=1).max()))
        self.actor = None
        self.mirrored = None
        if "normal" in model.channel_slices():
            self.mirrored = mirrored_texels(mesh, self.baker.frames.sign, map_size, config.margin)

    def damage_centre(self, positions) -> torch.Tensor:
        if self.model.config.domain != "mesh":
            return super().damage_centre(positions)
        # the surface point that faces the camera of the still view
        a, e = math.radians(AZIMUTH_DEG), math.radians(ELEVATION_DEG)
        view = torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        return positions[int(((positions - positions.mean(0)) @ view).argmax())]

    def textures(self) -> dict:
        """Bake the current state -> pyvista textures: base (sRGB albedo), orm, normal (when present)."""
        maps, _ = self.baker.bake(self.state)
        textures = {"base": _texture(maps.arrays["albedo"], srgb=True)}
        orm = maps.orm()
        if orm is not None:
            textures["orm"] = _texture(orm)
        if "normal" in maps.arrays:
            normal = maps.arrays["normal"]
            if self.mirrored is not None:
                normal[self.mirrored, 0] = 255 - normal[self.mirrored, 0]
            textures["normal"] = _texture(normal)
        return textures

    def add_to(self, plotter) -> None:
        mesh, frames = self.mesh, self.baker.frames
        poly = _polydata(mesh.vertices, mesh.faces, mesh.uv, frames.normal, display_tangents(frames, mesh.faces))
        self.actor = plotter.add_mesh(poly, pbr=True, metallic=0.0, roughness=DEFAULT_ROUGHNESS, color="white",
                                      smooth_shading=True, scalars=None, show_scalar_bar=False)
        self.refresh()
        add_lights(plotter)

    def refresh(self) -> None:
        textures = self.textures()
        prop = self.actor.GetProperty()
        prop.SetBaseColorTexture(textures["base"])
        if "orm" in textures:
            prop.SetRoughness(1.0)  # the ORM texture's G is multiplied by this
            prop.SetOcclusionStrength(1.0)
            prop.SetORMTexture(textures["orm"])
        if "normal" in textures:
            prop.SetNormalTexture(textures["normal"])
            prop.SetNormalScale(1.0)


class VolumeScene(Scene):
    """A volume model as a volume render: density and colour decoded on a res^3 grid over the
    cube [-1, 1]^3, mapped straight to RGBA (alpha from density as extinction)."""

    def __init__(self, model, res: int = RENDER_VOLUME_RES, seed: int = 0, progress: Progress | None = None):
        from ..core.dense import check_volume_model

        super().__init__(model, seed, progress)
        check_volume_model(model)
        self.res = res
        self.lattice = model.make_lattice()
        self.state = model.seed(self.lattice)
        self.bounds = ((0.0, 0.0, 0.0), math.sqrt(3.0))
        self.grid = None

    @property
    def spacing(self) -> float:
        return 2.0 / self.res

    def rgba(self) -> np.ndarray:
        """(res^3, 4) uint8 in VTK point order (x fastest); alpha = the opacity over VOLUME_UNIT."""
        from ..core.dense import decode_volume

        density, colour = decode_volume(self.model, self.state, self.lattice, self.res, color_space="srgb")
        alpha = 1.0 - np.exp(-np.clip(density, 0, None) * VOLUME_UNIT)  # model units = world units
        rgba = np.concatenate([np.clip(colour, 0, 1), alpha[..., None]], axis=-1)
        rgba = np.round(rgba * 255).astype(np.uint8)
        return rgba.transpose(2, 1, 0, 3).reshape(-1, 4)  # (X, Y, Z) -> x fastest

    def add_to(self, plotter) -> None:
        pv = require_pyvista()
        h = self.spacing
        self.grid = pv.ImageData(dimensions=(self.res,) * 3, spacing=(h,) * 3, origin=(-1 + h / 2,) * 3)
        self.grid.point_data["rgba"] = self.rgba()
        with _quiet_vtk():
            self.actor = plotter.add_volume(self.grid, scalars="rgba", mapper="smart", show_scalar_bar=False,
                                            opacity_unit_distance=VOLUME_UNIT)
        self.actor.prop.interpolation_type = "linear"
        self.grid = pv.wrap(self.actor.mapper.GetInput())  # add_volume renders a copy: update that one

    def refresh(self) -> None:
        self.grid.point_data["rgba"][:] = self.rgba()
        self.grid.Modified()


class TileScene(Scene):
    """A 2D model's maps tiled 2 x 2 on a square in the XZ plane (facing +Y), seen from straight
    above with u to the right and v up the image; the turntable orbits it like a tile on a table."""

    def __init__(self, model, map_size: int = RENDER_MAP_SIZE, seed: int = 0, progress: Progress | None = None):
        from .maps import GridBaker, MapsConfig

        super().__init__(model, seed, progress)
        if model.config.domain != "2d":
            raise NCA3DError("tiles are for 2D models")
        self.baker = GridBaker(model, MapsConfig(model="", out=".", name="tile", size=map_size, preview_size=0),
                               self.progress)
        self.lattice = self.baker.lattice
        self.state = model.seed(self.lattice)
        self.lit = "normal" in model.channel_slices() or "roughness" in model.channel_slices()
        self.bounds = ((0.0, 0.0, 0.0), math.sqrt(2.0))
        self.actor = None

    def add_to(self, plotter) -> None:
        vertices = np.array([[-1, 0, 1], [1, 0, 1], [1, 0, -1], [-1, 0, -1]], float)
        uv = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)  # 2 x 2 tiles: u along +X, v along -Z
        plane = _polydata(vertices, np.array([[0, 1, 2], [0, 2, 3]]), uv, np.tile([0.0, 1.0, 0.0], (4, 1)),
                          np.tile([1.0, 0.0, 0.0], (4, 1)))  # N x T = -Z = dP/dv: no mirroring
        if self.lit:
            self.actor = plotter.add_mesh(plane, pbr=True, metallic=0.0, roughness=DEFAULT_ROUGHNESS, color="white",
                                          scalars=None, show_scalar_bar=False)
            add_lights(plotter)
        else:
            self.actor = plotter.add_mesh(plane, color="white", lighting=False, scalars=None, show_scalar_bar=False)
        self.refresh()

    def refresh(self) -> None:
        maps, _ = self.baker.bake(self.state)
        base = _texture(maps.arrays["albedo"], srgb=self.lit, repeat=True)
        if not self.lit:
            self.actor.texture = base
            return
        prop = self.actor.GetProperty()
        prop.SetBaseColorTexture(base)
        orm = maps.orm()
        if orm is not None:
            prop.SetRoughness(1.0)
            prop.SetORMTexture(_texture(orm, repeat=True))
        if "normal" in maps.arrays:
            prop.SetNormalTexture(_texture(maps.arrays["normal"], repeat=True))

    def place_camera(self, plotter, turn: float | None = None) -> None:
        if turn is not None:
            orbit_camera(plotter, (0, 0, 0), 1.25, AZIMUTH_DEG + turn, 40.0)
            return
        camera = plotter.camera  # the still: straight down, the 2 x 2 tiles filling the frame
        camera.parallel_projection = True
        camera.focal_point, camera.position, camera.up = (0, 0, 0), (0, 5, 0), (0, 0, -1)
        camera.parallel_scale = 1.0
        camera.clipping_range = (1.0, 10.0)


def make_scene(model, mesh: str = "", map_size: int = RENDER_MAP_SIZE, cells: int = 0, volume_res: int =
               RENDER_VOLUME_RES, seed: int = 0, progress: Progress | None = None) -> Scene:
    """The scene that shows `model`: see the module docstring."""
    from ..ops.demo_meshes import load_demo_or_mesh

    domain = model.config.domain
    if domain == "2d":
        if mesh:
            raise NCA3DError("a 2D model is shown as a tile; --mesh is for mesh and volume models")
        return TileScene(model, map_size, seed, progress)
    if domain == "volume" and not mesh:
        return VolumeScene(model, volume_res, seed, progress)
    return MeshScene(model, load_demo_or_mesh(mesh or DEFAULT_MESH), map_size, cells, seed, progress)


# --------------------------------------------------------------------------- render


def render_frames(scene: Scene, size: int, turntable: int = 0) -> list[np.ndarray]:
    """The still image, or `turntable` frames turning 360 degrees; each (size, size, 3) uint8."""
    plotter = new_plotter(size)
    try:
        scene.add_to(plotter)
        if not turntable:
            scene.place_camera(plotter)
            return [screenshot(plotter, size)]
        frames = []
        for index in range(turntable):
            scene.place_camera(plotter, 360.0 * index / turntable)
            frames.append(screenshot(plotter, size))
            scene.progress.update("render", (index + 1) / turntable, f"frame {index + 1}/{turntable}")
        return frames
    finally:
        plotter.close()


def frame_paths(out: str | Path, count: int) -> list[Path]:
    """OUT.png -> [OUT.png] for a still, OUT.0001.png ... for a sequence."""
    out = Path(out)
    if count <= 1 and out.suffix.lower() == ".png":
        return [out]
    return [out.with_name(f"{out.stem}.{index + 1:04d}{out.suffix}") for index in range(count)]


def write_frames(frames: list[np.ndarray], out: str | Path, turntable: bool = False) -> list[str]:
    """PNG still, numbered PNGs or one GIF, each file atomic; on failure none of them remains."""
    from PIL import Image

    from ..io.atomic import atomic_path
    from ..io.images import write_png

    out = Path(out)
    if out.suffix.lower() == ".gif":
        with atomic_path(out) as tmp:
            images = [Image.fromarray(frame) for frame in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS,
                           loop=0, optimize=False)
        return [str(out)]
    paths = frame_paths(out, len(frames) if turntable else 1)
    written: list[Path] = []
    try:
        for frame, path in zip(frames, paths):
            write_png(path, frame)
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return [str(p) for p in written]


