"""A run's identity and its result files.

Every trained thing (a teacher for one fold, a student variant for one fold, the
data probes for one fold) is a *run*: a folder

    runs/<stage>/<label>-<config hash>/fold<k>/
        config.json        the resolved config (written first)
        corpus.json        the corpus it is trained on: name, size, fingerprint, audio digest
        resume.pt          training state after the last finished epoch (while running)
        best.safetensors   the weights selected on the validation speakers
        history.csv        one row per epoch (rewritten after each: a running run's progress)
        predictions.csv    one row per test utterance
        outputs.safetensors  (teachers) logits and embeddings for every utterance
        metrics.json       written last: its presence marks the run complete

Every write is atomic (a temporary file in the same folder, flushed to the disk, then
``os.replace``), so a run killed at any moment, or a machine that loses power, leaves
either the old file or the new one, never a torn one. A complete run is reused; a
partial one is detected (no readable ``metrics.json``) and redone, resuming from
``resume.pt`` when that exists. A result file that is there but unreadable (copied
half, edited by hand) raises :class:`ResultFileError` naming it.

While a process trains a run it holds an advisory lock on
``runs/.locks/<stage>/<name>/fold<k>.lock`` (``fcntl.flock``; the system releases it when
the process ends, even on ``kill -9``): a second job asked for the same run (two jobs of one
config on a shared ``EMOLIB_RUNS``) waits for the first one, says so, and then reuses its
result instead of training it a second time and mixing its files with the first one's.
On a file system without such locks (Lustre mounted without ``flock``, NFS without its lock
daemon) the commands go on without them and say so once (:func:`_acquire`).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from . import paths
from .config import STAGE_SECTIONS, Config, config_hash, from_dict, stage_hash

COMPLETE_MARKER = "metrics.json"
#: What the run was trained on (:meth:`Run.start`): corpus name, utterance count, fingerprint, audio digest.
CORPUS_RECORD = "corpus.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


# -- atomic writes -------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that want a file name (``safetensors.save_file``, ``fig.savefig``,
    ``df.to_csv``). On an exception the temporary file is removed and ``path`` is
    untouched. The suffix defaults to the target's, for writers that infer the format.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp")
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and writers that replace the file (safetensors) keep their own
        # mode: a shared cache or runs folder must follow the umask, as every other file does
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        _fsync(tmp_path)  # the bytes reach the disk before the name does: a crash cannot leave an empty file
        os.replace(tmp_path, path)
        _fsync(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        _raise_if_disk_full(exc, path)
        if isinstance(exc, FileNotFoundError) and exc.filename in (str(tmp_path), os.fspath(tmp_path)):
            # only another process removes a temporary file under way: one that cleans up the leftovers of a
            # killed write in this folder, which a lock keeps from running beside this one where locks exist
            raise ResultFileError(
                f"{path}: the temporary file it was being written to ({tmp_path.name}) was removed meanwhile, by "
                "another process working in the same folder; on a file system without locks (see the note above, "
                "if any) run one command at a time on these folders. Nothing of this file was written; run the "
                "command again, which resumes") from exc
        raise


class DiskFullError(RuntimeError):
    """A write found its device full (or the user's quota used up); the message names the file, the
    free space, and what was kept. Not an ``OSError``: code that skips an unreadable file must not
    skip this one."""


#: How writers report a full device: ENOSPC / EDQUOT as an ``OSError``, or in the message of a
#: writer that is not Python's (safetensors' Rust: "No space left on device (os error 28)").
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    if isinstance(exc, (KeyboardInterrupt, DiskFullError)):
        return
    full_errnos = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    chain, seen = [], exc  # torch.save raises its own error "during handling of" Python's ENOSPC
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if not any((isinstance(e, OSError) and e.errno in full_errnos) or any(t in str(e) for t in _DISK_FULL_TEXTS)
               for e in chain):
        return
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.1f} MiB free there now"
    except OSError:
        free = "free space unknown"
    raise DiskFullError(f"{path}: no space left on its device ({free}). Nothing of this file was written and "
                        "every file written before is kept: free some space (or move the root with EMOLIB_RUNS / "
                        "EMOLIB_CACHE / EMOLIB_DATA) and run the command again, which resumes") from exc


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to the disk; a no-op where the system cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


class ResultFileError(RuntimeError):
    """A result or cache file exists but cannot be read (e.g. damaged by a crash or a full disk)."""


class StaleRunError(RuntimeError):
    """A complete run was trained on another version of the corpus than the one loaded now."""


_HELD_LOCKS: dict[Path, int] = {}  # run folder -> the open lock file this process holds


def lock_path(run_dir: Path) -> Path:
    """The run's lock file, beside the runs, not among their folders: ``<runs>/.locks/<stage>/<name>/fold<k>.lock``."""
    try:
        path = paths.locks_dir() / run_dir.relative_to(paths.runs_dir())
    except ValueError:  # EMOLIB_RUNS changed since the Run was made
        path = run_dir.parent / ".locks" / run_dir.name
    return path.with_name(f"{path.name}.lock")


#: The end of the line a command prints when it waits for another process's lock.
WAITING = "waiting for it"


def _acquire(path: Path, waiting: str) -> int | None:
    """An open file descriptor holding an exclusive lock on ``path`` (created), waiting while another
    process holds it after printing ``waiting`` (``{pid}``: the holder's); None where there are no
    advisory locks: on Windows, where runs and caches are not shared, and on a file system that
    refuses them (said once, :func:`_say_no_locks`)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:  # the first new file a command makes: a device out of inodes or a quota used up fails here
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            print(waiting.format(pid=holder), flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
    except BaseException as exc:  # e.g. a Ctrl-C while waiting: the descriptor is not left open
        os.close(fd)
        if not (isinstance(exc, OSError) and exc.errno in _NO_LOCKS):
            raise
        _say_no_locks(path.parent, exc)
        return None


# What flock gives on a file system without locks: ENOSYS (Lustre mounted without -o flock, the
# HDF5_USE_FILE_LOCKING=FALSE case of HPC sites; some FUSE file systems), ENOLCK (NFS without its lock
# daemon), EOPNOTSUPP (other network and FUSE file systems).
_NO_LOCKS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}
_SAID_NO_LOCKS: set[int] = set()  # the file systems (st_dev) this process has said it for


def _say_no_locks(folder: Path, exc: OSError) -> None:
    """The one warning, per process and file system, that the commands run there without locks. Two
    processes on the same run or cache could then do the same work twice, and one could remove the
    other's temporary file as a killed run's leftover; every write stays atomic, so no complete
    file is ever torn, but the user must not run two commands on these folders at once."""
    device = folder.stat().st_dev
    if device in _SAID_NO_LOCKS:
        return
    _SAID_NO_LOCKS.add(device)
    print(f"warning: {folder}: this file system gives no file locks ({exc.strerror}; e.g. Lustre mounted without "
          "flock, or NFS without its lock daemon): emolib goes on without them, so run one emolib command at a time "
          "on these folders, or point EMOLIB_RUNS, EMOLIB_CACHE and EMOLIB_DATA at a local disk", file=sys.stderr,
          flush=True)


def _lock(run_dir: Path) -> None:
    """Hold the run's lock until :meth:`Run.finish` or the end of the process (module
    docstring), waiting while another process holds it."""
    if run_dir in _HELD_LOCKS:
        return  # this process is the one training it (e.g. a notebook cell run again)
    fd = _acquire(lock_path(run_dir), f"{run_dir}: another process (pid {{pid}}) is training this run; {WAITING}")
    if fd is not None:
        _HELD_LOCKS[run_dir] = fd


@contextlib.contextmanager
def work_lock(path: Path, what: str, doing: str = "making it") -> Iterator[None]:
    """Around shared work that several processes may need at once (a corpus to generate, features
    to extract into a cache): the first does it, the others wait, then find it done (re-check
    after entering). ``path``: the lock file; ``what`` and ``doing``: the waiting message's words."""
    fd = _acquire(path, f"{what}: another process (pid {{pid}}) is {doing}; {WAITING}")
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _unlock(run_dir: Path) -> None:
    fd = _HELD_LOCKS.pop(run_dir, None)
    if fd is not None:
        os.close(fd)  # closing the file releases the lock


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """A JSON file's value; :class:`ResultFileError` naming the file when it is not JSON, or when
    its value is not of type ``expect`` (e.g. ``dict`` for a record of a run), or when it exists
    but cannot be read (no permission); a missing file raises ``FileNotFoundError``."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: not readable JSON ({exc})") from exc
    except RecursionError as exc:  # arrays nested thousands deep: no record of a run is
        raise ResultFileError(f"{path}: not readable JSON (nested too deeply)") from exc
    except FileNotFoundError:
        raise
    except OSError as exc:  # no permission, a folder of that name, an I/O error
        raise ResultFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if expect is not None and not isinstance(value, expect):
        raise ResultFileError(f"{path}: holds a JSON {type(value).__name__}, not the {expect.__name__} expected")
    return value


# -- runs ----------------------------------------------------------------------------


class Run:
    """One run's folder. ``Run("prosodic_teacher", cfg, fold=1)``.

    ``label`` is a readable prefix of the folder name (e.g. the student variant and
    temperatures); the hash after it covers every config section that can change
    the result (:data:`emolib.config.STAGE_SECTIONS`) plus ``extra`` when given.
    """

    def __init__(self, stage: str, cfg: Config, fold: int, label: str | None = None, extra: dict | None = None):
        self.stage = stage
        self.cfg = cfg
        self.fold = int(fold)
        self.extra = extra
        self.key = _run_key(stage, cfg, extra)
        self.name = f"{label}-{self.key}" if label else self.key
        self.dir = paths.runs_dir() / stage / self.name / f"fold{self.fold}"
        #: numerics records (machine.numerics) of earlier processes that trained this run, when they
        #: differ from this one's (set by train.fit on resuming); finish() writes them down
        self.earlier_numerics: list[dict] = []
        #: whether this process took the run as it found it (:meth:`reuse`) rather than training it: also when
        #: another process trained it while this one waited, so that a command's fold line does not give that
        #: training's epochs and seconds as its own
        self.reused = False

    def __repr__(self) -> str:
        state = "complete" if self.is_complete() else ("partial" if self.dir.exists() else "new")
        return f"Run({self.stage}/{self.name}/fold{self.fold}, {state})"

    def path(self, name: str) -> Path:
        return self.dir / name

    def is_complete(self) -> bool:
        """``metrics.json`` is there and readable; a damaged one marks the run partial, so it is redone."""
        return (self.dir / COMPLETE_MARKER).is_file() and self._damaged_marker() is None

    def _damaged_marker(self) -> str | None:
        """What is wrong with the run's ``metrics.json`` when it is there but cannot be read; else None."""
        try:
            read_json(self.dir / COMPLETE_MARKER, dict)
        except FileNotFoundError:
            return None
        except ResultFileError as exc:
            return str(exc)
        return None

    def is_partial(self) -> bool:
        return self.dir.exists() and not self.is_complete()

    def start(self, corpus: dict[str, Any] | None = None) -> "Run":
        """Prepare the folder for (re)doing the run; keeps ``resume.pt`` of a partial run
        of the same config so that training continues where it stopped.

        "The same" means the same key: another stage's sections may differ, so a teacher
        still resumes after a student setting changed, and so may ``training.num_threads``,
        which is not part of a run's identity although on CPU it can move the result a
        little (the order of float sums): ``metrics.json`` records the threads used.

        Takes the run's lock first, waiting while another process trains the run; when that
        process completed it meanwhile, nothing is touched: the caller checks :meth:`is_complete`
        after ``start`` and reuses the result."""
        _lock(self.dir)
        self._remove_leftovers()
        if self.is_complete():
            _unlock(self.dir)
            return self
        if self.is_partial():
            damaged = self._damaged_marker()
            if damaged:  # a complete run's record, damaged since: its results cannot be read, so it is redone
                print(f"{damaged}; training the run again", flush=True)
            # e.g. a folder written by an older version of the hashing, or on another version of
            # the corpus: its state is not ours to resume
            why = ("its config.json is not this run's (damaged, or from an older emolib)"
                   if not self._saved_config_matches() else
                   "; ".join(f"trained on {change}" for change in self._changes(corpus)))
            if why:
                if (self.dir / "resume.pt").is_file():
                    print(f"{self.dir}: discarding the partial run ({why}); starting it again", flush=True)
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / "config.json", self.cfg.to_dict())
        if corpus is not None:
            atomic_write_json(self.dir / CORPUS_RECORD, corpus)
        return self

    def _remove_leftovers(self) -> None:
        """What a killed process left in the folder (called under the lock: nobody else writes
        here): the temporary files of writes it did not finish (a SIGKILL runs no cleanup; one of
        ``resume.pt`` holds a whole training state), and ``resume.pt`` of a run it completed."""
        if not self.dir.is_dir():
            return
        leftovers = [p for p in self.dir.glob(".*") if p.is_file()]  # only atomic_path writes dot files here
        if self.is_complete():
            leftovers.append(self.dir / "resume.pt")
        for path in leftovers:
            path.unlink(missing_ok=True)

    def release(self) -> None:
        """Give up the run's lock without finishing it (the partial state stays, to resume)."""
        _unlock(self.dir)

    @contextlib.contextmanager
    def releasing_on_error(self) -> Iterator["Run"]:
        """Around the training of a started run: should it fail or be interrupted in a process
        that lives on (a JupyterLab kernel after "interrupt"), the lock is released, so that other
        processes do not wait for a training that has stopped. Running it again resumes."""
        try:
            yield self
        except BaseException:
            self.release()
            raise

    def same_corpus(self, corpus: dict[str, Any] | None) -> bool:
        """Whether the run was trained on this corpus and with these models (``corpus``: the
        record ``pipeline.run_record`` makes). The config names a corpus (``synth``, a path) and a
        model (a folder), not their contents: a manifest edited in place, a corpus folder with
        more files, audio rewritten in place (the record's ``audio`` digest; a record written
        before emolib kept one is compared without it) or a model folder saved again keeps its
        name, and so does a hub id whose
        repository got a new commit or a packaged model whose package was upgraded. True when either
        side has no record; a model is compared when the saved record lists it, and a hub commit
        only when it can be resolved now."""
        return not self._changes(corpus)

    def _changes(self, corpus: dict[str, Any] | None) -> list[str]:
        """What differs between the saved record and ``corpus``, in words (empty: nothing)."""
        saved = self.dir / CORPUS_RECORD
        if corpus is None or not saved.is_file():
            return []
        try:
            then = read_json(saved)
            changes = []
            if then.get("fingerprint") != corpus["fingerprint"]:
                changes.append(f"another version of corpus {corpus['corpus']!r} ({then.get('utterances', '?')} "
                               f"utterances, fingerprint {then.get('fingerprint', '?')}; now {corpus['utterances']}, "
                               f"{corpus['fingerprint']}): its labels, transcripts or files changed since")
            elif then.get("audio") and corpus.get("audio") and then["audio"] != corpus["audio"]:
                # recorded since emolib hashed the audio's bytes: older records are compared as before
                changes.append(f"other audio of corpus {corpus['corpus']!r} (audio digest {then['audio']}; now "
                               f"{corpus['audio']}): files were rewritten since, with the same names and sizes")
            now = corpus.get("models", {})
            changes += [_weights_change(name, then_model, now.get(name))
                        for name, then_model in sorted(then.get("models", {}).items())
                        if then_model != now.get(name) and not _unresolved(then_model, now.get(name))]
            return changes
        except ResultFileError as exc:  # names the file and its fault
            return [f"a damaged corpus record ({exc})"]
        except (AttributeError, TypeError, KeyError):
            return [f"a damaged corpus record ({saved}: not a record of a corpus)"]

    def require_corpus(self, corpus: dict[str, Any]) -> None:
        """Raise :class:`StaleRunError` when a complete run was trained on another version of the
        corpus, or with other weights of a model (:func:`emolib.pipeline.model_record`)."""
        changes = self._changes(corpus)
        if changes and all(c.startswith("a damaged corpus record") for c in changes):
            raise StaleRunError(f"{self.dir}: trained on {changes[0]}: which corpus it was trained on cannot be "
                                f"told. Delete {self.dir} to train this fold again")
        if changes:
            raise StaleRunError(
                f"{self.dir}: trained on {'; and on '.join(changes)}. Delete {self.dir.parent} to train again on "
                "the corpus and models as they are, or keep those results by pointing EMOLIB_RUNS at another folder")

    def reuse(self, corpus: dict[str, Any]) -> "Run":
        """A complete run, about to be reused: :meth:`require_corpus`, and the ``resume.pt`` that a
        process killed in :meth:`finish` between ``metrics.json`` and deleting it left. A complete run
        is never started again, so :meth:`start` would not remove it: a whole training state (~1 GB on
        the paper preset) kept for good. Nothing else writes to a complete run, so no lock is needed;
        on a read-only copy of the runs the file stays."""
        self.require_corpus(corpus)
        with contextlib.suppress(OSError):
            (self.dir / "resume.pt").unlink()
        self.reused = True
        return self

    def _saved_config_matches(self) -> bool:
        saved = self.dir / "config.json"
        if not saved.is_file():
            return False
        try:
            return _run_key(self.stage, from_dict(read_json(saved, dict)), self.extra) == self.key
        except (ResultFileError, ValueError, TypeError, KeyError):  # damaged, or fields this version does not know
            return False

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.dir / name, obj)

    def write_csv(self, name: str, frame) -> Path:
        with atomic_path(self.dir / name) as tmp:
            frame.to_csv(tmp, index=False)
        return self.dir / name

    def finish(self, metrics: dict[str, Any], predictions=None) -> None:
        """Write the predictions, then ``metrics.json`` last: the run is complete. It also records how
        this process computed floats (``numerics``: :func:`emolib.machine.numerics`), which says which
        machines reproduce the run to the bit, and under ``numerics_earlier`` those of the processes
        that trained its earlier epochs when they computed otherwise (a run resumed in another mode)."""
        from .machine import numerics

        if predictions is not None:
            self.write_csv("predictions.csv", predictions)
        earlier = {"numerics_earlier": self.earlier_numerics} if self.earlier_numerics else {}
        self.write_json(COMPLETE_MARKER, {**metrics, "numerics": numerics(), **earlier})
        # only now: a run killed before this line still has its state and resumes, not restarts
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "resume.pt").unlink()
        _unlock(self.dir)

    def metrics(self, *required: str) -> dict[str, Any]:
        """``metrics.json``; ``required``: the entries the caller reads by name, checked (:func:`check_metrics`)."""
        return check_metrics(read_json(self.dir / COMPLETE_MARKER, dict), self.dir / COMPLETE_MARKER, *required)

    def predictions(self):
        """``predictions.csv``, checked whole: :class:`ResultFileError` naming the file when it
        cannot be parsed, when a row was cut (a name column empty, a probability missing) or
        when it has fewer or more rows than ``metrics.json`` counts test utterances (``n``)."""
        path = self._result_file("predictions.csv")
        frame = read_table(path)
        check_predictions(frame, path)
        marker = self.dir / COMPLETE_MARKER
        if marker.is_file():
            record = read_json(marker, dict)
            n = record.get("n", record.get("n_test"))  # a model's test utterances, or a data run's
            if isinstance(n, int) and not isinstance(n, bool) and n != len(frame):
                raise ResultFileError(f"{path}: holds {len(frame)} rows but {marker} counts {n} test utterances "
                                      "(cut short by a crash or a full disk?)")
        return frame

    def history(self):
        return read_table(self._result_file("history.csv"))

    def _result_file(self, name: str) -> Path:
        """A result file of the run; :class:`ResultFileError` naming it when the run is complete and
        the file is not there (deleted, or left out of a copy: re-running reuses the run and writes
        nothing, so it is said once, with what to do, not as a traceback). A missing file of an
        unfinished run raises ``FileNotFoundError``, as before."""
        path = self.dir / name
        if not path.is_file() and self.is_complete():
            raise ResultFileError(f"{path}: missing from a complete run ({COMPLETE_MARKER} is there); delete "
                                  f"{self.dir} to compute the run again")
        return path


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


