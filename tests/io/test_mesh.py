"""load_mesh: every supported format, scenes, UVs, messy geometry and clear refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import trimesh

from nca3d.errors import NCA3DError
from nca3d.io.mesh import load_mesh


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def area(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


def write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize("suffix", ["obj", "ply", "stl", "off", "glb", "gltf"])
def test_every_format_reads_a_welded_closed_box(tmp_path, suffix):
    trimesh.creation.box(extents=(1.0, 2.0, 3.0)).export(tmp_path / f"box.{suffix}")
    mesh = load_mesh(tmp_path / f"box.{suffix}")
    assert mesh.vertices.shape == (8, 3) and mesh.vertices.dtype == np.float64  # STL is welded too
    assert mesh.faces.shape == (12, 3) and mesh.faces.dtype == np.int64
    assert mesh.uv is None and mesh.name == "box"
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(6.0)  # outward winding kept


def test_scene_parts_are_merged_with_their_node_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), node_name="here")
    moved = np.eye(4)
    moved[:3, 3] = (5.0, 0.0, 0.0)
    moved[:3, :3] = np.diag([2.0, 1.0, 1.0])
    scene.add_geometry(trimesh.creation.icosphere(subdivisions=1), node_name="there", transform=moved)
    scene.export(tmp_path / "scene.glb")
    mesh = load_mesh(tmp_path / "scene.glb")
    assert len(mesh.faces) == 12 + 80
    assert mesh.vertices[:, 0].min() == pytest.approx(-0.5)
    assert mesh.vertices[:, 0].max() == pytest.approx(7.0)  # sphere of radius 1 scaled x2 around x = 5
    assert mesh.vertices[:, 1].max() == pytest.approx(1.0)


def uv_quad(offset: float) -> trimesh.Trimesh:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float) + (offset, 0, 0)
    uv = np.array([[0.1, 0.2], [0.9, 0.2], [0.9, 0.7], [0.1, 0.7]])
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], visual=trimesh.visual.TextureVisuals(uv=uv), process=False)


def test_glb_uvs_are_kept_in_opengl_convention_only_when_every_part_has_them(tmp_path):
    both = trimesh.Scene([uv_quad(0.0), uv_quad(2.0)])
    both.export(tmp_path / "both.glb")
    mesh = load_mesh(tmp_path / "both.glb")
    assert mesh.uv is not None and mesh.uv.shape == (8, 2)
    corner = np.flatnonzero((mesh.vertices == (1.0, 1.0, 0.0)).all(axis=1))
    np.testing.assert_allclose(mesh.uv[corner], [[0.9, 0.7]], atol=1e-6)

    some = trimesh.Scene([uv_quad(0.0), trimesh.creation.box()])
    some.export(tmp_path / "some.glb")
    assert load_mesh(tmp_path / "some.glb").uv is None


def test_obj_quads_are_triangulated_and_uv_seams_stay_split(tmp_path):
    # two quads side by side; the shared edge x = 1 has different UVs on each side (a seam)
    path = write(tmp_path / "strip.obj", """
