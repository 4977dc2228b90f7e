"""The worker side of a job: its one-line error, the files it reports, inputs from the object store."""

from __future__ import annotations

import hashlib
import json
import signal

from nca3d.batch.worker import _reported_files, error_line, stage_inputs


def test_error_line():
    stderr = "some warning\nnca3d: error: mesh file 'x.obj' not found; check the path\n"
    assert error_line(2, stderr) == "mesh file 'x.obj' not found; check the path"
    assert error_line(-signal.SIGKILL, "") == "killed by SIGKILL"
    traceback = "Traceback (most recent call last):\n  File ...\nRuntimeError: boom\n"
    assert error_line(1, traceback) == "exit status 1: RuntimeError: boom"
    assert error_line(1, "") == "exit status 1"


def test_reported_files():
    lines = [{"stage": "bake", "fraction": 0.5, "message": ""}, {"stage": "done", "fraction": 1.0, "files": ["/o/a.png"]}]
    assert _reported_files("\n".join(json.dumps(line) for line in lines).encode()) == ["/o/a.png"]
    assert _reported_files(b"not json\n") is None


def test_inputs_missing_here_come_from_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("NCA3D_CACHE", str(tmp_path / "cache"))
    here = tmp_path / "here.obj"
    here.write_bytes(b"local")
    data = b"from the object store"
    digest = hashlib.sha256(data).hexdigest()
    fetched = []

    def fetch(path):
        fetched.append(path)
        return data

    inputs = {"/driver/only/rock.obj": digest, str(here): hashlib.sha256(b"local").hexdigest()}
    argv = ["texture", "/driver/only/rock.obj", "--model", str(here)]
    staged = stage_inputs(argv, inputs, fetch)
    local = tmp_path / "cache" / "batch-inputs" / digest / "rock.obj"
    assert staged == ["texture", str(local), "--model", str(here)] and local.read_bytes() == data
    assert stage_inputs(argv, inputs, fetch) == staged and fetched == ["/driver/only/rock.obj"]  # cached
    assert stage_inputs(argv, inputs, None) == argv
