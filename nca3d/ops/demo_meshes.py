"""Demo meshes the project makes itself: a procedural rock, a torus and a capsule, with UVs.

They are small (a few thousand triangles), about 2 units across, centred at the origin, Y up,
counter-clockwise seen from outside, and unwrapped by ops.uv (charts packed for 1024 px maps; the
shipped copies keep the xatlas UVs they were first made with).
The shipped copies live in assets/meshes/NAME.obj; regenerate them with

    python -m nca3d.ops.demo_meshes assets/meshes

Everything is deterministic: the rock's shape comes from a fixed seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import NCA3DError
from ..io.mesh import SurfaceMesh

DEMO_MESHES = ("rock", "torus", "capsule")
ROCK_SEED = 7
UNWRAP_RESOLUTION = 1024
OBJ_DIGITS = 5


def rock_geometry(seed: int = ROCK_SEED, frequency: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """A chipped, lumpy rock: a geodesic sphere cut by a few soft planes (facets), stretched, then
    displaced radially by a sum of random sinusoids over the sphere (a cheap band-limited noise).
    Returns vertices (V, 3) float64 and faces (F, 3) int64."""
    from ..lattices.mesh import icosphere

    rng = np.random.default_rng(seed)
    directions, faces = icosphere(frequency)
    # Facets: the ray from the centre along d leaves the half-space n.x <= h at t = h / (d.n).
    normals = rng.normal(size=(9, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    heights = rng.uniform(0.7, 0.92, size=len(normals))
    cosines = directions @ normals.T
    hits = np.where(cosines > 1e-6, heights / np.maximum(cosines, 1e-6), 10.0)
    candidates = np.concatenate([np.ones((len(directions), 1)), hits], axis=1)
    sharpness = 24.0  # a soft minimum: rounded edges between facets
    radius = -np.log(np.exp(-sharpness * candidates).sum(axis=1)) / sharpness
    # Lumps: octaves of sinusoids along random directions, amplitude halving as frequency doubles.
    noise = np.zeros(len(directions))
    for octave in range(4):
        waves = rng.normal(size=(6, 3))
        phases = rng.uniform(0, 2 * np.pi, size=6)
        noise += 0.045 * 0.5 ** octave * np.sin(1.8 * 2 ** octave * directions @ waves.T + phases).sum(axis=1)
    radius = radius * (1.0 + noise)
    vertices = directions * radius[:, None] * np.array([1.2, 0.78, 0.95])
    vertices -= (vertices.max(axis=0) + vertices.min(axis=0)) / 2
    return vertices / np.abs(vertices).max(), faces


def _grid_faces(rows: int, columns: int, wrap_columns: bool = True) -> np.ndarray:
    """Two triangles per quad of a (rows + 1) x columns vertex grid (columns wrapping around)."""
    faces = []
    span = columns if wrap_columns else columns - 1
    for i in range(rows):
        for j in range(span):
            a, b = i * columns + j, i * columns + (j + 1) % columns
            c, d = a + columns, b + columns
            faces += [(a, c, b), (b, c, d)]
    return np.array(faces, dtype=np.int64)


def torus_geometry(major: int = 48, minor: int = 24, radius: float = 0.72, tube: float = 0.28
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A torus lying in the XZ plane (hole along Y): `major` x `minor` quads."""
    theta = 2 * np.pi * np.arange(major) / major  # around the hole
    phi = 2 * np.pi * np.arange(minor) / minor  # around the tube
    t, p = np.meshgrid(theta, phi, indexing="ij")  # (major, minor)
    ring = radius + tube * np.cos(p)
    vertices = np.stack([ring * np.cos(t), tube * np.sin(p), -ring * np.sin(t)], axis=-1).reshape(-1, 3)
    faces = _grid_faces(major, minor)
    faces[faces >= len(vertices)] -= len(vertices)  # the last ring joins the first
    return vertices, faces


