"""The ``tiny`` preset end to end through papermill with the real notebooks.

* A clean run of folds 1 and 2 (two at a time) executes every notebook and writes every
  table and figure; it is the reference for the rest.
* Deleting one student's ``metrics.json`` and one executed notebook's sidecar re-executes
  only that notebook (and the report), which retrains the student to the same result.
* ``python -m emolib gap`` on the same runs reuses them all (the notebooks and the command
  name the same runs) and adds the oracle-taught student, which only the built-in corpus has.
* A driver killed with SIGKILL in the middle of a notebook, kernel included, is started
  again: it skips every complete notebook and ends with the clean run's results and tables.

Every kernel and the test process run torch on one thread (``OMP_NUM_THREADS``,
``EMOLIB_THREADS``; the driver's per-fold limit is pinned to the same), so that results
can be compared exactly between runs; on a shared 2-core machine one thread is also the
faster choice for models this small. The corpus and the feature caches are shared by every
run of the module (they are keyed by content).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from emolib import __main__ as cli
from emolib import driver, report, train

# One pytest-xdist worker runs the whole file (make test: --dist loadgroup), so that the tiny notebook run
# its tests share (the `clean` fixture, about a minute) is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("notebooks")]

PER_FOLD = ("00_data", "01_teachers", "02_distill", "03_temperature_sweep", "04_ablations")
FIGURES = sorted(f"{stem}.{ext}" for stem, exts in [
    ("table2_ablations", ("md", "tex", "json")), ("table1_comparison", ("md", "tex", "json")),
    ("teachers_vs_baselines", ("md", "tex", "json")), ("fig2_temperature", ("pdf", "png", "json")),
    ("fig2_temperature_values", ("md", "tex", "json")),
    ("channels", ("md", "tex", "json"))] for ext in exts)
#: Every student the notebooks train for a fold, by folder label (the hash follows): the six ablation
#: variants (02 trains full and no_teachers, 04 reuses them) and the sweep's two temperatures per teacher.
#: A temperature a variant does not use is 0 in its label, so the sweep never retrains an ablation run.
STUDENTS = sorted(["full-tl4-tp1", "no_logit_kd-tl0-tp0", "no_embedding_kd-tl4-tp1", "no_prosodic_teacher-tl4-tp0",
                   "no_linguistic_teacher-tl0-tp1", "no_teachers-tl0-tp0", "no_linguistic_logit_kd-tl0-tp0.5",
                   "no_linguistic_logit_kd-tl0-tp2", "no_prosodic_logit_kd-tl0.5-tp0", "no_prosodic_logit_kd-tl2-tp0",
                   "full-tl4-tp1-oracle"])  # the upper bound of notebook 04 (built-in corpus only)
VARYING = {"train_seconds"}  # metrics that measure the machine, not the result


@dataclass
class Roots:
    runs: Path
    figures: Path

    def env(self, shared: Path) -> dict[str, str]:
        return {"EMOLIB_RUNS": str(self.runs), "EMOLIB_FIGURES": str(self.figures),
                "EMOLIB_DATA": str(shared / "data"), "EMOLIB_CACHE": str(shared / "cache"),
                **{var: "1" for var in driver.THREAD_VARIABLES}}


@contextlib.contextmanager
def environment(roots: Roots, shared: Path):
    """The roots and one-thread limits for this process and the kernels it starts."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for var, value in roots.env(shared).items():
            mp.setenv(var, value)
        mp.setattr(driver, "available_cores", lambda: 2)  # jobs=2 -> one thread per fold, as everywhere else
        torch.set_num_threads(1)  # pipeline.prepare runs in this process
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _run(preset="tiny", **kw) -> tuple[driver.Summary, str]:
    out = io.StringIO()
    return driver.run(preset, out=out, **kw), out.getvalue()


def _statuses(summary: driver.Summary) -> dict[tuple[str, int | None], str]:
    return {(o.task.notebook, o.task.fold): o.status for o in summary.outcomes}


def _table_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("| ")]


def _fold_runs(runs: Path, fold: int) -> dict[str, Path]:
    """Every result folder of one fold, by ``<stage>/<name>``."""
    return {f"{p.parent.parent.name}/{p.parent.name}": p for p in runs.glob(f"*/*/fold{fold}")
            if p.parent.parent.name != "notebooks"}


def _same_results(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in VARYING} == {k: v for k, v in mb.items() if k not in VARYING}, b
    assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes(), b
    if (a / "history.csv").is_file():
        ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (a, b))
        pd.testing.assert_frame_equal(ha, hb)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, shared):
    root = tmp_path_factory.mktemp("clean")
    roots = Roots(root / "runs", root / "figures")
    with environment(roots, shared):
        t0 = time.perf_counter()
        summary, printed = _run(folds=[1, 2], jobs=2)
        print(f"\nclean tiny run, 2 folds, jobs 2: {time.perf_counter() - t0:.1f} s")
        yield roots, summary, printed


