"""CPU inference on Python threads: each thread runs torch ops on one intra-op thread.

torch's intra-op pool (OpenMP) splits every op across the cores and meets at a barrier after each:
on small cache-sized blocks, and on a shared machine where a core is often taken, those waits cost
more than the op. Here the work is split instead into one independent stream of blocks per core;
torch ops and numpy's ufuncs release the GIL, so the streams run side by side.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")


def threads_for(work_items: int) -> int:
    """How many threads to use: torch's thread count, at most one per work item."""
    return max(1, min(torch.get_num_threads(), work_items))


def run_threads(worker: Callable[[int], T], count: int, stop: threading.Event | None = None) -> list[T]:
    """worker(0), ..., worker(count - 1) on `count` threads with torch on one thread meanwhile
    (restored after); count 1 runs in the caller's thread without touching torch's setting.
    Call it from one thread at a time: torch's thread count is shared (and partly per thread).
    stop: set when a worker fails or the caller is interrupted (Ctrl-C), before waiting for the
    others, so that workers which check it between pieces of work end early."""
    if count <= 1:
        return [worker(0)]
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def in_callers_mode(index: int) -> T:  # grad and inference modes are per thread
        # and so is OpenMP's team size: a new thread's is the machine's, so oneDNN's ops (bf16
        # matmuls, convolutions) ran teams of every core in each stream, oversubscribed and in
        # varying order (a bf16 training step's numbers changed from run to run)
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return worker(index)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [pool.submit(in_callers_mode, index) for index in range(count)]
            try:
                return [future.result() for future in futures]
            except BaseException:
                if stop is not None:
                    stop.set()
                raise
    finally:
        torch.set_num_threads(threads)


def shared_numbers(total: int) -> Callable[[], Iterator[int]]:
    """Work item numbers 0 .. total - 1 for the streams of run_threads, handed out one at a time to
    whichever stream asks next (the counter's next() is atomic under the GIL): each stream loops over
    the result's call. Where another process slows a core, the stream on it takes fewer items,
    instead of a fixed share that the others wait for."""
    taken = itertools.count()

    def numbers() -> Iterator[int]:
        while (number := next(taken)) < total:
            yield number

    return numbers


class StepThreads:
    """torch's thread count for loops of steps made of many short parallel ops (NCA steps, training
    iterations), chosen window by window by timing the steps: the count at the loop's start, or one.

    Each op's OpenMP team meets at a barrier. Where other processes hold the cores, every barrier
    waits for a descheduled thread, and one thread runs several times faster: a 64^3 step beside two
    busy processes took 123 ms on one thread and 562 ms on two (47 and 80 ms on the same 2-core
    machine when quiet); 12 2D training iterations 41 s against 120 s. So a window starts with a
    probe, `probe_steps` steps on each count in turn, judged by their total time (a lucky step on a
    busy machine does not decide; steps of varying length, as iterations of random rollout lengths,
    even out), then runs the winner; windows double (to MAX_WINDOW) while the winner stays. They
    run on across loops (an animation's short rollouts) and start afresh when torch's count or the
    loop's work (a rollout's state shape: another lattice) has changed. A step gives the same state
    on either count, within float rounding (tests/core/test_threads; bit-identical for the bundled
    models' inference steps here).

    Per loop: begin(active, work), `with threads.step():` around each step, end() (torch's count
    back).
    Inactive, or where torch runs one thread, it changes nothing."""

    FIRST_WINDOW, MAX_WINDOW = 32, 256

    def __init__(self, probe_steps: int = 2):
        self.probe_steps = probe_steps
        self.full, self.on = 0, False  # torch's count at the loop's start; whether this loop chooses
        self.work: object = None  # what the windows were chosen for
        self._afresh()

    def _afresh(self) -> None:
        self.probe: list[int] = []  # thread counts of the probe's remaining steps
        self.spent: dict[int, float] = {}  # the probe's seconds per thread count
        self.window, self.left = self.FIRST_WINDOW, 0  # left: the window's steps to run
        self.winner: int | None = None  # the last probe's faster count

    def begin(self, active: bool = True, work: object = None) -> None:
        """Start a loop of steps; `work` names its size (a state shape), so that a loop of another
        size is not run on a count chosen for this one."""
        count = torch.get_num_threads()
        self.on = active and count > 1
        if self.on and (count, work) != (self.full, self.work):
            self.full, self.work = count, work
            self._afresh()

    @contextmanager
    def step(self) -> Iterator[None]:
        if not self.on:
            yield
            return
        if not self.left and not self.probe:
            self.probe, self.spent = [self.full, 1] * self.probe_steps, {}
        if not self.probe:
            torch.set_num_threads(self.winner)
            yield
            self.left -= 1
            return
        count = self.probe.pop(0)
        torch.set_num_threads(count)
        start = time.perf_counter()
        yield
        self.spent[count] = self.spent.get(count, 0.0) + time.perf_counter() - start
        if not self.probe:  # judged: the winner runs a window, longer while it keeps winning
            winner = min(self.spent, key=self.spent.get)
            self.window = min(2 * self.window, self.MAX_WINDOW) if winner == self.winner else self.FIRST_WINDOW
            self.winner, self.left = winner, self.window

    def end(self) -> None:
        """torch's thread count as it was at begin()."""
        if self.on:
            torch.set_num_threads(self.full)
