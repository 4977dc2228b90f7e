"""`nca3d texture`: mesh in, PBR maps + .glb + .obj out (small generated meshes, real readers)."""

import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from nca3d.cli import main
from nca3d.commands.texture import texture_mesh
from nca3d.io.model_file import save_model
from nca3d.ops.bake import UVRasteriser, interpolate
from nca3d.progress import Progress
from nca3d.render.maps import TextureConfig
from tests.conftest import random_model, requires_raycaster

pytestmark = requires_raycaster


def island_sphere(path):
    """A smooth sphere cut into two UV islands (x < 0 and x >= 0, both projected onto (z, y)): the
    first rotated by 90 degrees, the second mirrored (seen from outside, its u runs backwards).
    Seam vertices are duplicated. Written as OBJ."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    v, f = sphere.vertices, sphere.faces
    right = v[f].mean(1)[:, 0] >= 0
    vertices, faces, uvs = [], [], []
    for side, transform in ((False, "rotate"), (True, "mirrored")):
        chosen = f[right == side]
        used, local = np.unique(chosen, return_inverse=True)
        p = v[used]
        uv = np.stack([p[:, 2], p[:, 1]], 1) * 0.22 + 0.25  # planar (z, y) in a 0.5-wide box
        if transform == "rotate":
            uv = np.stack([0.5 - uv[:, 1], uv[:, 0]], 1)  # 90 degrees about (0.25, 0.25)
        else:
            uv = uv + [0.5, 0.0]  # right half; (z, y) seen from +x is a mirror image
        uv[:, 1] += 0.25
        faces.append(local.reshape(-1, 3) + sum(len(x) for x in vertices))
        vertices.append(p)
        uvs.append(uv)
    mesh = trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False,
                           visual=trimesh.visual.TextureVisuals(uv=np.concatenate(uvs)))
    mesh.export(path)
    return path


@pytest.fixture(scope="module")
def pbr_mesh_model(tmp_path_factory):
    model = random_model("mesh", outputs="pbr", icosphere_frequency=4)
    with torch.no_grad():
        for param in model.lppn.parameters():
            param.mul_(3.0)
    path = tmp_path_factory.mktemp("model") / "bark.nca3d"
    save_model(model, path)
    return path


def bake_ball(tmp_path_factory, model, **options):
    """Texture a 'ball' island sphere with `model` at 256 px: (mesh path, out folder, files)."""
    folder = tmp_path_factory.mktemp("bake")
    mesh_path = island_sphere(folder / "ball.obj")
    out = folder / "out"
    config = TextureConfig(mesh=str(mesh_path), model=str(model), out=str(out), size=256, cells=600,
                           steps=8, device="cpu", **options)
    return mesh_path, out, texture_mesh(config, Progress("none"))


@pytest.fixture(scope="module")
def baked(tmp_path_factory, pbr_mesh_model):
    return bake_ball(tmp_path_factory, pbr_mesh_model, object_normals=True, preview_size=96)


def _bilinear(image, uv):
    """Sample (H, W, C) at uv (N, 2) (OpenGL v up), texel centres at (i + 0.5) / S."""
    size = image.shape[0]
    x = uv[:, 0] * size - 0.5
    y = (1.0 - uv[:, 1]) * size - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = np.clip(x0, 0, size - 1), np.clip(y0, 0, size - 1)
    x1, y1 = np.clip(x0 + 1, 0, size - 1), np.clip(y0 + 1, 0, size - 1)
    return ((1 - fx) * (1 - fy) * image[y0, x0] + fx * (1 - fy) * image[y0, x1]
            + (1 - fx) * fy * image[y1, x0] + fx * fy * image[y1, x1])


def test_texture_writes_maps_glb_obj_preview_and_settings(baked):
    _, out, files = baked
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["ball.glb", "ball.json", "ball.mtl", "ball.obj", "ball_albedo.png", "ball_ao.png",
                     "ball_height.png", "ball_normal.png", "ball_normal_object.png", "ball_orm.png",
                     "ball_preview.png", "ball_roughness.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers
    record = json.loads((out / "ball.json").read_text())
    assert record["config"]["cells"] == 600 and record["unwrapped"] is False
    assert 0.4 < record["lattice"]["edge_median"] < 1.6
    loaded = trimesh.load(out / "ball.glb", force="mesh")
    material = loaded.visual.material
    assert material.baseColorTexture.size == (256, 256)
    assert material.normalTexture.size == (256, 256)
    preview = np.asarray(Image.open(out / "ball_preview.png"))
    assert preview.shape == (96, 96, 3) and preview.std() > 5


def test_tangent_normal_map_shades_like_the_object_space_normals(baked):
    """Shading from the tangent-space map, decoded with a frame built here from the exported
    GLB's normals and each face's UV derivatives, matches the object-space map's shading on
    rotated and mirrored islands."""
    _, out, _ = baked
    mesh = trimesh.load(out / "ball.glb", force="mesh", process=False)
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    uv = np.asarray(mesh.visual.uv)
    normals = np.asarray(mesh.vertex_normals)
    tangent_map = np.asarray(Image.open(out / "ball_normal.png"), float) / 255 * 2 - 1
    object_map = np.asarray(Image.open(out / "ball_normal_object.png"), float) / 255 * 2 - 1
    inside = UVRasteriser(uv, faces, 256, border=0.0)
    chunks = list(inside)
    index = np.concatenate([c.index for c in chunks])
    face = np.concatenate([c.face for c in chunks])
    bary = np.concatenate([c.bary for c in chunks])
    n = interpolate(normals, faces, face, bary)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    p, t = vertices[faces[face]], uv[faces[face]]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    tangent = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) / det[:, None]
    tangent -= np.sum(tangent * n, 1, keepdims=True) * n
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    bitangent = np.sign(det)[:, None] * np.cross(n, tangent)
    assert (det < 0).any() and (det > 0).any()  # mirrored and unmirrored islands both present
    ts = tangent_map.reshape(-1, 3)[index]
    rebuilt = ts[:, :1] * tangent + ts[:, 1:2] * bitangent + ts[:, 2:] * n
    rebuilt /= np.linalg.norm(rebuilt, axis=1, keepdims=True)
    reference = object_map.reshape(-1, 3)[index]
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.degrees(np.arccos(np.clip(np.sum(reference * n, 1), -1, 1))).mean() > 2.0  # a real relief
    for light in ([0.3, 0.8, 0.5], [-0.7, 0.1, 0.7], [0.0, -1.0, 0.2]):
        light = np.array(light) / np.linalg.norm(light)
        shade_tangent = np.clip(rebuilt @ light, 0, None)
        shade_object = np.clip(reference @ light, 0, None)
        error = np.abs(shade_tangent - shade_object)
        assert error.mean() < 0.02 and np.percentile(error, 99) < 0.08, light


def test_albedo_is_continuous_across_uv_seams(baked):
    """Along every seam edge, the texture read through one island's UVs equals the texture read
    through the other's: the jump is no larger than a step between neighbouring texels inside."""
    mesh_path, out, _ = baked
    mesh = trimesh.load(out / "ball.glb", force="mesh", process=False)
    vertices, faces, uv = np.asarray(mesh.vertices), np.asarray(mesh.faces), np.asarray(mesh.visual.uv)
    albedo = np.asarray(Image.open(out / "ball_albedo.png"), float)
    # seam edges: the same 3D edge used by two faces through different vertex copies
    _, weld = np.unique(vertices.round(9), axis=0, return_inverse=True)
    edges = {}
    for f in faces:
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            key = tuple(sorted((weld[a], weld[b])))
            edges.setdefault(key, []).append((a, b) if weld[a] < weld[b] else (b, a))
    seams = [pair for pair in edges.values() if len(pair) == 2 and pair[0] != pair[1]]
    assert len(seams) > 20
    s = np.linspace(0.15, 0.85, 5)[:, None]
    jumps = []
    for (a0, b0), (a1, b1) in seams:
        uv0 = uv[a0] * (1 - s) + uv[b0] * s
        uv1 = uv[a1] * (1 - s) + uv[b1] * s
        jumps.append(np.abs(_bilinear(albedo, uv0) - _bilinear(albedo, uv1)).mean())
    covered = UVRasteriser(uv, faces, 256, border=0.0)
    list(covered)
    mask = covered.covered
    inner = mask[:, 1:] & mask[:, :-1]
    step = np.abs(np.diff(albedo, axis=1)).mean(-1)[inner].mean()
    assert np.mean(jumps) <= 1.5 * step, (np.mean(jumps), step)