#: the entries of a metrics.json that readers take by name, and what each must be
METRIC_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{k: ("a number", _number) for k in ("ua", "wa", "macro_f1", "train_seconds")},
    "best_val_ua": ("a number or null", lambda v: v is None or _number(v)),  # null: no validation speakers
    **{k: ("an integer >= 0", _count) for k in ("best_epoch", "epochs_run", "n", "n_test", "n_folds")},
    "corpus": ("a name", lambda v: isinstance(v, str) and v != ""),
    "has_transcripts": ("true or false", lambda v: isinstance(v, bool)),
    "classes": ("a list of distinct class names", lambda v: isinstance(v, list) and len(v) > 0
                and all(isinstance(c, str) and c for c in v) and len(set(v)) == len(v)),
    "probes": ("an object", lambda v: isinstance(v, dict)),
}


def check_metrics(record: dict[str, Any], path: str | os.PathLike, *required: str) -> dict[str, Any]:
    """``record`` (a run's ``metrics.json``) when each ``required`` entry is there and of its kind
    (:data:`METRIC_KINDS`); else :class:`ResultFileError` naming the file and the entry: a record
    edited by hand or damaged on the way, which would end in a KeyError or a wrong table."""
    for key in required:
        kind, fits = METRIC_KINDS[key]
        if not fits(record.get(key)):
            found = "missing" if key not in record else f"{json.dumps(record[key])[:40]}, not {kind}"
            raise ResultFileError(f"{path}: {key} is {found}; delete {Path(path).parent} to compute the run again")
    return record


