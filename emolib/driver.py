"""The run driver: executes the report's notebooks with papermill, once per fold
(``python -m emolib run``; ``make report`` calls it).

The notebooks are jupytext percent ``.py`` files in :func:`emolib.paths.notebooks_dir`,
in the paper's order (:data:`NOTEBOOKS`). A notebook whose parameters cell declares
``fold`` runs once per fold; one without (``05_report``) runs once after every fold
has finished, and receives ``folds`` (the folds run) if its parameters cell declares it. Each fold's notebooks run in order; with ``jobs > 1`` different folds
run at the same time in separate processes.

What the driver guarantees:

* **Parameters are checked before anything runs.** Every name it passes (``preset``,
  ``overrides``, ``fold`` and ``-p`` extras) must be declared in the notebook's
  parameters cell (``papermill.inspect_notebook``; papermill itself only warns), and
  ``overrides`` must build a config (:func:`emolib.config.get_config` raises on an
  unknown dotted name).
* **Outputs are atomic.** A notebook executes into a temporary file beside its target
  ``runs/notebooks/<preset>-<config hash>/<notebook>/fold<k>.ipynb``; only a successful
  execution is renamed into place, followed by a sidecar ``fold<k>.json`` (source sha1,
  parameters, corpus fingerprint, wall time, the output's size). The sidecar is written last, so it marks
  completion; an output of another size than it records (cut short) runs again.
* **Re-running skips what is complete**: a notebook whose output and sidecar exist with
  the same source hash, parameters and corpus fingerprint (a manifest edited in place
  keeps its name, not its fingerprint), unless a notebook it depends on (``DEPENDS_ON``,
  the same fold: the sweep and the ablations on the distillation, not on each other; any
  fold for a once-only notebook) executed in this run, since its inputs may then have changed. The skip does not see changes to the ``emolib`` package: use
  ``--force`` after editing the package (the notebooks' own runs still reuse every
  complete result, :mod:`emolib.runs`).
* **A failure stops the run.** No new notebook starts; notebooks already running in
  other processes finish (their outputs are kept and reused next time) rather than
  being killed mid-cell. The partial notebook is kept as ``fold<k>.failed.ipynb`` and
  :class:`NotebookFailed` names it with the failing cell's error.
* **Parallel folds do not oversubscribe the CPU**: each worker process sets
  ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``EMOLIB_THREADS`` to
  ``cores // workers`` before it starts kernels (the kernels inherit them).
* **Parallel folds can share out the GPUs** (``gpus``, ``--gpus 0 1 2 3``): each running
  notebook gets one GPU slot, and its kernel sees only that GPU (``CUDA_VISIBLE_DEVICES``),
  as ``cuda:0``. Slots go round the listed GPUs, so ``jobs`` larger than the list puts
  several folds on one GPU; ``jobs`` defaults to one per GPU. The GPU a notebook ran on is
  recorded in its sidecar.
* **Shared work happens once**: before the fold loop :func:`emolib.pipeline.prepare`
  builds the corpus and the feature caches every fold reads, so parallel folds never
  race to write them; it also says which folds exist.
* **Time is accounted**: the run ends with the wall time per stage (summed over folds)
  and in total, also written to ``timing.json`` beside the executed notebooks (it
  describes the last invocation; each notebook's own time stays in its sidecar).

The same execution by hand, for a GPU server (one notebook, one fold)::

    jupytext --to ipynb --set-kernel python3 -o - notebooks/00_data.py \\
        | papermill - out.ipynb -p preset paper -p fold 2
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

import jupytext
import nbformat
import papermill
import zmq
from jupyter_client import KernelManager
from traitlets.config import Config as TraitletsConfig

from . import paths
from .config import Config, get_config
from .machine import WorkerDied, available_cores
from .runs import ResultFileError, atomic_path, atomic_write_json, read_json, work_lock

#: The report's notebooks in the paper's order: data, the two teachers, distillation,
#: the temperature sweep (Fig. 2), the ablations (Table 2), then tables and figures.
NOTEBOOKS = ("00_data", "01_teachers", "02_distill", "03_temperature_sweep", "04_ablations", "05_report")

#: Within a fold, the notebook each one needs finished first. The sweep and the ablations
#: both need the teachers and the student of 02 (the ablations reuse its ``full`` and
#: ``no_teachers`` runs) and write disjoint runs, so they may run side by side. A notebook
#: not listed here waits for the one before it in the fold's order.
DEPENDS_ON = {"01_teachers": "00_data", "02_distill": "01_teachers", "03_temperature_sweep": "02_distill",
              "04_ablations": "02_distill"}

#: Parameters the driver passes to every notebook; ``fold`` goes to per-fold ones only.
DRIVER_PARAMETERS = ("preset", "overrides")

#: The jupytext sources carry no kernelspec; papermill needs a kernel and a language.
KERNEL = "python3"
KERNELSPEC = {"name": KERNEL, "display_name": "Python 3", "language": "python"}

#: Environment variables that bound a kernel's CPU threads (torch reads OMP/MKL at
#: import; ``EMOLIB_THREADS`` is the project's own, for code that sets threads itself).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "EMOLIB_THREADS")

#: Builds what every fold shares and returns the fold numbers, or an object with ``folds``
#: and ``corpus`` (a fingerprint of the corpus's contents), like :func:`emolib.pipeline.prepare`.
Prepare = Callable[[Config], Any]


class DriverError(Exception):
    """The request cannot run as given (unknown notebook, parameter or override); nothing was executed."""


class NotebookFailed(Exception):
    """One or more notebooks raised; the message names each partial notebook and error."""

    def __init__(self, failures: list["Outcome"]):
        self.failures = failures
        super().__init__("\n".join(f.describe_failure() for f in failures))


# -- notebooks -----------------------------------------------------------------------


@dataclass(frozen=True)
class Notebook:
    """A jupytext source and the parameter names its parameters cell declares."""

    name: str
    path: Path
    sha1: str
    parameters: tuple[str, ...]

    @property
    def per_fold(self) -> bool:
        return "fold" in self.parameters


def read_notebook(text: str) -> nbformat.NotebookNode:
    """A percent-format source as a notebook papermill can execute.

    It gets a kernelspec (papermill needs kernel and language) and loses its jupytext
    metadata, so that the executed copy can never be paired back onto the source."""
    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata.setdefault("kernelspec", dict(KERNELSPEC))
    return nb


def declared_parameters(nb: nbformat.NotebookNode) -> tuple[str, ...]:
    """The names in the notebook's parameters cell, as papermill sees them."""
    # inspect_notebook reads only from a path; a temporary .ipynb is the cheapest one.
    with tempfile.TemporaryDirectory(prefix="emolib-inspect-") as tmp:
        path = Path(tmp) / "notebook.ipynb"
        nbformat.write(nb, path)
        return tuple(sorted(papermill.inspect_notebook(str(path))))