@pytest.fixture(scope="module")
def displaced(tmp_path_factory, pbr_mesh_model):
    return bake_ball(tmp_path_factory, pbr_mesh_model, preview_size=0, displace=True)[1:]


def test_displace_moves_vertices_along_normals_by_the_height_at_their_uv(displaced):
    """--displace: NAME_displaced.glb/.obj with the same material; each vertex moved along its
    normal by strength x (height - 0.5), seam copies together; the strength is in NAME.json."""
    out, files = displaced
    names = sorted(p.split("/")[-1] for p in files)
    assert {"ball_displaced.glb", "ball_displaced.obj", "ball_displaced.mtl", "ball.glb"} <= set(names)
    record = json.loads((out / "ball.json").read_text())
    info = record["displacement"]
    strength = info["strength"]
    assert record["config"]["displace"] and record["config"]["displace_strength"] == strength > 0
    assert info["rule"].startswith("default") and info["flipped_faces"] == 0 and info["midlevel"] == 0.5
    diagonal = 2 * np.sqrt(3) * 1.0  # the unit sphere's bounding box
    assert strength <= 0.02 * diagonal + 1e-9 and strength <= 0.5 * info["no_flip_strength"] + 1e-9
    plain = trimesh.load(out / "ball.glb", force="mesh", process=False)
    moved = trimesh.load(out / "ball_displaced.glb", force="mesh", process=False)
    material = moved.visual.material
    for texture in ("baseColorTexture", "normalTexture", "metallicRoughnessTexture"):
        assert getattr(material, texture).size == (256, 256), texture
    assert np.array_equal(moved.faces, plain.faces) and np.allclose(moved.visual.uv, plain.visual.uv)
    before, after = np.asarray(plain.vertices), np.asarray(moved.vertices)
    shift = np.linalg.norm(after - before, axis=1)
    assert shift.max() <= strength / 2 + 1e-5 and shift.max() > 0.1 * strength / 2
    # seam copies (same position before) are at the same position after: no crack
    _, weld = np.unique(before.round(6), axis=0, return_inverse=True)
    weld = weld.reshape(-1)
    assert len(np.unique(weld)) < len(before)
    for group in np.unique(weld):
        copies = after[weld == group]
        assert np.abs(copies - copies[0]).max() < 1e-6
    # along the normal, by strength x (height - 0.5), the height read here from the PNG
    height = np.asarray(Image.open(out / "ball_height.png"), float) / 65535.0
    sampled = _bilinear(height[..., None], np.asarray(plain.visual.uv))[:, 0]
    expected = strength * (np.bincount(weld, sampled) / np.bincount(weld) - 0.5)[weld]
    normals = before / np.linalg.norm(before, axis=1, keepdims=True)  # a sphere: radial (to its facets)
    along = np.sum((after - before) * normals, axis=1)
    assert np.abs(along - expected).max() < 0.01 * strength
    assert np.corrcoef(along, expected)[0, 1] > 0.99
    obj = trimesh.load(out / "ball_displaced.obj", force="mesh", process=False)
    assert len(obj.faces) == len(moved.faces)
    assert np.allclose(np.sort(np.asarray(obj.vertices), axis=0), np.sort(after, axis=0), atol=1e-5)


