"""The environment variables emolib reads, in one place.

Each is parsed where it is used (the module named below); :func:`check` parses them all, so that
``python -m emolib`` refuses a value it cannot use before it starts work, not an hour into a
feature extraction, and :func:`unknown` names an ``EMOLIB_`` variable that nothing reads: a
misspelt ``EMOLIB_CACHE`` on a shared server would otherwise send every feature into the
checkout without a word. Importing emolib warns of the latter (``emolib/__init__.py``).
"""
from __future__ import annotations

import os

#: name -> what it does (and the module that reads it); the README's tables say more.
VARIABLES = {
    "EMOLIB_ROOT": "the project's root: notebooks, figures (paths.py)",
    "EMOLIB_DATA": "generated corpora (paths.py)",
    "EMOLIB_CACHE": "feature caches (paths.py)",
    "EMOLIB_RUNS": "result files and executed notebooks (paths.py)",
    "EMOLIB_FIGURES": "the report's tables and figures (paths.py)",
    "EMOLIB_PROGRESS": "bar, log or none (progress.py)",
    "EMOLIB_THREADS": "torch's CPU threads for training (machine.py)",
    "EMOLIB_NUMERICS": "portable or native floating-point kernels (machine.py)",
    "EMOLIB_HOLD": "how many bytes of features are held in memory, e.g. 16G (cache.py)",
    "EMOLIB_CONSTRAINTS": "the constraints file `make venv` installed with, for the tests (Makefile)",
}


def unknown(environ=os.environ) -> list[str]:
    """One warning per ``EMOLIB_`` variable that emolib does not read, with the likeliest meant one."""
    import difflib

    warnings = []
    for name in sorted(v for v in environ if v.startswith("EMOLIB_") and v not in VARIABLES):
        # compared without the prefix they share, which would make any two names look alike;
        # a name that extends a real one (CACHE_DIR for CACHE) or cuts it short (RUN for RUNS) first
        rest, known = name[7:], [v[7:] for v in VARIABLES]
        close = [k for k in known if len(rest) >= 3 and (rest.startswith(k) or k.startswith(rest))]
        close = close or difflib.get_close_matches(rest, known, n=1, cutoff=0.7)
        meant = f" (did you mean EMOLIB_{close[0]}?)" if close else ""
        warnings.append(f"{name} is set, and emolib reads no such variable{meant}; "
                        f"it reads {', '.join(VARIABLES)}")
    return warnings


def check(environ=os.environ) -> None:
    """Parse every variable that has a value to parse; a :class:`ValueError` names the first bad one."""
    from . import cache, machine, progress

    machine.numerics_mode(environ)
    machine.env_threads(environ)
    cache.hold_bytes(environ)
    progress.env_mode(environ)
