"""Progress reporting: a bar when a person is watching, one line per step in batch runs.

Under papermill every tqdm refresh becomes a line of output, so the run driver sets
``EMOLIB_PROGRESS=log`` for the kernels it starts; JupyterLab and terminals get bars.

In log mode a long step also prints a line every :data:`LOG_EVERY` seconds (done, total,
elapsed, an estimate of what is left): extracting a large corpus's features takes hours
(20,000 clips of eGeMAPS: 11 minutes on 2 cores; MSP-Podcast has 150,000), and a batch log
that says nothing for that long cannot be told from a hung job.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
MODES = ("bar", "log", "none")
#: Seconds between two lines of one step in log mode (a start and an end line always).
LOG_EVERY = 60.0


def mode(requested: str = "auto") -> str:
    """Resolve ``"auto"``: ``EMOLIB_PROGRESS`` if set, else a bar for a terminal or an
    interactive notebook, else one log line per step."""
    if requested != "auto":
        if requested not in MODES:
            raise ValueError(f"progress must be one of auto, {', '.join(MODES)}; got {requested!r}")
        return requested
    env = env_mode()
    if env:
        return env
    if _in_kernel() or sys.stderr.isatty():
        return "bar"
    return "log"


def env_mode(environ=os.environ) -> str | None:
    """``EMOLIB_PROGRESS``: one of :data:`MODES`, None when unset."""
    env = environ.get("EMOLIB_PROGRESS", "").strip()
    if env and env not in MODES:
        raise ValueError(f"EMOLIB_PROGRESS={env!r}: must be one of {', '.join(MODES)}")
    return env or None


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (not merely in a process that imported
    ipykernel, as the run driver and its tests do)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _clock() -> float:
    return time.perf_counter()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_bar(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """tqdm in bar mode; in log mode a start line, a line every :data:`LOG_EVERY` seconds while
    the step lasts (with ``total``, or an iterable that has a length: the share done and an
    estimate of the time left), and an end line with the elapsed time."""
    m = mode("auto") if enabled else "none"
    if m == "bar":
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, leave=False)
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    start = last = _clock()
    if m == "log":
        print(f"{desc} ...", flush=True)
    n = 0
    for n, item in enumerate(iterable, start=1):
        yield item
        if m == "log" and (now := _clock()) - last >= LOG_EVERY:
            last = now
            elapsed = now - start
            if total:
                left = elapsed * (total - n) / n
                print(f"{desc}: {n}/{total} ({100 * n / total:.0f} %) in {_duration(elapsed)}, "
                      f"about {_duration(left)} left", flush=True)
            else:
                print(f"{desc}: {n} in {_duration(elapsed)}", flush=True)
    if m == "log":
        print(f"{desc}: {n} done in {_clock() - start:.1f} s", flush=True)
