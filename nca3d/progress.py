"""Progress reporting: a one-line bar on stderr, or JSON lines on stdout (`--progress json`).

JSON lines: {"stage", "fraction", "message"} while working and finally {"stage": "done",
"fraction": 1.0, "files": [...]}; the Blender add-on reads these.
"""

from __future__ import annotations

import json
import sys
import time


class Progress:
    def __init__(self, mode: str = "bar", stream=None):
        if mode not in ("bar", "json", "none"):
            raise ValueError("progress mode must be bar, json or none")
        self.mode = mode
        self.stream = stream
        self._stage, self._stage_start, self._last = None, time.monotonic(), 0.0

    def update(self, stage: str, fraction: float, message: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self._stage, self._stage_start = stage, now
            force = True
        if not force and now - self._last < 0.5 and fraction < 1.0:
            return
        self._last = now
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.mode == "json":
            print(json.dumps({"stage": stage, "fraction": round(fraction, 4), "message": message}),
                  file=self.stream or sys.stdout, flush=True)
        elif self.mode == "bar":
            elapsed = now - self._stage_start
            eta = elapsed / fraction * (1 - fraction) if fraction > 0.001 else float("nan")
            width = 28
            filled = int(width * fraction)
            line = (f"\r{stage:>10s} [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% "
                    f"{_clock(elapsed)} < {_clock(eta)} {message}")
            stream = self.stream or sys.stderr
            stream.write(line[:160].ljust(100))
            if fraction >= 1.0:
                stream.write("\n")
            stream.flush()

    def done(self, files: list[str]) -> None:
        if self.mode == "json":
            print(json.dumps({"stage": "done", "fraction": 1.0, "message": "finished", "files": files}),
                  file=self.stream or sys.stdout, flush=True)
        elif self.mode == "bar":
            for path in files:
                print(f"wrote {path}", file=self.stream or sys.stderr)


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
