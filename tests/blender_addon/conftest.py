"""Helpers for the Blender add-on tests.

Blender runs as a module (bpy) in its own Python, named by NCA3D_BPY_PYTHON (tests skip when it
is unset). Each test writes a script: a common prelude registers the add-on from the repository's
blender_addon/ folder as an extension (a local extension repository pointing at it), points its
backend preference at this interpreter (which has nca3d), runs operators, and dumps what it saw
as JSON; every assertion is made here. Blender's user folders go to a temp dir
(BLENDER_USER_RESOURCES) so the user's own Blender setup is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADDON = REPO / "blender_addon"
MODULE = "bl_ext.nca3d_test.nca3d"

PRELUDE = r'''
import json, os, sys, threading, time
sys.dont_write_bytecode = True
import bpy, addon_utils

ARGS = json.loads(open(sys.argv[-1]).read())
OUT = ARGS["out"]
MODULE = "bl_ext.nca3d_test.nca3d"
RESULT = {}


def enable_addon(python=ARGS["python"]):
    root = os.path.join(OUT, "repo")
    os.makedirs(root, exist_ok=True)
    link = os.path.join(root, "nca3d")
    if not os.path.exists(link):
        os.symlink(ARGS["addon"], link)
    repos = bpy.context.preferences.extensions.repos
    if "nca3d_test" not in [r.module for r in repos]:
        repos.new(name="nca3d_test", module="nca3d_test", custom_directory=root, source="USER")
    module = addon_utils.enable(MODULE, default_set=True)
    assert module is not None, "the add-on did not enable"
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path = python
    prefs.device = "cpu"
    prefs.output_dir = os.path.join(OUT, "files")
    return module


def addon():
    return sys.modules[MODULE]


def snapshot():
    """What an operator may change: data-block names, and the objects' data/material/modifier state."""
    data = {kind: sorted(x.name for x in getattr(bpy.data, kind))
            for kind in ("objects", "meshes", "materials", "images", "volumes", "node_groups", "textures")}
    data["state"] = {o.name: {"data": o.data.name if o.data else None,
                              "materials": [s.material.name if s.material else None for s in o.material_slots],
                              "modifiers": [(m.name, m.show_viewport, m.show_render) for m in o.modifiers],
                              "uv": [u.name for u in o.data.uv_layers] if o.type == "MESH" else None}
                     for o in bpy.data.objects}
    return data


def call(op, **kwargs):
    """Run an operator; (return set, error message) where a reported ERROR raises RuntimeError."""
    try:
        return sorted(op(**kwargs)), None
    except RuntimeError as exc:
        return None, str(exc)


def status():
    info = bpy.context.window_manager.nca3d_job
    return {"running": info.running, "last_message": info.last_message, "last_level": info.last_level,
            "stage": info.stage}


def links_of(material):
    return sorted([l.from_node.bl_idname, l.from_socket.identifier, l.to_node.bl_idname, l.to_socket.identifier]
                  for l in material.node_tree.links)


def set_model(settings, path):
    settings.model = "FILE"
    settings.model_file = path


def done():
    with open(os.path.join(OUT, "result.json"), "w") as handle:
        json.dump(RESULT, handle, indent=1, default=str)
'''


def bpy_python() -> str:
    python = os.environ.get("NCA3D_BPY_PYTHON")
    if not python:
        pytest.skip("no Blender Python: install bpy==5.0.1 (Python 3.11, numpy<2) in a venv and set "
                    "NCA3D_BPY_PYTHON to its python, e.g. NCA3D_BPY_PYTHON=/tmp/bpyenv/bin/python")
    return python


def run_blender(body: str, tmp_path: Path, timeout: float = 300.0, **args) -> dict:
    """Run PRELUDE + body in the bpy Python; returns the RESULT dict the script saved with done()."""
    python = bpy_python()
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + "\n" + textwrap.dedent(body) + "\ndone()\n")
    manifest = {"out": str(tmp_path), "addon": str(ADDON), "python": sys.executable, **args}
    (tmp_path / "args.json").write_text(json.dumps(manifest))
    env = dict(os.environ)
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "blender_user")
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([python, str(script), str(tmp_path / "args.json")], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(tmp_path))
    result_file = tmp_path / "result.json"
    if proc.returncode != 0 or not result_file.exists():
        pytest.fail(f"Blender script failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(result_file.read_text())
    result["_stdout"] = proc.stdout
    return result


def _new_model(path: Path, domain: str, outputs: str | None = None) -> Path:
    argv = [sys.executable, "-m", "nca3d", "new", "--domain", domain, "--channels", "8", "--hidden", "16",
            "--out", str(path)]
    if outputs:
        argv += ["--outputs", outputs]
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Small random models (8 channels, hidden 16): a PBR mesh model and a volume model."""
    folder = tmp_path_factory.mktemp("models")
    return {"mesh": str(_new_model(folder / "tiny_mesh.nca3d", "mesh", "pbr")),
            "volume": str(_new_model(folder / "tiny_volume.nca3d", "volume"))}
