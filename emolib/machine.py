"""What this machine lets a process use (no heavy imports: the corpus generator, the feature
extraction and the notebook driver all ask)."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

A = TypeVar("A")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, which honours ``taskset`` and a container's
    CPU set (``os.cpu_count`` counts the whole machine's), capped by its cgroup's CPU quota, rounded
    up (:func:`cgroup_cpu_limit`). The worker pools, the driver's jobs and torch's threads are sized
    by it: in a container limited to 4 CPUs on a 64-core host they counted 64, and 64 processes, or
    64 threads, then share 4 CPUs' worth of time (and memory)."""
    cores, limit = affinity_cores(), cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit is not None else cores


def affinity_cores() -> int:
    """The cores this process may run on (what OpenMP, and so torch, sizes its threads by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cgroup_cpu_limit(proc: Path = Path("/proc/self")) -> float | None:
    """The CPUs this process's cgroups let it use, the tightest quota of its cgroup and of those above
    it (``docker run --cpus``, a Kubernetes CPU limit), or None without a quota (or off Linux).
    cgroup v2: ``cpu.max`` ("max 100000", or "<quota> <period>" in microseconds); v1: the ``cpu``
    controller's ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``. The folders are found as
    ``/proc/self/cgroup`` and ``/proc/self/mountinfo`` say (a container sees its own cgroup as its root)."""
    try:
        memberships = (proc / "cgroup").read_text().splitlines()
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}  # "v2", or "v1" for the hierarchy holding the cpu controller -> cgroup path
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    limits = []
    for line in mounts:
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1:]
        root, mount_point = fields[3], Path(fields[4].replace("\\040", " "))
        version = {"cgroup2": "v2", "cgroup": "v1"}.get(tail[0])
        if version is None or (version == "v1" and "cpu" not in tail[2].split(",")) or version not in paths:
            continue
        inside = os.path.relpath(paths[version], root)
        if inside.startswith(".."):  # a cgroup this mount does not show
            continue
        folder = mount_point / inside
        while True:
            limits.append(_quota(folder, version))
            if folder == mount_point or mount_point not in folder.parents:
                break
            folder = folder.parent
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


def _quota(folder: Path, version: str) -> float | None:
    """One cgroup folder's CPU quota in CPUs, or None (no quota, or no such file)."""
    try:
        if version == "v2":
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None


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
    writer here writes atomically) and the next run does the rest.

    Ctrl-C is this process's to handle: it cancels the jobs not started (closing the generator does
    too) and waits for the few already handed to a worker (keep ``chunksize`` small: 4 jobs of a few
    ms each). The workers ignore it, so that a Ctrl-C of the terminal, which reaches them too, neither
    fails their jobs nor prints their tracebacks; SIGTERM still ends a worker at once (then
    :class:`WorkerDied`). A second Ctrl-C during that wait is raised once the pool has ended: one
    that interrupted the wait left the workers waiting for ever for the pool's stop message, and the
    command hanging after "interrupted" (found by two Ctrl-Cs of ``make report`` during the corpus
    generation)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("fork") if hasattr(os, "fork") else multiprocessing.get_context()
    # blocked while the workers start (the first submit forks them all), so that none takes a Ctrl-C
    # before it ignores it; one that arrived meanwhile is raised here once they are unblocked
    mask = _block_stopping_signals()
    try:
        pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_worker_ignores_ctrl_c,
                                   initargs=(mask, os.getpid()))
        try:
            results = pool.map(fn, jobs, chunksize=chunksize)
            _unblock(mask)
            yield from results
        finally:
            # a second Ctrl-C waits until the pool has ended: one that interrupted this wait left the
            # workers waiting for the pool's stop message and the command hanging at exit
            with interrupts_deferred():
                _unblock(mask)
                pool.shutdown(wait=True, cancel_futures=True)  # the jobs not started go, the running ones end
    except BrokenProcessPool as exc:
        raise WorkerDied(f"{what}: a worker process ended abruptly (killed, e.g. by the out-of-memory killer, or "
                         "crashed on one of its files); what the workers finished is kept: run the command again "
                         "to do the rest") from exc
    finally:
        _unblock(mask)


_STOPPING = (signal.SIGINT, signal.SIGTERM)


