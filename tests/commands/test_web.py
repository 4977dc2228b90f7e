"""`nca3d web`: the files it writes, its one-line refusals (exit 2, no traceback), no outside address
in any written file, and --serve answering on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from nca3d.cli import main
from nca3d.io.model_file import save_model
from tests.conftest import random_model
from tests.export.test_web import URL_PATTERN


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Paths of a small 2D, mesh (icosphere 2) and volume model."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, domain, config in (("tile", "2d", {"grid_size": [8, 8]}),
                                 ("ball", "mesh", {"outputs": "pbr", "icosphere_frequency": 2}),
                                 ("cube", "volume", {"grid_size": [6, 6, 6]})):
        torch.manual_seed(1)
        paths[name] = folder / f"{name}.nca3d"
        save_model(random_model(domain, channels=8, hidden=16, **config), paths[name])
    return paths


def test_writes_a_page_with_a_model_picker(tmp_path, models, capsys):
    out = tmp_path / "page"
    arg = ",".join(str(models[n]) for n in ("tile", "ball", "cube"))
    assert main(["web", "--model", arg, "--out", str(out), "--progress", "none"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.html", "lattice_icosphere2.js", "manifest.js", "model_ball.js", "model_cube.js",
                     "model_tile.js", "nca3d.js", "shaders.js"]
    manifest = (out / "manifest.js").read_text()
    assert [m for m in re.findall(r'"name":"(\w+)","domain"', manifest)] == ["tile", "ball", "cube"]
    for path in out.iterdir():
        assert not URL_PATTERN.search(path.read_text()), path.name
    assert "kB in" in capsys.readouterr().err


def test_a_mesh_model_grows_on_a_demo_mesh(tmp_path, models):
    out = tmp_path / "page"
    assert main(["web", "--model", str(models["ball"]), "--mesh", "torus", "--out", str(out),
                 "--progress", "none"]) == 0
    lattices = [p.name for p in out.glob("lattice_*.js")]
    assert lattices == ["lattice_torus_42.js"]  # remeshed to the model's 10 f^2 + 2 cells


@pytest.mark.parametrize("argv,message", [
    (["--model", "no_such_model"], "neither a model file nor a bundled model"),
    (["--model", "missing/file.nca3d"], "not found"),
    (["--model", "TILE", "--mesh", "no_such_mesh"], "neither a mesh file nor a demo mesh"),
    (["--model", "TILE", "--serve", "--port", "70000"], "not a port number"),
    (["--model", ","], "--model is empty"),
    (["--out", "OUT"], "one of the arguments --model --library is required"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, models, capsys, argv, message):
    argv = [a.replace("TILE", str(models["tile"])) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "page")]
    argv = [a.replace("OUT", str(tmp_path / "page")) for a in argv]
    assert main(["web", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "page").exists() or not any((tmp_path / "page").iterdir())


def test_a_busy_port_is_refused_before_the_export(tmp_path, models, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "page"
        assert main(["web", "--model", str(models["tile"]), "--out", str(out), "--serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "another --port" in err
    assert not out.exists()


def test_serve_answers_on_localhost_and_stops_on_ctrl_c(tmp_path, models):
    out = tmp_path / "page"
    process = subprocess.Popen([sys.executable, "-m", "nca3d", "web", "--model", str(models["tile"]), "--out",
                                str(out), "--serve", "--port", "0", "--progress", "none"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + process.stderr.read()
        address = match[1]
        with urllib.request.urlopen(address + "index.html", timeout=10) as reply:
            assert reply.status == 200 and b"nca3d.js" in reply.read()
        with urllib.request.urlopen(address + "model_tile.js", timeout=10) as reply:
            assert reply.read().startswith(b"NCA3D.registerModel(")
    finally:
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "stopped" in stdout and "Traceback" not in stderr


def test_library_exports_every_bundled_model(tmp_path):
    from nca3d.models import library_models

    bundled = library_models()
    if not bundled:
        pytest.skip("no bundled models installed")
    out = tmp_path / "page"
    assert main(["web", "--library", "--out", str(out), "--progress", "none"]) == 0
    manifest = (out / "manifest.js").read_text()
    for name in bundled:
        assert f'"name":"{name}"' in manifest and (out / f"model_{name}.js").is_file()
