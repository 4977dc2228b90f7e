"""`DIR/batch.jsonl`: one JSON line per job event, appended and fsynced; a job's state is its last line.

A line is written whole with one write and fsynced, so a killed driver leaves at most a torn last
line, which the reader skips. Each run starts by compacting the file (the last record per job,
written atomically), so it does not grow with re-runs.

Record keys: job (its folder under DIR), spec (sha256 of its command line), command, argv, state
(running, done, failed, interrupted), attempt, started (Unix time), outputs ({file in the
folder: sha256}), error (one line), exit (the command's exit status), resumed (the checkpoint
iteration a training job continued from), node, seconds (submitted to finished), job_seconds (the
worker's own time).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import NCA3DError
from ..io.atomic import write_bytes_atomic

NAME = "batch.jsonl"
STATES = ("running", "done", "failed", "interrupted")


def read_records(folder: str | Path) -> dict[str, dict]:
    """The last record of each job in folder/batch.jsonl, in the order jobs first appear; {} when
    there is none. Unreadable lines (a torn last line) are skipped."""
    path = Path(folder) / NAME
    records: dict[str, dict] = {}
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("job"), str) and record.get("state") in STATES:
            records[record["job"]] = record
    return records


class Manifest:
    """The manifest of one batch folder, open for appending during a run."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.records = read_records(self.folder)
        self._handle = self._lock = None

    def open(self) -> Manifest:
        """Lock the folder against a second batch, compact the file to one line per job (atomically) and
        open it for appending."""
        self._lock = _lock(self.folder)
        data = "".join(json.dumps(record) + "\n" for record in self.records.values()).encode()
        write_bytes_atomic(self.path, data)
        self._handle = open(self.path, "ab")  # noqa: SIM115 - held for the run, closed by close()
        return self

    def close(self) -> None:
        for handle in (self._handle, self._lock):
            if handle is not None:
                handle.close()
        self._handle = self._lock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, record: dict) -> None:
        """Append one record (a whole line, fsynced); it becomes the job's state."""
        self.records[record["job"]] = record
        self._handle.write((json.dumps(record) + "\n").encode())
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def finished(self, name: str, spec: str) -> bool:
        """The job's last run of this spec is done and its outputs are there, unchanged (sha256)."""
        record = self.records.get(name)
        if not record or record.get("state") != "done" or record.get("spec") != spec or not record.get("outputs"):
            return False
        folder = self.folder / name
        return all(file_sha256(folder / file) == digest for file, digest in record["outputs"].items())


def _lock(folder: Path):
    """An exclusive lock on folder/.batch.lock, held while the returned handle is open (POSIX; elsewhere
    none); NCA3DError when another batch holds it."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / ".batch.lock", "a+b")  # noqa: SIM115 - held for the run, closed by close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise NCA3DError(f"another nca3d batch is running into '{folder}'; wait for it to end or choose "
                         f"another --out") from None
    return handle


def file_sha256(path: str | Path) -> str | None:
    """The file's sha256, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