def test_every_notebook_executes_for_two_folds_and_writes_the_figures(clean):
    roots, summary, printed = clean
    expected = {(nb, k): "done" for k in (1, 2) for nb in PER_FOLD} | {("05_report", None): "done"}
    assert _statuses(summary) == expected
    for (nb, k) in expected:
        name = "all" if k is None else f"fold{k}"
        sidecar = json.loads((summary.run_dir / nb / f"{name}.json").read_text())
        assert (summary.run_dir / nb / f"{name}.ipynb").is_file() and sidecar["notebook"] == nb
    assert {k: v["executed"] for k, v in summary.timing["stages"].items()} == {
        "prepare": 1, **{nb: 2 for nb in PER_FOLD}, "05_report": 1}
    assert "total (wall)" in printed

    assert sorted(p.name for p in roots.figures.iterdir()) == FIGURES
    rows = _table_rows(roots.figures / "table2_ablations.md")[1:]
    assert [r.split(" | ")[0] for r in rows] == [f"| {k}" for k in range(1, 9)]
    assert "over 2 folds" in (roots.figures / "table2_ablations.md").read_text()
    assert json.loads((roots.figures / "table1_comparison.json").read_text())["rows"][-1]["corpus"] == "synth"

    for k in (1, 2):
        results = _fold_runs(roots.runs, k)
        students = sorted(name.split("/")[1].rsplit("-", 1)[0] for name in results if name.startswith("student/"))
        assert students == STUDENTS
        assert sorted(name.split("/")[0] for name in results if not name.startswith("student/")) == [
            "data", "linguistic_teacher", "prosodic_teacher"]
        for name, folder in results.items():
            assert (folder / "metrics.json").is_file() and not (folder / "resume.pt").exists(), name
        data = next(folder for name, folder in results.items() if name.startswith("data/"))
        flags = pd.read_csv(data / "channels.csv")  # the built-in corpus records which channel carries each label
        assert list(flags.columns) == ["id", "lexical_cue", "vocal_cue"]
        assert sorted(flags["id"]) == sorted(pd.read_csv(data / "predictions.csv")["id"])
    # notebook 04's bootstrap table: every other row against the full student, on this fold's test turns
    notebook = json.loads((summary.run_dir / "04_ablations" / "fold1.ipynb").read_text())
    (table,) = ["".join(o["data"]["text/plain"]) for cell in notebook["cells"] for o in cell.get("outputs", [])
                if "p full not higher" in "".join(o.get("data", {}).get("text/plain", ""))]
    header, *lines = table.split("\n\n")[0].splitlines()  # the first block: pandas wraps wide tables
    assert header.split() == ["row", "minus", "full", "(UA)", "low", "high", "p", "full", "not", "higher"]
    names = ["no_logit_kd", "no_embedding_kd", "no_prosodic_teacher", "no_linguistic_teacher", "no_teachers",
             "prosodic teacher alone", "linguistic teacher alone"]
    assert [line.split("  ")[0] for line in lines] == names
    folders = _fold_runs(roots.runs, 1)
    predictions = {name.split("/")[1].split("-")[0] if name.startswith("student/") else
                   f"{name.split('_')[0]} teacher alone": pd.read_csv(folder / "predictions.csv")
                   for name, folder in folders.items() if not name.startswith("data/")}
    for name, line in zip(names, lines):
        boot = report.paired_bootstrap_frames([predictions["full"]], [predictions[name]], ("full", name))
        printed = [float(v) for v in line[len(name):].split()]
        assert printed == pytest.approx([-100 * boot["diff"], -100 * boot["high"], -100 * boot["low"],
                                         boot["p_not_higher"]], abs=5e-4), name
    per_fold_figures = {p.name for p in (roots.runs / "fold-figures").glob("*/*.pdf")}
    assert per_fold_figures == {f"{n}_fold{k}.pdf" for k in (1, 2)
                                for n in ("durations", "teacher_learning_curves", "teacher_confusion", "fig2", "ablations")}


