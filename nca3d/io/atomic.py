"""Atomic file writing: write to a temporary name in the target folder, then rename; output folders
proven writable before any work starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import NCA3DError


def unwritable(folder: Path, exc: OSError) -> NCA3DError:
    """The one line for an output location that cannot be written."""
    return NCA3DError(f"cannot write to '{folder}': {exc.strerror}; choose a writable output location")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The temporary keeps the final suffix so that writers which choose a format by extension work.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=folder)
    except OSError as exc:
        raise unwritable(folder, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)  # mkstemp makes 0600 files; finished outputs get the usual permissions
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (fsync before rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def prepare_out_dir(out_dir) -> Path:
    """Create the output folder if needed and prove it writable; refuse in one line otherwise."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise NCA3DError(f"output folder '{path}' is an existing file, not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NCA3DError(f"cannot create output folder '{path}': {exc.strerror or exc}; "
                         f"choose a writable --out") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".nca3d-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NCA3DError(f"cannot write to output folder '{path}': {exc.strerror or exc}; "
                         f"choose a writable --out") from None
    return path
