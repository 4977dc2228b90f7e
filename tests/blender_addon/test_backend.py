"""The add-on's backend runner (blender_addon/backend.py needs no bpy): JSON-lines progress read by
threads, non-blocking polls, one-line errors, cancel killing the process group, auto-detection."""

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
    assert backend.detect_python() == sys.executable
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert backend.detect_python() is None
    assert backend.detect_python(extra=[sys.executable]) == sys.executable
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
