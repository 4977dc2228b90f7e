"""PBR preview of a textured mesh: ray cast from a 3/4 view, Cook-Torrance shading, 2x2 supersampling.

Map arrays are texel images (H, W, C) addressed by the mesh UVs (row 0 is the top of the image,
v = 1) and sampled bilinearly with wrap-around. Shading is in linear light: a key and a fill
light (GGX distribution, height-correlated Smith visibility, Schlick Fresnel with F0 = 0.04 and
Lambert diffuse) plus a sky/ground hemisphere ambient scaled by the AO map. Surfaces are
double-sided. The image is returned sRGB-encoded.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import NCA3DError
from ..io.mesh import SurfaceMesh
from ..ops.bake import sample_bilinear, vertex_normals
from .raycast import RayCaster, pinhole_rays

AZIMUTH_DEG, ELEVATION_DEG, FOV_DEG = 35.0, 25.0, 30.0
MARGIN = 1.08  # the bounding sphere fills 1 / MARGIN of the frame
SUPERSAMPLE = 2
F0 = 0.04
DEFAULT_ROUGHNESS = 0.5
MIN_ROUGHNESS = 0.03  # keeps highlights wider than a pixel
# Lights: direction towards the light in the camera frame (right, up, towards the viewer), linear colour.
KEY_LIGHT = ((-0.65, 0.6, 0.45), (2.6, 2.5, 2.3))
FILL_LIGHT = ((0.85, -0.05, 0.35), (0.35, 0.4, 0.5))
SKY, GROUND = np.array([0.2, 0.22, 0.26], np.float32), np.array([0.07, 0.065, 0.06], np.float32)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB EOTF for values in [0, 1]."""
    values = np.asarray(values, dtype=np.float32)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """The sRGB encoding of linear values, clipped to [0, 1]."""
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055).astype(np.float32)


def _map(array, name: str, channels: int) -> np.ndarray:
    """A finite float32 (H, W, channels) texel image; (H, W) is accepted for one channel."""
    array = np.asarray(array, dtype=np.float32)
    if channels == 1 and array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] != channels or 0 in array.shape:
        expected = "(H, W) or (H, W, 1)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"{name} must be a non-empty {expected} array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", a, b)[:, None]


