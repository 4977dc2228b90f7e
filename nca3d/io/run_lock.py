"""One process at a time per output: an advisory lock on NAME.lock beside a run's files.

Two `nca3d train` runs with the same --out would overwrite each other's checkpoint in turn. The lock
is the operating system's (flock; on Windows msvcrt.locking), so a killed run (kill -9, a crash)
holds it no longer; the file says which process holds it and is removed when the run ends.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import NCA3DError
from .atomic import unwritable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; refuse in one line (naming `what` and its
    holder's process, then `fix`) while another process holds it."""
    path = Path(path)
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise unwritable(path.parent, exc) from None
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            except OSError:  # Windows: the holder's locked byte cannot be read
                holder = "?"
            os.close(fd)
            raise NCA3DError(f"{what} is in use by another process (pid {holder}); {fix}")
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break  # not a file the last holder removed after this one opened it
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing releases the lock
