"""What this machine lets a process use (no heavy imports: the corpus generator, the feature
extraction and the notebook driver all ask)."""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence, TypeVar

A = TypeVar("A")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, which honours ``taskset`` and a
    container's CPU set (``os.cpu_count`` counts the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class WorkerDied(RuntimeError):
    """A worker process of :func:`forked_map` ended without a result (SIGKILL, the out-of-memory
    killer, a crash in native code); the message says what was kept."""


def forked_map(fn: Callable[[A], R], jobs: Sequence[A], processes: int, what: str,
               chunksize: int = 1) -> Iterator[R]:
    """``fn`` over ``jobs`` in ``processes`` forked processes, yielding the results in order.

    A ``concurrent.futures`` pool, not a ``multiprocessing.Pool``: a Pool replaces a worker that
    dies and waits for ever for the jobs it held, so one worker killed (the OOM killer) or crashed
    on a file hung the command, and every other process waiting on its cache lock, until
    interrupted. Here that raises :class:`WorkerDied`; the results already written stay (every
    writer here writes atomically) and the next run does the rest. An interruption cancels the
    jobs not started (closing the generator does too) and waits only for the running ones."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("fork") if hasattr(os, "fork") else multiprocessing.get_context()
    try:
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            results = pool.map(fn, jobs, chunksize=chunksize)
            try:
                yield from results
            finally:
                results.close()  # cancels the jobs not started, before the pool waits for its running ones
    except BrokenProcessPool as exc:
        raise WorkerDied(f"{what}: a worker process ended abruptly (killed, e.g. by the out-of-memory killer, or "
                         "crashed on one of its files); what the workers finished is kept: run the command again "
                         "to do the rest") from exc
