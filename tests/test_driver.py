"""The papermill run driver on the small notebooks in ``tests/fixtures/notebooks``.

``EMOLIB_ROOT`` points the driver at the fixture notebooks and ``EMOLIB_RUNS`` at a
temporary folder; the kernels inherit both. Each executed notebook costs about a
second, so every test executes as few as it can.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
import torch

from emolib import __main__ as cli
from emolib import driver
from emolib.config import Config, get_config

FIXTURES = Path(__file__).parent / "fixtures"
NOTEBOOKS = FIXTURES / "notebooks"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_ROOT", str(FIXTURES))
    for var, sub in [("EMOLIB_RUNS", "runs"), ("EMOLIB_DATA", "data"), ("EMOLIB_CACHE", "cache"), ("EMOLIB_FIGURES", "figures")]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in (*driver.THREAD_VARIABLES, "EMOLIB_PROGRESS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    # No corpus here: folds are passed explicitly unless a test injects a hook.
    monkeypatch.setattr(driver, "default_prepare", lambda: None)
    return tmp_path / "runs"


def _out_dir(runs: Path, preset: str, overrides: dict | None = None) -> Path:
    return runs / "notebooks" / f"{preset}-{get_config(preset, overrides).hash()}"


def _probe(runs: Path, name: str) -> dict:
    return json.loads((runs / "probe" / f"{name}.json").read_text())


def test_parameters_are_injected_and_a_second_run_skips(runs, capsys):
    out = _out_dir(runs, "tiny", {"training.seed": 3}) / "00_data"
    out.mkdir(parents=True)
    (out / ".fold2.ipynb.killed.ipynb").write_text("{")  # left behind by a SIGKILLed execution

    driver.run("tiny", folds=[2], notebooks=["00_data"], overrides={"training.seed": "3"}, extra={"message": "hi"})
    first = capsys.readouterr().out
    assert re.search(r"^\[1/1\] 00_data fold 2 \.\.\. done in \d+\.\d s$", first, re.M), first

    nb = nbformat.read(out / "fold2.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert [c.source for c in injected] == [
        '# Parameters\npreset = "tiny"\noverrides = {"training.seed": 3}\nfold = 2\nmessage = "hi"\n'
    ]
    printed = [o["text"] for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stdout"]
    assert printed == ["fold=2 preset=tiny seed=3 message=hi\n"]
    assert "jupytext" not in nb.metadata  # the executed copy can never pair back onto the source
    # batch runs log one line per epoch, not progress bars (the kernel would otherwise pick bars)
    probe = _probe(runs, "fold2")
    # the kernel's ports and keys were written under runs/, where the next execution replaces a killed
    # kernel's, not as a new temporary file in /tmp; a kernel that ends normally removes its own
    connection = out.parent / ".locks" / "00_data" / "fold2.kernel.json"
    assert probe.pop("connection_file") == str(connection) and not connection.exists()
    assert probe == {"fold": 2, "message": "hi", "seed": 3, "threads": None, "progress": "log", "gpu": None}

    sidecar = json.loads((out / "fold2.json").read_text())
    assert sidecar["source_sha1"] == hashlib.sha1((NOTEBOOKS / "00_data.py").read_bytes()).hexdigest()
    assert sidecar["parameters"] == {"preset": "tiny", "overrides": {"training.seed": 3}, "fold": 2, "message": "hi"}
    assert sorted(p.name for p in out.iterdir()) == ["fold2.ipynb", "fold2.json"]  # the stale temporary is gone

    # The same request again: nothing executes. "3" and 3 are the same override.
    mtime = (out / "fold2.ipynb").stat().st_mtime_ns
    summary = driver.run("tiny", folds=[2], notebooks=["00_data"], overrides={"training.seed": 3}, extra={"message": "hi"})
    second = capsys.readouterr().out
    assert "[1/1] 00_data fold 2 ... skip (complete)\n" in second
    assert (out / "fold2.ipynb").stat().st_mtime_ns == mtime
    assert [o.status for o in summary.outcomes] == ["skipped"]
    assert summary.timing["stages"] == {"00_data": {"seconds": 0.0, "executed": 0, "skipped": 1}}
    assert "time per stage" in second and re.search(r"^  00_data +0\.0 s   0 executed, 1 skipped$", second, re.M)
    assert json.loads((out.parent / "timing.json").read_text())["stages"] == summary.timing["stages"]

    # --force executes a complete notebook again (e.g. after editing emolib)
    code = cli.main(["run", "--preset", "tiny", "--folds", "2", "--notebooks", "00_data", "--set", "training.seed=3",
                     "-p", "message=hi", "--force"])
    assert code == 0 and "[1/1] 00_data fold 2 ... done in" in capsys.readouterr().out
    assert (out / "fold2.ipynb").stat().st_mtime_ns != mtime

    # a damaged completion record (a full disk, a hand edit) is not completion: the notebook runs again
    for damaged in ('{"source_sha1": "ab', "[]"):
        (out / "fold2.json").write_text(damaged)
        driver.run("tiny", folds=[2], notebooks=["00_data"], overrides={"training.seed": 3}, extra={"message": "hi"})
        assert "[1/1] 00_data fold 2 ... done in" in capsys.readouterr().out, damaged

    # an executed notebook cut short (a copy interrupted, a full disk) no longer opens: it runs again
    whole = (out / "fold2.ipynb").read_bytes()
    (out / "fold2.ipynb").write_bytes(whole[: len(whole) // 2])
    driver.run("tiny", folds=[2], notebooks=["00_data"], overrides={"training.seed": 3}, extra={"message": "hi"})
    assert "[1/1] 00_data fold 2 ... done in" in capsys.readouterr().out
    assert nbformat.read(out / "fold2.ipynb", as_version=4).cells
    assert json.loads((out / "fold2.json").read_text())["output_bytes"] == (out / "fold2.ipynb").stat().st_size

    # A changed parameter is a different request: it executes again.
    driver.run("tiny", folds=[2], notebooks=["00_data"], overrides={"training.seed": 3}, extra={"message": "bye"})
    assert "00_data fold 2 ... done in" in capsys.readouterr().out
    assert _probe(runs, "fold2")["message"] == "bye"

    # The same request on a corpus whose contents changed (prepare's fingerprint) executes again,
    # and once more with the same fingerprint it is skipped.
    class Prepared:
        def __init__(self, corpus):
            self.folds, self.corpus = [1, 2], corpus

    again = dict(folds=[2], notebooks=["00_data"], overrides={"training.seed": 3}, extra={"message": "bye"})
    for fingerprint, status in (("f00d", "done in"), ("f00d", "skip (complete)"), ("beef", "done in")):
        driver.run("tiny", prepare=lambda cfg: Prepared(fingerprint), **again)
        assert f"00_data fold 2 ... {status}" in capsys.readouterr().out, fingerprint
        assert json.loads((out / "fold2.json").read_text())["corpus"] == fingerprint

    # audio rewritten with as many bytes keeps the fingerprint, not the audio's digest: executed again. A
    # sidecar written before the digest was recorded (none in it) is trusted, as is a hook that gives none.
    class WithAudio(Prepared):
        def __init__(self, corpus, audio):
            super().__init__(corpus)
            self.audio = audio

    for fingerprint, audio, status in (("cafe", "a1", "done in"), ("cafe", "a1", "skip (complete)"),
                                       ("cafe", "a2", "done in"), ("cafe", "", "skip (complete)")):
        driver.run("tiny", prepare=lambda cfg: WithAudio(fingerprint, audio), **again)
        assert f"00_data fold 2 ... {status}" in capsys.readouterr().out, audio
    assert json.loads((out / "fold2.json").read_text())["audio"] == "a2"
    sidecar = json.loads((out / "fold2.json").read_text())
    del sidecar["audio"]
    (out / "fold2.json").write_text(json.dumps(sidecar))
    driver.run("tiny", prepare=lambda cfg: WithAudio("cafe", "a3"), **again)
    assert "00_data fold 2 ... skip (complete)" in capsys.readouterr().out


def test_an_interrupted_re_execution_leaves_the_notebook_incomplete(runs, capsys, monkeypatch):
    """Ctrl-C or a kill while a complete notebook runs again (e.g. the report, after new results)
    must not leave its old record behind: the next run would skip it and keep half-rewritten figures."""
    out = _out_dir(runs, "tiny") / "00_data"
    driver.run("tiny", folds=[1], notebooks=["00_data"])
    assert (out / "fold1.json").is_file()
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    execute_notebook = driver.papermill.execute_notebook
    monkeypatch.setattr(driver.papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver.run("tiny", folds=[1], notebooks=["00_data"], force=True)
    assert not (out / "fold1.json").exists()
    assert (out / "fold1.ipynb").is_file()  # the earlier output stays readable until a new one replaces it
    monkeypatch.setattr(driver.papermill, "execute_notebook", execute_notebook)
    driver.run("tiny", folds=[1], notebooks=["00_data"])
    assert "[1/1] 00_data fold 1 ... done in" in capsys.readouterr().out  # executed, not skipped


HOLD_THE_NOTEBOOK = """
import sys
from pathlib import Path
from emolib.runs import work_lock
with work_lock(Path(sys.argv[1]), "00_data fold 1", "executing it"):
    print("holding", flush=True)
    sys.stdin.readline()
