"""The benchmark scripts run to the end on a fresh machine (tiny settings, empty data and cache
folders) and write every figure they print. They measure nothing here: no time is asserted,
only that each part produced its figures, as numbers, with the labels a reader looks for."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMOLIB_PROGRESS": "none"}
    env.update({f"EMOLIB_{k}": str(tmp_path / k.lower()) for k in ("DATA", "CACHE", "RUNS")})

    def run(script: str, *args: str) -> str:
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        return done.stdout

    return run


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_student_on_a_fresh_machine(bench, tmp_path):
    # the corpus is generated first, in the main process (a pool worker may not start its own workers)
    out = bench("bench_student.py", "--preset", "tiny", "--utterances", "3", "--steps", "3", "--threads", "1",
                "--out", str(tmp_path / "student.json"))
    for label in ("computed / cached (CPU)", "full / no_teachers (medians)", "(b) / (a) with 1 thread(s)",
                  "each whole / shared with 1 thread(s)", "peak resident memory"):
        assert label in out, label
    figures = json.loads((tmp_path / "student.json").read_text())
    (res,) = figures["per_threads"]
    assert res["threads"] == 1 and positive(res["backbone_ratio"])
    assert all(positive(res["step_ratio"][k]) and positive(res["inference_ratio"][k])
               and positive(res["ensemble_ratio"][k]) for k in ("cpu", "wall"))
    assert [r["shared"] for r in res["ensemble_rows"]] == [True, False]
    assert {r["variant"] for r in res["step_rows"]} == {"full", "no_teachers"}
    assert all(positive(v) for v in res["peak_rss_mib"].values())


def test_bench_teachers_on_a_fresh_machine(bench, tmp_path):
    out = bench("bench_teachers.py", "--preset", "tiny", "--utterances", "3", "--folds", "1",
                "--out", str(tmp_path / "teachers.json"))
    assert "peak resident memory" in out
    figures = json.loads((tmp_path / "teachers.json").read_text())
    assert positive(figures["extraction_speedup_2_vs_1"])
    assert all(positive(row["x_real_time"]) for row in figures["extraction"])
    lld = figures["lld_inputs"]
    assert len({row["frames"] for row in lld}) == 1 and lld[0]["frames"] > 0  # the three ways read the same maps
    assert all(positive(row["memory_vs_before"]) and positive(row["time_vs_before"]) for row in lld)
    assert sorted((t["teacher"], t["fold"]) for t in figures["teachers"]) == [("linguistic", 1), ("prosodic", 1)]
    assert all(positive(t["s_per_epoch"]) and 0 <= t["test_ua"] <= 100 for t in figures["teachers"])


def test_bench_backbones_runs_every_part(bench):
    out = bench("bench_backbones.py", "--clips", "1", "--seconds", "1", "--batch", "1", "--threads", "1")
    for label in ("whisper-tiny.en, positions cut", "whisper-tiny.en, padded to 30 s", "cached lookup",
                  "waveform / cached =", "peak resident memory"):
        assert label in out, label


def test_bench_numerics_times_every_part_in_both_modes(bench, tmp_path):
    out = bench("bench_numerics.py", "--repeats", "1", "--rounds", "1", "--out", str(tmp_path / "numerics.json"))
    assert "portable / native" in out
    figures = json.loads((tmp_path / "numerics.json").read_text())
    assert [r["part"].split(",")[0] for r in figures["rows"]] == [
        "prosodic teacher", "student on cached states", "linguistic teacher (MiniLM)", "Whisper base encoder"]
    assert all(positive(r[k]) for r in figures["rows"] for k in ("native", "portable", "ratio"))
    assert figures["numerics"]["native"].startswith("native ")
    assert figures["numerics"]["portable"].startswith("portable (") or "AVX2" not in figures["numerics"]["native"]
