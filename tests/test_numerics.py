"""Portable numerics: every x86-64 CPU with AVX2 computes the same floats (emolib.machine.PORTABLE_ENV),
runs record how they computed, and ``python -m emolib numerics`` tells whether this machine computes as
the one that made the committed figures did (emolib.fingerprint)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from emolib import machine

ROOT = Path(__file__).resolve().parents[1]
X86_FLAGS = "flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 avx512f\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"cpuinfo{len(list(tmp_path.iterdir()))}"  # a file per CPU
    path.write_text("processor\t: 0\nmodel name\t: Test CPU\n" + text)
    return path


def test_avx2_is_read_from_the_cpu_flags_and_other_cpus_have_none(tmp_path):
    assert machine.has_avx2(_cpuinfo(tmp_path, X86_FLAGS))
    assert not machine.has_avx2(_cpuinfo(tmp_path, "flags\t\t: fpu sse sse2 avx\n"))  # Sandy Bridge
    assert not machine.has_avx2(_cpuinfo(tmp_path, "flags\t\t: avx2\n"))  # AVX2 without FMA: not the kernels' ISA
    assert not machine.has_avx2(_cpuinfo(tmp_path, "Features\t: fp asimd evtstrm aes crc32\n"))  # ARM
    assert not machine.has_avx2(tmp_path / "missing")  # macOS, Windows
    assert machine.cpu_model(_cpuinfo(tmp_path, X86_FLAGS)) == "Test CPU"
    assert machine.cpu_vendor(_cpuinfo(tmp_path, "vendor_id\t: AuthenticAMD\n" + X86_FLAGS)) == "AuthenticAMD"
    assert machine.cpu_vendor(tmp_path / "missing") is None


def test_portable_mode_caps_every_library_unless_native_or_set_by_the_user(tmp_path):
    avx2 = _cpuinfo(tmp_path, X86_FLAGS)
    assert machine.portable_env({}, avx2) == machine.PORTABLE_ENV  # the default
    assert machine.portable_env({"EMOLIB_NUMERICS": "Portable "}, avx2) == machine.PORTABLE_ENV
    assert machine.portable_env({"EMOLIB_NUMERICS": "native"}, avx2) == {}
    assert machine.portable_env({}, _cpuinfo(tmp_path, "Features\t: fp asimd\n")) == {}
    mine = machine.portable_env({"MKL_CBWR": "COMPATIBLE"}, avx2)
    assert "MKL_CBWR" not in mine and set(mine) == set(machine.PORTABLE_ENV) - {"MKL_CBWR"}
    assert set(machine.PORTABLE_ENV) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OPENBLAS_CORETYPE"}


def _fake_torch(capability: str):
    return types.SimpleNamespace(backends=types.SimpleNamespace(cpu=types.SimpleNamespace(
        get_cpu_capability=lambda: capability)))


@pytest.mark.skipif(not machine.has_avx2(), reason="portable mode needs an x86-64 CPU with AVX2")
def test_a_torch_that_already_chose_its_kernels_is_warned_about_and_a_fresh_one_is_not():
    late = machine.apply_portable_numerics({}, {"torch": _fake_torch("AVX512")})
    assert len(late) == 1 and "AVX512" in late[0] and "import emolib first" in late[0]
    assert machine.apply_portable_numerics({}, {"torch": _fake_torch("AVX2")}) == []
    assert machine.apply_portable_numerics({}, {}) == []
    environ = {"EMOLIB_NUMERICS": "native"}
    assert machine.apply_portable_numerics(environ, {"torch": _fake_torch("AVX512")}) == []
    assert environ == {"EMOLIB_NUMERICS": "native"}  # native mode sets nothing


def test_the_record_says_portable_only_when_every_library_is_capped(monkeypatch):
    for name, value in machine.PORTABLE_ENV.items():
        monkeypatch.setenv(name, value)
    record = machine.numerics()
    assert record["mode"] == "portable" and set(record) == {"mode", "isa", "cpu", "vendor", "machine", "torch", "caps"}
    assert record["caps"] == machine.PORTABLE_ENV and record["vendor"] == machine.cpu_vendor()
    intel = {**record, "vendor": "GenuineIntel"}
    assert machine.numerics_label(intel) == f"portable ({record['isa']})"
    # portable bits are shared by Intel CPUs only: on another vendor's the label names the CPU
    amd = {**record, "vendor": "AuthenticAMD", "cpu": "AMD EPYC 7B12"}
    assert machine.numerics_label(amd) == f"portable ({record['isa']}) on AMD EPYC 7B12"
    # records made before the vendor was recorded came from Intel CPUs
    assert machine.numerics_label({k: v for k, v in amd.items() if k != "vendor"}) == f"portable ({record['isa']})"
    monkeypatch.setenv("MKL_CBWR", "AVX2")  # MKL capped but not strict: results depend on the thread count
    record = machine.numerics()
    assert record["mode"] == "native" and record["caps"]["MKL_CBWR"] == "AVX2"
    assert machine.numerics_label(record) == f"native {record['isa']} on {record['cpu']}"
    assert machine.numerics_label(None) == "unrecorded"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in machine.PORTABLE_ENV and k != "EMOLIB_NUMERICS"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


CAPABILITY = "import emolib, torch; print(torch.backends.cpu.get_cpu_capability())"


@pytest.mark.skipif(not machine.has_avx2(), reason="portable mode needs an x86-64 CPU with AVX2")
def test_importing_emolib_caps_torch_at_avx2_and_native_mode_leaves_it_alone():
    def capability(code: str, **env: str) -> str:
        return subprocess.run([sys.executable, "-c", code], env=_clean_env(**env), capture_output=True, text=True,
                              check=True).stdout.strip()

    assert capability(CAPABILITY) == "AVX2"
    own = capability("import torch; print(torch.backends.cpu.get_cpu_capability())")  # without emolib
    assert capability(CAPABILITY, EMOLIB_NUMERICS="native") == own
    # torch imported first still takes the cap when it has computed nothing yet
    assert capability("import torch, emolib; print(torch.backends.cpu.get_cpu_capability())") == "AVX2"


def test_a_finished_run_records_how_it_computed(tmp_path, monkeypatch):
    from emolib.config import get_config
    from emolib.runs import Run

    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path))
    run = Run("student", get_config("tiny"), 1).start()
    run.finish({"ua": 0.5})
    saved = json.loads((run.dir / "metrics.json").read_text())
    assert saved["ua"] == 0.5 and saved["numerics"] == machine.numerics()


def _numerics_command(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolib", "numerics"], env=_clean_env(**env), capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(not machine.has_avx2() or machine.cpu_model() != "Intel(R) Xeon(R) Processor",
                    reason="the recorded digests are checked on the kind of CPU they were recorded on (elsewhere "
                           "python -m emolib numerics measures whether they hold)")
def test_the_recorded_floats_are_computed_again_in_portable_mode():
    from emolib import fingerprint

    assert fingerprint.RECORDED_ON == machine.cpu_model()
    done = _numerics_command()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("as recorded") == 4 and "rebuilds them to the bit" in done.stdout


def test_the_command_compares_digests_and_says_why_they_differ(monkeypatch, capsys):
    from emolib import fingerprint
    from emolib.__main__ import main

    monkeypatch.setattr(fingerprint, "fingerprint", lambda: dict(fingerprint.RECORDED))
    assert main(["numerics"]) == 0
    out = capsys.readouterr().out
    assert out.count("as recorded") == 4 and "rebuilds them to the bit" in out
    other = {**fingerprint.RECORDED, "whisper": "000000000000"}
    monkeypatch.setattr(fingerprint, "fingerprint", lambda: other)
    monkeypatch.setattr(machine, "has_avx2", lambda: True)
    for vendor, why in [("GenuineIntel", "another torch build"), ("AuthenticAMD", "an AMD CPU")]:
        monkeypatch.setattr(machine, "cpu_vendor", lambda vendor=vendor: vendor)
        monkeypatch.setattr(machine, "numerics", lambda: {"mode": "portable", "isa": "AVX2", "cpu": "x",
                                                          "torch": "2.13.0"})
        assert main(["numerics"]) == 1
        out = capsys.readouterr().out
        assert out.count("as recorded") == 3 and "differs from " + fingerprint.RECORDED["whisper"] in out
        assert why in out and "float rounding" in out


@pytest.mark.skipif("avx512f" not in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else True,
                    reason="native kernels differ from the portable ones only on a CPU beyond AVX2")
def test_native_mode_on_an_avx512_cpu_computes_otherwise_and_says_why():
    done = _numerics_command(EMOLIB_NUMERICS="native")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "numerics: native AVX512" in done.stdout and "differs from" in done.stdout
    assert "EMOLIB_NUMERICS=native" in done.stdout and "float rounding" in done.stdout


@pytest.mark.skipif(not machine.has_avx2(), reason="portable mode needs an x86-64 CPU with AVX2")
def test_portable_floats_do_not_depend_on_the_number_of_threads():
    """MKL's strict mode: a laptop's cores and CI's two give the same states and weights (without it,
    MKL_CBWR=AVX2 alone, Whisper's states on 1 and 2 threads differed)."""
    code = ("import emolib, sys, torch; torch.set_num_threads(int(sys.argv[1])); from emolib import fingerprint; "
            "print(fingerprint.fingerprint(('prosodic', 'whisper')))")

    def digests(threads: int) -> str:
        return subprocess.run([sys.executable, "-c", code, str(threads)], env=_clean_env(), capture_output=True,
                              text=True, check=True, timeout=600).stdout.strip()

    assert digests(1) == digests(2)
