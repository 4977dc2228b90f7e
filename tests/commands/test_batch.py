"""`nca3d batch` on a real local Ray runtime (2 CPUs, one per module): a batch's files are the
commands' own, byte for byte; bad jobs fail alone; a re-run does nothing; a worker killed with
kill -9 is retried and its training resumes from the checkpoint; Ctrl-C of the driver leaves a
manifest the next run continues."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from nca3d.batch.manifest import NAME, read_records
from nca3d.cli import main
from nca3d.io.model_file import read_header

from ..conftest import optional_import
from ..train.test_trainer import make_exemplar

MESHES = Path(__file__).resolve().parents[2] / "assets" / "meshes"
TINY_TRAIN = {"command": "train", "exemplar": "ex.png", "iters": 150, "features": "patches", "channels": 8,
              "hidden": 32, "grid": 8, "pool": 8, "batch": 2, "min_steps": 4, "max_steps": 8, "patch": 24,
              "samples": 128, "checkpoint_every": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for the module, in its own temp folder; `nca3d batch` joins it."""
    ray = optional_import("ray", "nca3d batch needs Ray: pip install 'nca3d[batch]'")
    temp = tempfile.mkdtemp(prefix="nca3d-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=100 * 1024 * 1024)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / NAME).read_text().splitlines()]


def comparable(path: Path):
    """A file's bytes (a .vdb's without its random file UUID, bytes 21-57); a NAME.json without what
    differs by run (the output folder, timing, progress mode)."""
    if path.suffix == ".vdb":
        data = path.read_bytes()
        return data[:21] + data[57:]
    if path.suffix != ".json":
        return path.read_bytes()

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("out", "seconds", "progress")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return strip(json.loads(path.read_text()))


def test_a_batch_writes_the_commands_own_files_bad_jobs_fail_alone_and_a_rerun_does_nothing(
        ray_runtime, tmp_path, capsys):
    for folder, mesh in (("a", "rock.obj"), ("a/b", "torus.obj")):
        (tmp_path / "assets" / folder).mkdir(parents=True)
        shutil.copy(MESHES / mesh, tmp_path / "assets" / folder / mesh)
    good = ('[[job]]\ncommand = "texture"\nmeshes = "assets/**/*.obj"\nmodels = ["granite_mesh", "ore_mesh"]\n'
            'size = 32\nsteps = 16\npreview_size = 0\n\n'
            '[[job]]\ncommand = "maps"\nmodel = "granite_2d"\nsize = 32\nsteps = 16\npreview_size = 32\n\n'
            '[[job]]\ncommand = "volume"\nres = 16\nsteps = 8\npreview_size = 32\n')
    bad = ('\n[[job]]\ncommand = "texture"\nmesh = "missing.obj"\nmodel = "granite_mesh"\nsize = 32\n\n'
           '[[job]]\ncommand = "texture"\nmesh = "rock"\nmodel = "no_such_model"\nsize = 32\n\n'
           '[[job]]\ncommand = "texture"\nmesh = "rock"\nmodel = "granite_mesh"\nsise = 32\n')
    (tmp_path / "jobs.toml").write_text(good + bad)
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "jobs.toml"), "--out", str(out), "--progress", "none"]) == 1
    records = read_records(out)
    assert len(records) == 9
    done = {name: r for name, r in records.items() if r["state"] == "done"}
    failed = {r["argv"][0] if r["argv"] else "sise": r for r in records.values() if r["state"] == "failed"}
    assert len(done) == 6 and len(failed) == 3
    assert failed[str(tmp_path / "missing.obj")]["error"] == \
        f"mesh file '{tmp_path / 'missing.obj'}' not found; check the path"
    assert failed["rock"]["error"].startswith("'no_such_model' is neither a model file nor a bundled model")
    assert failed["sise"]["error"].startswith("jobs.toml job 6: 'sise' is not an option of nca3d texture")
    assert all(r["attempt"] <= 1 for r in failed.values())  # refused input is not retried

    # The same six commands, run alone (one thread, as the batch's jobs), write the same files.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, record in done.items():
            argv = [record["command"], *record["argv"]]
            argv += ["--out", str(tmp_path / "alone" / name), "--progress", "none"]
            assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    for name, record in done.items():
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "alone" / name).iterdir())
        assert record["outputs"] and set(record["outputs"]) <= set(files)
        for file in files:
            assert comparable(out / name / file) == comparable(tmp_path / "alone" / name / file), (name, file)

    capsys.readouterr()
    assert main(["batch", "--status", str(out)]) == 1
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["job", "state", "tries", "seconds"] and len(table) == 12
    assert table[-2] == "9 jobs: 6 done, 3 failed"

    # A re-run of the good jobs does nothing: no task, no new manifest line, no file rewritten.
    (tmp_path / "good.toml").write_text(good)
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != NAME}
    assert main(["batch", str(tmp_path / "good.toml"), "--out", str(out)]) == 0
    assert "this run: 0 done, 6 skipped (finished before), 0 failed" in capsys.readouterr().out
    assert read_records(out) == records and len(manifest_lines(out)) == 9
    assert times == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != NAME}


