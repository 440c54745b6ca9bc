"""Progress reporting: a bar when a person is watching, one line per step in batch runs.

Under papermill every tqdm refresh becomes a line of output, so the run driver sets
``EMOLIB_PROGRESS=log`` for the kernels it starts; JupyterLab and terminals get bars.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
MODES = ("bar", "log", "none")


def mode(requested: str = "auto") -> str:
    """Resolve ``"auto"``: ``EMOLIB_PROGRESS`` if set, else a bar for a terminal or an
    interactive notebook, else one log line per step."""
    if requested != "auto":
        if requested not in MODES:
            raise ValueError(f"progress must be one of auto, {', '.join(MODES)}; got {requested!r}")
        return requested
    env = os.environ.get("EMOLIB_PROGRESS")
    if env:
        return mode(env)
    if _in_kernel() or sys.stderr.isatty():
        return "bar"
    return "log"


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (not merely in a process that imported
    ipykernel, as the run driver and its tests do)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """tqdm in bar mode; in log mode a start line and an end line with the elapsed time."""
    m = mode("auto") if enabled else "none"
    if m == "bar":
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, leave=False)
        return
    start = time.perf_counter()
    if m == "log":
        print(f"{desc} ...", flush=True)
    n = 0
    for n, item in enumerate(iterable, start=1):
        yield item
    if m == "log":
        print(f"{desc}: {n} done in {time.perf_counter() - start:.1f} s", flush=True)
