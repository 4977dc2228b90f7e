"""The driver's loop without a cluster (a stand-in for the ray module): retries, refusals, a task that
raises, the parallelism cap and Ctrl-C, as the manifest records them. The real runtime is in
tests/commands/test_batch.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nca3d.batch.engine import Batch
from nca3d.batch.jobs import Job
from nca3d.batch.manifest import NAME, Manifest, read_records

DONE = {"state": "done", "exit": 0, "outputs": {"a.png": "0" * 64}, "seconds": 0.1}
CRASH = {"state": "failed", "exit": 1, "error": "exit status 1: RuntimeError: boom"}
REFUSED = {"state": "failed", "exit": 2, "error": "mesh file 'x.obj' not found; check the path"}


class Ref:
    def __init__(self, job: str, outcome):
        self.job, self.outcome = job, outcome


class FakeRay:
    """What Batch uses of the ray module. Each task of a job ends with the job's next outcome: a
    result dict, or an exception that get() raises (a task that raised, a worker that died, Ctrl-C)."""

    def __init__(self, outcomes: dict):
        self.outcomes = outcomes
        self.cancelled, self.options, self.most_in_flight = [], [], 0

    def remote(self, **task_options):  # ray.remote(max_retries=0)(f)
        return lambda function: _Task(self)

    def cluster_resources(self):
        return {"CPU": 2.0}

    def wait(self, refs, num_returns, timeout):
        self.most_in_flight = max(self.most_in_flight, len(refs))
        return refs[:1], refs[1:]

    def get(self, ref):
        if isinstance(ref.outcome, BaseException):
            raise ref.outcome
        return dict(ref.outcome)

    def cancel(self, ref, force):
        self.cancelled.append(ref.job)


def run(tmp_path, outcomes, ray=None, **options):
    ray = ray or FakeRay(outcomes)
    jobs = [Job(name=name, command="maps", argv=["--model", "granite_2d"], spec=f"spec-{name}") for name in outcomes]
    with Manifest(tmp_path) as manifest:
        counts = Batch(jobs, tmp_path, manifest, **options).run(ray)
    return ray, counts


class _Task:
    def __init__(self, ray):
        self.ray = ray

    def options(self, **options):
        self.ray.options.append(options)
        return self

    def remote(self, spec, shipped):
        job = Path(spec["folder"]).name
        return Ref(job, self.ray.outcomes[job].pop(0))


def events(tmp_path, job):
    lines = [json.loads(line) for line in (tmp_path / NAME).read_text().splitlines()]
    return [(r["state"], r["attempt"]) for r in lines if r["job"] == job]


def test_crashes_are_retried_refusals_are_not_and_a_raising_task_fails(tmp_path):
    outcomes = {"flaky": [CRASH, DONE], "refused": [REFUSED],
                "raises": [RuntimeError("the worker raised"), RuntimeError("again"), RuntimeError("and again")]}
    ray, counts = run(tmp_path, outcomes, retries=2, max_parallel=1)
    assert counts == {"done": 1, "failed": 2, "skipped": 0, "running": 0, "total": 3}
    assert events(tmp_path, "flaky") == [("running", 1), ("failed", 1), ("running", 2), ("done", 2)]
    assert events(tmp_path, "refused") == [("running", 1), ("failed", 1)]
    assert events(tmp_path, "raises")[-1] == ("failed", 3)
    records = read_records(tmp_path)
    assert records["raises"]["error"] == "RuntimeError: and again"
    assert records["refused"]["error"] == REFUSED["error"]
    assert ray.most_in_flight == 1 and ray.options[0] == {"num_cpus": 1, "num_gpus": 0}


def test_ctrl_c_records_the_running_jobs_as_interrupted(tmp_path):
    outcomes = {"a": [DONE], "b": [KeyboardInterrupt()], "c": [DONE], "d": [DONE]}
    ray = FakeRay(outcomes)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, outcomes, ray)  # two at a time: b and c run when Ctrl-C comes
    assert sorted(ray.cancelled) == ["b", "c"]
    records = read_records(tmp_path)
    assert {name: r["state"] for name, r in records.items()} == {"a": "done", "b": "interrupted", "c": "interrupted"}
    assert read_records(tmp_path)["b"]["error"] == "interrupted (Ctrl-C)"  # d never started: the next run starts it


def test_an_unreachable_address_is_refused_at_once():
    import socket
    import time

    from nca3d.batch.engine import check_reachable
    from nca3d.errors import NCA3DError

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    start = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(NCA3DError, match="cannot reach a Ray cluster"):
            check_reachable(address)
    assert time.monotonic() - start < 5
    with pytest.raises(NCA3DError, match="is not ray://HOST:PORT"):
        check_reachable("nowhere")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"ray://127.0.0.1:{listening.getsockname()[1]}")  # answers: no error
    check_reachable("auto")  # Ray's own lookup
