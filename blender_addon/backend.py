"""The nca3d backend as a subprocess: finding a Python with nca3d, and running one job.

Nothing here imports bpy, so it works (and is tested) outside Blender too. A `Job` starts
`<python> -m nca3d ...`, reads its stdout (JSON lines with `--progress json`) and stderr in
background threads into a queue, and is polled from Blender's main thread (a modal operator's
timer) without ever blocking it. `Job.cancel()` kills the backend and its children.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

RUNNING, DONE, FAILED, CANCELLED = "RUNNING", "DONE", "FAILED", "CANCELLED"
ERROR_PREFIX = "nca3d: error:"
PROBE_TIMEOUT = 20.0  # seconds for one `python -c ...` probe
PIPE_GRACE = 5.0  # seconds a finished backend's pipes may stay open (a leftover child) before we stop reading
SETUP_MARKER = "nca3d-setup.json"  # written last into an environment that Set up Backend finished

# Lists the bundled model library from the models' headers (no weights loaded): {name: {"path",
# "preview" (or null), "domain", "channels" (output names), "lattice", "license", "credit", ...}}.
LIBRARY_SCRIPT = """\
import json
from nca3d.models import library_entries
print(json.dumps({entry["name"]: entry for entry in library_entries()}))
"""


# --------------------------------------------------------------------------- finding a backend


def _creation_flags() -> int:
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0


def backend_env() -> dict:
    """The environment of a backend run: unbuffered UTF-8 output."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def can_import_nca3d(python: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when `python` runs and finds the nca3d package (without importing it: fast)."""
    if not python or not Path(python).is_file():
        return False
    try:
        probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('nca3d') is None)"
        proc = subprocess.run([python, "-c", probe], check=False, capture_output=True, timeout=timeout,
                              env=backend_env(), creationflags=_creation_flags())
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _is_python_name(path: str) -> bool:
    return Path(path).name.lower().startswith("python")


