"""Setting up a backend: a virtual environment with torch and nca3d, installed by pip.

The add-on's Set up Backend operator runs this file as a script, in a Python that has venv and
ensurepip (Blender's own, else one found by find_base_python):

    python setup_backend.py --env ENV --log LOG --torch pypi --source nca3d [--device auto]

It prints JSON-lines progress like the backend does (backend.Job reads it) and writes every
command and its output to LOG. ENV/nca3d-setup.json (backend.SETUP_MARKER) is written last, once
the new environment runs `python -m nca3d` and the Check Backend probe: an environment without it
is unfinished (cancelled or failed) and is never used, and the add-on removes it. After success,
the other environments in ENV's folder (older setups, leftovers) are removed. Nothing here imports bpy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__:
    from . import backend
else:  # run as a script: backend.py lies beside this file
    import backend

TORCH_VERSION = "2.13.0"  # the torch the project pins (README.md)
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
# (identifier, label, description, PyTorch index or None for pip's own index)
TORCH_BUILDS = (
    ("pypi", "Default", (f"torch=={TORCH_VERSION} from pip's index (PyPI): the CPU build on Windows and macOS; "
                         f"on Linux PyPI's build, which also carries CUDA 12 (large)"), None),
    ("cpu", "CPU Only", f"torch=={TORCH_VERSION}, the small CPU-only build from the PyTorch index",
     PYTORCH_INDEX + "cpu"),
    ("cu126", "CUDA 12.6", f"torch=={TORCH_VERSION} for NVIDIA GPUs, CUDA 12.6 (NVIDIA driver 525 or newer)",
     PYTORCH_INDEX + "cu126"),
    ("cu128", "CUDA 12.8", (f"torch=={TORCH_VERSION} for NVIDIA GPUs, CUDA 12.8 (driver 570 or newer; "
                            f"the one for RTX 50xx)"), PYTORCH_INDEX + "cu128"),
    ("cu130", "CUDA 13.0", f"torch=={TORCH_VERSION} for NVIDIA GPUs, CUDA 13.0 (driver 580 or newer)",
     PYTORCH_INDEX + "cu130"),
)
PIP = ("-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off")
# What a base Python needs: 3.10+, venv, and ensurepip with its bundled pip (Debian splits it out).
BASE_PROBE = ("import sys, venv, ensurepip; assert sys.version_info >= (3, 10) and ensurepip.version(); "
              "print(sys.version.split()[0])")
# The stages and where each starts and ends in the progress bar.
STAGES = {"venv": (0.0, 0.08), "torch": (0.08, 0.6), "nca3d": (0.6, 0.92), "check": (0.92, 1.0)}


def torch_args(build: str) -> list[str]:
    """pip arguments for the chosen TORCH_BUILDS entry."""
    for identifier, _label, _description, index in TORCH_BUILDS:
        if identifier == build:
            return [f"torch=={TORCH_VERSION}"] + (["--index-url", index] if index else [])
    raise ValueError(f"unknown torch build '{build}'; use one of {', '.join(b[0] for b in TORCH_BUILDS)}")


def nca3d_args(source: str) -> list[str]:
    """pip arguments that install nca3d from `source`: a wheel or sdist file, a checkout (a folder
    with pyproject.toml), a folder of wheels, a URL, or a requirement such as `nca3d` or
    `nca3d==0.1.0`. ValueError (one line) for a path that does not exist."""
    source = source.strip() or "nca3d"
    is_path = any(sep in source for sep in ("/", "\\")) or source.startswith(("~", ".")) or \
        source.endswith((".whl", ".tar.gz", ".zip"))
    if "://" in source or not is_path:
        return [source]
    path = Path(os.path.expanduser(source)).resolve()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        if (path / "pyproject.toml").is_file() or (path / "setup.py").is_file():
            return [str(path)]
        return ["--find-links", str(path), "nca3d"]
    raise ValueError(f"the nca3d package '{source}' does not exist: choose a wheel, an sdist, a folder, "
                     f"or the name nca3d")


def base_python_version(python: str) -> str | None:
    """The version of `python` when it can make a venv with pip (3.10+, venv, ensurepip), else None."""
    try:
        proc = subprocess.run([python, "-c", BASE_PROBE], check=False, capture_output=True, text=True,
                              timeout=backend.PROBE_TIMEOUT, env=backend.backend_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def find_base_python(own: str) -> tuple[str, str]:
    """(python, version) to make the venv with: `own` (Blender's Python) when it can, else the first
    python3.13 ... python3.10, python3, python on PATH that can. ValueError (one line) if none."""
    candidates = [own] + [shutil.which(name) for name in
                          ("python3.13", "python3.12", "python3.11", "python3.10", "python3", "python")]
    seen = set()
    for python in candidates:
        if python and python not in seen:
            seen.add(python)
            version = base_python_version(python)
            if version:
                return python, version
    raise ValueError("no Python 3.10+ with venv and ensurepip: Blender's own has none, nor python3 on PATH; "
                     "install Python 3.10+ (Debian/Ubuntu: apt install python3-venv) or set Backend Python "
                     "to an existing nca3d install")


def remove_env(env: str | Path) -> None:
    """Delete an environment, its marker first (a half-deleted one never looks finished)."""
    (Path(env) / backend.SETUP_MARKER).unlink(missing_ok=True)
    shutil.rmtree(env, ignore_errors=True)


def remove_unfinished(env: str | Path) -> None:
    """Delete `env` unless it is finished (cancel and failure clean-up)."""
    if Path(env).is_dir() and not (Path(env) / backend.SETUP_MARKER).is_file():
        shutil.rmtree(env, ignore_errors=True)


class Setup:
    """One setup run: runs each step's command, logs it, reports progress."""

    def __init__(self, env: Path, log: Path):
        self.env = env
        self.log_path = log
        self.log = open(log, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by main()

    def emit(self, stage: str, fraction: float, message: str, **extra) -> None:
        print(json.dumps({"stage": stage, "fraction": round(fraction, 4), "message": message, **extra}), flush=True)

    def run(self, stage: str, argv: list[str], message: str) -> str:
        """Run one command of `stage`, logging its output; pip's lines move the bar within the stage.
        Returns the output; raises RuntimeError (one line naming the log) if it fails."""
        start, end = STAGES[stage]
        self.emit(stage, start, message)
        self.log.write(f"\n$ {subprocess.list2cmdline(argv)}\n")
        self.log.flush()
        # in the environment's parent folder: a checkout in the current folder could shadow the installed nca3d
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.env.parent, text=True, encoding="utf-8", errors="replace",
                                env=backend.backend_env())
        lines, steps = [], 0
        for line in proc.stdout:
            self.log.write(line)
            self.log.flush()
            line = line.strip()
            lines.append(line)
            if line.startswith(("Collecting", "Processing", "Downloading", "Installing collected", "Building")):
                steps += 1
                fraction = start + (end - start) * 0.9 * steps / (steps + 8)
                self.emit(stage, fraction, f"{stage}: {line[:90]}")
        code = proc.wait()
        if code != 0:
            reason = next((l for l in lines if l.startswith("ERROR:")), lines[-1] if lines else "")  # pip's first
            raise RuntimeError(f"{message} failed ({reason.removeprefix('ERROR:').strip() or f'exit code {code}'}); "
                               f"the log is {self.log_path}")
        return "\n".join(lines)

    def main(self, torch_build: str, source: str, device: str) -> dict:
        python_version = sys.version.split()[0]
        self.run("venv", [sys.executable, "-m", "venv", str(self.env)],
                 f"creating the virtual environment with Python {python_version} ({sys.executable})")
        python = backend.venv_python(self.env)
        if python is None:
            raise RuntimeError(f"the new environment has no Python; the log is {self.log_path}")
        self.run("torch", [python, *PIP, *torch_args(torch_build)], f"installing torch {TORCH_VERSION}")
        self.run("nca3d", [python, *PIP, *nca3d_args(source)], f"installing nca3d from {source}")
        version = self.run("check", [python, "-m", "nca3d", "--version"], "running python -m nca3d --version")
        probe = backend.parse_probe(self.run("check", backend.probe_argv(python, device), "checking torch and models"))
        if not probe:
            raise RuntimeError(f"the new environment's check printed nothing usable; the log is {self.log_path}")
        found = {"python": python, "nca3d": version.splitlines()[-1] if version else "",
                 "torch": probe.get("torch", ""), "device": probe.get("device", probe.get("device_error", "")),
                 "models": probe.get("models", 0), "torch_build": torch_build, "source": source,
                 "base_python": sys.executable, "log": str(self.log_path),
                 "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        marker = self.env / backend.SETUP_MARKER
        partial = marker.with_suffix(".partial")
        partial.write_text(json.dumps(found, indent=1))
        os.replace(partial, marker)
        for other in self.env.parent.glob("env-*"):
            if other != self.env and other.is_dir():
                self.emit("check", 1.0, f"removing the previous environment {other.name}")
                remove_env(other)
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="the new environment's folder (must not exist)")
    parser.add_argument("--log", required=True, help="the log file")
    parser.add_argument("--torch", default="pypi", choices=[b[0] for b in TORCH_BUILDS])
    parser.add_argument("--source", default="nca3d", help="where nca3d comes from (see nca3d_args)")
    parser.add_argument("--device", default="auto", help="the device the check reports (auto, cpu, cuda)")
    args = parser.parse_args(argv)
    env = Path(args.env).resolve()
    if env.exists():
        print(f"nca3d: error: '{env}' already exists", file=sys.stderr)
        return 2
    try:
        env.parent.mkdir(parents=True, exist_ok=True)
        setup = Setup(env, Path(args.log).resolve())
    except OSError as exc:
        print(f"nca3d: error: cannot write into '{env.parent}': {exc.strerror or exc}", file=sys.stderr)
        return 1
    with setup.log:
        try:
            found = setup.main(args.torch, args.source, args.device)
        except (RuntimeError, ValueError, OSError) as exc:
            setup.log.write(f"\nfailed: {exc}\n")
            remove_unfinished(env)
            print(f"nca3d: error: {exc}", file=sys.stderr)
            return 1
        setup.log.write(f"\nfinished: {json.dumps(found)}\n")
    setup.emit("done", 1.0, f"{found['nca3d']} set up in {env}",
               files=[found["python"], str(env / backend.SETUP_MARKER)])
    return 0

if __name__ == "__main__":
    sys.exit(main())