def capsule_geometry(segments: int = 40, cap_rings: int = 10, body_rings: int = 6, radius: float = 0.42,
                     length: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A capsule along Y: a cylinder of `length` with hemispherical caps of `radius`."""
    angles = 2 * np.pi * np.arange(segments) / segments
    rings = []  # (y, ring radius) from the top down, poles excluded
    for k in range(1, cap_rings + 1):
        a = 0.5 * np.pi * k / cap_rings
        rings.append((length / 2 + radius * np.cos(a), radius * np.sin(a)))
    for k in range(1, body_rings):
        rings.append((length / 2 - length * k / body_rings, radius))
    for k in range(cap_rings, 0, -1):
        a = 0.5 * np.pi * k / cap_rings
        rings.append((-length / 2 - radius * np.cos(a), radius * np.sin(a)))
    ring_vertices = np.array([[r * np.cos(a), y, -r * np.sin(a)] for y, r in rings for a in angles])
    top, bottom = len(ring_vertices), len(ring_vertices) + 1
    vertices = np.concatenate([ring_vertices, [[0, length / 2 + radius, 0], [0, -length / 2 - radius, 0]]])
    faces = [_grid_faces(len(rings) - 1, segments)]
    j = np.arange(segments)
    faces.append(np.stack([np.full(segments, top), j, (j + 1) % segments], axis=1))
    last = (len(rings) - 1) * segments
    faces.append(np.stack([np.full(segments, bottom), last + (j + 1) % segments, last + j], axis=1))
    vertices = vertices / np.abs(vertices).max()
    return vertices, np.concatenate(faces).astype(np.int64)


GEOMETRY = {"rock": rock_geometry, "torus": torus_geometry, "capsule": capsule_geometry}


def make_demo_mesh(name: str) -> SurfaceMesh:
    """Build a demo mesh from scratch (geometry + ops.uv UVs); the shipped OBJ files are these
    geometries with the xatlas UVs of the unwrap used before ops.uv charted by itself."""
    from .uv import unwrap

    if name not in GEOMETRY:
        raise NCA3DError(f"unknown demo mesh '{name}'; use one of {', '.join(DEMO_MESHES)}")
    vertices, faces = GEOMETRY[name]()
    return unwrap(SurfaceMesh(vertices, faces, None, name), resolution=UNWRAP_RESOLUTION, padding=4)


def demo_mesh_folders() -> list[Path]:
    """Where shipped demo meshes live: inside the installed package, then the checkout's assets/."""
    package = Path(__file__).resolve().parent.parent
    return [package / "assets" / "meshes", package.parent / "assets" / "meshes"]


def demo_mesh_path(name: str) -> Path | None:
    """The shipped OBJ of demo mesh `name`, or None when none is installed."""
    for folder in demo_mesh_folders():
        path = folder / f"{name}.obj"
        if path.is_file():
            return path
    return None


def load_demo_or_mesh(name_or_path: str) -> SurfaceMesh:
    """A demo mesh name (rock, torus, capsule) or a mesh file path -> SurfaceMesh.

    A demo name loads the shipped OBJ (or builds the mesh when the file is missing)."""
    from ..io.mesh import load_mesh

    if name_or_path in DEMO_MESHES and not Path(name_or_path).exists():
        path = demo_mesh_path(name_or_path)
        return load_mesh(path) if path is not None else make_demo_mesh(name_or_path)
    path = Path(name_or_path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        raise NCA3DError(f"'{name_or_path}' is neither a mesh file nor a demo mesh; pass a mesh path "
                         f"or one of {', '.join(DEMO_MESHES)}")
    return load_mesh(path)


def obj_text(mesh: SurfaceMesh, digits: int = OBJ_DIGITS) -> str:
    """Wavefront OBJ text of a mesh with per-vertex UVs: v, vt and f v/vt lines (no normals)."""
    fmt = f"{{:.{digits}f}}"
    lines = [f"# nca3d demo mesh '{mesh.name}': {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles",
             f"o {mesh.name}"]
    lines += ["v " + " ".join(fmt.format(c) for c in v) for v in mesh.vertices]
    if mesh.uv is not None:
        lines += ["vt " + " ".join(fmt.format(c) for c in t) for t in mesh.uv]
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in mesh.faces + 1]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in mesh.faces + 1]
    return "\n".join(lines).replace("-0.00000 ", "0.00000 ") + "\n"


def write_demo_meshes(folder: str | Path, names=DEMO_MESHES) -> list[Path]:
    """Build and write NAME.obj for each demo mesh into `folder` (atomically); returns the paths."""
    from ..io.atomic import write_bytes_atomic

    written = []
    for name in names:
        path = Path(folder) / f"{name}.obj"
        write_bytes_atomic(path, obj_text(make_demo_mesh(name)).encode())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = argv[0] if argv else str(demo_mesh_folders()[1])
    for path in write_demo_meshes(folder):
        print(f"{path}  {path.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
