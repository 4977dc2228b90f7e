"""The batch on Ray: connect (an embedded local runtime, or a cluster), one task per job, retries.

The driver keeps at most `max_parallel` tasks in flight (default: the cluster's CPUs over the
CPUs per job), writes every start and end to the manifest, and retries a job that failed other
than by refusing its input (exit 2) up to `retries` more times. Ctrl-C cancels the running tasks
(their workers are killed, and their subprocesses with them) and records them as interrupted;
a re-run continues them. Ray retries nothing itself (max_retries=0): the manifest counts attempts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import deque
from pathlib import Path

from ..errors import NCA3DError
from .jobs import Job
from .manifest import Manifest
from .worker import EXIT_USAGE, run_job

RAY_HINT = "nca3d batch needs Ray: pip install 'nca3d[batch]'"


def import_ray():
    """The ray module, or the one-line hint to install the extra."""
    try:
        import ray
    except Exception:  # noqa: BLE001 - missing, or broken: either way not usable here
        raise NCA3DError(RAY_HINT) from None
    return ray


REACH_SECONDS = 5.0  # how long a cluster's address may take to answer before it counts as unreachable


def check_reachable(address: str, timeout: float = REACH_SECONDS) -> None:
    """Refuse in one line a HOST:PORT (or ray://HOST:PORT) that does not accept a TCP connection
    within `timeout` s: Ray itself keeps retrying such an address for minutes. `auto` is Ray's."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise NCA3DError(f"--address '{address}' is not ray://HOST:PORT, HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise NCA3DError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start it, "
                         f"or fix --address (ray://HOST:PORT of its client server, HOST:PORT of its head, "
                         f"or auto)") from None