def load_notebook(path: Path) -> Notebook:
    data = path.read_bytes()
    return Notebook(
        name=path.stem,
        path=path,
        sha1=hashlib.sha1(data).hexdigest(),
        parameters=declared_parameters(read_notebook(data.decode("utf-8"))),
    )


def select_notebooks(names: Iterable[str] | None = None) -> list[Notebook]:
    """The notebooks to run, in the paper's order.

    ``None``: every notebook of :data:`NOTEBOOKS` that exists in the notebooks folder.
    Explicit names (``00_data``, ``00_data.py`` or ``notebooks/00_data.py``) must all
    exist; they run sorted by name, which is the paper's order for the numbered ones.
    """
    folder = paths.notebooks_dir()
    if names is None:
        chosen = [n for n in NOTEBOOKS if (folder / f"{n}.py").is_file()]
        if not chosen:
            raise DriverError(f"no notebooks to run: none of {', '.join(NOTEBOOKS)} exists in {folder}")
    else:
        chosen = sorted({Path(n).name.removesuffix(".py") for n in names})
        missing = [n for n in chosen if not (folder / f"{n}.py").is_file()]
        if missing:
            available = sorted(p.stem for p in folder.glob("*.py"))
            raise DriverError(
                f"no notebook {', '.join(missing)} in {folder}; available: {', '.join(available) or 'none'}"
            )
    return [load_notebook(folder / f"{n}.py") for n in chosen]


def check_parameters(notebooks: list[Notebook], extra: dict[str, Any]) -> None:
    """Raise :class:`DriverError` unless every notebook declares every name it will be given."""
    reserved = sorted(set(extra) & {"preset", "overrides", "fold", "folds"})
    if reserved:
        raise DriverError(f"-p {reserved[0]}=...: use --preset, --set and --folds for the driver's own parameters")
    for nb in notebooks:
        if not nb.parameters:
            raise DriverError(f"{nb.path}: no parameters cell (a cell headed # %% tags=[\"parameters\"])")
        missing = [p for p in DRIVER_PARAMETERS if p not in nb.parameters]
        if missing:
            raise DriverError(
                f"{nb.path}: its parameters cell lacks {', '.join(missing)}; it declares: {', '.join(nb.parameters)}"
            )
    for name in extra:
        if not any(name in nb.parameters for nb in notebooks):
            valid = "; ".join(f"{nb.name}: {', '.join(nb.parameters)}" for nb in notebooks)
            raise DriverError(f"unknown parameter {name!r} (-p): no selected notebook declares it. Valid names: {valid}")


