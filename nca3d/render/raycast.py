"""Ray casting and closest-point queries on triangle meshes, over Embree.

Two backends, both Embree inside: open3d's `RaycastingScene` (`pip install 'nca3d[open3d]'`; on
Linux open3d-cpu also needs the system library libusb-1.0) and `embreex` (a plain wheel, installed
with nca3d on x86-64). open3d is used when it imports: it casts rays about 1.8x as fast and finds
closest points about 6x as fast (`python -m nca3d.bench raycast`); else embreex, with closest
points from a KD-tree. The environment variable NCA3D_RAYCAST picks one. Both are imported only
when a `RayCaster` is built.

Barycentrics are always in the triangle's own vertex order: for face (i0, i1, i2) a point is
    w0 * V[i0] + w1 * V[i1] + w2 * V[i2],  w0 = 1 - u - v, w1 = u, w2 = v
with (u, v) Embree's hit coordinates (u weights the second vertex, v the third).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import NCA3DError
from ..jit import compiled

BACKENDS = ("open3d", "embreex")  # order of preference when several import
BACKEND_ENV = "NCA3D_RAYCAST"
INSTALL_HINT = ("install one with: pip install embreex (x86-64), or pip install 'nca3d[open3d]' "
                "(on Linux open3d-cpu also needs the system library libusb-1.0)")


def _import_backend(name: str):
    """The backend's module, imported; raises whatever the import raises."""
    if name == "open3d":
        import open3d.core
        import open3d.t.geometry

        return open3d
    import embreex.mesh_construction
    import embreex.rtcore_scene

    return embreex


def _load_backend(name: str | None):
    """(name, module) of the requested backend, else NCA3D_RAYCAST's, else the first that imports;
    or one line saying why none could be used and how to get one."""
    requested = name or os.environ.get(BACKEND_ENV, "").strip() or None
    if requested is not None and requested not in BACKENDS:
        source = "" if name else f" (from the environment variable {BACKEND_ENV})"
        raise NCA3DError(f"unknown ray-casting backend '{requested}'{source}; use one of {', '.join(BACKENDS)}")
    reasons = []
    for candidate in ([requested] if requested else BACKENDS):
        try:
            return candidate, _import_backend(candidate)
        except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways (ImportError, OSError, ...)
            reasons.append(f"{candidate}: {' '.join(str(exc).split()) or type(exc).__name__}")
    wanted = f"the ray-casting backend '{requested}'" if requested else "ray casting needs open3d or embreex"
    raise NCA3DError(f"{wanted} does not import ({'; '.join(reasons)}); {INSTALL_HINT}")


def available_backends() -> list[str]:
    """The ray-casting backends that import here, in order of preference."""
    found = []
    for name in BACKENDS:
        try:
            _load_backend(name)
            found.append(name)
        except NCA3DError:
            pass
    return found


def default_backend() -> str:
    """The backend a `RayCaster` built without one uses here (NCA3D_RAYCAST's, else the first that imports)."""
    return _load_backend(None)[0]


def _as_points(array, name: str, dtype=np.float64) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {array.shape}")
    return array


