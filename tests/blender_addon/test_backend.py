"""The add-on's backend runner (blender_addon/backend.py needs no bpy): JSON-lines progress read by
threads, non-blocking polls, one-line errors, cancel killing the process group, auto-detection, the
Backend Python forms (a Python, the nca3d command, a venv folder) and the Check Backend probe."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import textwrap
import time

import pytest

from .conftest import ADDON

if os.name != "posix":  # pragma: no cover - the process-group checks read /proc
    pytest.skip("POSIX only", allow_module_level=True)


def _load():
    spec = importlib.util.spec_from_file_location("nca3d_addon_backend", ADDON / "backend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backend = _load()


def _script(tmp_path, body: str):
    path = tmp_path / "fake_backend.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_progress_lines_and_files(tmp_path):
    argv = _script(tmp_path, """
        import json, sys, time
        print("not json, ignored")
        for i in range(3):
            print(json.dumps({"stage": "grow", "fraction": i / 2, "message": f"step {i}"}), flush=True)
            time.sleep(0.05)
        print(json.dumps({"stage": "done", "fraction": 1.0, "message": "finished", "files": ["a.png", "b.obj"]}))
    """)
    job = backend.Job(argv).start()
    stages = set()
    while job.poll() == backend.RUNNING:
        stages.add(job.stage)
        time.sleep(0.01)
    assert job.state == backend.DONE and job.files == ["a.png", "b.obj"] and job.fraction == 1.0
    assert job.stdout_lines == ["not json, ignored"]


def test_poll_never_blocks(tmp_path):
    argv = _script(tmp_path, "import time\ntime.sleep(30)\n")
    job = backend.Job(argv).start()
    try:
        start = time.monotonic()
        for _ in range(20):
            assert job.poll() == backend.RUNNING
        assert time.monotonic() - start < 0.5
    finally:
        job.cancel()


def test_error_line_from_stderr(tmp_path):
    argv = _script(tmp_path, """
        import sys
        print("some warning", file=sys.stderr)
        print("nca3d: error: the model file 'x.nca3d' is not a model", file=sys.stderr)
        sys.exit(2)
    """)
    job = backend.Job(argv).start()
    assert job.wait() == backend.FAILED and job.returncode == 2
    assert job.error == "the model file 'x.nca3d' is not a model"


def test_crash_and_silent_success_are_failures(tmp_path):
    crash = backend.Job(_script(tmp_path, "raise RuntimeError('boom')\n")).start()
    assert crash.wait() == backend.FAILED and crash.error == "RuntimeError: boom"
    silent = backend.Job([sys.executable, "-c", "pass"]).start()
    assert silent.wait() == backend.FAILED and "without reporting its files" in silent.error
    plain = backend.Job([sys.executable, "-c", "print('v1')"], json_progress=False).start()
    assert plain.wait() == backend.DONE and plain.stdout_text == "v1"


def test_missing_program(tmp_path):
    job = backend.Job([str(tmp_path / "no_python"), "-m", "nca3d"]).start()
    assert job.state == backend.FAILED and "cannot run the backend" in job.error
    assert job.poll() == backend.FAILED


def test_cancel_kills_the_process_group(tmp_path):
    child_pid = tmp_path / "child.pid"
    argv = _script(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(child_pid)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    job = backend.Job(argv).start()
    deadline = time.monotonic() + 30
    while not child_pid.exists() or not child_pid.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(child_pid.read_text())
    job.cancel()
    assert job.state == backend.CANCELLED and not job.is_alive()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and "Z" not in _proc_state(child):
        assert time.monotonic() < deadline, "the backend's child survived the cancel"
        time.sleep(0.05)
    assert job.poll() == backend.CANCELLED


def _proc_state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
    except OSError:
        return "gone"


def test_wait_with_cancel_callback_and_timeout(tmp_path):
    argv = _script(tmp_path, "import time\ntime.sleep(30)\n")
    job = backend.Job(argv).start()
    calls = []
    assert job.wait(should_cancel=lambda: len(calls) > 3, on_progress=calls.append) == backend.CANCELLED
    job = backend.Job(argv).start()
    assert job.wait(timeout=0.3) == backend.FAILED and "longer than" in job.error


def test_detects_the_python_behind_the_nca3d_command(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nca3d"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom nca3d.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    assert backend.python_of_script(str(script)) == sys.executable
    env_script = bin_dir / "other"
    env_script.write_text("#!/usr/bin/env python3\n")
    assert backend.python_of_script(str(env_script)) is not None
    monkeypatch.setenv("PATH", str(bin_dir))
    home = tmp_path / "home"  # an empty home: no common places
    assert backend.detect_python(home=home) == sys.executable
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert backend.detect_python(home=home) is None
    assert backend.detect_python(extra=[sys.executable], home=home) == sys.executable
    assert not backend.can_import_nca3d(str(tmp_path / "missing"))


def test_library_listing_runs_in_the_backend():
    ok, text = backend.run_quick(backend.library_argv(sys.executable))
    assert ok, text
    found = backend.parse_library(text)
    assert "volume_default" in found and found["volume_default"]["path"].endswith("volume_default.nca3d")
    preview = found["volume_default"]["preview"]
    assert preview is None or preview.endswith("volume_default.png")
    assert backend.parse_library("garbage") == {}


def test_error_line():
    assert backend.error_line("a\nnca3d: error: bad thing\n") == "bad thing"
    assert backend.error_line("", 3) == "the backend stopped with exit code 3"


def test_a_child_holding_the_pipes_open_does_not_hang_the_job(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "PIPE_GRACE", 0.5)
    argv = _script(tmp_path, """
        import json, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # inherits stdout/stderr
        print(json.dumps({"stage": "done", "fraction": 1.0, "files": ["x"]}), flush=True)
    """)
    job = backend.Job(argv).start()
    try:
        deadline = time.monotonic() + 20
        while True:
            start = time.monotonic()
            state = job.poll()
            assert time.monotonic() - start < 0.2  # no poll blocks
            if state != backend.RUNNING:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert state == backend.DONE and job.files == ["x"]
    finally:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except OSError:
            pass


# --------------------------------------------------------------------------- the Backend Python preference


def _fake_venv(folder, python=sys.executable, nca3d=True):
    """A venv-shaped folder whose bin/python runs `python` (so it has nca3d), with an nca3d command
    whose shebang names that bin/python, and (nca3d) a dist-info in its site-packages."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    script = bin_dir / "nca3d"
    script.write_text(f"#!{wrapper}\nimport sys\nfrom nca3d.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    packages = folder / "lib" / "python3.11" / "site-packages"
    packages.mkdir(parents=True)
    if nca3d:
        (packages / "nca3d-0.1.0.dist-info").mkdir()
    return str(wrapper)


def test_python_of_script_reads_pips_shebangs(tmp_path):
    python = _fake_venv(tmp_path / "with space")
    long_form = tmp_path / "with space" / "bin" / "nca3d-long"  # pip's form for paths with spaces
    long_form.write_text(f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\nimport sys\n")
    assert backend.python_of_script(str(long_form)) == python
    shell = tmp_path / "tool"
    shell.write_text("#!/bin/bash\necho hi\n")
    assert backend.python_of_script(str(shell)) is None  # a shell script names no Python


def test_interpreter_for_a_python_the_nca3d_command_and_a_venv_folder(tmp_path):
    python = _fake_venv(tmp_path / "env")
    assert backend.interpreter_for(python) == python
    assert backend.interpreter_for(str(tmp_path / "env" / "bin" / "nca3d")) == python
    assert backend.interpreter_for(str(tmp_path / "env")) == python
    assert backend.interpreter_for(sys.executable) == sys.executable
    errors = {}
    (tmp_path / "plain").mkdir()
    (tmp_path / "notes.txt").write_text("not a program\n")
    for name, path in (("missing", tmp_path / "nope" / "python"), ("folder", tmp_path / "plain"),
                       ("file", tmp_path / "notes.txt"), ("program", "/bin/sh")):
        with pytest.raises(ValueError) as info:
            backend.interpreter_for(str(path))
        errors[name] = str(info.value)
    assert errors["missing"].endswith("python' does not exist")
    assert "is not a virtual environment" in errors["folder"]
    assert "is neither a Python, the nca3d command nor a venv folder" in errors["file"]
    assert "is neither a Python" in errors["program"]
    assert all("\n" not in e for e in errors.values())


def test_detection_looks_in_common_places_and_prefers_the_set_up_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # Blender started from a desktop: no venv on PATH
    monkeypatch.delenv("PIPX_HOME", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    assert backend.common_places(home) == [] and backend.detect_python(home=home) is None
    _fake_venv(home / ".venvs" / "other", nca3d=False)  # a venv without nca3d is not even probed
    pipx = _fake_venv(home / ".local" / "pipx" / "venvs" / "nca3d")
    named = _fake_venv(home / ".venvs" / "texturing")
    assert backend.common_places(home) == [pipx, named]
    assert backend.detect_python(home=home) == pipx
    env_dir = _fake_venv(home / "nca3d-env")
    assert backend.detect_python(home=home) == env_dir

    root = tmp_path / "setup"
    older = _fake_venv(root / "env-20260101-000000")
    assert backend.own_venv_python(root) is None  # no marker: cancelled or failed, never used
    (root / "env-20260101-000000" / backend.SETUP_MARKER).write_text("{}")
    assert backend.own_venv_python(root) == older
    newer = _fake_venv(root / "env-20270101-000000")
    (root / "env-20270101-000000" / backend.SETUP_MARKER).write_text("{}")
    assert backend.own_venv_python(root) == newer
    assert backend.detect_python(extra=[backend.own_venv_python(root)], home=home) == newer
    assert backend.own_venv_python(tmp_path / "no_such_root") is None


def test_probe_reports_version_device_and_models():
    import torch

    from nca3d import __version__
    from nca3d.models import library_models

    ok, text = backend.run_quick(backend.probe_argv(sys.executable, "cpu"))
    assert ok, text
    found = backend.parse_probe(text)
    assert found["version"] == f"nca3d {__version__}" and found["device"] == "CPU"
    assert found["models"] == len(library_models()) > 0 and found["torch"] == torch.__version__
    if not torch.cuda.is_available():
        ok, text = backend.run_quick(backend.probe_argv(sys.executable, "cuda"))
        assert ok and "CUDA is not available" in backend.parse_probe(text)["device_error"]
    assert backend.parse_probe("no report") == {}


def test_a_python_without_nca3d_is_named():
    job = backend.Job([sys.executable, "-I", "-S", "-c", "import nca3d"], json_progress=False).start()
    assert job.wait() == backend.FAILED
    assert job.error.startswith(f"'{sys.executable}' has no nca3d installed"), job.error