def fold_number(folder: str | os.PathLike) -> int | None:
    """k of a run's fold folder ``fold<k>``; None for a folder of any other name."""
    name = Path(folder).name
    digits = name[len("fold"):]
    return int(digits) if name.startswith("fold") and digits.isdigit() else None


#: Columns of the result tables that hold names: read back as the text they were written as, so
#: that a corpus's id "01", label "0" or speaker "NA" stays what it is (a plain read_csv makes them
#: the number 1, the number 0 and a missing value). ``pred_<probe>`` columns hold class names too.
TEXT_COLUMNS = ("id", "speaker", "session", "label", "pred")


def read_table(path: str | os.PathLike):
    """A CSV result table (predictions, history, channel flags) with its name columns as text
    (:data:`TEXT_COLUMNS`), never missing values; in the other columns an empty field (or nan)
    is one.

    A file that cannot be parsed (empty, not CSV, not UTF-8) raises :class:`ResultFileError`
    naming it."""
    import pandas as pd

    try:
        columns = pd.read_csv(path, nrows=0).columns
        text = [c for c in columns if c in TEXT_COLUMNS or c.startswith("pred_")]
        return pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False,
                           na_values={c: ["", "nan", "NaN"] for c in columns if c not in text})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: not a readable CSV table ({type(exc).__name__}: {exc})") from exc
    except FileNotFoundError:
        raise
    except OSError as exc:  # no permission, an I/O error
        raise ResultFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