class RayCaster:
    """A static triangle mesh (vertices (N, 3), faces (F, 3)) for ray and closest-point queries.

    backend: "open3d", "embreex", or None for NCA3D_RAYCAST's choice, else the first that imports.
    """

    def __init__(self, vertices, faces, backend: str | None = None):
        self.vertices = _as_points(vertices, "vertices")
        self.faces = np.asarray(faces, dtype=np.int64)
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            raise ValueError("faces must have shape (F, 3) with F > 0")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise ValueError("faces must index existing vertices")
        self.backend, module = _load_backend(backend)
        vertices32 = np.ascontiguousarray(self.vertices, dtype=np.float32)
        if self.backend == "open3d":
            self._o3c = module.core
            self._scene = module.t.geometry.RaycastingScene()
            self._scene.add_triangles(self._o3c.Tensor(vertices32),
                                      self._o3c.Tensor(np.ascontiguousarray(self.faces, dtype=np.uint32)))
        else:
            from embreex.mesh_construction import TriangleMesh
            from embreex.rtcore_scene import EmbreeScene

            self._scene = EmbreeScene()
            TriangleMesh(scene=self._scene, vertices=vertices32,
                         indices=np.ascontiguousarray(self.faces, dtype=np.int32))
        self._tree = None  # embreex closest points: KD-tree over face centroids, built on demand
        self._adjacency = None  # cast_coherent's (triangles (F, 3, 3) float32, edge neighbours (F, 3)), on demand

    def __repr__(self) -> str:
        return f"RayCaster({len(self.vertices)} vertices, {len(self.faces)} faces, backend={self.backend})"

    # --- rays --------------------------------------------------------------------------------
    def cast(self, origins, directions, far: float = math.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hits of rays origin + t * direction (0 < t <= far; directions need not be unit).
        A finite `far` (hits beyond it are misses) lets embreex stop early (a few % faster).

        Returns face_id (R,) int64 (-1 for a miss), bary (R, 3) float32 in the face's vertex
        order (zeros for a miss) and t (R,) float32 in units of |direction| (inf for a miss).
        """
        origins = _as_points(origins, "origins", np.float32)  # float32 in: no copy
        directions = _as_points(directions, "directions", np.float32)
        if origins.shape != directions.shape:
            raise ValueError(f"origins {origins.shape} and directions {directions.shape} differ")
        if len(origins) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
        if self.backend == "open3d":
            rays = self._o3c.Tensor(np.ascontiguousarray(np.concatenate([origins, directions], axis=1)))
            hits = self._scene.cast_rays(rays)
            t = hits["t_hit"].numpy().astype(np.float32)
            face = hits["primitive_ids"].numpy().astype(np.int64)
            uv = hits["primitive_uvs"].numpy().T
            miss = ~np.isfinite(t) | (t > far)  # open3d's misses: t inf (and an invalid id)
        else:
            dists = None if math.isinf(far) else np.full(len(origins), far, np.float32)
            hits = self._scene.run(origins, directions, dists=dists, output=1)
            face = hits["primID"].astype(np.int64)
            t = hits["tfar"].astype(np.float32)
            uv = (hits["u"], hits["v"])
            miss = face < 0
        face[miss] = -1
        t[miss] = np.inf
        bary = np.empty((len(face), 3), np.float32)
        bary[:, 1], bary[:, 2] = uv
        bary[:, 0] = 1.0 - bary[:, 1] - bary[:, 2]
        bary[miss] = 0.0
        return face, normalise_bary(bary), t

    def cast_coherent(self, origins, directions, far: float, near: float = 0.0, stride: int = 32
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`cast` for coherent rays, whose neighbours in order mostly hit the same or an adjacent
        face (a bake's texels in raster order): every `stride`-th ray is cast by the backend; each
        other ray is tested against the face a neighbour in order hit and that face's edge
        neighbours (`_hit_candidates`, one compiled loop, nca3d.jit: a few ns a ray against
        Embree's ~130), and keeps the first of them it hits with near <= t <= far; the rest are
        cast (on a 4K bake of a 52k-face mesh, 0.1% of the rays at stride 32). Where another
        surface lies between a ray's origin and such a hit, that hit is kept, not the nearer one:
        for rays cast back onto a surface from just outside it, the wanted one. Same returns as
        `cast`; without numba, `cast`."""
        origins = _as_points(origins, "origins", np.float32)
        directions = _as_points(directions, "directions", np.float32)
        kernel = compiled(_hit_candidates)
        if kernel is None or len(origins) <= stride:
            return self.cast(origins, directions, far)
        sampled = np.arange(0, len(origins), stride)
        face, bary, t = (np.full(len(origins), -1, np.int64), np.zeros((len(origins), 3), np.float32),
                         np.full(len(origins), np.inf, np.float32))
        face[sampled], bary[sampled], t[sampled] = self.cast(origins[sampled], directions[sampled], far)
        if self._adjacency is None:  # one assignment: bake streams call this at once
            self._adjacency = (np.ascontiguousarray(self.vertices[self.faces], np.float32), edge_neighbours(self.faces))
        triangles, neighbours = self._adjacency
        rest = np.zeros(len(origins), bool)
        kernel(origins, directions, triangles, neighbours, np.float32(near), np.float32(far), stride,
               face, bary, t, rest)
        rest = np.flatnonzero(rest)
        face[rest], bary[rest], t[rest] = self.cast(origins[rest], directions[rest], far)
        return face, bary, t

    # --- closest points ----------------------------------------------------------------------
    def closest_points(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The closest surface point to each query point (Q, 3).

        Returns face_id (Q,) int64, bary (Q, 3) float32 in the face's vertex order and the
        distance (Q,) float32 from the query to that surface point.
        """
        points = _as_points(points, "points")
        if len(points) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
        if self.backend == "open3d":
            found = self._scene.compute_closest_points(self._o3c.Tensor(points.astype(np.float32)))
            face = found["primitive_ids"].numpy().astype(np.int64)
        else:
            face = self._closest_faces_numpy(points)
        # Barycentrics and distance in float64 from the chosen face (exact on it).
        a, b, c = (self.vertices[self.faces[face, k]] for k in range(3))
        bary = closest_on_triangles(points, a, b, c)
        surface = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
        distance = np.linalg.norm(points - surface, axis=1)
        return face, normalise_bary(bary.astype(np.float32)), distance.astype(np.float32)

    def _closest_faces_numpy(self, points: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
        """Exact closest face per point from the k nearest face centroids, k growing as needed.

        A face whose centroid is at distance d is at least d - R away (R: the largest
        centroid-to-corner distance), so the search stops once the best distance is <= d_k - R.
        """
        from scipy.spatial import cKDTree

        corners = self.vertices[self.faces]  # (F, 3, 3)
        if self._tree is None:
            centroids = corners.mean(axis=1)
            self._radius = float(np.linalg.norm(corners - centroids[:, None], axis=2).max())
            self._tree = cKDTree(centroids)
        total = len(self.faces)
        result = np.zeros(len(points), np.int64)
        pending = np.arange(len(points))
        k = min(8, total)
        while len(pending):
            step = max(1, chunk // k)
            unresolved = []
            for start in range(0, len(pending), step):
                rows = pending[start:start + step]
                dist, cand = self._tree.query(points[rows], k=k)
                dist, cand = dist.reshape(len(rows), k), cand.reshape(len(rows), k)
                p = np.repeat(points[rows], k, axis=0)
                tri = corners[cand.reshape(-1)]
                bary = closest_on_triangles(p, tri[:, 0], tri[:, 1], tri[:, 2])
                near = np.einsum("qk,qkd->qd", bary, tri)
                d = np.linalg.norm(p - near, axis=1).reshape(len(rows), k)
                best = d.argmin(axis=1)
                result[rows] = cand[np.arange(len(rows)), best]
                done = (k >= total) | (d[np.arange(len(rows)), best] <= dist[:, -1] - self._radius)
                unresolved.append(rows[~done])
            pending = np.concatenate(unresolved)
            k = min(total, k * 4)
        return result


def edge_neighbours(faces: np.ndarray) -> np.ndarray:
    """(F, 3) int64: per face the faces across its edges (vertex k to k + 1), -1 at a boundary
    (with more than two faces on an edge, one of the others)."""
    count = len(faces)
    edges = np.stack([faces, np.roll(faces, -1, axis=1)], -1).reshape(-1, 2)  # (3F, 2): face f's edge k
    key = np.sort(edges, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    same = np.flatnonzero((key[order[1:]] == key[order[:-1]]).all(1))  # sorted neighbours sharing an edge
    neighbours = np.full(3 * count, -1, np.int64)
    first, second = order[same], order[same + 1]
    neighbours[first], neighbours[second] = second // 3, first // 3
    return neighbours.reshape(count, 3)


def _hit_candidates(origins, directions, triangles, neighbours, near, far, stride, face, bary, t, rest):
    """cast_coherent's loop (compiled by nca3d.jit). Forwards, each ray off the stride is tested
    against the face the last resolved ray before it hit and that face's edge neighbours, then
    against the last cast ray's; backwards, each ray still unresolved against the face the first
    resolved ray after it hit (past a jump in the order, such as a chart's edge, the rays before
    the next cast one) and its neighbours. Moller-Trumbore: a hit with near <= t <= far fills face,
    bary (1 - u - v, u, v) and t; rest is set where none is found."""
    count = origins.shape[0]
    for backwards in range(2):
        known = -1  # the face the last resolved ray in this pass's order hit
        for step in range(count):
            ray = count - 1 - step if backwards else step
            if (ray % stride == 0) if not backwards else not rest[ray]:
                known = face[ray] if face[ray] >= 0 else known
                continue
            found = False
            for source in range(2):
                start = known if source == 0 else (-1 if backwards else face[ray - ray % stride])
                if start < 0 or (source == 1 and start == known):
                    continue
                for k in range(4):
                    candidate = start if k == 0 else neighbours[start, k - 1]
                    if candidate < 0:
                        continue
                    a, b, c = triangles[candidate, 0], triangles[candidate, 1], triangles[candidate, 2]
                    e1x, e1y, e1z = b[0] - a[0], b[1] - a[1], b[2] - a[2]
                    e2x, e2y, e2z = c[0] - a[0], c[1] - a[1], c[2] - a[2]
                    dx, dy, dz = directions[ray, 0], directions[ray, 1], directions[ray, 2]
                    px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x
                    det = e1x * px + e1y * py + e1z * pz
                    if abs(det) < 1e-12:
                        continue
                    inv = 1.0 / det
                    sx, sy, sz = origins[ray, 0] - a[0], origins[ray, 1] - a[1], origins[ray, 2] - a[2]
                    u = (sx * px + sy * py + sz * pz) * inv
                    qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x
                    v = (dx * qx + dy * qy + dz * qz) * inv
                    hit = (e2x * qx + e2y * qy + e2z * qz) * inv
                    if u >= 0.0 and v >= 0.0 and u + v <= 1.0 and near <= hit <= far:
                        face[ray], t[ray] = candidate, hit
                        bary[ray, 0], bary[ray, 1], bary[ray, 2] = max(1.0 - u - v, 0.0), u, v
                        known, found = candidate, True
                        break
                if found:
                    break
            rest[ray] = not found


def normalise_bary(bary: np.ndarray) -> np.ndarray:
    """Clip float noise below 0 and rescale rows to sum 1 (rows of zeros stay zero); in place, on
    (R, 3) columns (np.clip and a row sum are 3x slower)."""
    np.maximum(bary, 0.0, out=bary)
    total = bary[:, 0] + bary[:, 1] + bary[:, 2]
    total[total == 0] = 1.0
    bary /= total[:, None]
    return bary


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics (Q, 3) of the point of triangle (a, b, c) closest to p, all (Q, 3).

    Voronoi-region test (Ericson, Real-Time Collision Detection, 5.1.5), vectorised. A
    degenerate triangle whose interior formula is undefined falls back to its corner a.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (p, a, b, c))

    def dot(x, y):
        return np.einsum("qd,qd->q", x, y)

    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        denom = 1.0 / (va + vb + vc)
    v, w = vb * denom, vc * denom
    regions = [
        (d1 <= 0) & (d2 <= 0),                                  # corner a
        (d3 >= 0) & (d4 <= d3),                                 # corner b
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),                      # edge ab
        (d6 >= 0) & (d5 <= d6),                                 # corner c
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),                      # edge ac
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),            # edge bc
    ]
    choices = [
        np.stack([one, zero, zero], 1),
        np.stack([zero, one, zero], 1),
        np.stack([1 - t_ab, t_ab, zero], 1),
        np.stack([zero, zero, one], 1),
        np.stack([1 - t_ac, zero, t_ac], 1),
        np.stack([zero, 1 - t_bc, t_bc], 1),
    ]
    inside = np.stack([1 - v - w, v, w], 1)
    bary = np.select([r[:, None] for r in regions], choices, default=inside)
    bad = ~np.isfinite(bary).all(axis=1)
    bary[bad] = (1.0, 0.0, 0.0)
    return bary


def pinhole_rays(eye, target, up, fov_deg: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays of a pinhole camera at `eye` looking at `target`, `up` pointing up in the image.

    fov_deg is the vertical field of view; pixels are square. Returns origins and unit
    directions (H*W, 3) float32 in image row order (row 0 at the top, x fastest).
    """
    eye, target, up = (np.asarray(x, dtype=np.float64).reshape(3) for x in (eye, target, up))
    if width < 1 or height < 1 or not 0.0 < fov_deg < 180.0:
        raise ValueError("pinhole_rays needs width, height >= 1 and 0 < fov_deg < 180")
    forward = target - eye
    if np.linalg.norm(forward) == 0:
        raise ValueError("pinhole_rays: eye and target coincide")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("pinhole_rays: up is parallel to the view direction")
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    half = math.tan(math.radians(fov_deg) / 2.0)
    ys = (1.0 - (np.arange(height) + 0.5) / height * 2.0) * half
    xs = ((np.arange(width) + 0.5) / width * 2.0 - 1.0) * half * width / height
    y, x = np.meshgrid(ys, xs, indexing="ij")
    directions = forward + x.reshape(-1, 1) * right + y.reshape(-1, 1) * true_up
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.broadcast_to(eye, directions.shape)
    return np.ascontiguousarray(origins, dtype=np.float32), directions.astype(np.float32)
