"""Tests for nca3d.io.export: GLB structure checked by hand and by trimesh; OBJ + MTL read by trimesh."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nca3d.errors import NCA3DError
from nca3d.io.export import encode_glb, write_glb, write_obj
from nca3d.io.images import write_png
from nca3d.io.mesh import SurfaceMesh
from nca3d.ops.bake import vertex_normals


def uv_sphere(rows: int = 12, cols: int = 24) -> SurfaceMesh:
    """A latitude-longitude unit sphere with the seam duplicated; u runs with longitude, v = 1 at +Y."""
    theta = np.linspace(0, np.pi, rows + 1)[:, None]
    phi = np.linspace(0, 2 * np.pi, cols + 1)[None, :]
    xyz = np.stack(np.broadcast_arrays(-np.sin(theta) * np.sin(phi), np.cos(theta), -np.sin(theta) * np.cos(phi)), -1)
    uv = np.stack(np.broadcast_arrays(phi / (2 * np.pi), 1 - theta / np.pi), -1)
    index = np.arange(xyz.shape[0] * xyz.shape[1]).reshape(xyz.shape[:2])
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    faces = np.concatenate([np.stack([a, c, d], -1)[:-1].reshape(-1, 3), np.stack([a, d, b], -1)[1:].reshape(-1, 3)])
    return SurfaceMesh(xyz.reshape(-1, 3), faces, uv.reshape(-1, 2), name="ball")


@pytest.fixture
def sphere():
    return uv_sphere()


@pytest.fixture
def maps(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "maps"
    rng = np.random.default_rng(0)
    paths = {role: folder / f"ball_{role}.png" for role in ("albedo", "normal", "roughness", "height", "ao", "orm")}
    write_png(paths["albedo"], rng.random((32, 48, 3)))
    write_png(paths["normal"], np.tile([0.5, 0.5, 1.0], (32, 48, 1)))
    write_png(paths["roughness"], rng.random((32, 48)))
    write_png(paths["height"], rng.random((32, 48)), bits=16)
    write_png(paths["ao"], rng.random((32, 48)))
    write_png(paths["orm"], np.concatenate([rng.random((32, 48, 2)), np.zeros((32, 48, 1))], axis=2))
    return paths


def parse_glb(blob: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<4sII", blob)
    assert (magic, version, length) == (b"glTF", 2, len(blob))
    json_length, json_type = struct.unpack_from("<I4s", blob, 12)
    assert json_type == b"JSON" and json_length % 4 == 0
    bin_start = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<I4s", blob, bin_start)
    assert bin_type == b"BIN\0" and bin_length % 4 == 0 and bin_start + 8 + bin_length == len(blob)
    return json.loads(blob[20:bin_start]), blob[bin_start + 8:]


def accessor_array(doc: dict, binary: bytes, index: int) -> np.ndarray:
    accessor = doc["accessors"][index]
    view = doc["bufferViews"][accessor["bufferView"]]
    dtype = {5126: "<f4", 5125: "<u4"}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    data = np.frombuffer(binary, dtype, accessor["count"] * width, view["byteOffset"])
    assert data.nbytes == view["byteLength"]
    return data.reshape(accessor["count"], width)


def view_bytes(doc: dict, binary: bytes, view_index: int) -> bytes:
    view = doc["bufferViews"][view_index]
    return binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]


def test_glb_structure(sphere, maps):
    doc, binary = parse_glb(encode_glb(sphere, maps))
    assert doc["asset"]["version"] == "2.0" and doc["buffers"] == [{"byteLength": len(binary)}]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
    primitive = doc["meshes"][0]["primitives"][0]
    attributes = primitive["attributes"]
    positions = accessor_array(doc, binary, attributes["POSITION"])
    np.testing.assert_allclose(positions, sphere.vertices, atol=1e-6)
    accessor = doc["accessors"][attributes["POSITION"]]
    assert accessor["min"] == positions.min(axis=0).tolist() and accessor["max"] == positions.max(axis=0).tolist()
    normals = accessor_array(doc, binary, attributes["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    texcoords = accessor_array(doc, binary, attributes["TEXCOORD_0"])
    np.testing.assert_allclose(texcoords[:, 0], sphere.uv[:, 0], atol=1e-7)
    np.testing.assert_allclose(texcoords[:, 1], 1.0 - sphere.uv[:, 1], atol=1e-7)  # glTF's v points down
    indices = accessor_array(doc, binary, primitive["indices"])
    np.testing.assert_array_equal(indices.reshape(-1, 3), sphere.faces)
    assert "TANGENT" not in attributes and primitive["mode"] == 4

    material = doc["materials"][primitive["material"]]
    pbr = material["pbrMetallicRoughness"]
    image_of = {role: doc["textures"][slot["index"]]["source"] for role, slot in [
        ("albedo", pbr["baseColorTexture"]), ("orm", pbr["metallicRoughnessTexture"]),
        ("normal", material["normalTexture"]), ("orm ao", material["occlusionTexture"])]}
    assert image_of["orm"] == image_of["orm ao"] and len(doc["images"]) == 3  # orm embedded once
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
    for role in ("albedo", "orm", "normal"):
        image = doc["images"][image_of[role]]
        assert image["mimeType"] == "image/png"
        assert view_bytes(doc, binary, image["bufferView"]) == maps[role].read_bytes()


def test_glb_without_orm_uses_grey_maps(sphere, maps):
    chosen = {role: maps[role] for role in ("albedo", "roughness", "ao")}
    doc, binary = parse_glb(encode_glb(sphere, chosen))
    material = doc["materials"][0]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and "normalTexture" not in material

    def png(slot):
        image = doc["images"][doc["textures"][slot["index"]]["source"]]
        return view_bytes(doc, binary, image["bufferView"])

    assert png(pbr["metallicRoughnessTexture"]) == maps["roughness"].read_bytes()
    assert png(material["occlusionTexture"]) == maps["ao"].read_bytes()
    only_albedo, _ = parse_glb(encode_glb(sphere, {"albedo": maps["albedo"]}))
    assert only_albedo["materials"][0]["pbrMetallicRoughness"]["roughnessFactor"] == 0.5


def test_glb_given_normals(sphere, maps):
    normals = sphere.vertices * 3.0 + 1e-3  # not unit: written normalised
    doc, binary = parse_glb(encode_glb(sphere, {"albedo": maps["albedo"]}, normals=normals))
    written = accessor_array(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["NORMAL"])
    np.testing.assert_allclose(written, normals / np.linalg.norm(normals, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="normals"):
        encode_glb(sphere, {"albedo": maps["albedo"]}, normals=normals[:-1])


def test_glb_loads_in_trimesh(tmp_path, sphere, maps):
    path = tmp_path / "out" / "ball.glb"
    write_glb(path, sphere, maps)
    scene = trimesh.load(path)
    (loaded,) = scene.geometry.values()
    assert len(loaded.vertices) == len(sphere.vertices) and len(loaded.faces) == len(sphere.faces)
    material = loaded.visual.material
    assert isinstance(material, trimesh.visual.material.PBRMaterial)
    assert material.baseColorTexture.size == (48, 32)
    assert material.normalTexture.size == (48, 32) and material.metallicRoughnessTexture.size == (48, 32)
    np.testing.assert_allclose(loaded.visual.uv, sphere.uv, atol=1e-6)
    np.testing.assert_allclose(loaded.vertices, sphere.vertices, atol=1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["ball.glb"]  # no temporary left


def test_obj_loads_in_trimesh(tmp_path, sphere, maps):
    path = tmp_path / "ball.obj"  # trimesh only reads textures inside the OBJ's folder
    write_obj(path, sphere, maps)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ball.mtl", "ball.obj", "maps"]
    loaded = trimesh.load(path)
    assert loaded.visual.material.image.size == (48, 32)
    assert len(loaded.faces) == len(sphere.faces)

    def corners(vertices, uv, faces):  # position and UV of every face corner
        return np.concatenate([vertices[faces].reshape(-1, 3), uv[faces].reshape(-1, 2)], axis=1)

    np.testing.assert_allclose(corners(loaded.vertices, loaded.visual.uv, loaded.faces),
                               corners(sphere.vertices, sphere.uv, sphere.faces), atol=1e-7)
    mtl = (path.parent / "ball.mtl").read_text().splitlines()
    for line in ("newmtl ball", "Kd 1 1 1", "Pm 0", "map_Kd maps/ball_albedo.png", "norm maps/ball_normal.png",
                 "map_Bump -bm 1 maps/ball_normal.png", "map_Pr maps/ball_roughness.png"):
        assert line in mtl
    obj = path.read_text().splitlines()
    assert "mtllib ball.mtl" in obj and "usemtl ball" in obj
    assert obj[-1] == "f {0}/{0}/{0} {1}/{1}/{1} {2}/{2}/{2}".format(*(sphere.faces[-1] + 1))


def test_obj_map_paths_are_relative(tmp_path, sphere, maps):
    write_obj(tmp_path / "out" / "ball.obj", sphere, {"albedo": maps["albedo"]})
    mtl = (tmp_path / "out" / "ball.mtl").read_text().splitlines()
    assert "map_Kd ../maps/ball_albedo.png" in mtl and "Pr 0.5" in mtl and not any(x.startswith("norm") for x in mtl)


def test_vertex_normals_are_smooth_across_seams(sphere):
    normals = vertex_normals(sphere.vertices, sphere.faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-12)
    used = np.unique(sphere.faces)
    # Area weighting on a sphere gives nearly radial normals; seam copies get identical ones.
    assert np.einsum("vd,vd->v", normals[used], sphere.vertices[used]).min() > 0.99
    rows, cols = 12, 24
    seam_start, seam_end = np.arange(rows + 1) * (cols + 1), np.arange(rows + 1) * (cols + 1) + cols
    np.testing.assert_array_equal(normals[seam_start], normals[seam_end])


def test_bad_inputs(tmp_path, sphere, maps):
    no_uv = SurfaceMesh(sphere.vertices, sphere.faces, None, "plain")
    with pytest.raises(NCA3DError, match="no UV"):
        write_glb(tmp_path / "a.glb", no_uv, maps)
    with pytest.raises(NCA3DError, match="albedo"):
        write_obj(tmp_path / "a.obj", sphere, {"normal": maps["normal"]})
    with pytest.raises(NCA3DError, match="not found"):
        write_glb(tmp_path / "a.glb", sphere, {"albedo": tmp_path / "missing.png"})
    (tmp_path / "fake.png").write_bytes(b"GIF89a....")
    with pytest.raises(NCA3DError, match="not a PNG"):
        write_obj(tmp_path / "a.obj", sphere, {"albedo": tmp_path / "fake.png"})
    with pytest.raises(ValueError, match="unknown map"):
        write_glb(tmp_path / "a.glb", sphere, {"albedo": maps["albedo"], "specular": maps["ao"]})
    assert not list(tmp_path.glob("a.*"))