# -- one execution -------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One notebook for one fold (``fold=None``: once after all folds). Picklable: it
    crosses into worker processes."""

    notebook: str
    source: Path
    sha1: str
    fold: int | None
    parameters: dict[str, Any]
    output: Path
    corpus: str = ""  # the corpus fingerprint from prepare: a changed corpus re-runs the notebook
    audio: str = ""  # the digest of its audio files' bytes from prepare (a file rewritten with as many bytes)

    @property
    def label(self) -> str:
        return self.notebook if self.fold is None else f"{self.notebook} fold {self.fold}"

    @property
    def sidecar(self) -> Path:
        return self.output.with_suffix(".json")

    @property
    def failed_output(self) -> Path:
        return self.output.with_name(f"{self.output.stem}.failed.ipynb")

    @property
    def lock(self) -> Path:
        """Held while the notebook executes: ``<run>/.locks/<notebook>/<fold>.lock``."""
        return self.output.parent.parent / ".locks" / self.output.parent.name / f"{self.output.stem}.lock"

    @property
    def connection_file(self) -> Path:
        """Its kernel's connection file, beside the lock (one kernel at a time per notebook)."""
        return self.lock.with_suffix(".kernel.json")

    def is_complete(self) -> bool:
        """The executed notebook exists, as large as its sidecar recorded it (a copy cut short, or a
        full disk, leaves a notebook that no longer opens: it runs again), and its sidecar matches
        this source, these parameters and this version of the corpus (its audio compared when both
        the sidecar and prepare give a digest: sidecars written before it was recorded are trusted)."""
        if not self.output.is_file() or not self.sidecar.is_file():
            return False
        try:
            record = read_json(self.sidecar)
            size = self.output.stat().st_size
        except (OSError, ValueError, ResultFileError):  # a damaged record: the notebook runs again
            return False
        return isinstance(record, dict) and (record.get("source_sha1") == self.sha1 and record.get("parameters") == self.parameters
                and record.get("corpus", "") == self.corpus
                and (not record.get("audio") or not self.audio or record["audio"] == self.audio)
                and record.get("output_bytes", size) == size)  # sidecars written before it was recorded: trusted


@dataclass
class Outcome:
    task: Task
    status: str  # "done", "skipped" or "failed"
    seconds: float = 0.0
    error: str = ""  # "RuntimeError: ..." for a failure
    cell: str = ""  # where it failed: "In [3]" and the cell's first line

    def describe_failure(self) -> str:
        where = f" in cell {self.cell}" if self.cell else ""
        partial = self.task.failed_output
        kept = f"\n  executed notebook (partial): {_show(partial)}" if partial.is_file() else ""
        return f"{self.task.label} failed{where}\n  {self.error}{kept}"


#: A batch kernel's own log (not the notebook's output, which papermill records) shows critical
#: messages only. jupyter_client interrupts every kernel (SIGINT) before it asks it to shut down,
#: and a kernel still finishing a message then logs "ERROR | KeyboardInterrupt caught in kernel."
#: into the run's output, an error line after a notebook that succeeded.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)


def kernel_config(connection_file: Path | None = None) -> TraitletsConfig:
    """Encrypted kernel traffic (CurveZMQ) where jupyter_client and pyzmq support it; the
    kernel's connection file (its ports and keys) at ``connection_file``, when given; and the
    kernel's arguments (:data:`KERNEL_ARGUMENTS`).

    Kernels listen on localhost TCP ports, which other users of a shared server can
    reach; ipykernel >= 7.4 also prints a warning per unencrypted kernel, which would
    interleave with the progress lines. jupyter_client otherwise writes the connection file
    as a new temporary file in /tmp, which stays there when the kernel is killed."""
    manager: dict[str, Any] = {}
    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        manager["transport_encryption"] = "auto"
    if connection_file is not None:
        manager["connection_file"] = str(connection_file)
    config: dict[str, Any] = {"NotebookClient": {"extra_arguments": list(KERNEL_ARGUMENTS)}}
    if manager:
        config["KernelManager"] = manager
    return TraitletsConfig(config)


@contextlib.contextmanager
def _visible_gpu(gpu: str | None) -> Iterator[None]:
    """The kernels started meanwhile see only ``gpu`` (a ``CUDA_VISIBLE_DEVICES`` entry)."""
    if gpu is None:
        yield
        return
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous


#: A kernel that died before it answered, and how often a notebook's kernel is started before
#: that counts as its failure. Kernels started at the same moment in parallel jobs can be
#: given the same free TCP port (jupyter_client picks ports before the kernel binds them:
#: "Address already in use"), so the loser is started again.
KERNEL_START_DIED = "Kernel died before replying to kernel_info"
KERNEL_START_ATTEMPTS = 3


def execute(task: Task, gpu: str | None = None) -> Outcome:
    """Execute one notebook into its output file (atomically) and write its sidecar;
    with ``gpu``, its kernel sees that GPU only.

    Never raises for a failing notebook: the :class:`Outcome` carries the error, so
    that it crosses process boundaries intact."""
    data = task.source.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()  # what actually ran, should the file change mid-run
    nb = read_notebook(data.decode("utf-8"))
    task.output.parent.mkdir(parents=True, exist_ok=True)
    # Another driver on the same runs folder executing this notebook: wait for it (its temporary
    # output is then no longer being written, and this execution replaces its result).
    with work_lock(task.lock, f"{task.notebook}{'' if task.fold is None else f' fold {task.fold}'}", "executing it"):
        return _execute(task, nb, sha1, gpu)


