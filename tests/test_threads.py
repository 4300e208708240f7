"""CPU thread counts: a multi-process launch splits the machine's cores between its processes."""
import pytest

from uvlm.core import threads


@pytest.mark.parametrize("env,expected", [({}, 1), ({"LOCAL_WORLD_SIZE": "2"}, 2), ({"NPROC": "4"}, 4),
                                          ({"LOCAL_WORLD_SIZE": "junk", "NPROC": "3"}, 3)])
def test_local_processes_reads_the_launchers_variables(monkeypatch, env, expected):
    for key in ("LOCAL_WORLD_SIZE", "NPROC"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert threads.local_processes() == expected


def test_cores_are_split_between_local_processes(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 32)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.cores_per_process() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert threads.cores_per_process() == 1  # never zero


def test_a_forked_launch_process_takes_one_thread(monkeypatch):
    """accelerate's notebook_launcher marks the processes it forks; their host thread only
    launches GPU kernels (a thread pool was measured slower once; see uvlm.core.threads)."""
    monkeypatch.setattr(threads, "available_cores", lambda: 32)
    monkeypatch.setenv("NPROC", "2")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("FORK_LAUNCHED", raising=False)
    assert threads.cores_per_process() == 16
    monkeypatch.setenv("FORK_LAUNCHED", "1")
    assert threads.cores_per_process() == 1


def test_stages_side_by_side_share_the_cores(monkeypatch):
    """uvlm.pipeline.repro tells the stages it runs at once how many there are."""
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("UVLM_PARALLEL_STAGES", raising=False)
    assert threads.available_cores() == 16
    monkeypatch.setenv("UVLM_PARALLEL_STAGES", "3")
    assert threads.available_cores() == 5
    monkeypatch.setenv("UVLM_PARALLEL_STAGES", "64")
    assert threads.available_cores() == 1
    monkeypatch.setenv("UVLM_PARALLEL_STAGES", "junk")
    assert threads.available_cores() == 16