def _block_stopping_signals() -> set | None:
    """Block Ctrl-C and SIGTERM in this thread (a forked child inherits that); returns the mask to put
    back, or None where signal masks do not exist (Windows)."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING) if hasattr(signal, "pthread_sigmask") else None


def _unblock(mask: set | None) -> None:
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _worker_ignores_ctrl_c(mask: set | None, parent: int | None = None) -> None:
    """A :func:`forked_map` worker's first act: ignore Ctrl-C, end with its parent, then take
    signals again."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        end_with_parent(parent)
    _unblock(mask)


def end_with_parent(parent: int, interval: float = 1.0) -> None:
    """This forked process ends when ``parent`` does, however that ends (``kill -9``, the
    out-of-memory killer). A worker inherits its parent's open files, and so the locks its parent
    holds on a run or a cache folder (``flock`` belongs to the open file, which the fork shares):
    a worker that outlived a killed command held them for ever, and every later command waited
    for "another process (pid N)" that no longer existed. On Linux the kernel sends SIGKILL at the
    parent's death (``PR_SET_PDEATHSIG``; what a worker has written is whole, every writer here
    writes atomically); elsewhere a thread looks every ``interval`` seconds."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0:  # 1: PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before the request took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no prctl to call: the thread below

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="emolib-parent-watch").start()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C, and SIGTERM (which the commands turn into Ctrl-C), wait until the block ends and then
    act as they would have. Only in the main thread, where Python runs signal handlers, and only for
    handlers Python installed; SIGKILL cannot wait. For short steps that must not be cut:

    - an epoch's ``resume.pt`` and ``history.csv`` (:mod:`emolib.train`): a run stopped between the two
      was listed one epoch behind the one it resumed after;
    - native code that calls back into Python (openSMILE, :func:`emolib.prosody.extract`): an exception
      raised in a ctypes callback is printed and dropped ("Exception ignored on calling ctypes callback
      function"), so a Ctrl-C there was lost *and* cost the callback its frames: the file's LLDs came
      back one frame short, its functionals all NaN, and both went into the cache as if whole;
    - a forked child until it is reaped (:func:`emolib.corpora.espeak.synthesize`), and a worker pool
      until it has stopped (:func:`forked_map`)."""
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


# -- the same floats on every x86-64 CPU -------------------------------------------------------------

#: What ``EMOLIB_NUMERICS=portable`` (the default) sets, each unless the user set it. Each library that
#: computes emolib's floats on a CPU picks its kernels for the CPU it runs on (AVX2, AVX-512, AMX), and
#: the kernels add in different orders: a model trained on one CPU differs in the last bits from the same
#: model trained on another, and training grows the difference into other checkpoints and other scores.
#: Measured: the committed report, rebuilt from the same commit on a Xeon with AVX-512 and AMX, gave the
#: prosodic teacher 54.33 UA instead of 56.00 and moved six of Table 2's eight rows by 0.2 to 1.6 points (README, "Results").
#: Capped at AVX2 (Intel since 2013, AMD since 2015), every Intel CPU that has it runs the same kernels
#: (AMD CPUs differ in MKL's vector math, ``exp``: emolib.fingerprint says what was measured):
#: - PyTorch's own vectorised kernels (ATen dispatch, read at the first torch operation);
#: - oneDNN, torch's convolutions (its ISA cap, read at its first use);
#: - Intel MKL, torch's matrix products: Conditional Numerical Reproducibility (MKL's developer guide,
#:   "Obtaining Numerically Reproducible Results"), the same results on every CPU with AVX2, and in its
#:   strict mode whatever the number of threads (measured: Whisper's states on 1 and 2 threads differed in
#:   55 % of their values without it, in none with it; so a laptop's 8 cores give what CI's 2 give);
#: - OpenBLAS, numpy's and scipy's (the probes' logistic regressions), pinned to its Haswell kernels.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "OPENBLAS_CORETYPE": "Haswell",
}
NUMERICS_MODES = ("portable", "native")


def numerics_mode(environ=os.environ) -> str:
    """``EMOLIB_NUMERICS``: ``portable`` (default) or ``native`` (each library's fastest kernels for this
    CPU: faster on CPUs with AVX-512, and results that only the same kind of CPU reproduces)."""
    value = environ.get("EMOLIB_NUMERICS", "").strip().lower()
    if value and value not in NUMERICS_MODES:  # a typo must not silently give the other mode's figures
        raise ValueError(f"EMOLIB_NUMERICS={environ['EMOLIB_NUMERICS']!r}: must be portable or native "
                         "(README, \"The same figures on every machine\")")
    return value or "portable"


