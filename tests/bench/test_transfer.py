import json

import numpy as np
import pytest
from PIL import Image

from nca3d.bench import main as bench_main
from nca3d.bench.transfer import blotch_rates, exemplar_file, vertex_classes
from nca3d.core.model import Model, ModelConfig
from nca3d.errors import NCA3DError
from nca3d.io.model_file import save_model
from nca3d.lattices.mesh import icosphere
from nca3d.train.trainer import exemplar_digest


def _fan(valence=6):
    angles = 2 * np.pi * np.arange(valence) / valence
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(valence)], 1)
    faces = np.array([[0, 1 + i, 1 + (i + 1) % valence] for i in range(valence)])
    return np.concatenate([np.zeros((1, 3)), ring]), faces


def _model(tmp_path):
    model = Model(ModelConfig(domain="mesh", outputs="rgb", channels=6, hidden=16, icosphere_frequency=4))
    model.provenance["exemplar"] = "ex.png"
    path = tmp_path / "tiny_mesh.nca3d"
    save_model(model, path)
    return model, path


def test_vertex_classes_find_boundaries_valence_and_curvature():
    vertices, faces = _fan()
    classes = vertex_classes(vertices, faces)
    assert classes["boundary"].tolist() == [False] + [True] * 6  # the open fan's rim
    sphere = vertex_classes(*icosphere(4))
    assert not sphere["boundary"].any() and sphere["valence 5"].sum() == 12 and not sphere["valence 7"].any()
    assert sphere["curved 1%"].sum() >= 1


def test_blotch_rate_is_zero_inside_the_gamut_and_one_outside(tmp_path):
    model, _ = _model(tmp_path)
    vertices, faces = icosphere(4)
    cube = np.stack(np.meshgrid(*[np.linspace(0, 1, 21)] * 3, indexing="ij"), -1).reshape(-1, 3)  # every colour
    inside = blotch_rates(model, vertices, faces, cube, steps=4, seeds=1, threshold=0.12)
    outside = blotch_rates(model, vertices, faces, np.array([[9.0, 9.0, 9.0]]), steps=4, seeds=1, threshold=0.12)
    assert inside["blotches"] == 0.0 and outside["blotches"] == 1.0
    assert inside["cells"] == len(vertices) and inside["by_class"]["valence 5"] == (0.0, 12 / len(vertices))
    assert inside["by_class"]["boundary"][0] is None  # a closed sphere has no boundary vertex


def test_transfer_bench_runs_on_the_reference_lattices_and_a_demo_mesh(tmp_path, capsys):
    _, path = _model(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / "ex.png")
    assert bench_main(["transfer", "--models", str(path), "--meshes", "torus", "--data", str(data), "--quick",
                       "--json", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    labels = [row["lattice"] for row in results["rows"]]
    assert labels == ["icosphere 4", "icosphere jittered 0.2", "sphere remeshed", "torus"]
    assert all(0.0 <= row["blotches"] <= 1.0 for row in results["rows"]) and results["steps"] == 256
    (tmp_path / "empty").mkdir()
    assert bench_main(["transfer", "--models", str(path), "--data", str(tmp_path / "empty")]) == 2
    assert "is not in" in capsys.readouterr().err


def test_each_model_finds_its_own_exemplar_by_content_at_any_depth(tmp_path):
    """Two PBR sets under one data folder (as ../shared/data/pbr) with the same albedo.png and
    different normal maps: a PBR model finds the set whose albedo and maps hash to the sha256 its
    header records, whatever folder comes first or its header names; none with other content."""
    model, _ = _model(tmp_path)
    folders = []
    for index, name in enumerate(["a_set", "b_set"]):
        folders.append(tmp_path / "data" / "pbr" / name)
        folders[-1].mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(folders[-1] / "albedo.png")
        Image.fromarray(np.full((8, 8, 3), 100 + index, np.uint8)).save(folders[-1] / "normal.png")
    maps = {"normal": "/machine/where/it/trained/normal.png"}
    model.provenance.update(exemplar="albedo.png", config={"maps": maps, "material": "/elsewhere/a_set"},
                            exemplar_sha256=exemplar_digest(folders[1] / "albedo.png", {"normal": folders[1] / "normal.png"}))
    assert exemplar_file(model, str(tmp_path / "data")) == folders[1] / "albedo.png"
    model.provenance["exemplar_sha256"] = "0" * 64
    with pytest.raises(NCA3DError, match="with the content it was trained on"):
        exemplar_file(model, str(tmp_path / "data"))
    del model.provenance["exemplar_sha256"]  # an older header: the recorded material's folder first
    assert exemplar_file(model, str(tmp_path / "data")) == folders[0] / "albedo.png"