#: The columns every predictions.csv has, besides its predictions (``pred``, or a data run's
#: ``pred_<probe>``) and its ``p_<class>`` probabilities.
PREDICTION_COLUMNS = ("id", "label")


def check_predictions(frame, path: str | os.PathLike) -> None:
    """:class:`ResultFileError` naming ``path`` when a predictions table was cut in the middle of
    a row by a crash or a full disk: its last line does not end (every table written here ends
    with a newline), or a row has an empty name or prediction (:data:`PREDICTION_COLUMNS`, ``pred``,
    ``pred_<probe>``). A probability may be missing (NaN: a diverged model), so it is not checked."""
    names = [*PREDICTION_COLUMNS, *(c for c in frame.columns if c == "pred" or str(c).startswith("pred_"))]
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing or len(names) == len(PREDICTION_COLUMNS):
        raise ResultFileError(f"{path}: no column {', '.join(missing or ['pred'])}")
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
        last = f.read(1)
    cut = (frame[names].isna() | (frame[names] == "")).any(axis=1)
    if cut.any():
        row = int(cut.to_numpy().nonzero()[0][0])
        raise ResultFileError(f"{path}: row {row + 2} is cut short (a crash or a full disk while it was "
                              "written?); delete the run's folder to compute it again")
    if last != b"\n":  # every table written here ends its last line: cut inside it, or rewritten elsewhere
        raise ResultFileError(f"{path}: its last line (row {len(frame) + 1}) has no line end: cut short, or "
                              "written by another program? Delete the run's folder to compute it again")