def _shebang_interpreter(script: Path) -> str | None:
    """The interpreter a script's first lines name: `#!/path/python`, `#!/usr/bin/env python3`, or
    pip's form for paths with spaces (`#!/bin/sh` then `'''exec' "/path/python" "$0" "$@"`)."""
    try:
        with open(script, "rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    if len(head) > 1 and head[1].startswith("'''exec' "):
        try:
            words = shlex.split(head[1][len("'''exec' "):])
        except ValueError:
            words = []
        return words[0] if words else None
    words = head[0][2:].strip().split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:  # #!/usr/bin/env python3
        return shutil.which(words[-1])
    return words[0]


def python_of_script(script: str) -> str | None:
    """The Python that runs a console script (such as `nca3d`): its shebang, or the python beside it
    in a venv (Windows' nca3d.exe). None when neither is a Python."""
    folder = Path(script).resolve().parent  # venv/bin/nca3d or venv\Scripts\nca3d.exe
    candidates = [_shebang_interpreter(Path(script))]
    candidates += [str(folder / name) for name in ("python", "python3", "python.exe")]
    for candidate in candidates:
        if candidate and _is_python_name(candidate) and Path(candidate).is_file():
            return candidate
    return None


def venv_python(folder: str | Path) -> str | None:
    """The Python of a virtual environment (or conda environment) folder, or None."""
    folder = Path(folder)
    for relative in ("bin/python", "bin/python3", "Scripts/python.exe", "python.exe"):
        if (folder / relative).is_file():
            return str(folder / relative)
    return None


def interpreter_for(path: str) -> str:
    """The Python to run for a Backend Python setting: a Python itself, the `nca3d` command, or a
    venv folder. ValueError (one line) for anything else."""
    target = Path(path)
    if target.is_dir():
        python = venv_python(target)
        if python is None:
            raise ValueError(f"the folder '{path}' is not a virtual environment (it has no bin/python "
                             f"or Scripts\\python.exe)")
        return python
    if not target.is_file():
        raise ValueError(f"the backend Python '{path}' does not exist")
    if _is_python_name(path):
        return path
    python = None
    if target.stem.lower() == "nca3d" or _shebang_interpreter(target) is not None:
        python = python_of_script(path)
    if python is None:
        raise ValueError(f"'{path}' is neither a Python, the nca3d command nor a venv folder")
    return python


def own_venv_python(root: str | Path | None) -> str | None:
    """The Python of the newest finished environment that Set up Backend made under `root`."""
    if not root or not Path(root).is_dir():
        return None
    for env in sorted(Path(root).glob("env-*"), reverse=True):
        python = venv_python(env)
        if python and (env / SETUP_MARKER).is_file():
            return python
    return None


def common_places(home: str | Path | None = None) -> list[str]:
    """Pythons of usual nca3d installs that need not be on PATH (Blender started from a desktop):
    ~/nca3d-env, pipx and uv tool venvs, ~/.local/bin/nca3d, conda envs named nca3d, and venvs in
    ~/.venvs, ~/venvs or ~/.virtualenvs that hold nca3d. Only file checks: no process is started."""
    home = Path(home) if home else Path.home()
    pipx_home = os.environ.get("PIPX_HOME")
    named = [home / "nca3d-env", home / ".nca3d-env",
             home / ".local/pipx/venvs/nca3d", home / ".local/share/pipx/venvs/nca3d",
             home / "Library/Application Support/pipx/venvs/nca3d", home / "pipx/venvs/nca3d",
             home / ".local/share/uv/tools/nca3d",
             *(home / conda / "envs/nca3d" for conda in ("miniconda3", "anaconda3", "miniforge3"))]
    if pipx_home:
        named.insert(0, Path(pipx_home) / "venvs" / "nca3d")
    found = [venv_python(folder) for folder in named]
    script = home / ".local/bin/nca3d"
    if script.is_file():
        found.append(python_of_script(str(script)))
    for parent in (home / ".venvs", home / "venvs", home / ".virtualenvs"):
        try:
            envs = sorted(parent.iterdir()) if parent.is_dir() else []
        except OSError:  # unreadable
            envs = []
        for env in envs:
            packages = [*env.glob("lib/python3*/site-packages"), env / "Lib/site-packages"]
            if any(next(folder.glob("nca3d*"), None) for folder in packages if folder.is_dir()):
                found.append(venv_python(env))
    return [python for python in found if python]


def detect_python(extra: list[str] | None = None, home: str | Path | None = None) -> str | None:
    """A Python that can import nca3d, tried in order: `extra` (the add-on's own set-up venv), the
    one behind an `nca3d` command on PATH, common_places(home), then `python3` / `python` on PATH.
    None when there is none."""
    candidates = list(extra or [])
    script = shutil.which("nca3d")
    if script:
        candidates.append(python_of_script(script))
    candidates += common_places(home)
    candidates += [shutil.which(name) for name in ("python3", "python")]
    seen = set()
    for candidate in candidates:
        if not candidate or candidate in seen:
            continue
        seen.add(candidate)
        if can_import_nca3d(candidate):
            return candidate
    return None


# Check Backend: what the backend would run with. argv: the Device preference (auto, cpu, cuda).
PROBE_SCRIPT = """\
import json, sys
import torch
import nca3d
from nca3d.device import resolve_device
from nca3d.models import library_models
found = {"version": "nca3d " + nca3d.__version__, "torch": torch.__version__, "models": len(library_models())}
try:
    device = resolve_device(sys.argv[1] if len(sys.argv) > 1 else "auto")
except Exception as exc:
    found["device_error"] = str(exc)
else:
    found["device"] = "CUDA: " + torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(json.dumps(found))
"""


def probe_argv(python: str, device: str = "auto") -> list[str]:
    return [python, "-c", PROBE_SCRIPT, device]


def last_json_object(text: str) -> dict:
    """The last line of `text` that is a JSON object (a backend script's answer); {} if none or garbled."""
    for line in reversed(text.splitlines()):
        if line.strip().startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


def parse_probe(text: str) -> dict:
    """PROBE_SCRIPT's output -> {"version", "torch", "models", "device" or "device_error"}; {} if garbled."""
    found = last_json_object(text)
    return found if "version" in found else {}


def error_line(stderr: str, returncode: int | None = None) -> str:
    """The one-line reason of a failed run: its `nca3d: error:` line, else the last stderr line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    if lines:
        return lines[-1]
    return f"the backend stopped with exit code {returncode}" if returncode is not None else "the backend failed"


# --------------------------------------------------------------------------- one backend run


class Job:
    """One backend subprocess. start() it, then call poll() from the UI thread until it is not RUNNING.

    After poll(): `state` (RUNNING/DONE/FAILED/CANCELLED), `stage`, `fraction`, `message`,
    `files` (from the final JSON line), `error` (one line, for FAILED), `stdout_text` (non-JSON
    output, e.g. of `--version`).
    """

    def __init__(self, argv: list[str], cwd: str | None = None, json_progress: bool = True):
        self.argv = [str(a) for a in argv]
        self.cwd = cwd
        self.json_progress = json_progress
        self.state = RUNNING
        self.stage, self.fraction, self.message = "start", 0.0, "starting the backend"
        self.files: list[str] = []
        self.error = ""
        self.stdout_lines: list[str] = []
        self.returncode: int | None = None
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self._done_seen = False
        self._closed = 0  # pipes whose reader thread has finished
        self._exited_at: float | None = None
        self.started = 0.0

    @property
    def stdout_text(self) -> str:
        return "\n".join(self.stdout_lines)

    def start(self) -> Job:
        """Start the subprocess; an unstartable program makes the job FAILED (no exception)."""
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = _creation_flags() | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel kills children too
        self.started = time.monotonic()
        try:
            self._proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=backend_env(),
                                          text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            self.state = FAILED
            self.error = f"cannot run the backend '{self.argv[0]}': {exc.strerror or exc}"
            return self
        for stream, kind in ((self._proc.stdout, "out"), (self._proc.stderr, "err")):
            thread = threading.Thread(target=self._read, args=(stream, kind), daemon=True,
                                      name=f"nca3d-{kind}")
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, stream, kind: str) -> None:
        try:
            for line in stream:
                self._events.put((kind, line.rstrip("\r\n")))
        except (OSError, ValueError):
            pass
        finally:
            self._events.put((kind, None))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> str:
        """Take what the backend said since the last call; never blocks. Returns `state`.

        The job ends once the process exited and both pipes are drained (or PIPE_GRACE seconds
        after the exit, should a leftover child still hold them open)."""
        if self.state != RUNNING:
            return self.state
        while True:
            try:
                kind, line = self._events.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._closed += 1
            elif kind == "err":
                self._stderr.append(line)
                del self._stderr[:-200]
            else:
                self._stdout_line(line)
        if self._proc is None or self._proc.poll() is None:
            return self.state
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        if self._closed < 2 and time.monotonic() - self._exited_at < PIPE_GRACE:
            return self.state
        self.returncode = self._proc.returncode
        if self.returncode == 0 and (self._done_seen or not self.json_progress):
            self.state = DONE
            self.fraction = 1.0
        else:
            self.state = FAILED
            if self.returncode == 0:
                self.error = "the backend finished without reporting its files (is it an old nca3d?)"
            else:
                self.error = error_line("\n".join(self._stderr), self.returncode)
                missing = next((name for name in ("nca3d", "torch") if f"No module named {name}" in self.error
                                or f"No module named '{name}'" in self.error), None)
                if missing:
                    self.error = (f"'{self.argv[0]}' has no {missing} installed: install it there (Set up Backend, "
                                  f"or pip install nca3d) or choose another Python in the add-on preferences")
        return self.state

    def _stdout_line(self, line: str) -> None:
        event = None
        if self.json_progress and line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
        if not isinstance(event, dict):
            self.stdout_lines.append(line)
            del self.stdout_lines[:-200]
            return
        self.stage = str(event.get("stage", self.stage))
        try:
            self.fraction = min(max(float(event.get("fraction", self.fraction)), 0.0), 1.0)
        except (TypeError, ValueError):
            pass
        self.message = str(event.get("message", ""))
        if self.stage == "done":
            self._done_seen = True
            self.files = [str(f) for f in event.get("files", [])]

    @property
    def stderr_text(self) -> str:
        return "\n".join(self._stderr)

    def cancel(self, timeout: float = 3.0) -> None:
        """Kill the backend (its whole process group) and mark the job CANCELLED."""
        if self.state != RUNNING:
            return
        self.state = CANCELLED
        self.error = "cancelled"
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_tree(proc, hard=False)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_tree(proc, hard=True)
                proc.wait(timeout=timeout)
        self.returncode = proc.returncode
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except (OSError, AttributeError):
                pass

    def wait(self, timeout: float | None = None, interval: float = 0.05, should_cancel=None,
             on_progress=None) -> str:
        """Poll until finished (for scripts and background mode). should_cancel() -> True cancels;
        on_progress(job) is called after each poll; timeout (s) cancels and FAILs."""
        start = time.monotonic()
        while self.poll() == RUNNING:
            if on_progress is not None:
                on_progress(self)
            if should_cancel is not None and should_cancel():
                self.cancel()
                break
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
                self.state, self.error = FAILED, f"the backend took longer than {timeout:.0f} s"
                break
            time.sleep(interval)
        return self.state


def run_quick(argv: list[str], timeout: float = 120.0, on_start=None) -> tuple[bool, str]:
    """Run a short command synchronously (for scripts and threads): (ok, stdout or the error line).
    on_start(job) is called once it started (e.g. to keep it for cancelling)."""
    job = Job(argv, json_progress=False).start()
    if on_start is not None:
        on_start(job)
    state = job.wait(timeout=timeout)
    return (True, job.stdout_text.strip()) if state == DONE else (False, job.error)


def library_argv(python: str) -> list[str]:
    return [python, "-c", LIBRARY_SCRIPT]


def parse_library(text: str) -> dict:
    """LIBRARY_SCRIPT's output -> {name: entry (with at least "path")}; {} for anything unexpected."""
    return {str(k): v for k, v in last_json_object(text).items() if isinstance(v, dict) and "path" in v}


def own_python() -> str:
    """This interpreter (inside Blender: Blender's Python)."""
    return sys.executable


def _signal_tree(proc, hard: bool) -> None:
    """Terminate (or, hard, kill) the backend and, off Windows, its whole process group."""
    try:
        if os.name == "nt":
            (proc.kill if hard else proc.terminate)()
        else:
            os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
    except (OSError, ProcessLookupError):
        pass
