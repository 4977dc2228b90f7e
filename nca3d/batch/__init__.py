"""`nca3d batch`: many texture, maps, volume and train jobs run as Ray tasks.

`jobs` reads a job list and expands it into jobs, each checked by its command's own parser;
`manifest` is the append-only record of every job's state (`DIR/batch.jsonl`); `worker` runs one
job as a `python -m nca3d` subprocess on a Ray worker; `engine` connects to Ray and schedules the
jobs (retries, cancellation); `report` draws the progress and the summary table. Nothing here
imports Ray at module level: it is an optional extra (`pip install 'nca3d[batch]'`).
"""
