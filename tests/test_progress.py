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
    with pytest.raises(ValueError, match="progress must be one of auto, bar, log, none; got 'fancy'"):
        progress.mode()


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
