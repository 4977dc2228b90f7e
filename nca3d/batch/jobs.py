"""A batch's job list: JSONL lines or TOML `[[job]]` tables, expanded into jobs.

Each entry names a `command` (texture, maps, volume, train) and that command's options by their
long names with underscores; the positional argument goes by its name (`mesh`, `exemplar`). A plural
key (`meshes`, `models`, `seeds`, ...) takes a list, and a value with `*`, `?` or `[` is a glob
(`**` recurses), relative to the job list's folder: an entry expands to one job per combination.
Each job is checked by its command's own argparse parser; a bad one keeps its one-line error and
fails alone. `job = "NAME"` names a job's folder (otherwise COMMAND-SUBJECT-MODEL-HASH).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NCA3DError

COMMANDS = ("texture", "maps", "volume", "train")
SET_BY_BATCH = ("out", "progress")  # each job writes to its own folder and reports JSON lines
FILE_OUT = {"train": ".nca3d"}  # commands whose --out is a file (NAME.nca3d, NAME.ckpt beside it)
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class Job:
    """One command run: its arguments (without --out/--progress), its folder name and its identity."""

    name: str
    command: str
    argv: list[str] = field(default_factory=list)
    spec: str = ""  # sha256 of command + argv: a changed job is another job
    inputs: list[str] = field(default_factory=list)  # files it reads, as absolute paths
    error: str = ""  # one line: the job is invalid and fails alone, without running
    entry: str = ""  # where it came from: "jobs.toml job 3"

    def out_args(self, folder: Path) -> list[str]:
        """--out for the command: the job's folder, or a file in it (train: STEM.nca3d)."""
        if self.command in FILE_OUT:
            stem = _stem(self.argv[0]) if self.argv and not self.argv[0].startswith("-") else self.command
            return ["--out", str(folder / f"{stem}{FILE_OUT[self.command]}")]
        return ["--out", str(folder)]

    def run_argv(self, folder: Path) -> list[str]:
        """The full `nca3d COMMAND ...` arguments; a training job resumes from its checkpoint, an
        animated volume keeps the frames it finished."""
        resume = self.command == "train" or (self.command == "volume" and "--frames" in self.argv)
        return [self.command, *self.argv, *self.out_args(folder), "--progress", "json",
                *(["--resume"] if resume and "--resume" not in self.argv else [])]