def _run_key(stage: str, cfg: Config, extra: dict | None) -> str:
    """The hash in a run's folder name: the config sections its stage depends on
    (:data:`emolib.config.STAGE_SECTIONS`; the whole config for other stages) plus ``extra``."""
    base = stage.split("/")[0]
    key = stage_hash(cfg, base) if base in STAGE_SECTIONS else cfg.hash()
    return config_hash({"stage": key, "extra": extra}) if extra else key


def _unresolved(then: Any, now: Any) -> bool:
    """A hub model whose commit could not be resolved, now (offline, not in the local Hugging Face
    cache: results copied from a GPU server to a laptop) or when the run was trained: a run is not
    called stale for what cannot be told."""
    return any(isinstance(m, dict) and "hub" in m and m.get("revision") is None for m in (then, now))


def _weights_change(name: str, then: Any, now: Any) -> str:
    """A model's weights that differ from the run's record (``pipeline.model_record``), in words."""
    if isinstance(then, dict) and "hub" in then:
        return (f"other weights of {name} ({then['hub']} at commit {then.get('revision')}; now "
                f"{now.get('revision') if isinstance(now, dict) else now}): the hub repository changed since")
    if isinstance(then, dict) and "packaged" in then:
        return (f"other weights of {name} ({then['packaged']} from package version {then.get('version')}; now "
                f"{now.get('version') if isinstance(now, dict) else now}): the package was upgraded since")
    return f"other weights of {name} (digest {then}; now {now}): the model folder was saved again since"