v 0 0 0
v 1 0 0
v 2 0 0
v 0 1 0
v 1 1 0
v 2 1 0
vt 0.0 0.0
vt 0.4 0.0
vt 0.4 1.0
vt 0.0 1.0
vt 0.6 0.0
vt 1.0 0.0
vt 1.0 1.0
vt 0.6 1.0
f 1/1 2/2 5/3 4/4
f 2/5 3/6 6/7 5/8
""")
    mesh = load_mesh(path)
    assert mesh.faces.shape == (4, 3)
    assert mesh.vertices.shape == (8, 3)  # the two seam vertices are duplicated
    at_seam = np.flatnonzero(mesh.vertices[:, 0] == 1.0)
    assert sorted(mesh.uv[at_seam, 0]) == pytest.approx([0.4, 0.4, 0.6, 0.6])
    a, b, c = (mesh.uv[mesh.faces[:, k]] for k in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (cross > 0).all()  # UV winding matches the 3D winding: v is not flipped


def test_an_obj_texture_is_never_decoded(tmp_path):
    """Only geometry and UVs are read: an OBJ whose material's texture is a decompression bomb
    (a tiny PNG claiming 60000x60000 px) loads with its UVs and no warning."""
    from tests.io.test_images import bomb_png

    bomb_png(tmp_path / "bomb.png")
    write(tmp_path / "tri.mtl", "newmtl skin\nmap_Kd bomb.png\n")
    path = write(tmp_path / "tri.obj", "mtllib tri.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                                       "usemtl skin\nf 1/1 2/2 3/3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mesh = load_mesh(path)
    assert mesh.faces.shape == (1, 3) and mesh.uv is not None


def test_open_multi_part_and_non_manifold_meshes_are_kept(tmp_path):
    # three triangles on one edge (0-1), a bowtie meeting at vertex 5, and an open box
    fin = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1], [3, 0, 0], [4, 1, 0], [4, -1, 0],
                    [2, 1, 0], [2, -1, 0]], dtype=float)
    fin_faces = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [5, 6, 7], [5, 8, 9]])
    box = trimesh.creation.box()
    mesh = trimesh.Trimesh(np.concatenate([fin, box.vertices + 10]), np.concatenate([fin_faces, box.faces[2:] + 10]),
                           process=False)
    mesh.export(tmp_path / "messy.ply")
    loaded = load_mesh(tmp_path / "messy.ply")
    assert loaded.vertices.shape == (18, 3)
    assert loaded.faces.shape == (15, 3)


def test_duplicate_degenerate_and_unreferenced_are_cleaned_deterministically(tmp_path):
    box = trimesh.creation.box()
    far = np.array([9.0, 9.0, 9.0])
    vertices = np.concatenate([box.vertices, [far, 0.5 * (box.vertices[0] + far), [7.0, 7.0, 7.0]]])
    a, b, c = box.faces[0]
    extra = [[b, c, a], [c, a, b], [a, c, b], [a, a, b], [0, 8, 9]]  # rotated twice, reversed, two of zero area
    trimesh.Trimesh(vertices, np.concatenate([box.faces, extra]), process=False).export(tmp_path / "dirty.off")
    first = load_mesh(tmp_path / "dirty.off")
    assert first.faces.shape == (13, 3)  # the box plus the reversed copy of face 0
    assert first.vertices.shape == (8, 3)  # 8, 9 (only in a zero-area face) and 10 (unused) are gone
    np.testing.assert_array_equal(first.faces, np.concatenate([box.faces, [[a, c, b]]]))  # order kept
    again = load_mesh(tmp_path / "dirty.off")
    np.testing.assert_array_equal(first.vertices, again.vertices)
    np.testing.assert_array_equal(first.faces, again.faces)


def test_sliver_triangles_are_kept(tmp_path):
    mesh = load_mesh(write(tmp_path / "sliver.obj", "v 0 0 0\nv 1 0 0\nv 0.5 1e-6 0\nf 1 2 3\n"))
    assert area(mesh.vertices, mesh.faces) == pytest.approx(5e-7)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.obj", None, "not found"),
        ("garbage.obj", bytes(range(256)) * 8, "holds no triangles: it is empty or not a valid OBJ file"),
        ("garbage.ply", b"\x00\x01 not a ply at all", "not a readable PLY mesh"),
        ("model.fbx", b"fbx", "unsupported mesh format '.fbx'"),
        ("nan.obj", b"v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", "NaN or infinite coordinates at 1 of 3 vertices"),
        ("bad.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
         b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n",
         "faces that refer to missing vertices"),
        ("flat.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nv 0 0 0\nf 1 2 3\nf 1 2 4\n", "zero surface area"),
    ],
)
def test_refusals_name_the_problem_and_the_fix(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NCA3DError, match=message) as info:
        load_mesh(path)
    assert "\n" not in str(info.value)


def test_point_cloud_is_refused(tmp_path):
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(tmp_path / "cloud.ply")
    with pytest.raises(NCA3DError, match=r"point cloud \(vertices only\); export a surface mesh with faces as OBJ"):
        load_mesh(tmp_path / "cloud.ply")
