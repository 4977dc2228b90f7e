import sys

import numpy as np
import pytest

from nca3d.errors import NCA3DError
from nca3d.lattices import icosphere
from nca3d.render.raycast import (
    BACKEND_ENV,
    RayCaster,
    _load_backend,
    available_backends,
    closest_on_triangles,
    default_backend,
    pinhole_rays,
)
from tests.conftest import requires_raycaster

AVAILABLE = available_backends()
pytestmark = requires_raycaster


@pytest.fixture(params=AVAILABLE or ["none"])
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def sphere():
    return icosphere(8)


def _unit(rng, n):
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _reconstruct(vertices, faces, face, bary):
    return np.einsum("qk,qkd->qd", bary.astype(np.float64), vertices[faces[face]])


def test_rays_from_outside_hit_the_sphere(backend, sphere):
    vertices, faces = sphere
    caster = RayCaster(vertices, faces, backend=backend)
    d = _unit(np.random.default_rng(0), 500)
    origins, directions = 3.0 * d, -d
    face, bary, t = caster.cast(origins, directions)
    assert face.dtype == np.int64 and bary.dtype == np.float32 and face.shape == (500,) and bary.shape == (500, 3)
    assert (face >= 0).all()
    # The surface lies between the faces' inradius and the unit sphere (frequency 8: > 0.996).
    assert np.all(t >= 2.0 - 1e-5) and np.all(t <= 2.0 + 0.005)
    hit = origins + t[:, None] * directions
    assert np.abs(_reconstruct(vertices, faces, face, bary) - hit).max() < 1e-4
    assert np.all(bary >= 0) and np.allclose(bary.sum(1), 1.0, atol=1e-6)


def test_hits_beyond_far_are_misses(backend, sphere):
    """cast(far=...): the first hit when it lies within `far`, else a miss (not a farther face)."""
    vertices, faces = sphere
    caster = RayCaster(vertices, faces, backend=backend)
    d = _unit(np.random.default_rng(1), 200)
    origins = 3.0 * d
    origins[100:] *= 2.0  # 6 out: the surface at t ~ 5
    want = caster.cast(origins, -d)
    face, bary, t = caster.cast(origins, -d, far=3.0)
    assert np.array_equal(face[:100], want[0][:100]) and np.array_equal(t[:100], want[2][:100])
    assert np.array_equal(bary[:100], want[1][:100])
    assert (face[100:] == -1).all() and np.isinf(t[100:]).all() and (bary[100:] == 0).all()


def test_barycentric_order_follows_the_face(backend):
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 0.0]])
    for faces in (np.array([[0, 1, 2]]), np.array([[3, 3, 3], [2, 0, 1]])):
        caster = RayCaster(vertices, faces, backend=backend)
        face, bary, t = caster.cast([[0.2, 0.3, 1.0]], [[0.0, 0.0, -2.0]])  # t counts |direction|
        assert face[0] == len(faces) - 1 and abs(t[0] - 0.5) < 1e-6
        expected = {0: 0.5, 1: 0.2, 2: 0.3}
        assert np.allclose(bary[0], [expected[int(i)] for i in faces[-1]], atol=1e-6)


def test_misses(backend, sphere):
    caster = RayCaster(*sphere, backend=backend)
    d = _unit(np.random.default_rng(1), 100)
    side = np.cross(d, [0.3, 0.5, 0.8])
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    origins = np.concatenate([3.0 * d, 3.0 * d + 1.5 * side])
    directions = np.concatenate([d, -d])  # pointing away; passing beside the sphere
    face, bary, t = caster.cast(origins, directions)
    assert (face == -1).all() and np.isinf(t).all() and (bary == 0).all()
    empty = caster.cast(np.zeros((0, 3)), np.zeros((0, 3)))
    assert [a.shape[0] for a in empty] == [0, 0, 0]


def test_rays_from_the_centre_all_hit(backend, sphere):
    caster = RayCaster(*sphere, backend=backend)
    d = _unit(np.random.default_rng(2), 20000)
    face, _bary, t = caster.cast(np.zeros_like(d), d)
    assert (face >= 0).all() and np.all(t > 0.99) and np.all(t <= 1.0 + 1e-5)


