"""What this machine lets a process use (no heavy imports: the corpus generator, the feature
extraction and the notebook driver all ask)."""
from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, which honours ``taskset`` and a
    container's CPU set (``os.cpu_count`` counts the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
