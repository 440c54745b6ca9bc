"""Progress reporting: which mode applies where, and what log mode prints."""
from __future__ import annotations

import re
import sys
import types

import pytest

from emolib import progress


@pytest.fixture
def plain(monkeypatch):
    """Not a terminal, no EMOLIB_PROGRESS: what a batch run sees."""
    monkeypatch.delenv("EMOLIB_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)


def test_explicit_and_environment_modes(plain, monkeypatch):
    assert progress.mode("none") == "none"
    monkeypatch.setenv("EMOLIB_PROGRESS", "bar")
    assert progress.mode() == "bar"
    monkeypatch.setenv("EMOLIB_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="EMOLIB_PROGRESS='fancy': must be one of bar, log, none"):
        progress.mode()
    with pytest.raises(ValueError, match="progress must be one of auto, bar, log, none; got 'fancy'"):
        progress.mode("fancy")


def test_a_process_that_imported_ipykernel_is_not_a_kernel(plain, monkeypatch):
    # the run driver imports ipykernel (papermill does); its own training must still log lines
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert progress.mode() == "log"

    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    assert progress.mode() == "bar"  # JupyterLab


def test_log_mode_prints_a_start_and_an_end_line(plain, capsys):
    assert list(progress.progress_bar(range(3), desc="features")) == [0, 1, 2]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "features ..."
    assert re.fullmatch(r"features: 3 done in \d+\.\d s", lines[1])
    assert list(progress.progress_bar(range(2), desc="quiet", enabled=False)) == [0, 1]
    assert capsys.readouterr().out == ""


def test_log_mode_prints_a_line_a_minute_during_a_long_step(plain, capsys, monkeypatch):
    # a clock that advances 25 s per item: lines after items 3 (75 s), 6 (150 s) and 9 (225 s)
    ticks = iter(range(0, 10_000, 25))
    monkeypatch.setattr(progress, "_clock", lambda: next(ticks))
    assert list(progress.progress_bar(range(10), desc="eGeMAPS lld (10 files, 2 proc)")) == list(range(10))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "eGeMAPS lld (10 files, 2 proc) ...",
        "eGeMAPS lld (10 files, 2 proc): 3/10 (30 %) in 1 min 15 s, about 2 min 55 s left",  # 75 s * 7/3
        "eGeMAPS lld (10 files, 2 proc): 6/10 (60 %) in 2 min 30 s, about 1 min 40 s left",
        "eGeMAPS lld (10 files, 2 proc): 9/10 (90 %) in 3 min 45 s, about 25 s left",
        "eGeMAPS lld (10 files, 2 proc): 10 done in 275.0 s",
    ]


def test_log_mode_without_a_total_counts_what_is_done(plain, capsys, monkeypatch):
    ticks = iter(range(0, 10_000, 40))
    monkeypatch.setattr(progress, "_clock", lambda: next(ticks))
    assert list(progress.progress_bar(iter("abc"), desc="batches")) == ["a", "b", "c"]
    assert capsys.readouterr().out.splitlines()[1:] == ["batches: 2 in 1 min 20 s", "batches: 3 done in 160.0 s"]


def test_durations_read_in_the_largest_fitting_units():
    assert [progress._duration(s) for s in (0.4, 59.6, 61, 3599, 3600, 7384)] == [
        "0 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "1 h 00 min", "2 h 03 min"]
