"""Setting up the backend from inside Blender: the Backend Python preference takes a Python, the nca3d
command or a venv folder; Check Backend reports version, device and model count; Set up Backend
makes a venv (from a wheel of this checkout) that runs nca3d, and a failed or cancelled setup leaves
nothing that looks usable."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ADDON, REPO, run_blender
from .test_backend import _fake_venv

if os.name != "posix":  # pragma: no cover - the fake venvs are shell scripts
    pytest.skip("POSIX only", allow_module_level=True)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ADDON / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # setup_backend imports backend by name, as when run as a script
    spec.loader.exec_module(module)
    return module


backend = _load("backend")
setup_backend = _load("setup_backend")


def _no_index_env(monkeypatch, tmp_path):
    """pip finds nothing (no index, an empty find-links folder): the torch step fails at once."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))


def test_where_nca3d_and_torch_come_from(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # a bare name is a requirement, even beside a folder of that name
    wheel = tmp_path / "nca3d-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "pyproject.toml").write_text("")
    (tmp_path / "wheels").mkdir()
    assert setup_backend.nca3d_args("") == ["nca3d"] and setup_backend.nca3d_args("nca3d==0.1.0") == ["nca3d==0.1.0"]
    assert setup_backend.nca3d_args(str(wheel)) == [str(wheel)]
    assert setup_backend.nca3d_args(str(tmp_path / "checkout")) == [str(tmp_path / "checkout")]
    assert setup_backend.nca3d_args(str(tmp_path / "wheels")) == ["--find-links", str(tmp_path / "wheels"), "nca3d"]
    with pytest.raises(ValueError, match="does not exist: choose a wheel"):
        setup_backend.nca3d_args(str(tmp_path / "nca3d-9.whl"))
    assert setup_backend.torch_args("pypi") == ["torch==2.13.0"]
    assert setup_backend.torch_args("cu128") == ["torch==2.13.0", "--index-url",
                                                 "https://download.pytorch.org/whl/cu128"]
    assert "2.13.0" in (REPO / "README.md").read_text() and setup_backend.TORCH_VERSION == "2.13.0"


def test_the_base_python_is_blenders_own_else_one_on_path(tmp_path, monkeypatch):
    assert setup_backend.find_base_python(sys.executable) == (sys.executable, sys.version.split()[0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    no_venv = tmp_path / "python-without-venv"  # a Python whose stdlib lacks venv/ensurepip
    no_venv.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.exit(1)"\n')
    no_venv.chmod(0o755)
    assert setup_backend.find_base_python(str(no_venv))[0] == str(bin_dir / "python3")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="^no Python 3.10\\+ with venv and ensurepip.*apt install python3-venv"):
        setup_backend.find_base_python(str(no_venv))


def _setup_job(tmp_path, source="nca3d"):
    root = tmp_path / "backend"
    argv = [sys.executable, str(ADDON / "setup_backend.py"), "--env", str(root / "env-1"), "--log",
            str(root / "setup.log"), "--source", source]
    return backend.Job(argv).start(), root


def test_a_failed_setup_says_why_names_its_log_and_leaves_no_venv(tmp_path, monkeypatch):
    _no_index_env(monkeypatch, tmp_path)
    job, root = _setup_job(tmp_path)
    stages = []
    assert job.wait(timeout=120, on_progress=lambda j: stages.append(j.stage)) == backend.FAILED
    log = root / "setup.log"
    assert job.error.startswith("installing torch 2.13.0 failed (") and "torch==2.13.0" in job.error, job.error
    assert job.error.endswith(f"the log is {log}") and "\n" not in job.error
    assert "venv" in stages and "torch" in stages
    assert not (root / "env-1").exists() and backend.own_venv_python(root) is None
    text = log.read_text()
    assert "-m venv" in text and "pip install" in text and "failed: installing torch" in text


def test_a_cancelled_setup_never_looks_finished(tmp_path):
    job, root = _setup_job(tmp_path)
    deadline = time.monotonic() + 60
    while job.poll() == backend.RUNNING and not (root / "env-1" / "bin").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.cancel()
    assert job.state == backend.CANCELLED and (root / "env-1").is_dir()
    assert backend.own_venv_python(root) is None  # half made: no marker
    setup_backend.remove_unfinished(root / "env-1")
    assert not (root / "env-1").exists()


# --------------------------------------------------------------------------- inside Blender

FORMS = r'''
import shutil
enable_addon()
mod = addon()
prefs = bpy.context.preferences.addons[MODULE].preferences


def resolve(value):
    prefs.python_path = value
    try:
        return mod.config.resolve_python()
    except mod.runner.UserError as exc:
        return "ERROR: " + str(exc)


forms = ARGS["forms"]
RESULT["resolved"] = {name: resolve(value) for name, value in forms.items()}

# Check Backend: version, device, model count (and a device it cannot use is one line).
prefs.python_path = ARGS["python"]
t0 = time.time()
RESULT["check"] = call(bpy.ops.nca3d.check_backend)
RESULT["check_seconds"] = time.time() - t0
RESULT["check_status"] = status()
RESULT["check_line"] = dict(mod.prefs._CHECK)
mod.library.wait()
prefs.device = "cuda"
RESULT["check_cuda"] = call(bpy.ops.nca3d.check_backend)
RESULT["check_cuda_line"] = dict(mod.prefs._CHECK)
prefs.device = "cpu"
prefs.python_path = forms["bad"]
RESULT["check_bad"] = call(bpy.ops.nca3d.check_backend)
RESULT["check_bad_line"] = dict(mod.prefs._CHECK)

# Auto-detect with no venv on PATH: the set-up venv first, then ~/nca3d-env.
prefs.python_path = ""
os.environ["PATH"] = os.path.join(OUT, "empty_path")
os.environ["HOME"] = ARGS["home"]
mod.prefs.reset()
RESULT["detected_home"] = mod.config.resolve_python()
root = mod.config.setup_root(create=True)
shutil.copytree(ARGS["own_env"], os.path.join(root, "env-20260101-000000"), symlinks=True)
mod.prefs.reset()
RESULT["detected_unfinished"] = mod.config.resolve_python()
open(os.path.join(root, "env-20260101-000000", mod.backend.SETUP_MARKER), "w").write("{}")
RESULT["detect_op"] = call(bpy.ops.nca3d.detect_backend)
RESULT["detected_own"] = prefs.python_path
RESULT["root"] = root
'''


def test_backend_python_forms_check_and_detection(tmp_path: Path):
    from nca3d import __version__
    from nca3d.models import library_models

    venv = _fake_venv(tmp_path / "myenv")
    home_env = _fake_venv(tmp_path / "home" / "nca3d-env")
    own = _fake_venv(tmp_path / "own")
    (tmp_path / "plain").mkdir()
    forms = {"python": sys.executable, "command": str(tmp_path / "myenv" / "bin" / "nca3d"),
             "folder": str(tmp_path / "myenv"), "folder_slash": str(tmp_path / "myenv") + "/",
             "bad": str(tmp_path / "no_such" / "python"), "plain": str(tmp_path / "plain"),
             "text": str(REPO / "README.md")}
    result = run_blender(FORMS, tmp_path / "run", forms=forms, home=str(tmp_path / "home"),
                         own_env=str(tmp_path / "own"))
    resolved = result["resolved"]
    assert resolved["python"] == sys.executable
    assert resolved["command"] == venv and resolved["folder"] == venv and resolved["folder_slash"].endswith(
        "myenv/bin/python")
    fix = "; fix Backend Python in Preferences > Add-ons > NCA3D (or clear it to auto-detect)"
    assert resolved["bad"] == f"ERROR: the backend Python '{forms['bad']}' does not exist{fix}"
    assert resolved["plain"].startswith("ERROR: the folder") and "is not a virtual environment" in resolved["plain"]
    assert resolved["text"] == (f"ERROR: '{forms['text']}' is neither a Python, the nca3d command nor a venv "
                                f"folder{fix}")

    assert result["check"] == [["FINISHED"], None], result["check"]
    line = result["check_status"]["last_message"]
    models = len(library_models())
    assert line == (f"Backend OK: nca3d {__version__}, torch {__import__('torch').__version__}, CPU, "
                    f"{models} bundled models ({sys.executable})"), line
    assert result["check_line"]["ok"] and result["check_line"]["text"] in line
    assert result["check_seconds"] < 30
    import torch

    if not torch.cuda.is_available():
        assert result["check_cuda"][0] is None and "CUDA is not available" in result["check_cuda"][1]
        assert result["check_cuda_line"]["ok"] is False and "CUDA is not available" in result["check_cuda_line"]["text"]
    assert result["check_bad"][0] is None and "does not exist" in result["check_bad"][1]
    assert result["check_bad_line"] == {"text": resolved["bad"][len("ERROR: "):], "ok": False}

    assert result["detected_home"] == home_env
    assert result["detected_unfinished"] == home_env  # a set-up venv without its marker is not used
    assert result["detect_op"] == [["FINISHED"], None]
    assert result["detected_own"] == os.path.join(result["root"], "env-20260101-000000", "bin", "python")
    assert own != result["detected_own"]


SETUP = r'''
enable_addon()
mod = addon()
prefs = bpy.context.preferences.addons[MODULE].preferences
runner = mod.runner
scene_before = snapshot()


def watch(cancel_at=None):
    """Record the running job's progress from a thread; cancel once the venv's Python exists."""
    seen = []

    def loop():
        while True:
            job = runner.active_job()
            if job is not None:
                seen.append([job.stage, job.fraction, job.message])
                if cancel_at and os.path.exists(cancel_at()):
                    runner.request_cancel()
                    return
            elif seen:
                return
            time.sleep(0.02)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return seen, thread


ROOT = mod.config.setup_root(create=True)


def envs():
    return sorted(n for n in os.listdir(ROOT) if n.startswith("env-"))


# A package path that does not exist: one line, nothing started.
prefs.setup_source = os.path.join(OUT, "missing", "nca3d-0.1.0-py3-none-any.whl")
RESULT["missing_source"] = call(bpy.ops.nca3d.setup_backend)
prefs.setup_source = ARGS["wheel"]

# pip finds nothing: the setup fails in one line naming its log, and no venv is left.
os.environ["PIP_NO_INDEX"], os.environ["PIP_FIND_LINKS"] = "1", os.path.join(OUT, "empty")
os.makedirs(os.environ["PIP_FIND_LINKS"], exist_ok=True)
RESULT["failed"] = call(bpy.ops.nca3d.setup_backend)
RESULT["failed_envs"] = envs()
RESULT["failed_check_line"] = dict(mod.prefs._CHECK)
del os.environ["PIP_NO_INDEX"], os.environ["PIP_FIND_LINKS"]
RESULT["python_after_failure"] = prefs.python_path

# Cancelled while pip works: nothing is left, the preference is unchanged.
seen, thread = watch(cancel_at=lambda: os.path.join(ROOT, envs()[0] if envs() else "x", "bin", "pip"))
RESULT["cancelled"] = call(bpy.ops.nca3d.setup_backend)
thread.join(10)
RESULT["cancel_seen"] = seen[-1] if seen else None
RESULT["cancel_status"] = status()
RESULT["cancelled_envs"] = envs()
RESULT["python_after_cancel"] = prefs.python_path

# The real thing, from the local wheel.
seen, thread = watch()
t0 = time.time()
RESULT["setup"] = call(bpy.ops.nca3d.setup_backend)
RESULT["setup_seconds"] = time.time() - t0
thread.join(10)
RESULT["progress"] = seen
RESULT["setup_status"] = status()
RESULT["setup_line"] = dict(mod.prefs._CHECK)
RESULT["python"] = prefs.python_path
RESULT["envs"] = envs()
RESULT["root"] = ROOT
RESULT["log"] = mod.prefs._SETUP["log"]
RESULT["scene_same"] = snapshot() == scene_before
mod.library.wait()
RESULT["library"] = sorted(mod.library.models())

# The new venv as a folder, as its nca3d command, as its python.
env = os.path.dirname(os.path.dirname(prefs.python_path))
forms = {}
for name, value in (("folder", env), ("command", os.path.join(env, "bin", "nca3d")), ("python", prefs.python_path)):
    prefs.python_path = value
    forms[name] = mod.config.resolve_python()
RESULT["forms"] = forms
t0 = time.time()
RESULT["check"] = call(bpy.ops.nca3d.check_backend)
RESULT["check_seconds"] = time.time() - t0
RESULT["check_status"] = status()

# Blender started from a desktop (no venv on PATH, preference empty): the set-up venv is found.
prefs.python_path = ""
os.environ["PATH"] = os.path.join(OUT, "empty_path")
mod.prefs.reset()
RESULT["detected"] = mod.config.resolve_python()
'''


def test_setup_button_makes_a_working_backend_from_a_local_wheel(tmp_path: Path):
    """The whole first-time setup (venv, torch, nca3d from a wheel of this checkout, check); a few
    minutes where pip must download torch, about 30-60 s where it is cached."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(REPO), "-w", str(wheels)],
                   check=True, capture_output=True)
    wheel = next(wheels.glob("nca3d-*.whl"))
    result = run_blender(SETUP, tmp_path / "run", timeout=1200, wheel=str(wheel))

    missing = result["missing_source"]
    assert missing[0] is None and "does not exist: choose a wheel, an sdist, a folder, or the name nca3d" in missing[1]

    failed = result["failed"]
    assert failed[0] is None and "Set up backend failed: installing torch 2.13.0 failed (" in failed[1], failed
    assert "the log is " in failed[1] and "\n" not in failed[1].strip()
    assert result["failed_envs"] == [] and result["python_after_failure"] == sys.executable
    assert result["failed_check_line"]["ok"] is False and "installing torch" in result["failed_check_line"]["text"]

    assert result["cancelled"] == [["CANCELLED"], None]
    assert result["cancel_status"]["last_message"] == "Set up backend: cancelled; nothing was changed"
    assert result["cancel_seen"][0] in ("venv", "torch"), result["cancel_seen"]
    assert result["cancelled_envs"] == [] and result["python_after_cancel"] == sys.executable

    assert result["setup"] == [["FINISHED"], None], result["setup"]
    print(f"first-time setup: {result['setup_seconds']:.1f} s; Check Backend: {result['check_seconds']:.1f} s")
    stages = [s for s, _f, _m in result["progress"] if s not in ("start", "done")]  # the watcher may miss those
    order = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert order == ["venv", "torch", "nca3d", "check"], order
    fractions = [f for _s, f, _m in result["progress"]]
    assert fractions[-1] > 0.9 and max(fractions) <= 1.0
    assert any("nca3d-0.1.0-py3-none-any.whl" in m for _s, _f, m in result["progress"])

    env = Path(result["root"]) / result["envs"][0]
    python = str(env / "bin" / "python")
    assert result["envs"] == [env.name] and result["python"] == python
    assert result["scene_same"]
    marker = json.loads((env / backend.SETUP_MARKER).read_text())
    assert marker["python"] == python and marker["torch"].startswith("2.13.0") and marker["device"] == "CPU"
    log = Path(result["log"])
    assert log == Path(result["root"]) / "setup.log" and "finished:" in log.read_text()
    message = result["setup_status"]["last_message"]
    assert message.startswith("Backend set up: nca3d 0.1.0, torch 2.13.0") and f"; log: {log}" in message
    assert result["setup_line"]["ok"] and result["setup_line"]["text"] in message

    assert result["forms"] == {"folder": python, "command": python, "python": python}
    assert result["check"] == [["FINISHED"], None]
    assert f"CPU, {marker['models']} bundled models ({python})" in result["check_status"]["last_message"]
    assert result["detected"] == python
    assert "volume_default" in result["library"]

    # The venv runs `python -m nca3d --version` and lists the bundled library by itself (run away from
    # this checkout, whose nca3d/ would otherwise shadow the installed one).
    version = subprocess.run([python, "-m", "nca3d", "--version"], check=True, capture_output=True, text=True,
                             cwd=tmp_path)
    assert version.stdout.strip() == "nca3d 0.1.0"
    listing = subprocess.run(backend.library_argv(python), check=True, capture_output=True, text=True, cwd=tmp_path)
    library = backend.parse_library(listing.stdout)
    assert "volume_default" in library and library["volume_default"]["path"].startswith(str(env)), library
