"""Environment variables: each bad value is refused with its name, an unknown EMOLIB_ name is
warned about with the one meant, and the list in emolib/envvars.py is every name emolib reads."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from emolib import cache, envvars, machine, progress
from emolib.__main__ import main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value, size", [
    ("16G", 16 << 30), ("16g", 16 << 30), ("16GiB", 16 << 30), ("16 GB", 16 << 30), ("500M", 500 << 20),
    ("1.5G", 3 << 29), ("64K", 65536), ("2T", 2 << 40), ("2048", 2048), ("100B", 100), ("0", 0), (" 0 ", 0),
])
def test_hold_sizes_read_in_powers_of_1024(value, size):
    assert cache.hold_bytes({"EMOLIB_HOLD": value}) == size


@pytest.mark.parametrize("value", ["lots", "-1", "1e9", "G", "16X", "16 G B", "0x10"])
def test_a_hold_that_is_not_a_size_is_refused_with_its_name(value):
    with pytest.raises(ValueError, match=re.escape(f"EMOLIB_HOLD={value!r} is not a size: write e.g. 16G")):
        cache.hold_bytes({"EMOLIB_HOLD": value})


def test_without_a_hold_the_default_threshold_applies(monkeypatch):
    assert cache.hold_bytes({}) == cache.hold_bytes({"EMOLIB_HOLD": "  "}) == cache.HOLD_BYTES == 2 << 30
    monkeypatch.setenv("EMOLIB_HOLD", "1K")
    assert cache.fits_in_memory(1024) and not cache.fits_in_memory(1025)
    monkeypatch.setenv("EMOLIB_HOLD", "0")
    assert cache.fits_in_memory(0) and not cache.fits_in_memory(1)


def test_threads_progress_and_numerics_values():
    assert machine.env_threads({}) == 0 and machine.env_threads({"EMOLIB_THREADS": " 4"}) == 4
    for bad in ("four", "-1", "1.5"):
        with pytest.raises(ValueError, match=re.escape(f"EMOLIB_THREADS={bad!r}: must be a whole number")):
            machine.env_threads({"EMOLIB_THREADS": bad})
    assert progress.env_mode({}) is None and progress.env_mode({"EMOLIB_PROGRESS": "log"}) == "log"
    assert machine.numerics_mode({}) == machine.numerics_mode({"EMOLIB_NUMERICS": ""}) == "portable"
    assert machine.numerics_mode({"EMOLIB_NUMERICS": " Native"}) == "native"
    # a typo used to give portable numerics silently, i.e. other figures than the user asked for
    with pytest.raises(ValueError, match="EMOLIB_NUMERICS='fast': must be portable or native"):
        machine.numerics_mode({"EMOLIB_NUMERICS": "fast"})


def test_check_names_the_first_bad_variable_and_passes_good_ones():
    envvars.check({"EMOLIB_HOLD": "8G", "EMOLIB_THREADS": "2", "EMOLIB_PROGRESS": "none", "EMOLIB_NUMERICS": "native"})
    with pytest.raises(ValueError, match="EMOLIB_PROGRESS='bars'"):
        envvars.check({"EMOLIB_PROGRESS": "bars"})


def test_unknown_names_are_warned_about_with_the_one_meant():
    env = {"EMOLIB_CACHES": "/scratch", "EMOLIB_FOO": "1", "EMOLIB_CACHE": "/x", "HOME": "/root"}
    warned = envvars.unknown(env)
    assert len(warned) == 2
    assert warned[0].startswith("EMOLIB_CACHES is set, and emolib reads no such variable (did you mean EMOLIB_CACHE?); "
                                "it reads EMOLIB_ROOT, EMOLIB_DATA, EMOLIB_CACHE,")
    assert warned[1].startswith("EMOLIB_FOO is set, and emolib reads no such variable; it reads ")
    assert envvars.unknown({name: "x" for name in envvars.VARIABLES}) == []


def test_importing_emolib_warns_of_a_misspelt_variable():
    env = {**os.environ, "EMOLIB_RUN": "/scratch/runs"}
    done = subprocess.run([sys.executable, "-c", "import emolib"], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stderr.startswith("warning: EMOLIB_RUN is set, and emolib reads no such variable (did you mean "
                                  "EMOLIB_RUNS?); it reads EMOLIB_ROOT,")


def test_the_command_refuses_a_bad_value_before_it_starts(monkeypatch, capsys):
    monkeypatch.setenv("EMOLIB_HOLD", "lots")
    assert main(["runs"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("error: EMOLIB_HOLD='lots' is not a size: write e.g. 16G, 500M, or 0 to hold "
                                 "nothing (README, \"Large corpora\")\n")


def test_the_list_is_every_variable_emolib_reads():
    sources = [*(REPO / "emolib").rglob("*.py"), REPO / "Makefile", *(REPO / "notebooks").rglob("*.py"),
               *(REPO / "benchmarks").glob("*.py")]
    read = {name for path in sources for name in re.findall(r"EMOLIB_[A-Z_]+", path.read_text(encoding="utf-8"))}
    assert read == set(envvars.VARIABLES)


@pytest.mark.parametrize("typo, meant", [("EMOLIB_RUN", "EMOLIB_RUNS"), ("EMOLIB_CACHE_DIR", "EMOLIB_CACHE"),
                                         ("EMOLIB_THREAD", "EMOLIB_THREADS"), ("EMOLIB_NUMERIC", "EMOLIB_NUMERICS"),
                                         ("EMOLIB_FIGURE", "EMOLIB_FIGURES"), ("EMOLIB_HOLD_BYTES", "EMOLIB_HOLD")])
def test_the_likeliest_meant_name(typo, meant):
    assert f"(did you mean {meant}?)" in envvars.unknown({typo: "x"})[0]
