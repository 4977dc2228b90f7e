"""Material folders: maps found by name (ambientCG, Poly Haven, Substance, game exports), DirectX
normals flipped, gloss inverted, bad folders and bad maps refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nca3d.errors import NCA3DError
from nca3d.io.exr import write_exr
from nca3d.io.images import write_png
from nca3d.io.material import find_material_maps, map_kind, read_map, slope_curls
from nca3d.ops.pbr import normals_from_height


def height_field(size: int = 64, seed: int = 0) -> np.ndarray:
    """A periodic bumpy height (H, W) in [0, 1]: a few random sines."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size * 2 * np.pi
    h = sum(rng.uniform(0.2, 1.0) * np.sin(kx * x + ky * y + rng.uniform(0, 6.3))
            for kx, ky in rng.integers(1, 5, (6, 2)))
    return (h - h.min()) / (h.max() - h.min())


def normals_of(height: np.ndarray) -> np.ndarray:
    return normals_from_height(height, 8.0)


def albedo_image(size: int = 64) -> np.ndarray:
    h = height_field(size, seed=1)
    return np.stack([0.3 + 0.5 * h, 0.25 + 0.3 * h, 0.2 + 0.1 * h], axis=-1).astype(np.float32)


def make_material(folder, names: dict[str, str], size: int = 64, directx: bool = False):
    """Write a material folder; names maps kind -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    height = height_field(size)
    normal = normals_of(height)
    if directx:
        normal[..., 1] = 1.0 - normal[..., 1]
    pixels = {"albedo": albedo_image(size), "normal": normal, "height": height, "roughness": 1.0 - 0.6 * height,
              "gloss": 0.6 * height, "ao": 1.0 - 0.3 * height}
    for kind, name in names.items():
        path = folder / name
        if path.suffix == ".exr":
            write_exr(path, pixels[kind] * (3.0 if kind == "height" else 1.0))  # a float height in its own units
        else:
            write_png(path, pixels[kind])
    return folder


@pytest.mark.parametrize("name,expected", [
    ("Rock030_2K_Color.jpg", ("albedo", "")), ("Rock030_2K_NormalGL.png", ("normal", "opengl")),
    ("Rock030_2K_NormalDX.png", ("normal", "directx")), ("Rock030_2K_Roughness.jpg", ("roughness", "")),
    ("Rock030_2K_Displacement.tif", ("height", "")), ("Rock030_2K_AmbientOcclusion.jpg", ("ao", "")),
    ("rock_wall_diff_2k.jpg", ("albedo", "")), ("rock_wall_nor_gl_2k.exr", ("normal", "opengl")),
    ("rock_wall_nor_dx_4k.png", ("normal", "directx")), ("rock_wall_rough_2k.jpg", ("roughness", "")),
    ("rock_wall_disp_2k.png", ("height", "")), ("rock_wall_ao_2k.jpg", ("ao", "")),
    ("Material_BaseColor.png", ("albedo", "")), ("Material_Normal.png", ("normal", "")),
    ("Material_Height.png", ("height", "")), ("brick_gloss.png", ("roughness", "gloss")),
    ("wall-Albedo.PNG", ("albedo", "")), ("albedo.png", ("albedo", "")), ("normal.png", ("normal", "")),
    ("castell_wall_gk_v01_nm.jpg", ("normal", "")), ("castell_wall_gk_v01_hm.jpg", ("height", "")),
    ("preview.png", None), ("Bricks_Metalness.jpg", None), ("rock_wall_arm_2k.jpg", None)])
def test_map_names_of_every_convention(name, expected):
    assert map_kind(name) == expected


def test_an_ambientcg_folder_trains_the_maps_it_has(tmp_path):
    folder = make_material(tmp_path / "Rock030", {
        "albedo": "Rock030_2K_Color.png", "normal": "Rock030_2K_NormalGL.png", "height": "Rock030_2K_Displacement.png",
        "roughness": "Rock030_2K_Roughness.png", "ao": "Rock030_2K_AmbientOcclusion.png"})
    make_material(folder, {"normal": "Rock030_2K_NormalDX.png"}, directx=True)
    (folder / "Rock030.usdc").write_text("not a map")
    (folder / "Rock030_2K_Metalness.png").write_bytes((folder / "Rock030_2K_Roughness.png").read_bytes())
    found = find_material_maps(folder)
    assert found.albedo.endswith("Rock030_2K_Color.png")
    assert {k: v.rsplit("/", 1)[-1] for k, v in found.maps.items()} == {
        "normal": "Rock030_2K_NormalGL.png", "height": "Rock030_2K_Displacement.png",
        "roughness": "Rock030_2K_Roughness.png", "ao": "Rock030_2K_AmbientOcclusion.png"}
    assert found.notes == ["normal: Rock030_2K_NormalGL.png (OpenGL) used, Rock030_2K_NormalDX.png (DirectX) ignored"]


def test_directx_normals_are_flipped_and_said_so(tmp_path):
    folder = make_material(tmp_path / "dx", {"normal": "wall_nor_dx_1k.png"}, directx=True)
    make_material(folder, {"normal": "wall_nor_gl_1k.png"})
    flipped, note = read_map(folder / "wall_nor_dx_1k.png", "normal")
    opengl, none = read_map(folder / "wall_nor_gl_1k.png", "normal")
    assert "DirectX" in note and "green flipped" in note and none == ""
    assert np.abs(flipped - opengl).max() < 2 / 255


def test_an_unlabelled_directx_map_is_recognised_by_its_curl(tmp_path):
    make_material(tmp_path, {"normal": "Material_Normal.png"}, directx=True)
    pixels, note = read_map(tmp_path / "Material_Normal.png", "normal")
    assert "looks DirectX" in note
    opengl_reading, directx_reading = slope_curls(pixels)
    assert opengl_reading < 0.2 * directx_reading  # flipped back: now a curl-free slope field
    make_material(tmp_path / "gl", {"normal": "Material_Normal.png"})
    assert read_map(tmp_path / "gl" / "Material_Normal.png", "normal")[1] == ""


def test_gloss_becomes_roughness(tmp_path):
    make_material(tmp_path, {"gloss": "brick_gloss.png", "roughness": "brick_rough.png"})
    roughness, note = read_map(tmp_path / "brick_gloss.png", "roughness")
    reference, _ = read_map(tmp_path / "brick_rough.png", "roughness")
    assert "gloss map" in note and roughness.shape == (64, 64, 1)
    assert np.abs(roughness - (1.0 - 0.6 * height_field(64))[..., None]).max() < 1 / 255
    assert np.abs(reference - roughness).max() < 1 / 255


def test_exr_maps_are_read_and_a_float_height_rescaled(tmp_path):
    make_material(tmp_path, {"height": "rock_disp_2k.exr", "normal": "rock_nor_gl_2k.exr"})
    height, _ = read_map(tmp_path / "rock_disp_2k.exr", "height")
    assert height.min() == 0.0 and height.max() == 1.0
    assert np.abs(height[..., 0] - height_field(64)).max() < 1e-5
    normal, _ = read_map(tmp_path / "rock_nor_gl_2k.exr", "normal")
    assert np.abs(normal - normals_of(height_field(64))).max() < 1e-5


def test_bad_folders_and_maps_are_one_line(tmp_path):
    cases = []
    two = make_material(tmp_path / "two", {"albedo": "a_albedo.png", "normal": "a_normal.png"})
    make_material(two, {"normal": "a_nrm.jpg"})
    cases.append((lambda: find_material_maps(two), "has 2 normal maps, a_normal.png and a_nrm.jpg"))
    none = make_material(tmp_path / "none", {"normal": "a_normal.png"})
    cases.append((lambda: find_material_maps(none), "has no albedo map"))
    cases.append((lambda: find_material_maps(tmp_path / "missing"), "not found"))
    colour = make_material(tmp_path / "colour", {"albedo": "c_normal.png"})  # an albedo under a normal map's name
    cases.append((lambda: read_map(colour / "c_normal.png", "normal"), "is not a normal map"))
    height = make_material(tmp_path / "grey", {"height": "g_normal.png"})
    cases.append((lambda: read_map(height / "g_normal.png", "normal"), "is not a normal map"))
    (tmp_path / "broken_height.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases.append((lambda: read_map(tmp_path / "broken_height.png", "height"), "not a readable image"))
    for call, message in cases:
        with pytest.raises(NCA3DError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), (message, str(info.value))


def test_a_normal_map_with_height_in_its_alpha_is_read(tmp_path):
    """Game exports pack height into the normal map's alpha: the normal is its RGB."""
    rgb = (normals_of(height_field(32)) * 255).round().astype(np.uint8)
    alpha = (height_field(32) * 255).round().astype(np.uint8)[..., None]
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(tmp_path / "c_nm.png")
    Image.fromarray(rgb).save(tmp_path / "c_normal.png")
    pixels, _ = read_map(tmp_path / "c_nm.png", "normal")
    assert np.array_equal(pixels, read_map(tmp_path / "c_normal.png", "normal")[0])