def test_closest_points_slightly_off_the_surface(backend, sphere):
    vertices, faces = sphere
    caster = RayCaster(vertices, faces, backend=backend)
    rng = np.random.default_rng(3)
    count = 400
    chosen = rng.integers(0, len(faces), count)
    weights = rng.dirichlet([2.0, 2.0, 2.0], count)  # away from edges, so the face is unique
    on = _reconstruct(vertices, faces, chosen, weights)
    a, b, c = (vertices[faces[chosen, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    offset = 1e-3 * rng.choice([-1.0, 1.0], (count, 1))
    face, bary, distance = caster.closest_points(on + offset * normal)
    assert (face == chosen).all()
    assert np.abs(_reconstruct(vertices, faces, face, bary) - on).max() < 1e-5
    assert np.allclose(distance, 1e-3, atol=1e-6)


def test_closest_points_match_brute_force(backend):
    vertices, faces = icosphere(3)
    caster = RayCaster(vertices, faces, backend=backend)
    rng = np.random.default_rng(4)
    points = _unit(rng, 150) * rng.uniform(0.5, 1.5, (150, 1))
    face, bary, distance = caster.closest_points(points)
    p = np.repeat(points, len(faces), axis=0)
    tri = vertices[faces]
    tri = np.tile(tri, (len(points), 1, 1))
    w = closest_on_triangles(p, tri[:, 0], tri[:, 1], tri[:, 2])
    brute = np.linalg.norm(p - np.einsum("qk,qkd->qd", w, tri), axis=1).reshape(len(points), -1).min(1)
    assert np.allclose(distance, brute, atol=1e-6)
    surface = _reconstruct(vertices, faces, face, bary)
    assert np.allclose(np.linalg.norm(points - surface, axis=1), brute, atol=1e-5)


def test_closest_on_triangles_regions():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]]), np.array([[0.0, 1, 0]])
    cases = {(-1.0, -1.0, 0.5): (1, 0, 0), (2.0, -0.5, 0.0): (0, 1, 0), (-0.2, 3.0, 1.0): (0, 0, 1),
             (0.5, -1.0, 0.0): (0.5, 0.5, 0), (-1.0, 0.25, 0.0): (0.75, 0, 0.25),
             (1.0, 1.0, 0.0): (0, 0.5, 0.5), (0.25, 0.25, -2.0): (0.5, 0.25, 0.25)}
    for point, expected in cases.items():
        assert np.allclose(closest_on_triangles(np.array([point]), a, b, c)[0], expected)


def test_pinhole_rays(backend, sphere):
    origins, directions = pinhole_rays((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 60.0, 40, 30)
    assert origins.shape == directions.shape == (1200, 3) and directions.dtype == np.float32
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-6)
    assert np.allclose(origins, (0.0, 0.0, 3.0))
    grid = directions.reshape(30, 40, 3)
    assert grid[0, 20, 1] > 0 > grid[-1, 20, 1]  # row 0 at the top
    assert grid[15, 0, 0] < 0 < grid[15, -1, 0]  # x grows to the right (eye on +z looking at -z)
    span = np.degrees(np.arctan2(grid[0, 20, 1], -grid[0, 20, 2]) + np.arctan2(-grid[-1, 20, 1], -grid[-1, 20, 2]))
    # Pixel centres: the outermost rows sit half a pixel inside the vertical field of view.
    assert abs(span - 2 * np.degrees(np.arctan(29 / 30 * np.tan(np.radians(30.0))))) < 1e-3
    face, _, t = RayCaster(*sphere, backend=backend).cast(origins, directions)
    assert (face.reshape(30, 40)[15, 18:22] >= 0).all() and (face.reshape(30, 40)[0, 0] == -1)
    assert abs(t.reshape(30, 40)[14:16, 19:21].min() - 2.0) < 0.01


class _BrokenImport:
    """A meta-path finder that makes `package` fail to import the way open3d-cpu does without libusb."""

    def __init__(self, package: str, error: Exception):
        self.package, self.error = package, error

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == self.package:
            raise self.error


def _break(monkeypatch, package: str, error: Exception) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] == package:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenImport(package, error)] + sys.meta_path)


LIBUSB = ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")


