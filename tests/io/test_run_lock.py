import os
import signal
import subprocess
import sys
import time

import pytest

from nca3d.errors import NCA3DError
from nca3d.io.run_lock import run_lock

HOLD = """
import sys, time
from nca3d.io.run_lock import run_lock
with run_lock(sys.argv[1], "run", "wait"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_naming_the_first_and_the_file_goes_with_the_first(tmp_path):
    lock = tmp_path / "sub" / "m.lock"
    with run_lock(lock, "run 'm.nca3d'", "choose another --out"):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(NCA3DError, match=rf"run 'm.nca3d' is in use by another process \(pid {os.getpid()}\); "
                                             r"choose another --out"):
            with run_lock(lock, "run 'm.nca3d'", "choose another --out"):
                pass
    assert not lock.exists()
    with run_lock(lock, "run", "fix"):  # free again
        pass


def test_a_killed_holder_holds_the_lock_no_longer(tmp_path):
    lock = tmp_path / "m.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NCA3DError, match=f"pid {holder.pid}"):
            with run_lock(lock, "run", "wait"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists()  # left behind by kill -9, but nobody holds it
    deadline = time.time() + 10
    while True:
        try:
            with run_lock(lock, "run", "wait"):
                break
        except NCA3DError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
