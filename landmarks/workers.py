"""Many small tasks in parallel: threads in this process, or threads in several worker processes.

Threads suit work that waits (a request in flight); work that computes in Python holds the GIL,
so one process runs about one core's worth of it however many threads it has. `run_in_processes`
spreads the tasks over worker processes, each running its share of the threads:

- the parent hands out tasks as the workers finish them (a few per thread in hand), so a slow
  process or a run of slow tasks does not leave the other cores idle, and yields each result as
  it arrives; the caller sees the same (key, result) pairs as from `run_in_threads`;
- each worker builds its task function once (`make_worker`: clients, caches) and runs it in its
  threads; an exception a task raises is raised again in the parent, with the worker's traceback;
- with `pin=True` each worker is bound to one core of the parent's (round robin): its threads then
  hand the GIL over on that core, instead of waking each other across cores (an inter-processor
  interrupt per handoff, dear in a VM), which cost the downloader a tenth of its throughput;
- a worker that dies (killed, out of memory, a crash in C) stops the run with a RuntimeError
  naming it; on Ctrl-C or any error the parent ends every worker before it returns, and a worker
  whose parent is gone (even SIGKILLed) stops at once: no process outlives the run.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from typing import Any

# Tasks each thread has in hand or queued: enough that a worker never waits for the parent's next
# batch (a round trip), few enough that the tasks stay spread evenly to the end.
TASKS_PER_THREAD = 2
STOP_TIMEOUT = 10.0  # seconds a worker gets to exit after its last result before it is killed


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_processes(value: int | str, threads: int) -> int:
    """`auto`: one process per usable core; never more processes than threads (each needs one)."""
    if value == "auto":
        value = usable_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"processes={value!r} is not valid; use auto or an integer >= 1")
    return max(1, min(value, threads))


def split_threads(threads: int, processes: int) -> list[int]:
    """`threads` shared out over `processes` as evenly as possible (the first ones get the remainder)."""
    return [threads // processes + (k < threads % processes) for k in range(processes)]


def run_in_threads(items: Iterable[Any], fn: Callable[[Any], Any], threads: int) -> Iterator[tuple[Any, Any]]:
    """Yield (item, fn(item)) as they complete, keeping a few tasks per thread queued: memory stays
    flat for any number of items, and each completion costs O(1) (a queue), not a scan of futures."""
    done: queue.SimpleQueue = queue.SimpleQueue()

    def task(item: Any) -> None:
        try:
            done.put((item, fn(item), None))
        except BaseException as e:  # re-raised in the caller's thread
            done.put((item, None, e))

    pending = iter(items)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="worker")
    try:
        running = 0
        for item in itertools.islice(pending, 4 * threads):
            pool.submit(task, item)
            running += 1
        while running:
            item, result, error = done.get()
            running -= 1
            if error is not None:
                raise error
            for nxt in itertools.islice(pending, 1):
                pool.submit(task, nxt)
                running += 1
            yield item, result
    finally:
        # On Ctrl-C (or an error) drop queued work; running tasks end on their own (their timeouts).
        pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Worker processes


class _Raised:
    """An exception a task raised, carried to the parent with the worker's traceback."""

    def __init__(self, error: BaseException) -> None:
        self.traceback = "".join(traceback.format_exception(error))
        try:
            pickle.dumps(error)
        except Exception:  # e.g. an exception holding a socket: keep its type and message
            error = RuntimeError(f"{type(error).__name__}: {error}")
        self.error = error


class WorkerTraceback(Exception):
    """The traceback, in the worker process, of an exception raised again in the parent."""


def _context() -> multiprocessing.context.BaseContext:
    # fork on Linux: a worker starts in milliseconds with the parent's modules already imported
    # (spawn re-imports pandas, requests and Pillow: about a second per worker). Forking a process
    # that runs threads is safe as long as the child touches no lock one of them may have held:
    # the workers are forked before the run starts threads and use only what they create (their
    # session, threads and pipes). Elsewhere fork is unsafe (macOS) or missing (Windows).
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def run_in_processes(items: Iterable[tuple[Any, Any]], make_worker: Callable[..., Callable[[Any], Any]],
                     args: tuple, *, processes: int, threads: int, pin: bool = False) -> ProcessRun:
    """Start `processes` workers now, each running `fn = make_worker(*args, its_threads)` in its share of
    `threads` threads (and bound to one core if `pin`, where the platform allows); the returned
    iterator yields (key, fn(payload)) for each (key, payload) of `items` as they complete. Close it
    (or exhaust it) to end the workers.

    Keys and payloads travel between processes (pickled): keep them small. `make_worker` and `args`
    must be picklable where workers are spawned rather than forked (not on Linux).
    """
    if processes < 1 or threads < processes:
        raise ValueError(f"processes={processes} and threads={threads}: need 1 <= processes <= threads")
    cores = sorted(os.sched_getaffinity(0)) if pin and hasattr(os, "sched_setaffinity") else []
    return ProcessRun(iter(items), make_worker, args, split_threads(threads, processes), cores)


