"""CPU inference on Python threads: each thread runs torch ops on one intra-op thread.

torch's intra-op pool (OpenMP) splits every op across the cores and meets at a barrier after each:
on small cache-sized blocks, and on a shared machine where a core is often taken, those waits cost
more than the op. Here the work is split instead into one independent stream of blocks per core;
torch ops and numpy's ufuncs release the GIL, so the streams run side by side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
