"""`nca3d batch JOBS.toml|JOBS.jsonl --out DIR`: texture, maps, volume and train jobs as Ray tasks.

Each job is checked by its command's own parser (the options below are theirs, not restated),
runs as `python -m nca3d COMMAND ...` in its own folder DIR/JOB, and is recorded in DIR/batch.jsonl.
A re-run skips finished jobs (by their outputs' sha256), resumes training from checkpoints and runs
failed and interrupted jobs again. `nca3d batch --status DIR` prints the manifest's table.
Exit status: 0 all done, 1 some job failed, 130 interrupted, 2 bad input.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from ..errors import NCA3DError
from . import Parser
from .texture import add_maps_arguments, add_texture_arguments
from .train import add_arguments as add_train_arguments
from .volume import add_arguments as add_volume_arguments


def add_arguments(parser) -> None:
    """The options of `nca3d batch`."""
    parser.add_argument("jobs", nargs="?", metavar="JOBS", help="job list: .toml ([[job]] tables) or .jsonl (a JSON "
                        "object per line); keys are the command's options, e.g. {\"command\": \"texture\", "
                        "\"mesh\": \"a.obj\", \"model\": \"granite_mesh\", \"size\": 512}; plural keys take lists "
                        "and globs expand: meshes = \"assets/**/*.glb\"")
    parser.add_argument("--out", metavar="DIR", help="batch folder: one folder per job and the manifest batch.jsonl "
                        "(on a cluster, a path every machine shares)")
    parser.add_argument("--status", metavar="DIR", help="print the manifest of a batch folder and exit")
    parser.add_argument("--address", help="join a Ray cluster: ray://HOST:PORT, HOST:PORT or auto (default: an "
                        "embedded local runtime on all cores)")
    parser.add_argument("--max-parallel", dest="max_parallel", type=int, metavar="N",
                        help="at most N jobs at once (default: the cluster's CPUs / --cpus-per-job)")
    parser.add_argument("--cpus-per-job", dest="cpus_per_job", type=float, default=1.0, metavar="N",
                        help="CPUs each job requests (and its torch threads; default 1); training jobs also "
                             "request one GPU where the cluster has GPUs")
    parser.add_argument("--retries", type=int, default=2, help="run a job that crashed or was killed again up to "
                        "this many times (default 2; a job that refuses its input is not retried)")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="one bar for all jobs (stderr), JSON lines (stdout) or none")
    parser.set_defaults(run=run)


def command_parsers() -> dict:
    """The parsers of the commands a batch runs, built by their own add_arguments."""
    parsers = {}
    for name, add in (("texture", add_texture_arguments), ("maps", add_maps_arguments),
                      ("volume", add_volume_arguments), ("train", add_train_arguments)):
        parsers[name] = Parser(prog=f"nca3d {name}")
        add(parsers[name])
    return parsers


def run(args) -> int:
    from ..batch.jobs import expand, read_entries
    from ..batch.manifest import NAME, Manifest, read_records
    from ..batch.report import BatchProgress, print_summary

    if args.status:
        if not (Path(args.status) / NAME).is_file():
            raise NCA3DError(f"'{args.status}' holds no {NAME}; give the --out folder of a batch")
        records = read_records(args.status)
        print_summary(records, None, args.progress, str(Path(args.status) / NAME))
        return 1 if any(r["state"] != "done" for r in records.values()) else 0
    if not args.jobs or not args.out:
        raise NCA3DError("give a job list and --out DIR (or --status DIR) (see: nca3d batch --help)")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise NCA3DError("--max-parallel must be 1 or more")
    if args.retries < 0 or args.cpus_per_job <= 0:
        raise NCA3DError("--retries must be 0 or more and --cpus-per-job above 0")
    from ..batch.engine import Batch, connect, import_ray
    from ..io.atomic import prepare_out_dir

    import_ray()  # the one-line hint before any work
    jobs = expand(read_entries(args.jobs), command_parsers(), Path(args.jobs).resolve().parent)
    if not jobs:
        raise NCA3DError(f"'{args.jobs}' lists no jobs")
    out = prepare_out_dir(args.out).resolve()
    names = [job.name for job in jobs]
    stdout = sys.stdout  # ours: what Ray prints itself (a dead worker's notice) goes to stderr
    with Manifest(out) as manifest, _sigterm_interrupts():
        batch = Batch(jobs, out, manifest, retries=args.retries, max_parallel=args.max_parallel,
                      cpus_per_job=args.cpus_per_job, ship_inputs=bool(args.address),
                      report=BatchProgress(args.progress, stdout))
        try:
            if batch.plan():  # Ray starts only when some job is left to run
                with contextlib.redirect_stdout(sys.stderr), connect(args.address) as ray:
                    batch.run(ray)
        except KeyboardInterrupt:
            print_summary(manifest.records, names, args.progress, str(manifest.path),
                          stream=stdout if args.progress == "json" else sys.stderr)
            raise
    if args.progress != "none":
        print_summary(manifest.records, names, args.progress, str(manifest.path), stream=stdout)
    counts = batch.counts
    if args.progress == "bar":
        print(f"this run: {counts['done']} done, {counts['skipped']} skipped (finished before), "
              f"{counts['failed']} failed", file=stdout)
    return 1 if counts["failed"] else 0


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler, the Blender add-on's Cancel) stops the batch as Ctrl-C does: the running
    jobs are cancelled and recorded as interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