def test_exr_height_and_animated_displacement(tmp_path, pbr_mesh_model):
    """--exr: the height is a float EXR (the OBJ's material needs PNGs and has no height slot);
    --frames: the displaced mesh follows the first frame's height; a strength implies --displace."""
    from nca3d.io.exr import read_exr

    out = tmp_path / "out"
    files = texture_mesh(TextureConfig(mesh=str(island_sphere(tmp_path / "ball.obj")), model=str(pbr_mesh_model),
                                       out=str(out), size=32, cells=300, steps=2, frames=2, every=2, exr=True,
                                       preview_size=0, device="cpu", displace_strength=0.05), Progress("none"))
    names = {p.split("/")[-1] for p in files}
    assert {"ball_height.0001.exr", "ball_height.0002.exr", "ball_displaced.glb", "ball_displaced.obj"} <= names
    record = json.loads((out / "ball.json").read_text())
    assert record["config"]["displace"] and record["displacement"]["strength"] == 0.05
    assert record["displacement"]["rule"] == "given"
    height = read_exr(out / "ball_height.0001.exr")
    assert height.dtype == np.float32 and height.std() > 0


def test_texture_json_progress_and_volume_model_solid_texture(tmp_path, capsys):
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.3))  # no UVs: it is unwrapped
    box.export(tmp_path / "box.ply")
    model = random_model("volume", grid_size=[8, 8, 8], harmonics=1)
    save_model(model, tmp_path / "smoke.nca3d")
    code = main(["texture", str(tmp_path / "box.ply"), "--model", str(tmp_path / "smoke.nca3d"), "--out",
                 str(tmp_path / "out"), "--size", "64", "--scale", "0.05", "--steps", "4", "--preview-size", "0",
                 "--device", "cpu", "--progress", "json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    stages = [line["stage"] for line in lines]
    assert {"load", "unwrap", "grow", "bake", "export"} <= set(stages) and stages[-1] == "done"
    files = sorted(p.split("/")[-1] for p in lines[-1]["files"])
    assert files == ["box.glb", "box.json", "box.mtl", "box.obj", "box_albedo.png"]  # an RGBA model: albedo only
    albedo = np.asarray(Image.open(tmp_path / "out" / "box_albedo.png"))
    assert albedo.shape == (64, 64, 3) and albedo.std() > 1


def test_interrupted_texture_run_leaves_nothing(tmp_path, monkeypatch, pbr_mesh_model):
    import nca3d.commands.texture as texture

    mesh_path = island_sphere(tmp_path / "ball.obj")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(texture, "export_mesh", interrupted)
    with pytest.raises(KeyboardInterrupt):
        texture_mesh(TextureConfig(mesh=str(mesh_path), model=str(pbr_mesh_model), out=str(out), size=32,
                                   cells=300, steps=2, device="cpu"), Progress("none"))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_default_cells_follow_the_models_training_sphere(tmp_path, pbr_mesh_model):
    """No --cells or --scale: a mesh model trained on the frequency-4 icosphere (162 cells) gets a
    162-cell lattice, so its texture covers the mesh as it covered the sphere."""
    texture_mesh(TextureConfig(mesh=str(island_sphere(tmp_path / "ball.obj")), model=str(pbr_mesh_model),
                               out=str(tmp_path / "out"), size=32, steps=2, device="cpu"), Progress("none"))
    record = json.loads((tmp_path / "out" / "ball.json").read_text())
    assert record["config"]["cells"] == 10 * 4 ** 2 + 2
    assert 0.8 * 162 < record["lattice"]["cells"] < 1.25 * 162


def test_default_cells_follow_a_narrowed_models_views(pbr_mesh_model):
    """A model trained at zoom z < 1 (its views narrowed to z f cells of the frequency-f sphere) gets
    the cells of a frequency-z f sphere, so its features cover a mesh as at zoom 1; zoom > 1 (views on
    part of the exemplar) and models without a record keep the training sphere's count."""
    from nca3d.io.model_file import load_model
    from nca3d.render.maps import default_cells

    model = load_model(pbr_mesh_model)
    for record, cells in ((None, 162), ({"zoom": 1.0}, 162), ({"zoom": 0.5}, 10 * 2 ** 2 + 2),
                          ({"zoom": 0.75}, 10 * 3 ** 2 + 2), ({"zoom": 2.5}, 162)):
        model.provenance["scale"] = record
        assert default_cells(model) == cells


@pytest.mark.parametrize("budget", [1 << 30, 1])
def test_located_texels_are_reused_across_bakes(tmp_path, monkeypatch, pbr_mesh_model, budget):
    """Animated bakes and live views locate texels once (when they fit the cache budget); the
    maps are the same as a fresh bake's either way."""
    from nca3d.io.mesh import load_mesh
    from nca3d.io.model_file import load_model
    from nca3d.render import maps as texture

    monkeypatch.setattr(texture, "GEOMETRY_CACHE_BYTES", budget)
    model = load_model(pbr_mesh_model)
    mesh = load_mesh(island_sphere(tmp_path / "ball.obj"))
    config = TextureConfig(mesh=str(tmp_path / "ball.obj"), model="", out=".", size=64, cells=300, device="cpu")
    kept = texture.MeshBaker(model, mesh, config, Progress("none"), keep_geometry=True)
    state = model.rollout(model.seed(kept.lattice), kept.lattice, 8, torch.Generator().manual_seed(0))
    first, covered = kept.bake(state)
    located = kept.timings["locate"]
    later = model.rollout(state, kept.lattice, 8, torch.Generator().manual_seed(1))
    second, _ = kept.bake(later)
    assert (kept.timings["locate"] == located) == (budget > 1)  # the second bake located nothing
    fresh, fresh_covered = texture.MeshBaker(model, mesh, config, Progress("none")).bake(later)
    assert np.array_equal(covered, fresh_covered)
    for kind in fresh.arrays:
        assert np.array_equal(second.arrays[kind], fresh.arrays[kind]), kind
        assert not np.array_equal(first.arrays[kind], second.arrays[kind]), kind


def test_texture_refuses_bad_input_in_one_line(tmp_path, capsys, pbr_mesh_model):
    (tmp_path / "cloud.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                        "property float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    flat = random_model("2d", grid_size=[8, 8])
    save_model(flat, tmp_path / "flat.nca3d")
    save_model(random_model("mesh", icosphere_frequency=2), tmp_path / "rgb.nca3d")
    mesh = island_sphere(tmp_path / "ball.obj")
    cases = [
        (["texture", str(tmp_path / "nope.obj"), "--model", str(pbr_mesh_model)], "nope.obj"),
        (["texture", str(tmp_path / "cloud.ply"), "--model", str(pbr_mesh_model)], "cloud.ply"),
        (["texture", str(mesh), "--model", str(tmp_path / "flat.nca3d")], "nca3d maps"),
        (["texture", str(mesh), "--model", str(pbr_mesh_model), "--scale", "0.1", "--cells", "9"], "not allowed"),
        (["texture", str(mesh), "--model", str(pbr_mesh_model), "--size", "100000"], "out of range"),
        (["texture", str(mesh), "--model", str(tmp_path / "rgb.nca3d"), "--displace"], "no height output"),
        (["texture", str(mesh), "--model", str(pbr_mesh_model), "--displace-strength", "-1"], "must be a finite"),
    ]
    for args, message in cases:
        assert main(args + ["--out", str(tmp_path / "o"), "--device", "cpu"]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