"""


def _wait_behind_a_held_lock(lock: Path, run, wait_for_stdout, waiting: str, while_waiting=lambda: None):
    """Another process holds ``lock`` while ``run()`` (a driver run) starts in a thread: the run says
    ``waiting`` (``{pid}``: the holder's) and waits; once the lock is let go it finishes."""
    import threading

    other = subprocess.Popen([sys.executable, "-c", HOLD_THE_NOTEBOOK, str(lock)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "holding\n"
        done: list = []
        waiter = threading.Thread(target=lambda: done.append(run()))
        waiter.start()
        out = wait_for_stdout("waiting for it")
        assert waiting.format(pid=other.pid) in out
        assert waiter.is_alive()
        while_waiting()
        other.stdin.write("done\n")
        other.stdin.flush()
        waiter.join(timeout=120)
        assert [o.status for o in done[0].outcomes] == ["done"]
    finally:
        other.stdin.close()
        other.wait(timeout=60)


def test_a_notebook_another_driver_is_executing_is_waited_for(runs, wait_for_stdout):
    """Two drivers on one runs folder: the second does not delete the first's temporary output
    (papermill writes it until the end) nor execute the notebook beside it; it waits its turn."""
    output = _out_dir(runs, "tiny") / "00_data" / "fold1.ipynb"

    def not_written():
        assert not output.exists()

    _wait_behind_a_held_lock(_out_dir(runs, "tiny") / ".locks" / "00_data" / "fold1.lock",
                             lambda: driver.run("tiny", folds=[1], notebooks=["00_data"]), wait_for_stdout,
                             "00_data fold 1: another process (pid {pid}) is executing it; waiting for it", not_written)


def test_two_configs_reports_into_one_figures_folder_take_turns(runs, wait_for_stdout):
    """EMOLIB_FIGURES takes every config's report: two at once (two configs, so two notebook locks)
    interleaved their tables in it without a word. The report waits for the folder's lock."""
    cfg = get_config("tiny", {"training.seed": 5})  # another config than the holder's: only the folder is shared
    lock = driver.figures_lock_path(cfg)
    assert lock.parent == runs / ".locks" / "figures"  # never in the figures folder (the committed figures/)
    _wait_behind_a_held_lock(lock, lambda: driver.run("tiny", notebooks=["05_report"], overrides={"training.seed": "5"}),
                             wait_for_stdout, "another process (pid {pid}) is writing one there; waiting for it")


def test_unknown_parameter_is_rejected_before_execution(runs, capsys):
    with pytest.raises(driver.DriverError) as err:
        driver.run("tiny", folds=[1], notebooks=["00_data", "05_report"], extra={"mesage": "hi"})
    assert str(err.value) == (
        "unknown parameter 'mesage' (-p): no selected notebook declares it. "
        "Valid names: 00_data: fold, message, overrides, preset, wait_for_folds; 05_report: folds, overrides, preset"
    )
    code = cli.main(["run", "--preset", "tiny", "--folds", "1", "--notebooks", "00_data", "-p", "fold=3"])
    assert code == 2
    assert "error: -p fold=...: use --preset, --set and --folds" in capsys.readouterr().err
    assert not runs.exists()  # nothing was executed


def test_unknown_or_malformed_override_is_rejected(runs):
    with pytest.raises(driver.DriverError) as err:
        driver.run("tiny", folds=[1], notebooks=["00_data"], overrides={"student.optim.lrr": "1e-4"})
    message = str(err.value)
    assert message.startswith("--set: unknown config name 'student.optim.lrr'. Valid names: preset, data.corpus, ")
    assert ", student.optim.lr, " in message
    with pytest.raises(driver.DriverError, match=r"^config student.optim.lr: cannot read 'fast' as float$"):
        driver.run("tiny", folds=[1], notebooks=["00_data"], overrides={"student.optim.lr": "fast"})
    with pytest.raises(driver.DriverError, match=r"^unknown preset 'huge'; valid presets: tiny, default, paper$"):
        driver.run("huge", folds=[1], notebooks=["00_data"])
    if not torch.cuda.is_available():
        with pytest.raises(driver.DriverError, match=r"^training.device='cuda:1' requested but CUDA is not available"):
            driver.run("tiny", folds=[1], notebooks=["00_data"], overrides={"training.device": "cuda:1"})
    assert not runs.exists()


def test_a_corpus_that_cannot_be_prepared_is_an_error_line_not_a_traceback(runs, tmp_path, monkeypatch):
    from emolib import pipeline

    monkeypatch.setattr(driver, "default_prepare", lambda: pipeline.prepare)
    spec = f"iemocap:{tmp_path / 'IEMOCAP'}"
    with pytest.raises(driver.DriverError, match=rf"^prepare: {tmp_path / 'IEMOCAP'}: no such directory"):
        driver.run("tiny", notebooks=["00_data"], overrides={"data.corpus": spec})


def test_missing_notebooks_and_folds_are_errors(runs):
    with pytest.raises(driver.DriverError) as err:
        driver.run("tiny", folds=[1], notebooks=["00_data", "01_teachers"])
    assert str(err.value) == f"no notebook 01_teachers in {NOTEBOOKS}; available: 00_data, 05_report, fails"
    with pytest.raises(driver.DriverError, match="emolib.pipeline.prepare does not exist yet.*pass --folds"):
        driver.run("tiny", notebooks=["00_data"])
    with pytest.raises(driver.DriverError, match=r"^no fold \[3\] in this corpus; folds: \[1, 2\]$"):
        driver.run("tiny", folds=[3], notebooks=["00_data"], prepare=lambda cfg: [1, 2])
    with pytest.raises(driver.DriverError, match="--jobs must be at least 1"):
        driver.run("tiny", folds=[1], jobs=0)
    assert not (runs / "notebooks").exists()


def test_a_failing_cell_is_reported_with_its_notebook(runs, capsys):
    code = cli.main(["run", "--preset", "tiny", "--folds", "2", "--notebooks", "fails"])
    captured = capsys.readouterr()
    assert code == 1
    out = _out_dir(runs, "tiny") / "fails"
    failed = out / "fold2.failed.ipynb"
    assert re.search(r"^\[1/1\] fails fold 2 \.\.\. FAILED after \d+\.\d s$", captured.out, re.M), captured.out
    assert "error: fails fold 2 failed in cell In [4]: if fold == 2:\n" in captured.err
    assert "  RuntimeError: fold 2 is broken on purpose\n" in captured.err
    assert f"  executed notebook (partial): {failed}" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["fold2.failed.ipynb"]  # no output, no sidecar, no temporary

    nb = nbformat.read(failed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["before the failing cell\n"]
    assert [(o.ename, o.evalue) for o in outputs if o.output_type == "error"] == [
        ("RuntimeError", "fold 2 is broken on purpose")
    ]


def test_a_batch_kernel_logs_nothing_into_the_run_output(runs, capfd):
    # jupyter_client interrupts every kernel before shutting it down; one still finishing a message
    # would log "ERROR | KeyboardInterrupt caught in kernel." after a notebook that succeeded. The
    # fixture logs an error through the kernel's own logger; the kernel inherits the test's stderr.
    driver.run("tiny", folds=[1], notebooks=["00_data"])
    captured = capfd.readouterr()
    assert "00_data fold 1 ... done in" in captured.out
    assert "kernel log probe" not in captured.out + captured.err


def test_a_kernel_that_dies_starting_is_started_again(runs, capsys, monkeypatch):
    # Parallel jobs can start two kernels on one free port: the loser dies before it answers.
    real, calls = driver.papermill.execute_notebook, []

    def flaky(*args, fail: int, **kwargs):
        calls.append(1)
        if len(calls) <= fail:
            raise RuntimeError(driver.KERNEL_START_DIED)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver.papermill, "execute_notebook", lambda *a, **k: flaky(*a, fail=2, **k))
    driver.run("tiny", folds=[1], notebooks=["00_data"], extra={"message": "again"})
    assert len(calls) == 3 and _probe(runs, "fold1")["message"] == "again"
    assert re.search(r"^\[1/1\] 00_data fold 1 \.\.\. done in", capsys.readouterr().out, re.M)

    # a kernel that never starts fails the notebook after the last attempt, naming the cause
    calls.clear()
    monkeypatch.setattr(driver.papermill, "execute_notebook", lambda *a, **k: flaky(*a, fail=99, **k))
    with pytest.raises(driver.NotebookFailed, match=driver.KERNEL_START_DIED):
        driver.run("tiny", folds=[2], notebooks=["00_data"], extra={"message": "never"})
    assert len(calls) == driver.KERNEL_START_ATTEMPTS


def test_jobs_two_runs_folds_in_parallel_then_the_report(runs, capsys):
    calls: list[Config] = []

    def prepare(cfg: Config) -> list[int]:
        calls.append(cfg)
        return [1, 2]

    # Each fold's kernel waits until the other fold's kernel has started: this finishes
    # only if the two folds really run at the same time.
    summary = driver.run("tiny", jobs=2, prepare=prepare, extra={"wait_for_folds": [1, 2]})
    out = capsys.readouterr().out
    assert [c.preset for c in calls] == ["tiny"]
    lines = [line for line in out.splitlines() if line.startswith("[")]
    folds = [re.fullmatch(r"\[[12]/3\] 00_data fold ([12]) \.\.\. done in \d+\.\d s", line) for line in lines[:2]]
    assert sorted(m.group(1) for m in folds) == ["1", "2"], lines  # in the order they finished
    assert re.fullmatch(r"\[3/3\] 05_report \.\.\. done in \d+\.\d s", lines[2])

    threads = str(max(1, driver.available_cores() // 2))
    assert [_probe(runs, f"fold{k}")["threads"] for k in (1, 2)] == [threads, threads]
    assert [_probe(runs, f"fold{k}")["progress"] for k in (1, 2)] == ["log", "log"]
    # the report ran after both folds, and was told which folds the run covered
    assert _probe(runs, "report") == {"folds": [1, 2], "probes": ["fold1", "fold2"]}

    sidecars = [json.loads((summary.run_dir / "00_data" / f"fold{k}.json").read_text()) for k in (1, 2)]
    start, end = ([datetime.fromisoformat(s[key]) for s in sidecars] for key in ("started", "finished"))
    assert start[0] < end[1] and start[1] < end[0]  # the two executions overlapped

    assert {k: v["executed"] for k, v in summary.timing["stages"].items()} == {"prepare": 1, "00_data": 2, "05_report": 1}
    assert re.search(r"^  total \(wall\) +\d+\.\d s   jobs 2$", out, re.M)

    # Complete folds are reused, and so is the report when no fold re-ran.
    driver.run("tiny", jobs=2, prepare=prepare, extra={"wait_for_folds": [1, 2]})
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert sorted(again) == [
        "[1/3] 00_data fold 1 ... skip (complete)",
        "[2/3] 00_data fold 2 ... skip (complete)",
        "[3/3] 05_report ... skip (complete)",
    ]


def _prepare_and_record(cfg: Config) -> list[int]:
    """A prepare hook that says where it ran (a module-level function: it runs in a child process)."""
    record = {"device": cfg.training.device, "pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (Path(os.environ["EMOLIB_RUNS"]).parent / "prepared.json").write_text(json.dumps(record))
    return [1, 2]


def _prepare_refuses(cfg: Config) -> list[int]:
    raise FileNotFoundError("/data/gone.csv: no such manifest")


def _prepare_crashes(cfg: Config) -> list[int]:
    return {}["no such key"]


def test_gpus_give_each_running_fold_its_own_gpu(runs, capsys, monkeypatch):
    # No GPU here: the kernels only record what they would see. The shell shows two GPUs,
    # physical 5 and 3, so --gpus 1 0 means physical 3 then 5.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,3")
    monkeypatch.setattr(driver, "_cuda_device_count", lambda: 2)
    summary = driver.run("tiny", gpus=[1, 0], prepare=_prepare_and_record, extra={"wait_for_folds": [1, 2]})
    out = capsys.readouterr().out
    # shared features on the first listed GPU, in a process of its own (whose CUDA context ends
    # with it), which sees the shell's GPUs
    prepared = json.loads((runs.parent / "prepared.json").read_text())
    assert prepared["device"] == "cuda:1" and prepared["visible"] == "5,3" and prepared["pid"] != os.getpid()
    assert re.search(r"jobs 2 on GPUs 3,5 ->", out)  # jobs: one per GPU
    # the two folds ran at the same time (the barrier), so on different GPUs
    seen = {k: _probe(runs, f"fold{k}")["gpu"] for k in (1, 2)}
    assert sorted(seen.values()) == ["3", "5"]
    sidecars = {k: json.loads((summary.run_dir / "00_data" / f"fold{k}.json").read_text()) for k in (1, 2)}
    assert {k: s["gpu"] for k, s in sidecars.items()} == seen
    assert summary.timing["gpus"] == ["3", "5"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,3"  # the driver's own environment is left alone

    # One job on one GPU runs in this process; more jobs than GPUs share them round the list.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    driver.run("tiny", gpus=[1], folds=[1], extra={"message": "one"})
    assert _probe(runs, "fold1")["gpu"] == "1" and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert driver.gpu_slots([1, 0], 5, "auto") == ["1", "0", "1", "0", "1"]

    # GPUs that can get no work are said, and not recorded as used
    summary = driver.run("tiny", gpus=[0, 1], jobs=1, folds=[1], extra={"message": "two"})
    assert "note: GPU 1 gets no work (1 job(s) at a time for 1 fold(s))" in capsys.readouterr().out
    assert summary.timing["gpus"] == ["0"]


def test_a_gpu_without_gpus_runs_one_fold_at_a_time_and_prepares_apart(runs, capsys, monkeypatch):
    """training.device=auto on a GPU server, no --gpus: the shared features are still computed in a
    process of their own (the driver holds no CUDA context), and several jobs would all train on
    cuda:0 while the other GPUs idle: refused, saying what to do."""
    monkeypatch.setattr(driver, "_trains_on_cuda", lambda cfg: True)
    with pytest.raises(driver.DriverError, match=r"^--jobs 2 without --gpus would train 2 folds at once on one GPU "
                                                 r"\(training.device=auto\); .* --gpus 0 1 \.\.\. .* --jobs 1$"):
        driver.run("tiny", jobs=2, prepare=_prepare_and_record)
    assert not (runs.parent / "prepared.json").exists()  # refused before anything ran
    driver.run("tiny", jobs=1, prepare=_prepare_and_record, notebooks=["00_data"])
    prepared = json.loads((runs.parent / "prepared.json").read_text())
    assert prepared["device"] == "auto" and prepared["pid"] != os.getpid()
    capsys.readouterr()


def test_prepare_apart_from_the_driver_reports_its_errors(runs, monkeypatch):
    monkeypatch.setattr(driver, "_cuda_device_count", lambda: 1)
    with pytest.raises(driver.DriverError, match=r"^prepare: /data/gone.csv: no such manifest$"):
        driver.run("tiny", gpus=[0], prepare=_prepare_refuses)
    with pytest.raises(RuntimeError, match=r"(?s)prepare failed in its process:.*KeyError: 'no such key'"):
        driver.run("tiny", gpus=[0], prepare=_prepare_crashes)
    assert not (runs / "notebooks").exists()  # nothing ran


def test_a_freed_slot_goes_to_the_least_busy_gpu():
    # 3 jobs on GPUs 0 and 1: slots 0, 1, 0. With a notebook still running on GPU 0 and both
    # other slots free, the next notebook goes to GPU 1, whichever slot was freed first.
    assert driver.least_busy(["0", "1"], busy=["0"]) == "1"
    assert driver.least_busy(["1", "0"], busy=["1"]) == "0"
    assert driver.least_busy(["0", "1"], busy=[]) == "0"
    assert driver.least_busy([None, None], busy=[None]) is None  # no GPUs: any slot


@pytest.mark.parametrize(
    "gpus, device, message",
    [
        ([0, 0], "auto", "--gpus lists a GPU twice: 0 0"),
        ([0, 2], "auto", "--gpus 2: this machine has 2 GPU(s) visible, numbered from 0"),
        ([0], "cuda:1", "training.device='cuda:1' contradicts that"),
        ([0], "cpu", "training.device='cpu' contradicts that"),
    ],
)
def test_gpus_that_cannot_be_given_out_are_errors(monkeypatch, gpus, device, message):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(driver, "_cuda_device_count", lambda: 2)
    with pytest.raises(driver.DriverError, match=re.escape(message)):
        driver.gpu_slots(gpus, 2, device)


def test_gpus_on_a_machine_without_one_fail_before_anything_runs(runs, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli.main(["run", "--preset", "tiny", "--folds", "1", "--gpus", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: --gpus 0: this machine has 0 GPU(s) visible" in err
    assert not (runs / "probe").exists()


def test_figures_always_re_executes_the_report(runs, capsys):
    driver.run("tiny", notebooks=["05_report"])
    assert "[1/1] 05_report ... done in" in capsys.readouterr().out
    assert _probe(runs, "report") == {"folds": None, "probes": []}  # no folds given: the notebook's default
    assert cli.main(["figures", "--preset", "tiny"]) == 0
    assert "[1/1] 05_report ... done in" in capsys.readouterr().out
    assert cli.main(["figures", "--preset", "tiny", "--folds", "2", "1"]) == 0
    assert _probe(runs, "report") == {"folds": [1, 2], "probes": []}


def test_command_line_help():
    result = subprocess.run([sys.executable, "-m", "emolib", "--help"], capture_output=True, text=True, check=True)
    assert re.search(r"^    run +execute the notebooks", result.stdout, re.M)
    assert re.search(r"^    figures +rebuild tables and figures from result files", result.stdout, re.M)
    run_help = subprocess.run([sys.executable, "-m", "emolib", "run", "--help"], capture_output=True, text=True, check=True)
    for option in ("--preset {tiny,default,paper}", "--folds", "--notebooks", "--jobs", "--set NAME=VALUE", "-p NAME=VALUE", "--force"):
        assert option in run_help.stdout


@pytest.mark.parametrize("incomplete, executed", [
    ({"03_temperature_sweep"}, ["03_temperature_sweep"]),  # the ablations depend on 02, not on the sweep
    ({"01_teachers"}, ["01_teachers", "02_distill", "03_temperature_sweep", "04_ablations"]),
    (set(), []),
])
def test_one_job_re_runs_exactly_what_depends_on_a_notebook_that_ran(monkeypatch, incomplete, executed):
    # the sequential scheduler follows DEPENDS_ON, as the parallel one does
    class Fake(driver.Task):
        def is_complete(self) -> bool:
            return self.notebook not in incomplete

    chain = [Fake(name, Path(name), "", 1, {}, Path(name)) for name in driver.NOTEBOOKS[:5]]
    assert [t.notebook for t in chain][-1] == "04_ablations"
    ran: list[str] = []
    monkeypatch.setattr(driver, "execute", lambda task, gpu: ran.append(task.notebook) or driver.Outcome(task, "done"))
    progress = driver._Progress(len(chain), sys.stdout, sequential=True)
    outcomes = driver._run_folds({1: chain}, [None], False, progress)
    assert ran == executed
    assert [o.status for o in outcomes] == ["done" if t.notebook in executed else "skipped" for t in chain]


def test_relative_roots_and_paths_mean_the_same_folder_in_the_kernels(runs, tmp_path, monkeypatch):
    # the kernels run in the notebooks' folder: a relative EMOLIB_RUNS or --set path typed in
    # another folder must not be read against it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOLIB_RUNS", "rel runs")
    (tmp_path / "my model").mkdir()
    driver.run("tiny", folds=[1], notebooks=["00_data"], overrides={"student.backbone": "my model"})
    assert _probe(tmp_path / "rel runs", "fold1")["fold"] == 1
    assert not (NOTEBOOKS / "rel runs").exists()
    nb = nbformat.read(next((tmp_path / "rel runs" / "notebooks").glob("tiny-*/00_data/fold1.ipynb")), as_version=4)
    injected = next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert json.dumps(str(tmp_path / "my model")) in injected
    assert os.environ["EMOLIB_RUNS"] == "rel runs"  # the caller's environment is left as it was



DRIVE_TWO_WAITING_FOLDS = """
import sys
from emolib import __main__ as cli, driver
driver.default_prepare = lambda: None  # no corpus: the fixture notebooks need none
sys.exit(cli.main(["run", "--preset", "tiny", "--folds", "1", "2", "--notebooks", "00_data", "--jobs", "2",
                   "-p", "wait_for_folds=[9]"]))  # fold 9 never comes: each kernel waits (60 s, then fails)
"""


def _drive_two_waiting_folds(runs: Path) -> tuple[subprocess.Popen, list]:
    """The driver in a process of its own, once both folds' kernels are running: (driver, its
    workers and their kernels)."""
    import psutil

    driver_process = subprocess.Popen([sys.executable, "-c", DRIVE_TWO_WAITING_FOLDS], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
    probe, deadline = runs / "probe", time.monotonic() + 120
    while not all((probe / f"arrived-fold{k}.json").exists() for k in (1, 2)):
        assert driver_process.poll() is None, driver_process.communicate()
        assert time.monotonic() < deadline, "the kernels never started"
        time.sleep(0.1)
    descendants = psutil.Process(driver_process.pid).children(recursive=True)
    assert len(descendants) >= 4  # two workers, two kernels
    return driver_process, descendants


def _still_alive(processes: list, seconds: float = 90) -> list:
    """Those of ``processes`` still alive after waiting up to ``seconds`` for them (then killed,
    so that they do not outlive the test)."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=seconds)
    for p in alive:
        p.kill()
    return alive


@pytest.mark.slow
def test_a_killed_driver_leaves_no_worker_or_kernel_behind(runs):
    """SIGKILL (or the OOM killer) on the driver alone: its workers stop their kernels and exit,
    rather than training on for nobody and then idling for ever."""
    driver_process, descendants = _drive_two_waiting_folds(runs)
    driver_process.kill()
    driver_process.communicate()
    assert _still_alive(descendants) == []
    assert not list((runs / "notebooks").glob("*/00_data/fold*.json"))  # nothing is recorded as complete


@pytest.mark.slow
def test_sigterm_on_the_driver_takes_the_ctrl_c_path(runs):
    driver_process, descendants = _drive_two_waiting_folds(runs)
    driver_process.send_signal(signal.SIGTERM)
    _, err = driver_process.communicate(timeout=120)
    assert driver_process.returncode == 130, err
    assert "interrupted: complete notebooks are kept and skipped on the next run" in err
    assert _still_alive(descendants) == []


FORKED_POOL_UNDER_THE_HANDLER = """
import multiprocessing, signal
from emolib import __main__ as cli
with cli._sigterm_as_ctrl_c():
    for _ in range(5):  # a pool's close SIGTERMs its idle workers: once hung now and then, before the fix
        with multiprocessing.get_context("fork").Pool(2) as pool:
            total = sum(pool.map(abs, [-1, -2, 3]))
            in_worker = pool.apply(signal.getsignal, (signal.SIGTERM,))
    print(total, in_worker == signal.SIG_DFL, signal.getsignal(signal.SIGTERM) is cli._terminate_as_interrupt)
"""


def test_forked_pool_workers_stop_quietly_under_the_sigterm_handler():
    """The handler is inherited by fork. The eGeMAPS and corpus pools stop their idle workers with
    SIGTERM when they close, which must end them as by default: no KeyboardInterrupt traceback per
    worker in every `make report` log, and the parent still takes the Ctrl-C path."""
    done = subprocess.run([sys.executable, "-c", FORKED_POOL_UNDER_THE_HANDLER], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "True", "True"]  # workers have the default action, the parent the handler
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


def test_the_kernels_import_the_emolib_the_driver_runs_not_the_one_installed(tmp_path):
    """One environment, two checkouts (a second clone, a ``git worktree``): the driver ran from the
    second, its kernels imported the emolib installed in the environment (here: this checkout, in
    editable mode), ran the first one's code and wrote the first one's figures/. Found running
    ``make report VENV=<the other checkout's .venv>`` from a fresh clone. The kernel environment
    now puts the driver's checkout first on PYTHONPATH; a kernel is a process started with it."""
    import shutil

    other = tmp_path / "second checkout"
    shutil.copytree(Path(driver.__file__).parent, other / "emolib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(driver.__file__).parent.parent / "pyproject.toml", other)
    kernel = "import emolib; print(emolib.__file__)"
    script = ("import subprocess, sys\n"
              "from emolib import driver\n"
              "print(driver.__file__)\n"
              "with driver._kernel_environment():\n"
              f"    print(subprocess.run([sys.executable, '-c', {kernel!r}], cwd={str(tmp_path)!r}, text=True,\n"
              "                         capture_output=True, check=True).stdout.strip())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLIB_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=other, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    driver_file, kernel_file = done.stdout.splitlines()
    assert Path(driver_file) == other / "emolib" / "driver.py"
    assert Path(kernel_file) == other / "emolib" / "__init__.py"


@pytest.mark.parametrize("source", sorted((Path(__file__).parents[1] / "notebooks").rglob("*.py")),
                         ids=lambda p: p.relative_to(Path(__file__).parents[1] / "notebooks").as_posix())
def test_opening_and_saving_a_notebook_leaves_its_source_unchanged(source, tmp_path):
    """JupyterLab opens a source through jupytext and writes it back on save: without the header's
    metadata filter, jupytext adds its own version to the header, a diff in every student's
    checkout. The round trip goes through an .ipynb file, as `jupytext --to ipynb` and back."""
    import jupytext

    text = source.read_text(encoding="utf-8")
    ipynb = tmp_path / "notebook.ipynb"
    jupytext.write(jupytext.reads(text, fmt="py:percent"), ipynb)
    assert jupytext.writes(jupytext.read(ipynb), fmt="py:percent") == text