def read_entries(path: str | Path) -> list[tuple[str, dict | str]]:
    """(where, entry) per job entry of a .toml ([[job]] tables) or JSONL file; an unreadable JSONL
    line is (where, its one-line error): it fails alone."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NCA3DError(f"cannot read the job list '{path}': {exc.strerror or exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            tables = tomllib.loads(text).get("job", [])
        except tomllib.TOMLDecodeError as exc:
            raise NCA3DError(f"'{path}' is not valid TOML ({exc})") from None
        if not isinstance(tables, list):
            raise NCA3DError(f"'{path}': write each job as a [[job]] table")
        return [(f"{path.name} job {index}", table) for index, table in enumerate(tables, 1)]
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path.name} line {number}"
        try:
            entry = json.loads(line)
        except ValueError as exc:
            entries.append((where, f"{where} is not JSON ({exc})"))
            continue
        entries.append((where, entry if isinstance(entry, dict) else f"{where} is not a JSON object"))
    return entries


def expand(entries: list[tuple[str, dict | str]], parsers: dict[str, argparse.ArgumentParser],
           base: str | Path) -> list[Job]:
    """Jobs from entries: lists and globs expanded, each checked by `parsers[command]`; relative
    paths are found in `base` (the job list's folder). The same job twice runs once."""
    jobs, seen = [], set()
    for where, entry in entries:
        for job in _expand_entry(where, entry, parsers, Path(base)):
            key = job.name if job.error else (job.name, job.spec)
            if key in seen:
                continue
            seen.add(key)
            jobs.append(job)
    names: dict[str, Job] = {}
    for job in jobs:
        if job.name in names and not job.error:
            job.error = f"{job.entry}: the job name '{job.name}' is taken by {names[job.name].entry}"
        names.setdefault(job.name, job)
    return jobs


def _expand_entry(where: str, entry, parsers, base: Path) -> list[Job]:
    if isinstance(entry, str):
        return [Job(name=_safe(where), command="?", error=entry, entry=where)]
    entry = dict(entry)
    command = entry.pop("command", None)
    given_name = entry.pop("job", None)
    fallback = _safe(str(given_name) if given_name else where)
    if command not in parsers:
        return [Job(name=fallback, command=str(command), entry=where,
                    error=f"{where}: 'command' must be one of {', '.join(parsers)}, not {command!r}")]
    parser = parsers[command]
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    try:
        choices = [(dest, _values(key, value, plural, base)) for key, value, dest, plural
                   in _keys(entry, actions, command)]
    except NCA3DError as exc:
        return [Job(name=fallback, command=command, entry=where, error=f"{where}: {exc}")]
    combos = list(itertools.product(*[values for _, values in choices]))
    jobs = []
    for combo in combos:
        options = dict(zip([dest for dest, _ in choices], combo))
        job = _job(command, options, actions, parser, where)
        if given_name:
            job.name = _safe(str(given_name)) + (f"-{_label(command, options, job.spec)}" if len(combos) > 1 else "")
        jobs.append(job)
    return jobs


def _keys(entry: dict, actions: dict, command: str):
    """(key, value, option dest, plural) per key; refuses keys the command does not take."""
    for key, value in entry.items():
        if key in SET_BY_BATCH:
            raise NCA3DError(f"'{key}' is set by nca3d batch (each job writes into its own folder under "
                             f"--out); drop it")
        if key in actions:
            yield key, value, key, False
            continue
        singular = next((key[:-len(end)] for end in ("es", "s") if key.endswith(end) and key[:-len(end)] in actions),
                        None)
        if singular is None or singular in SET_BY_BATCH:
            known = ", ".join(sorted(set(actions) - set(SET_BY_BATCH)))
            raise NCA3DError(f"'{key}' is not an option of nca3d {command} (its keys: {known}; or a plural "
                             f"of one with a list)")
        yield key, value, singular, True


def _values(key: str, value, plural: bool, base: Path) -> list:
    """The values one key takes: a list under a plural key, each glob expanded, paths made absolute."""
    if plural:
        value = value if isinstance(value, list) else [value]
        if not value:
            raise NCA3DError(f"'{key}' is an empty list")
    elif isinstance(value, list):
        raise NCA3DError(f"'{key}' takes one value; for one job per value use the plural key, "
                         f"e.g. '{key}s' = [...]")
    values = []
    for item in value if plural else [value]:
        if isinstance(item, (dict, list)) or item is None:
            raise NCA3DError(f"'{key}' has the value {json.dumps(item)}; give a string, number or true/false")
        if isinstance(item, str) and GLOB_CHARS.search(item):
            pattern = item if Path(item).is_absolute() else str(base / item)
            found = sorted(glob.glob(pattern, recursive=True))
            if not found:
                raise NCA3DError(f"'{key}' = '{item}' matches no files in '{base}'")
            values += found
        elif isinstance(item, str) and item and ((base / item).exists() or _looks_like_path(item)):
            values.append(str((base / item).resolve()))
        else:
            values.append(item)
    return values


def _looks_like_path(text: str) -> bool:
    """A file name rather than a name (demo mesh, bundled model) or a value: a folder or a suffix."""
    return "/" in text or "\\" in text or re.fullmatch(r"[^.]+\.[A-Za-z][\w]*", text) is not None


def _job(command: str, options: dict, actions: dict, parser, where: str) -> Job:
    """One job from its options: argv through the command's parser, its name and spec."""
    job = Job(name="", command=command, entry=where)
    try:
        job.argv = _argv(options, actions)
        parser.parse_args(job.argv + job.out_args(Path("OUT")))
    except NCA3DError as exc:
        job.error = f"{where}: {' '.join(str(exc).split())}"
    identity = [command, job.argv] if not job.error else [command, where, repr(options)]
    job.spec = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    job.name = _label(command, options, job.spec)
    job.inputs = sorted({value for value in job.argv if Path(value).is_absolute() and Path(value).is_file()})
    return job


def _argv(options: dict, actions: dict) -> list[str]:
    positional, flags = [], []
    for dest, value in options.items():
        action = actions[dest]
        if not action.option_strings:
            positional.append(str(value))
            continue
        option = max(action.option_strings, key=len)
        if action.nargs == 0:  # a switch: store_true / store_false
            if not isinstance(value, bool):
                raise NCA3DError(f"'{dest}' is a switch ({option}); give true or false, not {json.dumps(value)}")
            if value == action.const:
                flags.append(option)
            continue
        if isinstance(value, bool):
            raise NCA3DError(f"'{dest}' ({option}) takes a value, not {json.dumps(value)}")
        flags += [option, str(value)]
    return positional + flags


def _label(command: str, options: dict, spec: str) -> str:
    """COMMAND-SUBJECT-MODEL-HASH8: readable, and unique per job."""
    parts = [command]
    for dest in ("mesh", "exemplar", "model"):
        if dest in options:
            parts.append(_stem(str(options[dest])))
    return _safe("-".join(parts + [spec[:8]]))


def _stem(value: str) -> str:
    path = Path(value)
    return path.stem if path.suffix else path.name


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "job"
