"""CPU inference on Python threads (core.threads) gives the single-thread results: the same blocks
through the same ops, within float rounding (MKL may round a last bit apart in another thread)."""

import time

import pytest
import torch

from nca3d.core import lppn, nca
from nca3d.core.nca import make_generator
from nca3d.core.threads import StepThreads, run_threads, shared_numbers, threads_for
from nca3d.lattices import Grid2D, Grid3D, MeshLattice, SurfacePoints, icosphere
from tests.conftest import random_model


@pytest.fixture
def threads():
    """Run a test body at torch thread count n: threads(n); the count is restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_run_threads_keeps_order_modes_and_restores_the_thread_count(threads):
    threads(3)
    with torch.inference_mode():
        seen = run_threads(lambda i: (i, torch.get_num_threads(), torch.is_inference_mode_enabled()), 3)
    assert seen == [(0, 1, True), (1, 1, True), (2, 1, True)]
    assert torch.get_num_threads() == 3
    assert threads_for(2) == 2 and threads_for(10) == 3 and threads_for(0) == 1


def test_a_failing_worker_sets_stop_and_the_others_end_early(threads):
    """Workers that pull pieces of work until `stop` is set end soon after one of them fails,
    instead of finishing all the work first; the failure reaches the caller."""
    import threading
    import time

    threads(2)
    stop, done = threading.Event(), []

    def worker(index: int) -> None:
        if index == 0:
            time.sleep(0.05)
            raise ValueError("broken")
        while not stop.is_set() and len(done) < 400:  # 400 pieces: 4 s without the stop
            time.sleep(0.01)
            done.append(1)

    with pytest.raises(ValueError, match="broken"):
        run_threads(worker, 2, stop=stop)
    assert stop.is_set() and len(done) < 100
    assert torch.get_num_threads() == 2


def test_shared_numbers_go_to_whichever_stream_is_free(threads):
    """Every item once; a stream slowed 10x (a core another process holds) takes few of them."""
    threads(2)
    numbers, taken = shared_numbers(60), [[], []]

    def stream(index: int) -> None:
        for number in numbers():
            time.sleep(0.01 if index == 0 else 0.001)
            taken[index].append(number)

    run_threads(stream, 2)
    assert sorted(taken[0] + taken[1]) == list(range(60))
    assert len(taken[0]) < 15


def _counts_of_steps(chooser: StepThreads, slow_count: int, loops: list[int]) -> list[int]:
    """The thread count of each step that `chooser` chose over loops of the given step counts, when
    a step takes 8 ms on `slow_count` threads and 1 ms on the other count."""
    counts = []
    for steps in loops:
        chooser.begin()
        try:
            for _ in range(steps):
                with chooser.step():
                    counts.append(torch.get_num_threads())
                    time.sleep(0.008 if counts[-1] == slow_count else 0.001)
        finally:
            chooser.end()
    return counts


def test_step_threads_run_the_faster_count_and_probe_again_less_often(threads):
    """Each window probes 2 steps on torch's count and 2 on one thread in turn, then runs the faster:
    one thread where the cores are taken (slow steps on 2), else torch's. The windows double while
    the winner stays (32, 64, ...), run on across short loops, and torch's count is restored."""
    probe = [2, 1, 2, 1]
    threads(2)
    counts = _counts_of_steps(StepThreads(), slow_count=2, loops=[110])
    assert counts == probe + [1] * 32 + probe + [1] * 64 + probe + [1] * 2
    assert torch.get_num_threads() == 2
    chooser = StepThreads()
    counts = _counts_of_steps(chooser, slow_count=1, loops=[3] * 14)  # an animation's short rollouts
    assert counts == probe + [2] * 32 + probe + [2] * 2
    assert torch.get_num_threads() == 2
    threads(3)  # another count: a fresh probe
    assert _counts_of_steps(chooser, slow_count=1, loops=[5]) == [3, 1, 3, 1, 3]
    chooser.begin(work=(2, 64, 64, 12))  # another lattice: a fresh probe too (its first step on 3)
    with chooser.step():
        assert torch.get_num_threads() == 3 and chooser.probe == [1, 3, 1]
    chooser.end()
    threads(1)  # nothing to choose
    assert _counts_of_steps(chooser, slow_count=2, loops=[5]) == [1] * 5


def test_a_probe_judges_by_total_time_not_one_lucky_step(threads):
    """Steps of varying length (training iterations): 3 on each count in turn; on 2 threads one step
    is fast (a moment the cores were free) but the total is slow, so one thread wins."""
    threads(2)
    chooser, counts = StepThreads(probe_steps=3), []
    lengths = iter([0.001, 0.003, 0.015, 0.003, 0.015, 0.003] + [0.001] * 40)
    chooser.begin()
    for _ in range(38):
        with chooser.step():
            counts.append(torch.get_num_threads())
            time.sleep(next(lengths))
    chooser.end()
    assert counts == [2, 1] * 3 + [1] * 32


def test_step_threads_are_inactive_for_training_and_restore_after_a_failure(threads):
    threads(2)
    chooser = StepThreads()
    chooser.begin(active=False)
    with chooser.step():
        assert torch.get_num_threads() == 2
    chooser.end()
    chooser.begin()
    with pytest.raises(ValueError, match="broken"):
        try:
            for _ in range(3):  # the probe's first step runs on 2 threads, the second on 1
                with chooser.step():
                    if torch.get_num_threads() == 1:
                        raise ValueError("broken")
        finally:
            chooser.end()
    assert torch.get_num_threads() == 2


LATTICES = {"2d": lambda: Grid2D(12), "volume": lambda: Grid3D(6), "mesh": lambda: MeshLattice(*icosphere(3))}


@pytest.mark.parametrize("domain", list(LATTICES))
def test_threaded_inference_step_equals_the_single_thread_one(domain, threads, monkeypatch):
    monkeypatch.setattr(nca, "BLOCK_CELLS", 50)  # several blocks per step
    torch.manual_seed(0)
    model = random_model(domain)
    lattice = LATTICES[domain]()
    seed = torch.randn(2, *lattice.cell_shape, 16) * 0.1
    results = []
    for count in (1, 2):
        threads(count)
        with torch.inference_mode():
            results.append(model.rollout(seed, lattice, 3, make_generator(1)))
    assert (results[0] - results[1]).abs().max() < 1e-6


@pytest.mark.parametrize("domain", list(LATTICES))
def test_threaded_decode_equals_the_single_thread_one(domain, threads, monkeypatch):
    monkeypatch.setattr(lppn, "BLOCK_ROWS", 100)  # several SIREN blocks per chunk
    torch.manual_seed(1)
    model = random_model(domain)
    lattice = LATTICES[domain]()
    state = torch.randn(2, *lattice.cell_shape, 16)
    if domain == "mesh":
        bary = torch.rand(1000, 3)
        query = SurfacePoints(torch.randint(0, lattice.faces.shape[0], (1000,)), bary / bary.sum(1, keepdim=True))
    else:
        query = torch.rand(1000, len(lattice.cell_shape)) * 20
    results = []
    for count in (1, 2):
        threads(count)
        with torch.inference_mode():
            results.append(model.decode(state, lattice, query, chunk=600))
            results.append(model.lppn.fast(torch.randn(999, model.lppn.layers[0].in_features,
                                                       generator=torch.Generator().manual_seed(2))))
    assert (results[0] - results[2]).abs().max() < 1e-6 and (results[1] - results[3]).abs().max() < 1e-6