def _camera(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eye and target (3,) of the 3/4 view framing the bounding sphere of vertices (V, 3)."""
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    if not radius > 0:
        raise ValueError("the mesh has zero extent; nothing to render")
    az, el = math.radians(AZIMUTH_DEG), math.radians(ELEVATION_DEG)
    towards_eye = np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
    distance = radius * MARGIN / math.sin(math.radians(FOV_DEG) / 2)
    return centre + distance * towards_eye, centre


def _light(spec, right, up, back) -> tuple[np.ndarray, np.ndarray]:
    (r, u, b), colour = spec
    return _normalise(r * right + u * up + b * back).astype(np.float32), np.asarray(colour, np.float32)


def _shade(normal, view, albedo, roughness, ao, lights, world_up) -> np.ndarray:
    """Outgoing linear radiance (N, 3) for unit normal, view (N, 3), albedo (N, 3) linear, roughness, ao (N, 1)."""
    n_dot_v = np.clip(_dot(normal, view), 1e-4, 1.0)
    alpha2 = (roughness * roughness) ** 2
    colour = np.zeros_like(albedo)
    for direction, radiance in lights:
        n_dot_l = np.clip(normal @ direction, 0.0, 1.0)[:, None]
        half = _normalise(view + direction)
        n_dot_h = np.clip(_dot(normal, half), 0.0, 1.0)
        v_dot_h = np.clip(_dot(view, half), 0.0, 1.0)
        fresnel = F0 + (1 - F0) * (1 - v_dot_h) ** 5
        distribution = alpha2 / (np.pi * (n_dot_h**2 * (alpha2 - 1) + 1) ** 2)
        visibility = 0.5 / (n_dot_l * np.sqrt(n_dot_v**2 * (1 - alpha2) + alpha2)
                            + n_dot_v * np.sqrt(n_dot_l**2 * (1 - alpha2) + alpha2) + 1e-7)
        colour += ((1 - fresnel) * albedo / np.pi + distribution * visibility * fresnel) * radiance * n_dot_l
    sky = (normal @ world_up)[:, None] * 0.5 + 0.5
    ambient = SKY * sky + GROUND * (1 - sky)
    return colour + albedo * ambient * ao


def shade_flat(albedo: np.ndarray, normal: np.ndarray | None = None, roughness: np.ndarray | None = None,
               ao: np.ndarray | None = None) -> np.ndarray:
    """A flat tangent-space map set lit as the preview lights a surface facing the camera: (H, W, 3) sRGB.

    The map lies in the image plane (x right, y up: OpenGL +Y, z towards the viewer), seen straight
    on; KEY_LIGHT (from the upper left, 27 degrees above the surface) and FILL_LIGHT are in that
    frame, and the sky is up the image. albedo (H, W, 3) sRGB in [0, 1]; normal (H, W, 3) encoded
    0.5 + n / 2 (None: flat); roughness and ao (H, W) or (H, W, 1) (None: DEFAULT_ROUGHNESS and 1).
    All maps have the albedo's size.
    """
    albedo = np.clip(_map(albedo, "albedo", 3), 0.0, 1.0)
    height, width = albedo.shape[:2]
    count = height * width

    def flat(array, name: str, channels: int, default: float) -> np.ndarray:
        if array is None:
            return np.full((count, channels), default, np.float32)
        array = _map(array, name, channels)
        if array.shape[:2] != (height, width):
            raise ValueError(f"{name} is {array.shape[1]}x{array.shape[0]} but the albedo is {width}x{height}")
        return array.reshape(count, channels)

    normal = _normalise(flat(normal, "normal", 3, 0.5) * 2.0 - 1.0) if normal is not None \
        else np.broadcast_to(np.float32([0.0, 0.0, 1.0]), (count, 3))
    rough = np.clip(flat(roughness, "roughness", 1, DEFAULT_ROUGHNESS), MIN_ROUGHNESS, 1.0)
    occlusion = np.clip(flat(ao, "ao", 1, 1.0), 0.0, 1.0)
    right, up, back = (np.eye(3, dtype=np.float32)[i] for i in range(3))
    lights = [_light(spec, right, up, back) for spec in (KEY_LIGHT, FILL_LIGHT)]
    view = np.broadcast_to(back, (count, 3))
    radiance = _shade(normal, view, srgb_to_linear(albedo).reshape(count, 3), rough, occlusion, lights, up)
    return linear_to_srgb(np.clip(radiance, 0.0, 1.0)).reshape(height, width, 3)


def render_pbr_preview(mesh: SurfaceMesh, albedo: np.ndarray, normal_object: np.ndarray | None = None,
                       roughness: np.ndarray | None = None, ao: np.ndarray | None = None, size: int = 512,
                       background=(0.18, 0.18, 0.2)) -> np.ndarray:
    """A shaded 3/4 view (size, size, 3) float32 sRGB in [0, 1] of `mesh` with its texture maps.

    albedo (H, W, 3) sRGB-encoded in [0, 1]; normal_object (H, W, 3) unit object-space normals
    (None: the interpolated vertex normals); roughness and ao (H, W) in [0, 1] (None: 0.5 and 1).
    Each map may have its own resolution. background: sRGB colour (3,) of empty pixels.
    """
    if mesh.uv is None:
        raise NCA3DError(f"mesh '{mesh.name}' has no UV coordinates, so its textures cannot be previewed; "
                         f"unwrap it first")
    if np.shape(mesh.uv) != (len(mesh.vertices), 2):
        raise ValueError(f"mesh uv must have shape ({len(mesh.vertices)}, 2), got {np.shape(mesh.uv)}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    background = np.asarray(background, dtype=np.float32)
    if background.shape != (3,) or not ((background >= 0) & (background <= 1)).all():
        raise ValueError(f"background must be 3 sRGB values in [0, 1], got {background.tolist()}")
    albedo = srgb_to_linear(np.clip(_map(albedo, "albedo", 3), 0.0, 1.0))
    normal_map = None if normal_object is None else _normalise(_map(normal_object, "normal_object", 3))
    roughness = None if roughness is None else _map(roughness, "roughness", 1)
    ao = None if ao is None else _map(ao, "ao", 1)

    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    uv = np.asarray(mesh.uv, dtype=np.float32)
    eye, target = _camera(vertices)
    world_up = np.array([0.0, 1.0, 0.0])
    pixels = size * SUPERSAMPLE
    origins, directions = pinhole_rays(eye, target, world_up, FOV_DEG, pixels, pixels)
    face, bary, _ = RayCaster(vertices, faces).cast(origins, directions)

    hit = face >= 0
    face, bary = face[hit], bary[hit]
    corners = faces[face]  # (N, 3)
    view = -directions[hit]
    texcoord = np.einsum("nk,nkd->nd", bary, uv[corners])
    corner_xyz = vertices[faces].astype(np.float32)
    geometric = _normalise(np.cross(corner_xyz[:, 1] - corner_xyz[:, 0], corner_xyz[:, 2] - corner_xyz[:, 0]))[face]
    facing = np.where(_dot(geometric, view) < 0, -1.0, 1.0).astype(np.float32)  # double-sided
    if normal_map is None:
        smooth = vertex_normals(vertices, faces).astype(np.float32)
        normal = np.einsum("nk,nkd->nd", bary, smooth[corners])
    else:
        normal = sample_bilinear(normal_map, texcoord)
    normal = _normalise(normal) * facing

    rough = np.full((len(face), 1), DEFAULT_ROUGHNESS, np.float32) if roughness is None \
        else sample_bilinear(roughness, texcoord)
    occlusion = np.ones((len(face), 1), np.float32) if ao is None else np.clip(sample_bilinear(ao, texcoord), 0, 1)
    forward = _normalise(target - eye)
    right = _normalise(np.cross(forward, world_up))
    lights = [_light(spec, right, np.cross(right, forward), -forward) for spec in (KEY_LIGHT, FILL_LIGHT)]
    radiance = _shade(normal, view, sample_bilinear(albedo, texcoord), np.clip(rough, MIN_ROUGHNESS, 1.0),
                      occlusion, lights, world_up.astype(np.float32))

    image = np.broadcast_to(srgb_to_linear(background), (pixels * pixels, 3)).copy()
    image[hit] = np.clip(radiance, 0.0, 1.0)  # resolve display values, so highlights do not alias
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return linear_to_srgb(image)