def processes_with(text: str) -> dict[int, int]:
    """{pid: parent pid} of the processes whose command line holds `text`."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def train_batch(tmp_path: Path) -> tuple[Path, Path]:
    make_exemplar(tmp_path / "ex.png")
    (tmp_path / "jobs.jsonl").write_text(json.dumps(TINY_TRAIN) + "\n")
    return tmp_path / "jobs.jsonl", tmp_path / "out"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's processes in /proc")
def test_a_worker_killed_mid_job_is_retried_and_training_resumes(ray_runtime, tmp_path):
    jobs, out = train_batch(tmp_path)
    result = []
    driver = threading.Thread(target=lambda: result.append(
        main(["batch", str(jobs), "--out", str(out), "--progress", "none"])))
    driver.start()
    wait_for(lambda: list(out.glob("*/ex.ckpt")), 120, "the first checkpoint")
    job = wait_for(lambda: processes_with(f"-m nca3d train {tmp_path / 'ex.png'}"), 10, "the job's process")
    (child, worker), = job.items()
    os.kill(worker, signal.SIGKILL)  # the Ray worker running the job, mid-job
    wait_for(lambda: not alive(child), 10, "the job's subprocess to die with its worker")
    driver.join(300)
    assert result == [0]
    events = [(r["state"], r["attempt"]) for r in manifest_lines(out)]
    assert events == [("running", 1), ("failed", 1), ("running", 2), ("done", 2)]
    failed, done = manifest_lines(out)[1], manifest_lines(out)[3]
    assert "Worker" in failed["error"] or "died" in failed["error"]
    assert done["resumed"] >= 2 and done["resumed"] % 2 == 0  # from a checkpoint, not from scratch
    model = out / done["job"] / "ex.nca3d"
    assert read_header(model)[0]["provenance"]["iterations"] == 150


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's processes in /proc")
def test_ctrl_c_of_the_driver_leaves_a_manifest_the_next_run_continues(ray_runtime, tmp_path):
    jobs, out = train_batch(tmp_path)
    address = ray_runtime.get_runtime_context().gcs_address  # the driver joins the module's runtime
    driver = subprocess.Popen([sys.executable, "-m", "nca3d", "batch", str(jobs), "--out", str(out),
                               "--address", address, "--progress", "json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for(lambda: list(out.glob("*/ex.ckpt")), 120, "the first checkpoint")
        driver.send_signal(signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 130, stderr[-2000:]
    assert "nca3d: interrupted" in stderr
    lines = manifest_lines(out)  # every line whole
    assert [(r["state"], r["attempt"]) for r in lines] == [("running", 1), ("interrupted", 1)]
    assert json.loads(stdout.splitlines()[-1])["counts"] == {"interrupted": 1}
    wait_for(lambda: not processes_with(f"-m nca3d train {tmp_path / 'ex.png'}"), 10, "the job to stop")

    assert main(["batch", str(jobs), "--out", str(out), "--progress", "none"]) == 0
    record = read_records(out)[lines[0]["job"]]
    assert record["state"] == "done" and record["resumed"] >= 2


def test_without_ray_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "jobs.jsonl").write_text('{"command": "maps", "model": "granite_2d"}\n')
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "nca3d: error: nca3d batch needs Ray: pip install 'nca3d[batch]'\n"
    assert not (tmp_path / "out").exists()
    assert main(["batch", "--status", str(tmp_path)]) == 2  # --status needs no Ray, only a manifest
    assert "holds no batch.jsonl" in capsys.readouterr().err
