"""torch's intra-op CPU thread count, set for one block of work and then restored.

Every CPU-heavy stage takes a ``threads`` key. 1 is the default on purpose: on a
shared 2-core machine, two OpenMP threads that wait on each other were measured
4-100x slower than one, while on an idle machine two threads gained at most ~1.5x.
"""
from __future__ import annotations

import contextlib
import os


def available_cores() -> int:
    """The cores this process's stage may use: the machine's (its affinity mask), divided among the
    stages that uvlm.pipeline.repro runs side by side (UVLM_PARALLEL_STAGES)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // parallel_stages())


# Set by uvlm.pipeline.repro for the stages it runs side by side: how many there are at once.
PARALLEL_STAGES_ENV = "UVLM_PARALLEL_STAGES"


def _count_from_env(*keys: str) -> int:
    """The first of ``keys`` set to an integer (at least 1); 1 if none is."""
    for key in keys:
        try:
            return max(1, int(os.environ[key]))
        except (KeyError, ValueError):
            continue
    return 1


def parallel_stages() -> int:
    return _count_from_env(PARALLEL_STAGES_ENV)


def local_processes() -> int:
    """How many processes of one multi-process launch share this machine: torchrun / `accelerate
    launch` set LOCAL_WORLD_SIZE, accelerate's notebook_launcher NPROC; 1 outside a launch."""
    return _count_from_env("LOCAL_WORLD_SIZE", "NPROC")


def cores_each(processes: int) -> int:
    """One process's share of the cores when ``processes`` run on the machine at once: on CPU
    they do the work, on a GPU they tokenise and launch kernels, and N processes of all-core
    thread pools thrash each other."""
    return max(1, available_cores() // max(1, processes))


def cores_per_process() -> int:
    """This process's share of the cores when a launch started several on the machine: two
    processes with a thread pool of every core each oversubscribe it, and their spinning
    OpenMP workers delay the host thread that launches the GPU's kernels.

    A process that accelerate's ``notebook_launcher`` forked (FORK_LAUNCHED; uvlm forks GPU
    training only, ``uvlm.train.loop.launch_run``) takes one thread: on 2x H200 at the gpu preset its
    steps once took 40.8 ms with its 16-core share and 35.3 ms with one thread. Repeated on
    another machine the two settings overlapped within its drift, one thread never slower in a
    pair (records/bench/ddp-launchers/rerun/)."""
    if os.environ.get("FORK_LAUNCHED") == "1":
        return 1
    return cores_each(local_processes())


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with ``n`` threads (0: every core this process may use; None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, n or available_cores()))
    try:
        yield
    finally:
        torch.set_num_threads(before)