def test_missing_backends_give_one_line(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    _break(monkeypatch, "open3d", LIBUSB)
    _break(monkeypatch, "embreex", OSError("embree4.so: undefined symbol rtcNewDevice"))
    with pytest.raises(NCA3DError) as info:
        RayCaster(*icosphere(1))
    message = str(info.value)
    assert "\n" not in message and "libusb-1.0.so.0" in message and "undefined symbol" in message
    assert "pip install embreex" in message and "pip install 'nca3d[open3d]'" in message
    assert available_backends() == []


@pytest.mark.parametrize("error", [LIBUSB, OSError("bad ELF header"), RuntimeError("initialisation failed")])
def test_a_backend_that_fails_to_import_gives_way_to_the_other(monkeypatch, error):
    """Any failure to import, not only a missing module, passes over to the next backend."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    if "embreex" not in AVAILABLE:
        pytest.skip("needs embreex")
    _break(monkeypatch, "open3d", error)
    assert available_backends() == ["embreex"]
    assert RayCaster(*icosphere(1)).backend == "embreex"
    with pytest.raises(NCA3DError, match="the ray-casting backend 'open3d' does not import"):
        RayCaster(*icosphere(1), backend="open3d")


def test_the_environment_picks_the_backend(monkeypatch):
    for name in AVAILABLE:
        monkeypatch.setenv(BACKEND_ENV, name)
        assert RayCaster(*icosphere(1)).backend == name == default_backend()
    assert RayCaster(*icosphere(1), backend=AVAILABLE[0]).backend == AVAILABLE[0]  # an explicit choice wins
    monkeypatch.setenv(BACKEND_ENV, "optix")
    with pytest.raises(NCA3DError, match=f"unknown ray-casting backend 'optix' \\(from the environment variable "
                                         f"{BACKEND_ENV}\\); use one of open3d, embreex"):
        RayCaster(*icosphere(1))
    monkeypatch.setenv(BACKEND_ENV, "")
    assert default_backend() == AVAILABLE[0]


def test_the_backends_agree():
    """Same hits, face ids, barycentrics and distances from embreex and open3d on an uneven mesh."""
    if len(AVAILABLE) < 2:
        pytest.skip(f"needs both backends; only {AVAILABLE} import here")
    vertices, faces = icosphere(6)
    rng = np.random.default_rng(5)
    vertices = vertices * rng.uniform(0.8, 1.2, (len(vertices), 1))  # bumpy, so faces are not all alike
    count = 3000
    chosen = rng.integers(0, len(faces), count)
    weights = rng.dirichlet([3.0, 3.0, 3.0], count)  # off the edges: the hit face is unique
    target = _reconstruct(vertices, faces, chosen, weights)
    origins = np.concatenate([target * 2.5, np.zeros((count, 3))])
    directions = np.concatenate([target - origins[:count], target])
    queries = target * rng.uniform(0.9, 1.1, (count, 1))
    found = {}
    for name in AVAILABLE:
        caster = RayCaster(vertices, faces, backend=name)
        found[name] = caster.cast(origins, directions), caster.closest_points(queries)
    (face_a, bary_a, t_a), (near_a, nbary_a, dist_a) = found[AVAILABLE[0]]
    (face_b, bary_b, t_b), (near_b, nbary_b, dist_b) = found[AVAILABLE[1]]
    assert (face_a >= 0).all() and (face_a == face_b).all()
    assert (face_a[count:] == chosen).all()  # from the centre, the first hit is the aimed-at face
    assert np.abs(bary_a - bary_b).max() < 1e-4 and np.abs(t_a - t_b).max() < 1e-4
    assert np.abs(bary_a[count:] - weights).max() < 1e-4
    assert np.abs(dist_a - dist_b).max() < 1e-5
    # The face may differ where the closest point is on a shared edge or corner; the point may not.
    surface_a = _reconstruct(vertices, faces, near_a, nbary_a)
    assert np.abs(surface_a - _reconstruct(vertices, faces, near_b, nbary_b)).max() < 1e-4
    same = near_a == near_b
    assert same.mean() > 0.9 and np.abs(nbary_a[same] - nbary_b[same]).max() < 1e-4


def test_input_validation():
    with pytest.raises(ValueError):
        RayCaster(np.zeros((3, 2)), [[0, 1, 2]])
    with pytest.raises(ValueError):
        RayCaster(np.zeros((3, 3)), [[0, 1, 3]])
    with pytest.raises(NCA3DError, match="unknown ray-casting backend 'optix'; use one of open3d, embreex"):
        _load_backend("optix")


def test_edge_neighbours_are_the_faces_across_each_edge():
    from nca3d.render.raycast import edge_neighbours

    vertices, faces = icosphere(3)
    neighbours = edge_neighbours(faces)
    assert neighbours.shape == faces.shape and (neighbours >= 0).all()  # closed: no boundary
    for f in range(len(faces)):
        for k in range(3):
            g = neighbours[f, k]
            edge = {faces[f, k], faces[f, (k + 1) % 3]}
            assert g != f and edge <= set(faces[g])
    open_faces = np.array([[0, 1, 2], [2, 1, 3]])  # sharing edge 1-2: face 0's edge 1, face 1's edge 0
    assert edge_neighbours(open_faces).tolist() == [[-1, 1, -1], [0, -1, -1]]


def test_coherent_casts_hit_what_single_casts_hit(backend, monkeypatch):
    """Rays in coherent order (a scan over the sphere) through cast_coherent: the hit points, t and
    (but on shared edges) faces of `cast`; misses as `cast` gives them; only every stride-th ray and
    the unresolved rest reach the backend."""
    vertices, faces = icosphere(6)
    caster = RayCaster(vertices, faces, backend=backend)
    theta, phi = np.meshgrid(np.linspace(0.2, 2.9, 100), np.linspace(0, 2 * np.pi, 500), indexing="ij")
    normal = np.stack([np.sin(theta) * np.cos(phi), np.cos(theta), np.sin(theta) * np.sin(phi)], -1).reshape(-1, 3)
    origins = (normal * 1.05).astype(np.float32)
    directions = (-normal).astype(np.float32)
    origins[::37] += 5.0  # some rays start far away: beyond `far`, misses for both
    cast_rays = []
    single = caster.cast

    def counting(o, d, far=np.inf):
        cast_rays.append(len(o))
        return single(o, d, far)

    want = caster.cast(origins, directions, far=0.2)
    monkeypatch.setattr(caster, "cast", counting)
    face, bary, t = caster.cast_coherent(origins, directions, far=0.2, near=0.02)
    hit = want[0] >= 0
    assert hit.mean() > 0.9 and np.array_equal(face >= 0, hit)
    assert (face[hit] == want[0][hit]).mean() > 0.99  # the others: on an edge both faces share
    assert np.abs(_reconstruct(vertices, faces, face[hit], bary[hit])
                  - _reconstruct(vertices, faces, want[0][hit], want[1][hit])).max() < 1e-5
    assert np.abs(t[hit] - want[2][hit]).max() < 1e-5 and np.isinf(t[~hit]).all()
    assert sum(cast_rays) < 0.3 * len(origins)  # the samples and a few unresolved rays


def test_coherent_casts_cross_a_jump_in_the_order_without_the_backend(backend, monkeypatch):
    """Two scans of far-apart patches one after the other: the rays past the jump, before the next
    cast one, are found from the first hit after them (the backwards pass), so the backend sees
    only every stride-th ray."""
    vertices, faces = icosphere(8)
    caster = RayCaster(vertices, faces, backend=backend)
    angle = np.linspace(0.05, 0.35, 100)
    patch = np.stack([np.sin(angle), np.cos(angle), np.full_like(angle, 0.17)], 1)  # an arc near the pole
    patch /= np.linalg.norm(patch, axis=1, keepdims=True)  # (off the symmetry planes, along which edges run)
    normal = np.concatenate([patch, -patch]).astype(np.float32)  # then the same arc from the other pole
    cast_rays = []
    single = caster.cast

    def counting(o, d, far=np.inf):
        cast_rays.append(len(o))
        return single(o, d, far)

    want = caster.cast(normal * 1.05, -normal, far=0.2)
    monkeypatch.setattr(caster, "cast", counting)
    face, bary, t = caster.cast_coherent(normal * 1.05, -normal, far=0.2, near=0.02, stride=32)
    assert (want[0] >= 0).all() and sum(cast_rays) == len(range(0, 200, 32))  # the samples only
    assert np.abs(_reconstruct(vertices, faces, face, bary) - _reconstruct(vertices, faces, *want[:2])).max() < 1e-5
