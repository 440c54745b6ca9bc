"""The suite's guard (``tests/fixtures/hermetic.py``): a session that writes into the checkout
or emolib's roots fails and names the files."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

from fixtures import hermetic

pytest_plugins = ["pytester"]
TESTS_DIR = Path(__file__).resolve().parent


def test_changes_lists_new_removed_and_changed_files_and_skips_bytecode_and_venvs(tmp_path):
    (tmp_path / "cache" / "lld").mkdir(parents=True)
    (tmp_path / "cache" / "lld" / "a.npy").write_bytes(b"12345")
    (tmp_path / "runs" / "old.json").parent.mkdir()
    (tmp_path / "runs" / "old.json").write_text("{}")
    (tmp_path / "same.txt").write_text("x")
    before = hermetic.snapshot([tmp_path])
    assert set(before) == {str(tmp_path / "cache" / "lld" / "a.npy"), str(tmp_path / "runs" / "old.json"),
                           str(tmp_path / "same.txt")}

    (tmp_path / "cache" / "lld" / "a.npy").write_bytes(b"123456")  # grown
    (tmp_path / "runs" / "old.json").unlink()
    (tmp_path / "cache" / "lld" / "b.npy").write_bytes(b"1")
    os.utime(tmp_path / "same.txt", ns=(1, 1))  # same bytes, rewritten
    for skipped in ("__pycache__", ".pytest_cache", ".git", ".ipynb_checkpoints"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "f").write_text("ignored")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "venv" / "lib.py").write_text("ignored")

    assert hermetic.changes(before, hermetic.snapshot([tmp_path])) == [
        f"changed  {tmp_path / 'cache' / 'lld' / 'a.npy'}",
        f"new      {tmp_path / 'cache' / 'lld' / 'b.npy'}",
        f"removed  {tmp_path / 'runs' / 'old.json'}",
        f"changed  {tmp_path / 'same.txt'}",
    ]
    assert hermetic.snapshot([tmp_path / "missing"]) == {}


def test_roots_are_the_checkout_and_each_root_outside_it(tmp_path, monkeypatch):
    for var in ("EMOLIB_DATA", "EMOLIB_CACHE", "EMOLIB_RUNS", "EMOLIB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path / "checkout"))
    assert hermetic.roots() == [(tmp_path / "checkout").resolve()]

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "scratch" / "cache"))
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "checkout" / "elsewhere"))  # inside the checkout
    assert hermetic.roots() == [(tmp_path / "checkout").resolve(), (tmp_path / "scratch" / "cache").resolve()]


def _session(pytester, monkeypatch, tmp_path, test_body: str):
    """Run a pytest session with the guard loaded and one test, the user's roots under ``tmp_path``."""
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path / "checkout"))
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "kept.npy").write_bytes(b"user's work")
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
                          "from fixtures.hermetic import pytest_sessionfinish, pytest_sessionstart\n")
    pytester.makepyfile(test_one=textwrap.dedent(test_body))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_a_session_that_writes_into_a_users_root_fails_and_names_the_file(pytester, monkeypatch, tmp_path):
    result = _session(pytester, monkeypatch, tmp_path, """
        from emolib import paths

        def test_forgets_to_redirect():
            (paths.cache_dir() / "lld").mkdir()
            (paths.cache_dir() / "lld" / "entry.npy").write_bytes(b"x")
            (paths.cache_dir() / "kept.npy").unlink()
    """)
    assert result.ret == 1
    result.stdout.fnmatch_lines([  # the test itself passed: the session fails
        f"error: the suite wrote into the checkout or emolib's roots ({(tmp_path / 'checkout').resolve()}, "
        f"{(tmp_path / 'scratch').resolve()}); a test must send its files to its own temporary folder:",
        f"  removed  {(tmp_path / 'scratch').resolve() / 'kept.npy'}",
        f"  new      {(tmp_path / 'scratch').resolve() / 'lld' / 'entry.npy'}",
        "*1 passed*",
    ])


def test_a_session_that_writes_only_into_its_own_folders_passes(pytester, monkeypatch, tmp_path):
    result = _session(pytester, monkeypatch, tmp_path, """
        from emolib import paths

        def test_redirects(tmp_path, monkeypatch):
            monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
            paths.cache_dir().mkdir()
            (paths.cache_dir() / "entry.npy").write_bytes(b"x")
            assert (paths.cache_dir() / "entry.npy").exists()
    """)
    assert result.ret == 0
    result.stdout.no_fnmatch_line("*wrote into*")