def test_gap_reuses_the_notebooks_runs_and_has_the_oracle_row_on_the_builtin_corpus(clean, shared, capsys,
                                                                                     monkeypatch):
    roots, _, _ = clean

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "fit", no_training)
    with environment(roots, shared):
        code = cli.main(["gap", "--corpus", "synth", "--protocol", "session", "--preset", "tiny", "--folds", "1", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("gap: prosodic, linguistic, full, no_teachers, full (oracle) on synth (80 utterances), ")
    runs = {name: [json.loads((_fold_runs(roots.runs, k)[name] / "metrics.json").read_text()) for k in (1, 2)]
            for name in _fold_runs(roots.runs, 1)}

    def score(prefix: str, key: str) -> list[str]:
        (name,) = [n for n in runs if n.startswith(prefix) and (prefix.endswith("oracle-") or "oracle" not in n)]
        return [f"{100 * m[key]:.2f}" for m in runs[name]]

    rows = {"prosodic": "prosodic_teacher/", "linguistic": "linguistic_teacher/", "full": "student/full-tl4-tp1-",
            "no_teachers": "student/no_teachers-", "full (oracle)": "student/full-tl4-tp1-oracle-"}
    for k in (0, 1):
        expected = " | ".join(f"{block} UA " + ", ".join(f"{row} {score(prefix, key)[k]}" for row, prefix in rows.items())
                              for block, key in (("validation", "best_val_ua"), ("test", "ua")))
        assert lines[1 + k] == f"fold {k + 1}: {expected}"
    assert lines[-2].startswith("  full - no_teachers: ") and lines[-1].startswith("  full (oracle) - no_teachers: ")


def test_deleted_results_are_redone_and_only_their_notebook_re_executes(clean, shared, tmp_path):
    roots, first, _ = clean
    tables = {name: (roots.figures / name).read_text() for name in ("table2_ablations.md", "table1_comparison.md",
                                                                    "teachers_vs_baselines.md")}
    with environment(roots, shared):
        victim = next(p for n, p in _fold_runs(roots.runs, 2).items() if n.startswith("student/no_logit_kd-"))
        reference = tmp_path / "reference"
        reference.mkdir()
        for name in ("metrics.json", "predictions.csv", "history.csv"):
            (reference / name).write_bytes((victim / name).read_bytes())
        (victim / "metrics.json").unlink()  # a partial run, as a kill before its last write leaves it
        (first.run_dir / "04_ablations" / "fold2.json").unlink()  # the notebook that trains it: not complete
        t0 = time.perf_counter()
        summary, printed = _run(folds=[1, 2], jobs=2)
        print(f"\nresume after deleting one result: {time.perf_counter() - t0:.1f} s")

    statuses = _statuses(summary)
    assert len(statuses) == 11 and set(statuses.values()) == {"done", "skipped"}
    assert {key for key, status in statuses.items() if status == "done"} == {("04_ablations", 2), ("05_report", None)}
    assert "[ 1/11] 00_data fold 1 ... skip (complete)" in printed
    assert (victim / "metrics.json").is_file()
    _same_results(reference, victim)  # retrained from scratch to the same result
    for name, text in tables.items():
        assert (roots.figures / name).read_text() == text, name


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the kernels a driver started), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the driver's kernels through /proc")
def test_a_killed_driver_resumes_to_the_clean_runs_figures(clean, shared, tmp_path):
    """Fold 2 as a run killed just after its teachers leaves it: the students and their notebooks
    gone. A driver started on that state is SIGKILLed (with its kernel) while it trains fold 2's
    first student; the next run skips every complete notebook and ends with the clean run's results
    and tables. (Fold 2 only, to keep the test short: a whole fresh run would double its time.)"""
    roots, first, _ = clean
    tables = {name: (roots.figures / name).read_text() for name in FIGURES if name.endswith(".md")}
    reference = {name: tmp_path / "reference" / name.replace("/", "_") for name in _fold_runs(roots.runs, 2)}
    for name, folder in _fold_runs(roots.runs, 2).items():
        shutil.copytree(folder, reference[name])
        if name.startswith("student/"):
            shutil.rmtree(folder)
    for nb in ("02_distill", "03_temperature_sweep", "04_ablations"):
        (first.run_dir / nb / "fold2.json").unlink()

    env = {**os.environ, **roots.env(shared)}
    log = tmp_path / "driver.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from emolib import driver; driver.run('tiny', folds=[1, 2])"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    victims = [proc.pid]
    try:
        deadline = time.monotonic() + 300
        while not any(roots.runs.glob("student/*/fold2/config.json")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no student started in 300 s:\n{log.read_text()}"
            time.sleep(0.02)
    finally:
        victims += _descendants(proc.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in victims) and len(victims) >= 2  # the driver and its kernel
    killed_after = time.perf_counter() - t0
    left = {p.parent.name: "complete" if (p / "metrics.json").is_file() else "resumable" if (p / "resume.pt").is_file()
            else "started" for p in roots.runs.glob("student/*/fold2")}
    printed = log.read_text()
    assert "[ 1/11] 00_data fold 1 ... skip (complete)" in printed and "[ 7/11] 01_teachers fold 2 ... skip" in printed
    assert "[ 8/11] 02_distill fold 2 ... " in printed and "02_distill fold 2 ... done" not in printed
    assert list((first.run_dir / "02_distill").glob(".fold2.ipynb.*"))  # the execution's temporary, left by SIGKILL

    with environment(roots, shared):
        t1 = time.perf_counter()
        summary, _ = _run(folds=[1, 2])
        resumed_in = time.perf_counter() - t1
    print(f"\nkilled after {killed_after:.1f} s (students of fold 2 then: {left}), resumed in {resumed_in:.1f} s")
    redone = {("02_distill", 2), ("03_temperature_sweep", 2), ("04_ablations", 2), ("05_report", None)}
    assert _statuses(summary) == {key: "done" if key in redone else "skipped" for key in _statuses(first)}
    assert not list((first.run_dir / "02_distill").glob(".fold2.ipynb.*"))

    results = _fold_runs(roots.runs, 2)
    assert sorted(results) == sorted(reference)
    for name, folder in results.items():
        _same_results(reference[name], folder)
    for name, text in tables.items():
        assert (roots.figures / name).read_text() == text, name


#: What each exercise notebook's solutions print when every check passes, and the students they train (folder
#: labels) on fold 1 of the tiny preset: exercise 7 of distillation trains three (one with alpha = 0), exercise 4 of
#: evaluation two.
EXERCISE_RUNS = {
    "distillation": (["exercise 1: right", "exercise 2: right", "exercise 3: right", "exercise 4: right",
                      "exercise 5: right, for full, no_logit_kd, no_embedding_kd, no_prosodic_teacher, "
                      "no_linguistic_teacher, no_teachers, no cross-entropy", "exercise 6: right",
                      "exercise 7: right; training"], ["full-tl4-tp1", "full-tl4-tp1-a0", "no_teachers-tl0-tp0"]),
    "evaluation": ([f"exercise {k}: right" for k in range(1, 6)], ["full-tl4-tp1", "no_teachers-tl0-tp0"]),
}


def _first_stub_message(source: Path) -> str:
    """The message of the first ``raise NotImplementedError("...")`` in a cell tagged exercise."""
    from emolib import exercises

    nb = driver.read_notebook(source.read_text(encoding="utf-8"))
    stubs = [c.source for c in nb.cells if exercises.EXERCISE in c.metadata.get("tags", [])]
    return re.search(r'raise NotImplementedError\("([^"]+)"\)', stubs[0]).group(1)


def test_every_exercise_notebook_is_listed():
    from emolib import exercises

    assert sorted(source.stem for source in exercises.sources()) == sorted(EXERCISE_RUNS)


@pytest.mark.parametrize("name", sorted(EXERCISE_RUNS))
def test_the_exercise_solutions_pass_every_check_and_the_handout_stops_at_its_first_stub(name, shared, tmp_path):
    """Both copies ``python -m emolib exercises`` writes of each exercise notebook, executed as a student
    would run them, on the ``tiny`` preset (fold 1; its own runs folder, the module's corpus and caches)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from emolib import exercises, paths

    roots = Roots(tmp_path / "runs", tmp_path / "figures")
    with environment(roots, shared):
        written = {path.name: path for path in exercises.write_handouts(tmp_path / "handouts")}
        handout, solutions = written[f"{name}.ipynb"], written[f"{name}_solutions.ipynb"]
        params = {"preset": "tiny", "fold": 1}
        t0 = time.perf_counter()
        done = papermill.execute_notebook(str(solutions), str(tmp_path / "solved.ipynb"), parameters=params,
                                          kernel_name=driver.KERNEL, progress_bar=False)
        print(f"\nexercise solutions of {name}, tiny fold 1: {time.perf_counter() - t0:.1f} s")
        with pytest.raises(PapermillExecutionError) as info:
            papermill.execute_notebook(str(handout), str(tmp_path / "handout.ipynb"), parameters=params,
                                       kernel_name=driver.KERNEL, progress_bar=False)
    printed = "".join(o.get("text", "") for cell in done.cells for o in cell.get("outputs", []))
    lines, students = EXERCISE_RUNS[name]
    assert [line for line in printed.splitlines() if line.startswith("exercise ")] == lines
    # the students the notebook trained were written as runs: its tables read their files
    trained = sorted(p.parent.parent.name.rsplit("-", 1)[0]
                     for p in (roots.runs / "student").glob("*/fold1/metrics.json"))
    assert trained == students
    first = _first_stub_message(paths.exercises_dir() / f"{name}.py")  # e.g. "exercise 1: write soften"
    assert first.startswith("exercise 1: ")
    assert info.value.ename == "NotImplementedError" and info.value.evalue == first
