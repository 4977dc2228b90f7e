"""One job on a Ray worker: `python -m nca3d COMMAND ...` as a subprocess.

The subprocess isolates the job (its own torch, threads and memory), gives the command's exit
status and one-line errors as they are, and dies with the worker (Linux: PR_SET_PDEATHSIG), so a
worker killed with kill -9 takes its job with it and the driver sees a failed job. Input files the
worker's machine lacks come from Ray's object store (`fetch`) into a local cache, by content.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..io.atomic import write_bytes_atomic
from .manifest import file_sha256

EXIT_USAGE = 2  # the command refused its input: running it again gives the same error
EXIT_INTERRUPTED = 130


def run_job(job: dict, fetch=None) -> dict:
    """Run one job: job = {"argv", "folder", "inputs": {path: sha256}, "threads"}; fetch(path) -> bytes
    for inputs missing here. Returns {"state", "exit", "error", "outputs", "resumed" (the iteration a training job
    continued from, or None), "node", "seconds"}."""
    start = time.monotonic()
    argv = stage_inputs(job["argv"], job.get("inputs", {}), fetch)
    folder = Path(job["folder"])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    threads = str(job.get("threads", 1))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    # preexec_fn only calls prctl, looked up before the fork: it takes no lock another thread could hold
    proc = subprocess.Popen([sys.executable, "-m", "nca3d", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent())  # noqa: PLW1509
    try:
        stdout, stderr = proc.communicate()
    except BaseException:  # cancelled (KeyboardInterrupt from ray.cancel) or anything else: no orphan
        proc.kill()
        proc.wait()
        raise
    files = _reported_files(stdout)
    resumed_at = re.search(rb"resumed at iteration (\d+)", stdout)
    result = {"exit": proc.returncode, "resumed": int(resumed_at.group(1)) if resumed_at else None,
              "node": socket.gethostname(),
              "seconds": round(time.monotonic() - start, 3), "error": "", "outputs": {}}
    if proc.returncode == 0:
        paths = [Path(f) for f in files] if files is not None else \
            [p for p in folder.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        result["outputs"] = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(paths)
                             if p.is_relative_to(folder)}
        result["state"] = "done"
    else:
        result["state"] = "interrupted" if proc.returncode == EXIT_INTERRUPTED else "failed"
        result["error"] = error_line(proc.returncode, stderr.decode(errors="replace"))
    return result


def stage_inputs(argv: list[str], inputs: dict[str, str], fetch) -> list[str]:
    """argv with each input this machine lacks replaced by its copy from `fetch` (cached by sha256)."""
    if not fetch:
        return list(argv)
    cache = Path(os.environ.get("NCA3D_CACHE", Path.home() / ".cache" / "nca3d")) / "batch-inputs"
    staged = {}
    for path, digest in inputs.items():
        if os.path.exists(path):
            continue
        local = cache / digest / Path(path).name
        if file_sha256(local) != digest:
            write_bytes_atomic(local, fetch(path))
        staged[path] = str(local)
    return [staged.get(value, value) for value in argv]


def error_line(code: int, stderr: str) -> str:
    """The job's error in one line: the command's own `nca3d: error: ...`, or how it ended."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("nca3d: error: "):
            return line[len("nca3d: error: "):]
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}" + (f": {lines[-1][:300]}" if lines else "")


def _reported_files(stdout: bytes) -> list[str] | None:
    """The files of the command's final JSON line {"stage": "done", "files": [...]}, if it printed one."""
    for line in reversed(stdout.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("stage") == "done" and isinstance(record.get("files"), list):
            return record["files"]
    return None


def _die_with_parent():
    """A preexec_fn that makes the child get SIGKILL when the worker dies (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec():
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec
