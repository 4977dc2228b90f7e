"""`nca3d models`: the bundled library as a table or JSON; library names work wherever --model does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nca3d import models
from nca3d.cli import main
from nca3d.errors import NCA3DError
from nca3d.io.model_file import save_model
from tests.conftest import random_model


@pytest.fixture
def library(tmp_path, monkeypatch) -> Path:
    """A temporary library: granite (2D, with credit and a preview), blob (volume, no preview), a broken file."""
    folder = tmp_path / "assets" / "models"
    folder.mkdir(parents=True)
    granite = random_model("2d", outputs="rgb", channels=8, hidden=16, grid_size=[16, 16])
    granite.provenance = {"exemplar": "granite.png", "license": "CC0-1.0", "credit": "A. Photographer",
                          "iterations": 1234, "final_loss": 0.125}
    save_model(granite, folder / "granite.nca3d")
    save_model(random_model("volume", channels=8, hidden=16, grid_size=[8, 8, 8]), folder / "blob.nca3d")
    (folder / "broken.nca3d").write_bytes(b"not a model")
    previews = tmp_path / "assets" / "previews"
    previews.mkdir()
    (previews / "granite.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.setattr(models, "library_folders", lambda: [folder, tmp_path / "nowhere"])
    return folder


def test_entries_read_headers(library):
    entries = {e["name"]: e for e in models.library_entries()}
    assert list(entries) == ["blob", "broken", "granite"]
    granite = entries["granite"]
    assert granite["domain"] == "2d" and granite["outputs"] == "rgb" and granite["channels"] == ["rgb"]
    assert granite["license"] == "CC0-1.0" and granite["credit"] == "A. Photographer"
    assert granite["exemplar"] == "granite.png" and granite["iterations"] == 1234 and granite["final_loss"] == 0.125
    assert granite["preview"] == str(library.parent / "previews" / "granite.png")
    blob = entries["blob"]
    assert blob["domain"] == "volume" and blob["channels"] == ["rgb", "density"] and blob["preview"] is None
    assert blob["license"] is None
    assert "error" in entries["broken"] and "cannot load model" in entries["broken"]["error"]


def test_cli_table_and_json(library, capsys):
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["NAME", "DOMAIN", "OUTPUTS", "EXEMPLAR"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"blob", "broken", "granite"}
    assert "CC0-1.0" in rows["granite"] and "A. Photographer" in rows["granite"] and "rgb (rgb)" in rows["granite"]
    assert "granite.png" in rows["granite"] and "1234" in rows["granite"]
    assert "unreadable" in rows["broken"]
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in data] == ["blob", "broken", "granite"]
    assert data[2]["preview"].endswith("granite.png")


def test_empty_library(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "library_folders", lambda: [tmp_path / "none"])
    assert models.library_entries() == []
    assert main(["models"]) == 0
    assert "no bundled models installed" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_names_resolve_wherever_model_is_taken(library, tmp_path, capsys):
    assert models.resolve_model("granite") == library / "granite.nca3d"
    assert models.resolve_model(str(tmp_path / "x.nca3d")) == tmp_path / "x.nca3d"
    with pytest.raises(NCA3DError, match="blob, broken, granite"):
        models.resolve_model("marble")
    # a library name through a command that takes --model
    out = tmp_path / "maps"
    assert main(["maps", "--model", "granite", "--out", str(out), "--size", "16", "--steps", "2",
                 "--preview-size", "0", "--progress", "none"]) == 0
    assert (out / "granite_albedo.png").is_file()


def test_named_models_load_on_the_device_and_other_domains_are_refused(library, tmp_path):
    model = models.load_named_model("granite", "cpu", ("2d",), "unused")
    assert model.config.domain == "2d" and not model.training and model.device.type == "cpu"
    assert models.load_named_model(str(library / "blob.nca3d")).config.domain == "volume"  # any domain
    with pytest.raises(NCA3DError, match=r"^'blob' is a volume model; needs 2D$"):
        models.load_named_model("blob", "cpu", ("2d",), "needs 2D")
    with pytest.raises(NCA3DError, match=r"^'granite' is a 2D model; "):
        models.load_named_model("granite", "cpu", ("mesh", "volume"), "not here")


def test_first_folder_wins(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        save_model(random_model("2d", outputs="rgb", channels=8, hidden=16, grid_size=[8, 8]), folder / "m.nca3d")
    monkeypatch.setattr(models, "library_folders", lambda: [first, second])
    assert models.library_models() == {"m": first / "m.nca3d"}


def test_bundled_library_lists(capsys):
    """The real library (whatever is installed) lists without errors."""
    assert main(["models", "--json"]) == 0
    for entry in json.loads(capsys.readouterr().out):
        assert "error" not in entry, entry
        assert entry["domain"] in ("2d", "mesh", "volume")


SHIPPABLE_LICENCES = {"CC0-1.0", "public-domain", "CC-BY-3.0", "CC-BY-4.0"}


def test_bundled_models_record_what_shipping_needs():
    """Each bundled model names its exemplar, hash, a shippable licence with credit, iterations and
    loss, has a gallery preview, and stays tens of kB (the whole library well under 5 MB)."""
    from nca3d.io.model_file import read_header

    library = models.library_models()
    total = 0
    for name, path in library.items():
        header, _ = read_header(path)
        provenance = header["provenance"]
        for key in ("exemplar", "exemplar_sha256", "license", "credit", "iterations", "final_loss"):
            assert provenance.get(key) not in (None, ""), (name, key)
        assert provenance["license"] in SHIPPABLE_LICENCES, (name, provenance["license"])
        assert models.preview_path(path) is not None, f"{name} has no assets/previews/{name}.png"
        assert path.stat().st_size < 100_000, name
        total += path.stat().st_size
    assert total < 5_000_000
