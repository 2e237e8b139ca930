"""Tasks over worker processes: every result comes back, errors and dead workers stop the run
loudly, and no worker outlives it (normal end, an error, Ctrl-C, or the parent SIGKILLed)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from landmarks.workers import WorkerTraceback, resolve_processes, run_in_processes, run_in_threads, split_threads

REPO = Path(__file__).resolve().parents[1]


def pid_worker(threads: int):
    """Each task: (payload, the worker's pid, its thread count)."""
    return lambda payload: (payload, os.getpid(), threads)


def failing_worker(threads: int):
    def fn(payload: int) -> int:
        if payload == 13:
            raise OSError(28, "No space left on device")
        if payload == 14:
            raise ValueError(threading.Lock())  # holds a lock: cannot be pickled
        return payload
    return fn


def dying_worker(threads: int):
    def fn(payload: int) -> int:
        if payload == 7:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        time.sleep(0.01)
        return payload
    return fn


def test_split_threads_and_resolve_processes(monkeypatch):
    assert split_threads(32, 3) == [11, 11, 10] and split_threads(4, 4) == [1, 1, 1, 1]
    monkeypatch.setattr("landmarks.workers.usable_cores", lambda: 6)
    assert resolve_processes("auto", 32) == 6
    assert resolve_processes("auto", 4) == 4  # each process needs a thread
    assert resolve_processes(3, 32) == 3
    with pytest.raises(ValueError, match="processes=0 is not valid"):
        resolve_processes(0, 32)


def test_every_task_runs_once_in_the_worker_processes():
    items = [(f"k{i}", i) for i in range(200)]
    results = dict(run_in_processes(items, pid_worker, (), processes=3, threads=7))
    assert sorted(results) == sorted(k for k, _ in items)
    assert all(results[f"k{i}"][0] == i for i in range(200))
    threads = {pid: n for _, pid, n in results.values()}
    assert len(threads) == 3 and os.getpid() not in threads
    assert sorted(threads.values()) == [2, 2, 3]
    assert not multiprocessing.active_children()


def affinity_worker(threads: int):
    return lambda payload: (os.getpid(), tuple(sorted(os.sched_getaffinity(0))))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_pinned_workers_each_run_on_one_core_of_the_parents_in_turn():
    cores = sorted(os.sched_getaffinity(0))
    results = dict(run_in_processes([(i, i) for i in range(60)], affinity_worker, (), processes=3, threads=6, pin=True))
    affinity = dict(results.values())  # pid -> the cores it may run on
    assert len(affinity) == 3 and all(len(c) == 1 and c[0] in cores for c in affinity.values())
    # Round robin over the parent's cores: as many distinct cores as there can be.
    assert len({c[0] for c in affinity.values()}) == min(3, len(cores))
    unpinned = dict(run_in_processes([(i, i) for i in range(20)], affinity_worker, (), processes=2, threads=2))
    assert set(dict(unpinned.values()).values()) == {tuple(cores)}


def test_threads_yield_the_same_pairs_as_processes():
    items = list(range(50))
    assert sorted(run_in_threads(items, lambda i: i * i, 4)) == [(i, i * i) for i in items]


def test_an_exception_in_a_task_is_raised_in_the_parent_with_the_workers_traceback():
    with pytest.raises(OSError, match="No space left on device") as err:
        list(run_in_processes([(i, i) for i in range(14)], failing_worker, (), processes=2, threads=4))
    assert isinstance(err.value.__cause__, WorkerTraceback)
    assert "in fn" in str(err.value.__cause__)  # where it happened, in the worker
    assert not multiprocessing.active_children()

    with pytest.raises(RuntimeError, match="ValueError: <unlocked _thread.lock"):
        list(run_in_processes([(i, i) for i in range(14, 30)], failing_worker, (), processes=2, threads=4))


def test_a_worker_that_dies_stops_the_run_with_its_name_and_ends_the_others():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker process worker-\d \(pid \d+\) was killed by signal 9 with \d+ tasks unfinished"):
        list(run_in_processes([(i, i) for i in range(200)], dying_worker, (), processes=2, threads=4))
    assert time.monotonic() - start < 10
    assert not multiprocessing.active_children()


def slow_worker(threads: int):
    return lambda payload: time.sleep(0.05) or payload


def test_closing_early_ends_the_workers():
    run = run_in_processes([(i, i) for i in range(1000)], slow_worker, (), processes=2, threads=2)
    next(run)
    run.close()
    assert not multiprocessing.active_children()


SCRIPT = """
from landmarks.workers import run_in_processes
from tests.test_workers import slow_worker
for n, _ in enumerate(run_in_processes(((i, i) for i in range(100000)), slow_worker, (), processes=2, threads=4)):
    if n == 20:
        print("running", flush=True)
"""


def processes_in_group(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def start_script() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline() == "running\n", proc.stderr.read()
    assert len(processes_in_group(proc.pid)) == 3  # the parent and its two workers
    return proc


def wait_until_gone(pgid: int, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_in_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_ends_the_parent_and_every_worker():
    proc = start_script()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
    try:
        assert proc.wait(timeout=10) != 0
        assert "KeyboardInterrupt" in proc.stderr.read()
        assert wait_until_gone(proc.pid) == []
    finally:
        proc.kill()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_stop_when_their_parent_is_killed():
    proc = start_script()
    proc.send_signal(signal.SIGKILL)  # the parent alone: no finally, no atexit
    proc.wait()
    left = wait_until_gone(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "orphaned workers kept running"