def _execute(task: Task, nb, sha1: str, gpu: str | None) -> Outcome:
    """:func:`execute`, under the notebook's lock."""
    # The old record goes first: an execution interrupted from here on (Ctrl-C, a kill) must leave
    # the notebook incomplete, or the next run would skip it and keep, say, half-rewritten figures.
    with contextlib.suppress(FileNotFoundError):
        task.sidecar.unlink()
    for stale in (*task.output.parent.glob(f".{task.output.name}.*"), task.connection_file):
        stale.unlink(missing_ok=True)  # what an execution that was killed left (SIGKILL runs no cleanup)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        with atomic_path(task.output) as tmp, _visible_gpu(gpu):
            try:
                for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
                    try:
                        papermill.execute_notebook(
                            nb,
                            str(tmp),
                            parameters=task.parameters,
                            kernel_name=KERNEL,
                            language="python",
                            progress_bar=False,
                            cwd=str(task.source.parent),  # as in JupyterLab: the notebook's own folder
                            config=kernel_config(task.connection_file),
                        )
                        break
                    except RuntimeError as e:  # no cell ran yet when the kernel died starting
                        if attempt == KERNEL_START_ATTEMPTS or KERNEL_START_DIED not in str(e):
                            raise
            except BaseException:
                if tmp.is_file():  # papermill saves after every cell: keep the partial notebook
                    os.replace(tmp, task.failed_output)
                raise
    except papermill.PapermillExecutionError as e:
        first_line = next((line for line in e.source.splitlines() if line.strip()), "")
        return Outcome(
            task, "failed", time.perf_counter() - t0, error=f"{e.ename}: {e.evalue}", cell=f"In [{e.exec_count}]: {first_line}"
        )
    except Exception as e:  # the kernel died, would not start, ...
        return Outcome(task, "failed", time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    atomic_write_json(
        task.sidecar,
        {
            "notebook": task.notebook,
            "source": str(task.source),
            "source_sha1": sha1,
            "fold": task.fold,
            "parameters": task.parameters,
            "corpus": task.corpus,
            **({"audio": task.audio} if task.audio else {}),
            "kernel": KERNEL,
            **({"gpu": gpu} if gpu is not None else {}),
            "started": started.isoformat(timespec="milliseconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "seconds": round(seconds, 3),
            "output_bytes": task.output.stat().st_size,
        },
    )
    with contextlib.suppress(FileNotFoundError):
        task.failed_output.unlink()  # an earlier failure of this notebook is now stale
    return Outcome(task, "done", seconds)


# -- scheduling ----------------------------------------------------------------------


class _Progress:
    """One line per notebook: ``[ 3/26] 01_teachers fold 2 ... done in 41.2 s``.

    Run sequentially, the line starts when the notebook starts and ends when it ends;
    with parallel folds, whole lines are printed as notebooks finish."""

    def __init__(self, total: int, out: TextIO, sequential: bool):
        self.total, self.out, self.sequential = total, out, sequential
        self.count = 0
        self.width = len(str(total))

    def _prefix(self, task: Task) -> str:
        self.count += 1
        return f"[{self.count:>{self.width}}/{self.total}] {task.label} ... "

    def start(self, task: Task) -> None:
        if self.sequential:
            print(self._prefix(task), end="", file=self.out, flush=True)

    def finish(self, outcome: Outcome) -> None:
        status = {
            "done": f"done in {outcome.seconds:.1f} s",
            "skipped": "skip (complete)",
            "failed": f"FAILED after {outcome.seconds:.1f} s",
        }[outcome.status]
        started = self.sequential and outcome.status != "skipped"
        print(("" if started else self._prefix(outcome.task)) + status, file=self.out, flush=True)


#: How long a worker whose driver is gone gives its notebook's kernel to shut down before it exits.
ORPHAN_GRACE_SECONDS = 30


def _limit_threads(threads: int) -> None:
    """Worker-process initialiser: kernels started from here inherit the thread limits; and a
    worker whose driver is killed (SIGKILL, the OOM killer) stops instead of training on for
    nobody and then idling for ever (:func:`_stop_when_orphaned`)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True,
                     name="emolib-orphan-watch").start()


def _stop_when_orphaned(driver: int, interval: float = 1.0) -> None:
    """Once the worker's parent is no longer ``driver``: SIGTERM to itself, which nbclient turns
    into shutting its kernel down (the notebook then fails, and is run again next time), then exit."""
    while os.getppid() == driver:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)  # between notebooks (no handler): the worker just ends here
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(1)


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """SIGTERM to every worker, whose nbclient then shuts its kernel down: the driver was interrupted
    (Ctrl-C reaches the workers too, a ``kill`` of the driver does not)."""
    processes = getattr(pool, "_processes", None) or {}  # pid -> process; no public API before Python 3.14
    for pid in list(processes):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _run_folds(chains: dict[int, list[Task]], slots: list[str | None], force: bool,
               progress: _Progress) -> list[Outcome]:
    """Run every fold's notebooks: one after another with one job, as a dependency graph
    (``_run_graph``) with more; ``slots`` holds one GPU (or ``None``) per job. Either way a
    notebook re-runs when it is incomplete, with ``force``, or when a notebook it
    (transitively) depends on ran in this invocation."""
    outcomes: list[Outcome] = []
    failures: list[Outcome] = []
    workers = min(len(slots), len(chains))
    if workers > 1:
        return _run_graph(chains, slots[:workers], force, progress, outcomes, failures)
    for fold, chain in chains.items():
        deps, ran = _dependencies(chain), set()
        for task in chain:
            if failures:
                return outcomes
            if force or _ancestor_ran(deps, task.notebook, ran) or not task.is_complete():
                progress.start(task)
                outcome = execute(task, slots[0])
            else:
                outcome = Outcome(task, "skipped")
            outcomes.append(outcome)
            progress.finish(outcome)
            if outcome.status == "failed":
                failures.append(outcome)
            elif outcome.status == "done":
                ran.add(task.notebook)
    return outcomes


def _ancestor_ran(deps: dict[str, str | None], name: str, ran: set[str]) -> bool:
    """Whether a notebook ``name`` depends on, directly or not, ran in this invocation."""
    while (name := deps[name]) is not None:
        if name in ran:
            return True
    return False


def _dependencies(chain: list[Task]) -> dict[str, str | None]:
    """Notebook -> the notebook of the same fold it waits for (see ``DEPENDS_ON``)."""
    names = [t.notebook for t in chain]
    deps: dict[str, str | None] = {}
    for i, name in enumerate(names):
        wanted = DEPENDS_ON.get(name)
        deps[name] = wanted if wanted in names[:i] else (names[i - 1] if i else None)
    return deps


def least_busy(free: list[str | None], busy: list[str | None]) -> str | None:
    """The free slot whose GPU runs the fewest notebooks now (with more jobs than GPUs, a slot
    freed on a busy GPU must not be taken while another GPU idles); ties: the first."""
    return min(free, key=busy.count)


def _run_graph(chains: dict[int, list[Task]], slots: list[str | None], force: bool, progress: _Progress,
               outcomes: list[Outcome], failures: list[Outcome]) -> list[Outcome]:
    """Parallel folds, scheduled notebook by notebook: a notebook starts as soon as the one
    it depends on has finished, earliest stage first (every fold's teachers before any
    fold's sweep), so that the long notebooks are spread over the workers and the short
    ones fill in at the end, instead of the last fold running alone. A running notebook
    holds one of ``slots`` (its GPU) until it finishes."""
    workers = len(slots)
    free = list(slots)
    order = {name: i for i, name in enumerate(NOTEBOOKS)}
    deps = {fold: _dependencies(chain) for fold, chain in chains.items()}
    state: dict[tuple[int, str], str] = {}  # "running", "done", "skipped", "failed"
    ran: dict[int, set[str]] = {fold: set() for fold in chains}  # executed in this invocation

    def ready() -> list[Task]:
        out = []
        for fold, chain in chains.items():
            for task in chain:
                key = (fold, task.notebook)
                dep = deps[fold][task.notebook]
                if key not in state and (dep is None or state.get((fold, dep)) in ("done", "skipped")):
                    out.append(task)
        return sorted(out, key=lambda t: (order.get(t.notebook, len(order)), t.fold))

    def settle(outcome: Outcome) -> None:
        key = (outcome.task.fold, outcome.task.notebook)
        state[key] = outcome.status
        if outcome.status == "done":
            ran[outcome.task.fold].add(outcome.task.notebook)
        outcomes.append(outcome)
        progress.finish(outcome)
        if outcome.status == "failed":
            failures.append(outcome)

    # Spawned (not forked) workers: forking a process that may hold torch's OpenMP threads
    # (prepare ran here) is unsafe. A worker costs 2-3 s of imports (nbformat, papermill).
    # Scripts calling run(jobs > 1) therefore need the usual `if __name__ == "__main__":` guard.
    threads = max(1, available_cores() // workers)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_limit_threads,
        initargs=(threads,),
    ) as pool:
        running: dict[concurrent.futures.Future, tuple[Task, str | None]] = {}

        def fill() -> None:
            while not failures and len(running) < workers:
                candidates = ready()
                if not candidates:
                    return
                task = candidates[0]
                key = (task.fold, task.notebook)
                if not (force or _ancestor_ran(deps[task.fold], task.notebook, ran[task.fold]) or not task.is_complete()):
                    settle(Outcome(task, "skipped"))
                    continue
                state[key] = "running"
                gpu = least_busy(free, [held for _, held in running.values()])
                free.remove(gpu)
                running[pool.submit(execute, task, gpu)] = (task, gpu)

        try:
            fill()
            while running:
                finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    task, gpu = running.pop(future)
                    free.append(gpu)
                    try:
                        outcome = future.result()
                    except Exception as e:  # the worker process itself died (e.g. out of memory)
                        outcome = Outcome(task, "failed", error=f"{type(e).__name__}: {e}")
                    settle(outcome)
                fill()
        except BaseException:  # Ctrl-C, or SIGTERM (see __main__): do not wait for the running notebooks
            _stop_workers(pool)
            raise
    return outcomes


# -- the run -------------------------------------------------------------------------


def default_prepare() -> Prepare | None:
    """``emolib.pipeline.prepare`` (corpus and shared feature caches, returns the folds).
    A test may return ``None`` instead: then nothing is prepared and the folds are the ones asked for."""
    from . import pipeline

    return pipeline.prepare


def _apart(hook: Prepare) -> Prepare:
    """``hook`` run in a new (spawned, not daemonic: it may start workers of its own) process;
    its result or error comes back: a ValueError or FileNotFoundError as a ValueError with the
    same message, anything else as a RuntimeError with the child's traceback."""

    def call(cfg: Config) -> Any:
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_call_and_send, args=(send, hook, cfg), name="emolib-prepare")
        child.start()
        send.close()
        try:
            kind, value = receive.recv()
        except EOFError:
            kind, value = "died", None
        finally:
            child.join()
        if kind == "ok":
            return value
        if kind == "error":
            raise ValueError(value)
        if kind == "died":
            raise DriverError(f"prepare: its process ended without a result (exit code {child.exitcode})")
        raise RuntimeError(f"prepare failed in its process:\n{value}")

    return call


def _call_and_send(send, hook: Prepare, cfg: Config) -> None:
    """The child's side of :func:`_apart`."""
    import traceback

    try:
        send.send(("ok", hook(cfg)))
    except (ValueError, FileNotFoundError, WorkerDied) as e:  # a corpus, a file, a model folder: named, as in-process
        send.send(("error", str(e)))
    except BaseException:
        send.send(("crash", traceback.format_exc()))
    finally:
        send.close()


def _plain(obj: Any, what: str) -> Any:
    """JSON-shaped parameters (tuples become lists): what papermill can inject and a
    sidecar can record and compare exactly."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as e:
        raise DriverError(f"{what}: {e}") from None


def _trains_on_cuda(cfg: Config) -> bool:
    """Whether the notebooks' kernels will train on a GPU (``training.device``, ``auto`` included)."""
    from .train import resolve_device

    return resolve_device(cfg.training.device).type == "cuda"


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_slots(gpus: list[int] | None, jobs: int, device: str) -> list[str | None]:
    """One ``CUDA_VISIBLE_DEVICES`` value per job, going round ``gpus`` (``None`` each
    without ``gpus``).

    ``gpus`` numbers the GPUs as torch does in this shell, as ``training.device=cuda:K``
    does: under ``CUDA_VISIBLE_DEVICES=4,5``, GPU 1 is physical GPU 5. A job then sees its
    GPU as ``cuda:0``, so a device naming another one contradicts ``gpus``."""
    if not gpus:
        return [None] * jobs
    if len(set(gpus)) != len(gpus):
        raise DriverError(f"--gpus lists a GPU twice: {' '.join(map(str, gpus))}")
    if device not in ("auto", "cuda", "cuda:0"):
        raise DriverError(f"--gpus gives each job one GPU, which it sees as cuda:0; training.device={device!r} "
                          "contradicts that (leave it at auto)")
    count = _cuda_device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    outside = [g for g in gpus if not 0 <= g < count]
    if outside:
        seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise DriverError(f"--gpus {' '.join(map(str, outside))}: this machine has {count} GPU(s) visible{seen}, "
                          f"numbered from 0")
    ids = [v.strip() for v in visible.split(",")] if visible is not None else [str(g) for g in range(count)]
    return [ids[gpus[i % len(gpus)]] for i in range(jobs)]


def _build_config(preset: str, overrides: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """The config the notebooks will build, and the overrides with their values coerced
    to the config's types (so ``"1e-4"`` and ``0.0001`` are the same request)."""
    from .train import resolve_device

    try:
        cfg = get_config(preset, overrides)
        resolve_device(cfg.training.device)  # a GPU this machine lacks: said before anything runs
    except KeyError as e:
        raise DriverError(f"--set: {e.args[0]}") from None
    except ValueError as e:
        raise DriverError(str(e)) from None
    resolved = {}
    for name in overrides:
        value: Any = cfg
        for part in name.split("."):
            value = getattr(value, part)
        resolved[name] = value
    return cfg, _plain(resolved, "--set")


def _resolve_folds(cfg: Config, folds: list[int] | None, prepare: Prepare | None,
                   out: TextIO) -> tuple[list[int], float | None, tuple[str, str]]:
    """The folds to run, the preparation time (``None`` when there was no hook) and the
    corpus's identity: its fingerprint and its audio's digest (each empty when the hook gives none)."""
    requested = sorted({int(f) for f in folds}) if folds else None
    if prepare is None:
        if requested is None:
            raise DriverError("emolib.pipeline.prepare does not exist yet, so the folds are unknown: pass --folds")
        if min(requested) < 1:
            raise DriverError(f"folds are numbered from 1, got {requested}")
        return requested, None, ("", "")
    print("prepare: corpus and shared features", file=out, flush=True)  # prepare prints its own progress
    t0 = time.perf_counter()
    try:
        prepared = prepare(cfg)
    except (ValueError, FileNotFoundError, WorkerDied) as e:  # a corpus or audio file, a model folder, a device,
        # a feature-extraction worker that died: named
        raise DriverError(f"prepare: {e}") from e
    corpus = (str(getattr(prepared, "corpus", "")), str(getattr(prepared, "audio", "") or ""))
    available = [int(f) for f in getattr(prepared, "folds", prepared)]
    seconds = time.perf_counter() - t0
    print(f"prepare: done in {seconds:.1f} s ({len(available)} folds)", file=out, flush=True)
    if requested is None:
        return available, seconds, corpus
    unknown = [f for f in requested if f not in available]
    if unknown:
        raise DriverError(f"no fold {unknown} in this corpus; folds: {available}")
    return requested, seconds, corpus


@dataclass
class Summary:
    run_dir: Path
    outcomes: list[Outcome]
    timing: dict[str, Any]


def run(
    preset: str = "default",
    *,
    folds: list[int] | None = None,
    notebooks: list[str] | None = None,
    jobs: int | None = None,
    gpus: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    force: bool = False,
    prepare: Prepare | None = None,
    out: TextIO | None = None,
) -> Summary:
    """Execute the notebooks for every fold, then the once-only ones; see the module doc.

    ``jobs`` folds run at once (default: one per GPU of ``gpus``, else 1); ``gpus`` pins
    each running notebook to one GPU (:func:`gpu_slots`). ``prepare`` defaults to
    :func:`default_prepare`; tests pass their own. Raises :class:`DriverError` before
    executing anything when the request is invalid, and :class:`NotebookFailed` when a
    notebook raised.
    """
    with _kernel_environment():
        return _run(preset, folds, notebooks, jobs, gpus, overrides, extra, force, prepare, out)


#: The roots of :mod:`emolib.paths`: a relative one is made absolute for the kernels.
ROOT_VARIABLES = ("EMOLIB_ROOT", "EMOLIB_DATA", "EMOLIB_CACHE", "EMOLIB_RUNS", "EMOLIB_FIGURES")


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """For the kernels started meanwhile: ``EMOLIB_PROGRESS=log`` (unless set), one line per
    epoch in the executed notebooks, not a tqdm refresh per line (:mod:`emolib.progress`); every
    ``EMOLIB_*`` root absolute, since the kernels run in ``notebooks/`` and would read a relative
    one against that folder; cuBLAS's deterministic workspace (unless set), which cuBLAS reads
    only when it starts (``training.deterministic`` on a GPU, :func:`emolib.train.setup`); and, when
    the driver runs from a checkout, that checkout first on ``PYTHONPATH``, so that the kernels import
    the emolib the driver runs. Without it a kernel imported whatever the environment had installed:
    with one venv (or conda env) and a second checkout or ``git worktree``, the driver ran the second
    one's code and notebooks, the kernels the first one's emolib, which also wrote the first one's
    ``figures/``."""
    from . import CUBLAS_WORKSPACE

    previous = {var: os.environ.get(var)
                for var in ("EMOLIB_PROGRESS", "CUBLAS_WORKSPACE_CONFIG", "PYTHONPATH", *ROOT_VARIABLES)}
    os.environ.setdefault("EMOLIB_PROGRESS", "log")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    for var in ROOT_VARIABLES:
        if os.environ.get(var):
            os.environ[var] = os.path.abspath(os.environ[var])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():  # not site-packages, which must not go before the standard library
        os.environ["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [previous["PYTHONPATH"]])])
    try:
        yield
    finally:
        for var, value in previous.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _run(preset: str, folds: list[int] | None, notebooks: list[str] | None, jobs: int | None,
         gpus: list[int] | None, overrides: dict[str, Any] | None, extra: dict[str, Any] | None, force: bool,
         prepare: Prepare | None, out: TextIO | None) -> Summary:
    out = out or sys.stdout
    t0 = time.perf_counter()
    if jobs is None:
        jobs = len(gpus) if gpus else 1
    if jobs < 1:
        raise DriverError(f"--jobs must be at least 1, got {jobs}")
    cfg, overrides = _build_config(preset, dict(overrides or {}))
    on_cuda = bool(gpus) or _trains_on_cuda(cfg)
    if on_cuda and not gpus and jobs > 1:  # every kernel would pick the same GPU, and the others idle
        raise DriverError(f"--jobs {jobs} without --gpus would train {jobs} folds at once on one GPU "
                          f"(training.device={cfg.training.device}); give each running fold its own GPU with "
                          "--gpus 0 1 ... (make: GPUS=\"0 1 ...\"), or run one fold at a time with --jobs 1")
    slots = gpu_slots(gpus, max(jobs, len(gpus or ())), cfg.training.device)  # every listed GPU at least once
    extra = _plain(dict(extra or {}), "-p")
    selected = select_notebooks(notebooks)
    check_parameters(selected, extra)

    per_fold = [nb for nb in selected if nb.per_fold]
    once = [nb for nb in selected if not nb.per_fold]
    fold_list: list[int] = []
    prepare_seconds, corpus = None, ("", "")
    if per_fold:
        hook = prepare or default_prepare()
        if on_cuda and hook is not None:
            # prepare computes features on the GPU (the first listed one, not the shell's cuda:0), in
            # a process of its own whose CUDA context ends with it: this one never holds a context
            # that a kernel's would share the GPU with (or be refused by, in exclusive-process mode)
            cfg_gpu = replace(cfg, training=replace(cfg.training, device=f"cuda:{gpus[0]}")) if gpus else cfg
            fold_list, prepare_seconds, corpus = _resolve_folds(cfg_gpu, folds, _apart(hook), out)
        else:
            fold_list, prepare_seconds, corpus = _resolve_folds(cfg, folds, hook, out)
    # A once-only notebook that declares `folds` learns which folds this run covered
    # (a report over `--folds 1 2` must not look for folds 3-5); otherwise it keeps its default.
    report_folds = fold_list or (sorted({int(f) for f in folds}) if folds else None)

    run_dir = paths.executed_notebooks_dir(cfg)

    def task(nb: Notebook, fold: int | None) -> Task:
        params: dict[str, Any] = {"preset": preset, "overrides": overrides}
        if fold is not None:
            params["fold"] = fold
        elif "folds" in nb.parameters and report_folds is not None:
            params["folds"] = report_folds
        params.update({k: v for k, v in extra.items() if k in nb.parameters})
        name = f"fold{fold}.ipynb" if fold is not None else "all.ipynb"
        return Task(nb.name, nb.path, nb.sha1, fold, params, run_dir / nb.name / name, *corpus)

    chains = {fold: [task(nb, fold) for nb in per_fold] for fold in fold_list}
    finals = [task(nb, None) for nb in once]
    total = sum(map(len, chains.values())) + len(finals)
    used = slots[:max(1, min(jobs, len(chains)))]  # one GPU slot per job that can run at once
    print(
        f"emolib run: preset {preset}, config {cfg.hash()}, {len(fold_list)} folds x {len(per_fold)} notebooks"
        f" + {len(once)} once, jobs {jobs}{_gpus_text(_gpus_used(used))} -> {_show(run_dir)}",
        file=out,
        flush=True,
    )
    idle = [g for g in _gpus_used(slots) if g not in used]
    if idle:
        print(f"note: GPU{'s' if len(idle) > 1 else ''} {','.join(idle)} get{'' if len(idle) > 1 else 's'} no work "
              f"({len(used)} job(s) at a time for {len(chains)} fold(s))", file=out, flush=True)
    progress = _Progress(total, out, sequential=min(jobs, len(chains)) <= 1)
    outcomes = _run_folds(chains, used, force, progress)
    failures = [o for o in outcomes if o.status == "failed"]
    if failures:
        raise NotebookFailed(failures)

    upstream_ran = any(o.status == "done" for o in outcomes)  # new fold results: rebuild the report
    for t in finals:
        if not force and not upstream_ran and t.is_complete():
            outcome = Outcome(t, "skipped")
        else:
            progress.start(t)
            with _figures_lock(cfg):
                outcome = execute(t, used[0])
        progress.finish(outcome)
        outcomes.append(outcome)
        if outcome.status == "failed":
            raise NotebookFailed([outcome])
        upstream_ran = upstream_ran or outcome.status == "done"

    timing = _timing(preset, cfg, fold_list, jobs, outcomes, prepare_seconds, time.perf_counter() - t0)
    if gpus:
        timing["gpus"] = _gpus_used(used)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "timing.json", timing)
    print(format_timing(timing), file=out)
    print(f"timing written to {_show(run_dir / 'timing.json')}", file=out, flush=True)
    return Summary(run_dir, outcomes, timing)


def _figures_lock(cfg: Config):
    """The lock of the folder the report writes into, held while a report runs: with
    ``EMOLIB_FIGURES`` every config's report goes to one folder, and two reports at once (say the
    `paper` one and a `tiny` check) interleaved their tables there, each file from either, without a
    word. The second now waits, then says whose report it replaces. Kept under the runs folder,
    never in the figures folder itself (the committed ``figures/``)."""
    return work_lock(figures_lock_path(cfg), f"the report in {paths.printable(paths.figures_dir(cfg))}",
                     "writing one there")


def figures_lock_path(cfg: Config) -> Path:
    """:func:`_figures_lock`'s file: one per figures folder, under the runs folder's locks."""
    folder = str(paths.figures_dir(cfg).resolve())
    return paths.locks_dir() / "figures" / f"{hashlib.sha1(folder.encode()).hexdigest()[:12]}.lock"


def _gpus_used(slots: list[str | None]) -> list[str]:
    """The distinct GPUs (``CUDA_VISIBLE_DEVICES`` values) the slots hold, in order."""
    return sorted({s for s in slots if s is not None}, key=slots.index)


def _gpus_text(gpus: list[str]) -> str:
    """`` on GPUs 4,5`` for the run's first line and its timing, or nothing."""
    return f" on GPU{'s' if len(gpus) > 1 else ''} {','.join(gpus)}" if gpus else ""


# -- timing --------------------------------------------------------------------------


def _timing(
    preset: str, cfg: Config, folds: list[int], jobs: int, outcomes: list[Outcome], prepare_seconds: float | None, wall: float
) -> dict[str, Any]:
    """Per-stage wall time (summed over folds), for the report's time budget."""
    stages: dict[str, dict[str, Any]] = {}
    if prepare_seconds is not None:
        stages["prepare"] = {"seconds": round(prepare_seconds, 3), "executed": 1, "skipped": 0}
    for o in outcomes:
        s = stages.setdefault(o.task.notebook, {"seconds": 0.0, "executed": 0, "skipped": 0})
        s["seconds"] = round(s["seconds"] + o.seconds, 3)
        s["executed" if o.status == "done" else "skipped"] += 1
    return {
        "preset": preset,
        "config_hash": cfg.hash(),
        "folds": folds,
        "jobs": jobs,
        "stages": stages,
        "wall_seconds": round(wall, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }


def format_timing(timing: dict[str, Any]) -> str:
    width = max([len("total (wall)")] + [len(name) for name in timing["stages"]])
    lines = ["time per stage (notebook wall time summed over folds):"]
    for name, s in timing["stages"].items():
        lines.append(f"  {name:<{width}} {s['seconds']:8.1f} s   {s['executed']} executed, {s['skipped']} skipped")
    lines.append(f"  {'total (wall)':<{width}} {timing['wall_seconds']:8.1f} s   jobs {timing['jobs']}"
                 f"{_gpus_text(timing.get('gpus', []))}")
    return "\n".join(lines)


def _show(path: Path) -> str:
    """A path relative to the working directory when it lies below it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)
