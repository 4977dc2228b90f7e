"""The bundled PBR models: enough of them, credited, and every map they promise gets written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from nca3d.cli import main
from nca3d.models import library_entries
from tests.conftest import requires_raycaster

PBR_MAPS = ("albedo", "normal", "height", "roughness", "ao")
PBR_MODELS = [entry for entry in library_entries() if set(PBR_MAPS) <= set(entry.get("channels") or [])]


def test_the_library_ships_credited_pbr_models_for_flat_maps_and_meshes():
    domains = [entry["domain"] for entry in PBR_MODELS]
    assert domains.count("2d") >= 3 and domains.count("mesh") >= 3
    for entry in PBR_MODELS:
        assert entry["license"] and entry["credit"] and "/" in entry["exemplar"]  # names its material folder


@pytest.mark.parametrize("name", [e["name"] for e in PBR_MODELS if e["domain"] == "2d"])
def test_a_bundled_pbr_2d_model_writes_every_map(tmp_path, name):
    assert main(["maps", "--model", name, "--out", str(tmp_path), "--size", "64", "--steps", "16",
                 "--preview-size", "0", "--progress", "none"]) == 0
    for kind in (*PBR_MAPS, "orm"):
        image = np.asarray(Image.open(tmp_path / f"{name}_{kind}.png"))
        assert image.shape[:2] == (64, 64) and image.std() > 0, kind  # grown, not a flat fill
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["normal_height_agreement"]["mean_angle_deg"] < 45


@requires_raycaster
@pytest.mark.parametrize("name", [e["name"] for e in PBR_MODELS if e["domain"] == "mesh"])
def test_a_bundled_pbr_mesh_model_writes_every_map_and_a_glb_carrying_them(tmp_path, name):
    assert main(["texture", "capsule", "--model", name, "--out", str(tmp_path), "--size", "128", "--cells", "2000",
                 "--steps", "16", "--preview-size", "0", "--progress", "none"]) == 0
    for kind in (*PBR_MAPS, "orm"):
        assert (tmp_path / f"capsule_{kind}.png").is_file(), kind
    material = trimesh.load(tmp_path / "capsule.glb", force="mesh").visual.material
    for texture in (material.baseColorTexture, material.normalTexture, material.metallicRoughnessTexture):
        assert texture is not None and texture.size == (128, 128)
    orm = np.asarray(Image.open(tmp_path / "capsule_orm.png"))
    assert orm[..., 1].std() > 0  # roughness in G varies