@contextlib.contextmanager
def connect(address: str | None = None):
    """Ray, initialised: the runtime this process already has, the cluster at `address`
    (ray://HOST:PORT, HOST:PORT or auto), or a new embedded local one on all cores. Shuts down
    only what it started."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        check_reachable(address)
    try:
        if address:  # a cluster's own settings stand (a ray:// client passes what it is given to the server)
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise NCA3DError(f"cannot start or join Ray at {address or 'a new local runtime'}: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _task(job: dict, shipped: dict):
    """The Ray task: run the job; inputs this machine lacks come from the object store."""
    import ray

    return run_job(job, (lambda path: ray.get(shipped[path])) if shipped else None)


class Batch:
    """Runs `jobs` into folder `out`: `plan()` records the invalid jobs and skips the finished ones
    (no Ray needed), `run(ray)` runs the rest on an initialised Ray; `report(event, batch)` draws
    progress."""

    def __init__(self, jobs: list[Job], out: Path, manifest: Manifest, *, retries: int = 2,
                 max_parallel: int | None = None, cpus_per_job: float = 1, ship_inputs: bool = False,
                 report=None):
        self.jobs, self.out, self.manifest = jobs, out, manifest
        self.retries, self.cpus, self.max_parallel, self.ship_inputs = retries, cpus_per_job, max_parallel, ship_inputs
        self.report = report or (lambda event, batch: None)
        self.counts = {"done": 0, "failed": 0, "skipped": 0, "running": 0, "total": len(jobs)}
        self.durations: list[float] = []
        self.queue: deque[tuple[Job, int]] | None = None

    def plan(self) -> int:
        """Record the invalid jobs as failed and count the finished ones as skipped; returns how
        many jobs are left to run."""
        self.queue = deque()
        for job in self.jobs:
            previous = self.manifest.records.get(job.name, {})
            if job.error:
                self._record(job, "failed", previous.get("attempt", 0), error=job.error)
                self._count("failed", job)
            elif self.manifest.finished(job.name, job.spec):
                self._count("skipped", job)
            else:
                self.queue.append((job, 1))
        if not self.queue:
            self.report("end", self)
        return len(self.queue)

    def _ship(self, jobs: list[Job]) -> dict:
        """Each input file in the object store once: {path: (ref, sha256)}."""
        shipped = {}
        for path in sorted({p for job in jobs if not job.error for p in job.inputs}):
            data = Path(path).read_bytes()
            shipped[path] = (self.ray.put(data), hashlib.sha256(data).hexdigest())
        return shipped

    def run(self, ray) -> dict:
        """Run every job not finished yet on `ray`; returns the counts. KeyboardInterrupt propagates
        after the running jobs are cancelled and recorded."""
        if self.queue is None:
            self.plan()
        queue = self.queue
        self.ray = ray
        resources = ray.cluster_resources()
        self.gpus = resources.get("GPU", 0) > 0
        self.max_parallel = self.max_parallel or max(1, int(resources.get("CPU", 1) // self.cpus))
        self.remote = ray.remote(max_retries=0)(_task)
        self.shipped = self._ship([job for job, _ in queue]) if self.ship_inputs else {}
        inflight: dict = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < self.max_parallel:
                    self._submit(*queue.popleft(), inflight)
                ready, _ = self.ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    job, attempt, started = inflight[ref]
                    result = self._result(ref)
                    self._record(job, result.pop("state"), attempt, started=started, **result)
                    del inflight[ref]  # only now: an interrupt before this records the job as interrupted
                    self.counts["running"] -= 1
                    if self.manifest.records[job.name]["state"] == "done":
                        self.durations.append(time.time() - started)
                        self._count("done", job)
                    elif result.get("exit") != EXIT_USAGE and attempt <= self.retries:
                        queue.append((job, attempt + 1))
                        self.report("retry", self)
                    else:
                        self._count("failed", job)
                if not ready:
                    self.report("tick", self)
        except KeyboardInterrupt:
            for ref, (job, attempt, started) in inflight.items():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
                if self.manifest.records[job.name]["state"] == "running":  # not the one just recorded
                    self._record(job, "interrupted", attempt, started=started, error="interrupted (Ctrl-C)")
            self.counts["running"] = 0
            self.report("interrupted", self)
            raise
        self.report("end", self)
        return self.counts

    def _submit(self, job: Job, attempt: int, inflight: dict) -> None:
        folder = self.out / job.name
        folder.mkdir(parents=True, exist_ok=True)
        shipped = {path: self.shipped[path] for path in job.inputs if path in self.shipped}
        spec = {"argv": job.run_argv(folder), "folder": str(folder), "threads": max(1, int(self.cpus)),
                "inputs": {path: digest for path, (_, digest) in shipped.items()}}
        gpus = 1 if self.gpus and job.command == "train" else 0
        ref = self.remote.options(num_cpus=self.cpus, num_gpus=gpus).remote(
            spec, {path: object_ref for path, (object_ref, _) in shipped.items()})
        inflight[ref] = (job, attempt, time.time())
        self.counts["running"] += 1
        self._record(job, "running", attempt, started=inflight[ref][2])
        self.report("start", self)

    def _result(self, ref) -> dict:
        """The task's result, or a failed one when its worker died or it raised."""
        try:
            return self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - WorkerCrashedError, RayTaskError, ...: the job failed
            text = " ".join(str(exc).split())
            return {"state": "failed", "exit": None, "error": f"{type(exc).__name__}: {text[:300]}"}

    def _record(self, job: Job, state: str, attempt: int, started: float | None = None, **fields) -> None:
        record = {"job": job.name, "spec": job.spec, "command": job.command, "argv": job.argv, "state": state,
                  "attempt": attempt, "started": round(started, 3) if started else None}
        if state != "running" and started:
            record["seconds"] = round(time.time() - started, 3)
        record.update({k: v for k, v in fields.items() if k not in ("seconds",)})
        if fields.get("seconds") is not None:
            record["job_seconds"] = fields["seconds"]
        self.manifest.write(record)

    def _count(self, what: str, job: Job) -> None:
        self.counts[what] += 1
        self.report(what, self)

    def eta(self) -> float | None:
        """Seconds left, from the mean time of the jobs done so far and the parallelism."""
        left = self.counts["total"] - self.counts["done"] - self.counts["failed"] - self.counts["skipped"]
        if not self.durations:
            return None
        return sum(self.durations) / len(self.durations) * left / min(self.max_parallel, max(left, 1))