def env_threads(environ=os.environ) -> int:
    """``EMOLIB_THREADS``: torch's CPU threads for training (0 or unset: not set by emolib)."""
    value = environ.get("EMOLIB_THREADS", "").strip()
    if value and not value.isdigit():
        raise ValueError(f"EMOLIB_THREADS={value!r}: must be a whole number of threads (0: torch's default)")
    return int(value or 0)


def _cpuinfo_field(name: str, cpuinfo: Path) -> str | None:
    """The first ``name`` line's value in ``/proc/cpuinfo`` (None outside Linux, or without one)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has AVX2 and FMA (what the portable kernels use). Read from ``/proc/cpuinfo``:
    outside Linux, or on another architecture (ARM: Apple silicon, Graviton), False."""
    return {"avx2", "fma"} <= set((_cpuinfo_field("flags", cpuinfo) or "").split())


def portable_env(environ=os.environ, cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The variables :data:`PORTABLE_ENV` adds to ``environ``: none in ``native`` mode, on a CPU
    without AVX2, or for a variable the user set."""
    if numerics_mode(environ) != "portable" or not has_avx2(cpuinfo):
        return {}
    return {k: v for k, v in PORTABLE_ENV.items() if k not in environ}


def apply_portable_numerics(environ=os.environ, modules=None) -> list[str]:
    """Set :func:`portable_env` in ``environ``; return a warning when torch (in ``modules``, default
    ``sys.modules``) has computed something already, and so keeps the kernels it chose."""
    import sys

    modules = sys.modules if modules is None else modules
    added = portable_env(environ)
    environ.update(added)
    late = []
    torch = modules.get("torch")
    if "ATEN_CPU_CAPABILITY" in added and torch is not None and torch.backends.cpu.get_cpu_capability() != "AVX2":
        late.append(f"torch computed something before emolib was imported: this process keeps its "
                    f"{torch.backends.cpu.get_cpu_capability()} kernels")
    # numpy's OpenBLAS reads its variable when numpy loads, which ``import torch`` does: after that import
    # it keeps its own kernels, said nowhere, because it only computes the probes' logistic regressions
    # (notebook 00_data, which the driver starts with the variable set) and that is common.
    return [f"{what}, and results that depend on them match only machines with the same CPU; import emolib "
            "first for portable numerics (EMOLIB_NUMERICS in the README)" for what in late]


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """``vendor_id`` in ``/proc/cpuinfo`` (``GenuineIntel``, ``AuthenticAMD``), None elsewhere."""
    return _cpuinfo_field("vendor_id", cpuinfo)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's name (``model name`` in ``/proc/cpuinfo``; else :func:`platform.processor`)."""
    import platform

    name = _cpuinfo_field("model name", cpuinfo)
    return " ".join(name.split()) if name else (platform.processor() or platform.machine() or "unknown")


def numerics() -> dict[str, str]:
    """How this process computes floats on the CPU, for a run's ``metrics.json``: ``mode`` is
    ``portable`` when every library is capped at AVX2 (:data:`PORTABLE_ENV`), whoever set it, else
    ``native``; ``isa`` is what PyTorch's kernels use; ``vendor`` is the CPU's. Results agree to the
    bit across machines when ``mode`` is ``portable`` on both and both CPUs are Intel's (with any
    thread counts; an AMD CPU's vector maths differs, see :mod:`emolib.fingerprint`), or when ``cpu``
    is the same (with the same thread counts)."""
    import platform

    import torch

    caps = {k: os.environ.get(k) for k in PORTABLE_ENV}  # exactly what was set (None: unset)
    return {"mode": "portable" if caps == PORTABLE_ENV else "native", "isa": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu_model(), "vendor": cpu_vendor(), "machine": platform.machine(), "torch": torch.__version__,
            "caps": caps}


def numerics_label(record: dict | None) -> str:
    """One line for a report's stamp: ``portable (AVX2)`` (on an Intel CPU: the same bits on any of
    them), ``portable (AVX2) on <cpu>`` (another vendor's: its own bits), or ``native AVX512 on <cpu>``;
    ``unrecorded`` for a run made before runs recorded it. Records from before ``vendor`` was
    recorded were all made on Intel CPUs."""
    if not record:
        return "unrecorded"
    if record.get("mode") == "portable":
        label = f"portable ({record.get('isa', '?')})"
        return label if record.get("vendor", "GenuineIntel") == "GenuineIntel" else f"{label} on {record.get('cpu', '?')}"
    return f"native {record.get('isa', '?')} on {record.get('cpu', '?')}"
