"""What every benchmark measures with: peak memory, an even sample of the corpus, and the
printed tables. Imported by the scripts, which put the checkout on ``sys.path`` first."""
from __future__ import annotations

import resource


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def spread(utterances: list, n: int | None) -> list:
    """``n`` utterances evenly spread over the corpus (every speaker and class); all for 0 or None."""
    if not n or n >= len(utterances):
        return list(utterances)
    return [utterances[int(i * len(utterances) / n)] for i in range(n)]


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print ``rows`` under ``(key, header, format)`` columns (text left, numbers right)."""
    widths = [max(len(h), *(len(format(r[k], f)) for r in rows)) for k, h, f in columns]

    def line(cells):
        return "  " + "  ".join(c.ljust(w) if f == "s" else c.rjust(w)
                                for c, (_, _, f), w in zip(cells, columns, widths))

    print(line([h for _, h, _ in columns]))
    for r in rows:
        print(line([format(r[k], f) for k, _, f in columns]))
