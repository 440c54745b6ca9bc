"""The suite's guard (``tests/fixtures/hermetic.py``): a session that writes into the checkout
or emolib's roots fails and names the files."""
from __future__ import annotations

import os
import shutil
import tempfile
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


def _session(pytester, monkeypatch, tmp_path, test_body: str):
    """Run a pytest session with the guard loaded and one test; the checkout is ``tmp_path/checkout``
    and the user exported ``EMOLIB_CACHE=tmp_path/scratch`` (which holds their work)."""
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path / "checkout"))
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "scratch"))
    (tmp_path / "checkout").mkdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "kept.npy").write_bytes(b"user's work")
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
                          "from fixtures.hermetic import pytest_sessionfinish, pytest_sessionstart\n")
    pytester.makepyfile(test_one=textwrap.dedent(test_body))
    stand_ins = set(Path(tempfile.gettempdir()).glob("emolib-suite-roots-*"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert os.listdir(tmp_path / "scratch") == ["kept.npy"]  # the user's root: untouched
    return result, set(Path(tempfile.gettempdir()).glob("emolib-suite-roots-*")) - stand_ins


def test_a_session_that_writes_into_the_roots_or_the_checkout_fails_and_names_the_files(pytester, monkeypatch,
                                                                                        tmp_path):
    result, kept = _session(pytester, monkeypatch, tmp_path, f"""
        import os
        from emolib import paths

        def test_forgets_to_redirect():
            assert os.environ["EMOLIB_CACHE"] != {str(tmp_path / "scratch")!r}  # a stand-in
            (paths.cache_dir() / "lld").mkdir(parents=True)
            (paths.cache_dir() / "lld" / "entry.npy").write_bytes(b"x")
            (paths.project_root() / "runs").mkdir()
            (paths.project_root() / "runs" / "r.json").write_text("{{}}")
    """)
    assert result.ret == 1 and len(kept) == 1  # kept for a look
    (stand_in,) = kept
    try:
        result.stdout.fnmatch_lines([  # the test itself passed: the session fails
            f"error: the suite wrote into the checkout ({(tmp_path / 'checkout').resolve()}) or into the stand-ins "
            f"for emolib's roots ({stand_in}, kept for a look); a test must send its files to its own temporary "
            "folder:",
            *sorted([f"  new      {stand_in / 'cache' / 'lld' / 'entry.npy'}",
                     f"  new      {(tmp_path / 'checkout').resolve() / 'runs' / 'r.json'}"], key=lambda line: line[11:]),
            "*1 passed*",
        ])
    finally:
        shutil.rmtree(stand_in)


def test_a_session_that_writes_only_into_its_own_folders_passes_and_leaves_nothing(pytester, monkeypatch, tmp_path):
    result, kept = _session(pytester, monkeypatch, tmp_path, """
        from emolib import paths

        def test_redirects(tmp_path, monkeypatch):
            monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
            paths.cache_dir().mkdir()
            (paths.cache_dir() / "entry.npy").write_bytes(b"x")
            assert (paths.cache_dir() / "entry.npy").exists()
    """)
    assert result.ret == 0 and kept == set()
    result.stdout.no_fnmatch_line("*wrote into*")