class ProcessRun:
    """The workers of one run_in_processes call, and the iterator over their results."""

    def __init__(self, pending: Iterator[tuple[Any, Any]], make_worker: Callable, args: tuple, shares: list[int],
                 cores: list[int]):
        ctx = _context()
        self._workers: list[_Worker] = []
        try:
            for k, share in enumerate(shares):
                self._workers.append(_Worker.start(ctx, make_worker, args, share,
                                                   [c for w in self._workers for c in (w.tasks, w.results)],
                                                   name=f"worker-{k}", core=cores[k % len(cores)] if cores else None))
            for _ in range(TASKS_PER_THREAD):  # a task per thread to every worker first: a short run is spread too
                for w in self._workers:
                    w.feed(pending, w.threads)
        except BaseException:
            self.close()
            raise
        self._results = self._collect(pending)

    def __iter__(self) -> ProcessRun:
        return self

    def __next__(self) -> tuple[Any, Any]:
        return next(self._results)

    def close(self) -> None:
        """End every worker now (after an error or Ctrl-C); a no-op for those already stopped."""
        for w in self._workers:
            w.kill()

    def _collect(self, pending: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        workers = self._workers
        by_conn = {w.results: w for w in workers}
        try:
            while any(w.in_hand for w in workers):
                for conn in wait([w.results for w in workers if w.in_hand]):
                    w = by_conn[conn]
                    for key, result in w.receive():
                        if isinstance(result, _Raised):
                            raise result.error from WorkerTraceback(result.traceback)
                        yield key, result
                    w.feed(pending, TASKS_PER_THREAD * w.threads - w.in_hand)
            for w in workers:
                w.stop()
        finally:
            self.close()


class _Worker:
    """The parent's handle on one worker process: its pipes and the tasks it has in hand."""

    def __init__(self, process: multiprocessing.process.BaseProcess, tasks: Connection, results: Connection, threads: int):
        self.process, self.tasks, self.results, self.threads = process, tasks, results, threads
        self.in_hand = 0

    @classmethod
    def start(cls, ctx, make_worker, args, threads: int, parent_ends: list[Connection], name: str,
              core: int | None) -> _Worker:
        tasks_r, tasks_w = ctx.Pipe(duplex=False)
        results_r, results_w = ctx.Pipe(duplex=False)
        # A forked worker inherits the parent's ends of its own pipes and of the earlier workers'
        # (`parent_ends`): it closes them, or a worker would not see its parent go (end of file
        # on its tasks) while a later one lives. A spawned worker inherits nothing.
        inherited = [tasks_w, results_r, *parent_ends] if ctx.get_start_method() == "fork" else []
        process = ctx.Process(target=_serve, name=name, daemon=True,
                              args=(tasks_r, results_w, make_worker, (*args, threads), threads, inherited, core))
        process.start()
        # Only the worker keeps its ends: its death then reads as end of file here.
        tasks_r.close()
        results_w.close()
        return cls(process, tasks_w, results_r, threads)

    def feed(self, pending: Iterator, count: int) -> None:
        batch = list(itertools.islice(pending, max(0, count)))
        if batch:
            self.tasks.send(batch)
            self.in_hand += len(batch)

    def receive(self) -> list[tuple[Any, Any]]:
        try:
            batch = self.results.recv()
        except (EOFError, OSError):
            raise self.died() from None
        self.in_hand -= len(batch)
        return batch

    def died(self) -> RuntimeError:
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        how = ("closed its pipe" if code is None else f"was killed by signal {-code}" if code < 0
               else f"exited with status {code}")
        return RuntimeError(f"worker process {self.process.name} (pid {self.process.pid}) {how} with "
                            f"{self.in_hand} tasks unfinished; its output (on stderr) may say why")

    def stop(self) -> None:
        """Tell the worker that no task will follow and wait for it to exit."""
        try:
            self.tasks.send(None)
        except OSError:  # it exited already; it had delivered all its results
            pass
        self.process.join(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()  # SIGKILL: its tasks are abandoned as if the whole run were killed
        self.process.join()
        self.tasks.close()
        self.results.close()


def _serve(tasks: Connection, results: Connection, make_worker: Callable, args: tuple, threads: int,
           inherited: list[Connection], core: int | None) -> None:
    """A worker process: run the tasks that arrive on `tasks` in `threads` threads, send the results back."""
    # Ctrl-C reaches the whole process group; the parent decides what happens (it ends us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for conn in inherited:
        conn.close()
    if core is not None:
        os.sched_setaffinity(0, {core})
    fn = make_worker(*args)
    done: queue.SimpleQueue = queue.SimpleQueue()

    def run(key: Any, payload: Any) -> None:
        try:
            done.put((key, fn(payload)))
        except BaseException as e:
            done.put((key, _Raised(e)))

    sender = threading.Thread(target=_send_results, args=(done, results), name="results", daemon=True)
    sender.start()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="worker")
    while True:
        try:
            batch = tasks.recv()
        except (EOFError, OSError):  # the parent is gone: stop now, as if killed with it
            os._exit(1)
        if batch is None:
            break
        for key, payload in batch:
            pool.submit(run, key, payload)
    pool.shutdown(wait=True)
    done.put(None)
    sender.join()


def _send_results(done: queue.SimpleQueue, results: Connection) -> None:
    """Send results as they complete, all those waiting in one message (fewer, larger writes)."""
    while True:
        batch = [done.get()]
        while True:
            try:
                batch.append(done.get_nowait())
            except queue.Empty:
                break
        last = batch[-1] is None
        batch = [r for r in batch if r is not None]
        if batch:
            try:
                results.send(batch)
            except OSError:  # the parent is gone
                os._exit(1)
        if last:
            return
