"""`nca3d blender-addon --zip DIR`: a deterministic extension zip that Blender validates and installs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import nca3d
from nca3d.commands.blender_addon import addon_source, build_zip
from nca3d.errors import NCA3DError

from .conftest import ADDON, run_blender

tomllib = pytest.importorskip("tomllib")


def test_manifest():
    manifest = tomllib.loads((ADDON / "blender_manifest.toml").read_text())
    assert manifest["schema_version"] == "1.0.0" and manifest["id"] == "nca3d" and manifest["type"] == "add-on"
    assert manifest["version"] == nca3d.__version__  # bump both together
    assert manifest["blender_version_min"] == "4.2.0" and manifest["license"] == ["SPDX:MIT"]
    assert manifest["permissions"]["files"]
    assert len(manifest["tagline"]) <= 64 and not manifest["tagline"].endswith(".")


def test_zip_is_deterministic_and_clean(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ADDON, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "backend.cpython-311.pyc").write_bytes(b"junk")
    (source / ".hidden").write_text("x")
    first = build_zip(tmp_path / "a", source)
    os.utime(source / "backend.py", (1e9, 1e9))  # timestamps do not matter
    second = build_zip(tmp_path / "b", source)
    assert first.name == f"nca3d-{nca3d.__version__}.zip"
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
    assert names == sorted(names)
    assert {"blender_manifest.toml", "__init__.py", "backend.py", "README.md"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith(".") or "/" in n for n in names)
    expected = sorted(p.name for p in ADDON.iterdir() if p.is_file() and not p.name.startswith("."))
    assert names == expected


def test_cli_builds_the_zip(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nca3d", "blender-addon", "--zip", str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_file() and path.parent == tmp_path / "out"
    assert addon_source() == ADDON or (addon_source() / "blender_manifest.toml").is_file()


def test_unwritable_folder_is_one_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NCA3DError, match="cannot create the folder"):
        build_zip(blocker / "sub")


INSTALL = r'''
import subprocess
scripts = bpy.utils.system_resource("SCRIPTS")
tool = os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py")
proc = subprocess.run([sys.executable, tool, "validate", ARGS["zip"]], capture_output=True, text=True)
RESULT["validate"] = [proc.returncode, proc.stdout + proc.stderr]
root = os.path.join(OUT, "installed")
os.makedirs(root)
bpy.context.preferences.extensions.repos.new(name="nca3d_install", module="nca3d_install",
                                             custom_directory=root, source="USER")
RESULT["install"] = call(bpy.ops.extensions.package_install_files, filepath=ARGS["zip"], repo="nca3d_install",
                         enable_on_install=True)
RESULT["enabled"] = "bl_ext.nca3d_install.nca3d" in bpy.context.preferences.addons
RESULT["files"] = sorted(os.listdir(os.path.join(root, "nca3d")))
RESULT["has_ops"] = [hasattr(bpy.types, n) for n in ("NCA3D_OT_texture_mesh", "NCA3D_OT_add_volume")]
RESULT["prefs"] = bpy.context.preferences.addons["bl_ext.nca3d_install.nca3d"].preferences.bl_rna.identifier
'''


def test_blender_validates_and_installs_the_zip(tmp_path):
    zip_path = build_zip(tmp_path / "dist")
    result = run_blender(INSTALL, tmp_path / "blender", zip=str(zip_path))
    assert result["validate"][0] == 0 and "Success" in result["validate"][1], result["validate"]
    assert result["install"] == [["FINISHED"], None], result["install"]
    assert result["enabled"] and result["has_ops"] == [True, True]
    assert "blender_manifest.toml" in result["files"] and "__init__.py" in result["files"]
    assert json.dumps(result["prefs"])
