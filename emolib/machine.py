"""What this machine lets a process use (no heavy imports: the corpus generator, the feature
extraction and the notebook driver all ask)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C, and SIGTERM (which the commands turn into Ctrl-C), wait until the block ends and then
    act as they would have. Only in the main thread, where Python runs signal handlers, and only for
    handlers Python installed; SIGKILL cannot wait. Two uses:

    - around an epoch's ``resume.pt`` and ``history.csv`` (:mod:`emolib.train`): a run stopped between
      the two was listed one epoch behind the one it resumed after;
    - around native code that calls back into Python (openSMILE, :func:`emolib.prosody.extract`): an
      exception raised in a ctypes callback is printed and dropped ("Exception ignored on calling ctypes
      callback function"), so a Ctrl-C there was lost *and* cost the callback its frames: the file's
      LLDs came back one frame short, its functionals all NaN, and both went into the cache as if whole."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    try:  # a signal handled while the deferring handlers go in (SIGTERM just after SIGINT's) puts back those in
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if handler is not None and handler is not signal.SIG_IGN:  # None: installed outside Python
                previous[signum] = handler  # before replacing it: putting it back is harmless either way
                signal.signal(signum, lambda received, frame: caught.append(received))
        yield
    finally:
        # Every handler goes back even when a signal is handled meanwhile (a second Ctrl-C just after
        # SIGINT's is back raises there): the rest are put back all the same, then it is raised.
        # Blocking the two signals instead does not hold: under torch the process has other threads,
        # and the kernel hands a process-wide signal to one that does not block it.
        interrupted: BaseException | None = None
        remaining = list(previous.items())
        while remaining:
            try:
                while remaining:
                    signal.signal(*remaining[0])  # again after an interruption: putting one back twice is harmless
                    remaining.pop(0)
            except BaseException as exc:  # noqa: BLE001 - re-raised once every handler is back
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if caught:
            signal.raise_signal(caught[0])  # now handled as it would have been
