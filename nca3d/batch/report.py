"""The batch's progress (one bar for all jobs, or JSON lines) and its summary table."""

from __future__ import annotations

import json
import sys

from ..progress import Progress


class BatchProgress:
    """report(event, batch) for engine.Batch: a bar on stderr (done, failed, running, ETA) or, with
    mode "json", one line per event on stdout: {"stage": "batch", "fraction", "message", "event",
    "done", "failed", "skipped", "running", "total", "eta"}."""

    def __init__(self, mode: str = "bar", stream=None):
        self.mode, self.stream = mode, stream
        self.bar = Progress("bar" if mode == "bar" else "none")

    def __call__(self, event: str, batch) -> None:
        counts = batch.counts
        finished = counts["done"] + counts["failed"] + counts["skipped"]
        fraction = finished / counts["total"] if counts["total"] else 1.0
        eta = batch.eta()
        message = (f"{counts['done'] + counts['skipped']}/{counts['total']} done, {counts['failed']} failed, "
                   f"{counts['running']} running")
        if self.mode == "json":
            if event != "tick":
                print(json.dumps({"stage": "batch", "fraction": round(fraction, 4), "message": message, "event": event,
                                  **counts, "eta": round(eta, 1) if eta is not None else None}),
                      file=self.stream or sys.stdout, flush=True)
        elif self.mode == "bar" and event != "end":  # the last job's event drew the full bar
            self.bar.update("batch", fraction, message, force=event != "tick")


def summary_table(records: dict[str, dict], names: list[str] | None = None) -> str:
    """One row per job (state, attempts, seconds, error) and a line of counts."""
    names = names if names is not None else list(records)
    rows = [("job", "state", "tries", "seconds", "error")]
    counts: dict[str, int] = {}
    for name in names:
        record = records.get(name, {"state": "pending"})
        counts[record["state"]] = counts.get(record["state"], 0) + 1
        seconds = record.get("seconds")
        rows.append((name, record["state"], str(record.get("attempt", "")),
                     f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "", record.get("error") or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    total = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return "\n".join(line.rstrip() for line in lines) + f"\n{len(names)} jobs: {total or 'none'}"


def summary_json(records: dict[str, dict], names: list[str] | None = None) -> dict:
    names = names if names is not None else list(records)
    jobs = [{"job": name, **{k: v for k, v in records.get(name, {"state": "pending"}).items() if k != "job"}}
            for name in names]
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    return {"counts": counts, "jobs": jobs}


def print_summary(records: dict[str, dict], names: list[str] | None, mode: str, manifest: str, stream=None) -> None:
    """The end of a run or `--status`: the table (bar/none) or a final JSON line (json)."""
    stream = stream or sys.stdout
    if mode == "json":
        print(json.dumps({"stage": "done", "fraction": 1.0, "message": "finished", "files": [manifest],
                          **summary_json(records, names)}), file=stream, flush=True)
    else:
        print(summary_table(records, names), file=stream)
        print(f"manifest: {manifest}", file=stream)

