"""``python -m emolib runs``: the trained runs on disk, read from their own files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emolib import inventory
from emolib.__main__ import main
from emolib.config import get_config
from emolib.runs import Run, _unlock, atomic_write_text


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def finished(stage: str, cfg, fold: int, label: str, ua: float, wa: float, val: float) -> Run:
    run = Run(stage, cfg, fold, label=label).start()
    run.finish({"ua": ua, "wa": wa, "best_val_ua": val, "corpus": "synth"})
    return run


def partial(stage: str, cfg, fold: int, label: str, epochs: int | None, resumes: bool) -> Run:
    run = Run(stage, cfg, fold, label=label).start()
    if epochs is not None:
        rows = "".join(f"{e},1.0\n" for e in range(1, epochs + 1))
        atomic_write_text(run.path("history.csv"), "epoch,train_loss\n" + rows)
    if resumes:
        atomic_write_text(run.path("resume.pt"), "state")
    _unlock(run.dir)  # as a killed process's lock is released; no metrics.json: the fold stays partial
    return run


def test_a_run_s_folds_means_and_changes_from_its_preset(runs):
    cfg = get_config("tiny")
    finished("prosodic_teacher", cfg, 1, "resnet", ua=0.50, wa=0.55, val=0.40)
    finished("prosodic_teacher", cfg, 3, "resnet", ua=0.70, wa=0.65, val=0.60)
    partial("prosodic_teacher", cfg, 2, "resnet", epochs=3, resumes=True)
    student = cfg.replace({"distill.gamma": 0.5, "training.num_threads": 2, "student.dropout": 0.3})
    finished("student", student, 1, "full", ua=0.8, wa=0.8, val=0.9)

    teacher, distilled = inventory.list_runs()
    assert (teacher.stage, teacher.preset, teacher.corpus) == ("prosodic_teacher", "tiny", "synth")
    assert sorted(teacher.complete) == [1, 3]
    assert teacher.partial == [inventory.PartialFold(fold=2, epochs=3, resumes=True)]
    assert teacher.mean("ua") == pytest.approx(0.60) and teacher.mean("wa") == pytest.approx(0.60)
    assert teacher.mean("best_val_ua") == pytest.approx(0.50)
    assert teacher.changes == {} and not teacher.stale and teacher.problems == []
    # the hashed settings of the student's sections that differ from its preset; threads are not hashed
    assert distilled.changes == {"distill.gamma": 0.5, "student.dropout": 0.3}

    text = inventory.format_runs([teacher, distilled])
    lines = text.splitlines()
    assert lines[0].startswith("prosodic_teacher (1 run;")
    row = next(line for line in lines if line.strip().startswith("resnet-"))
    assert row.split()[1:] == ["tiny", "synth", "1,3", "50.00", "60.00", "60.00"]
    assert "      fold 2 partial: resumes after epoch 3" in lines
    assert "      distill.gamma=0.5  student.dropout=0.3" in lines


def test_a_teacher_setting_shows_in_the_student_that_distils_from_it(runs):
    cfg = get_config("tiny").replace({"prosodic_teacher.embedding_dim": 8})
    finished("student", cfg, 1, "full", ua=0.5, wa=0.5, val=0.5)
    finished("linguistic_teacher", cfg, 1, "minilm", ua=0.5, wa=0.5, val=0.5)
    by_stage = {s.stage: s for s in inventory.list_runs()}
    assert by_stage["student"].changes == {"prosodic_teacher.embedding_dim": 8}
    assert by_stage["linguistic_teacher"].changes == {}  # not a section the linguistic teacher depends on


def test_a_run_written_before_a_setting_existed_is_stale(runs, capsys):
    cfg = get_config("tiny")
    run = finished("student", cfg, 1, "full", ua=0.5, wa=0.5, val=0.5)
    saved = json.loads(run.path("config.json").read_text())
    del saved["student"]["pooling"]  # as a config.json written before the setting was added
    old = runs / "student" / "full-0123456789" / "fold1"
    shutil.copytree(run.dir, old)
    (old / "config.json").write_text(json.dumps(saved))

    summaries = {s.name: s for s in inventory.list_runs()}
    assert not summaries[run.dir.parent.name].stale
    assert summaries["full-0123456789"].stale
    assert summaries["full-0123456789"].unrecorded == ["student.pooling"]
    assert "stale: an older emolib's run, never reused by this version; not recorded: student.pooling" in (
        inventory.format_runs(list(summaries.values())))

    assert main(["runs", "--stale"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(old.parent)]


def test_unreadable_files_are_named_and_the_fold_counts_as_partial(runs):
    cfg = get_config("tiny")
    run = finished("prosodic_teacher", cfg, 1, "resnet", ua=0.5, wa=0.5, val=0.5)
    run.path("metrics.json").write_text('{"ua": 0.5,')  # cut short
    (summary,) = inventory.list_runs()
    assert summary.complete == {} and [p.fold for p in summary.partial] == [1]
    assert len(summary.problems) == 1 and str(run.path("metrics.json")) in summary.problems[0]
    assert f"unreadable: {summary.problems[0]}" in inventory.format_runs([summary])


def test_the_command_lists_stages_in_the_paper_s_order_and_filters_them(runs, capsys):
    cfg = get_config("tiny")
    finished("student", cfg, 1, "full", ua=0.5, wa=0.5, val=0.5)
    finished("prosodic_teacher", cfg, 1, "resnet", ua=0.5, wa=0.5, val=0.5)
    (runs / "data" / "probes-x" / "fold1").mkdir(parents=True)  # not a trained stage: left out
    assert main(["runs"]) == 0
    headers = [line.split()[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert headers == ["prosodic_teacher", "student"]
    assert main(["runs", "--stage", "student"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("student (1 run;") and "prosodic_teacher" not in out


def test_no_runs_says_where_it_looked(runs, capsys):
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs under {runs}"


@pytest.mark.parametrize("epochs, resumes, state", [
    (3, True, "resumes after epoch 3"),
    (None, True, "resumes where it stopped"),  # an older emolib wrote history.csv only at the end
    (None, False, "no epoch finished"),  # killed during its first epoch
    ("garbage", True, "history.csv unreadable, resumes where it stopped"),
    ("garbage", False, "history.csv unreadable"),
    (2, False, "2 epochs logged, no resume state"),
])
def test_a_partial_fold_says_how_far_it_got(runs, epochs, resumes, state):
    run = partial("student", get_config("tiny"), 4, "full", epochs=None if epochs == "garbage" else epochs,
                  resumes=resumes)
    atomic_write_text(run.path("corpus.json"), '{"corpus": "synth", "utterances": 12}')
    if epochs == "garbage":  # an unreadable history.csv is said to be, not taken for none
        run.path("history.csv").write_bytes(b"\xff\xfe\x00garbage")
    (summary,) = inventory.list_runs()
    if epochs == "garbage":
        assert len(summary.problems) == 1 and summary.problems[0].startswith(f"{run.path('history.csv')}: cannot be read (")
    assert summary.corpus == "synth"  # from the fold's corpus record: it has no metrics yet
    assert f"      fold 4 partial: {state}" in inventory.format_runs([summary]).splitlines()


@pytest.mark.parametrize("folds, text", [([1, 2, 3, 5], "1-3,5"), ([2], "2"), ([], ""), ([1, 3, 4], "1,3-4")])
def test_fold_ranges(folds, text):
    assert inventory._folds_text(folds) == text


def test_a_run_it_cannot_read_is_listed_with_its_problem_and_the_listing_goes_on(runs, monkeypatch, capsys):
    cfg = get_config("tiny")
    locked = finished("prosodic_teacher", cfg, 1, "aaa", ua=0.5, wa=0.5, val=0.5)
    fold_locked = finished("prosodic_teacher", cfg.replace({"training.seed": 1}), 1, "bbb", ua=0.5, wa=0.5, val=0.5)
    numbered = finished("prosodic_teacher", cfg.replace({"training.seed": 2}), 1, "ccc", ua=0.5, wa=0.5, val=0.5)
    atomic_write_text(numbered.path("metrics.json"), json.dumps({"ua": 0.5, "wa": 0.5, "corpus": 5}))
    fine = finished("student", cfg, 1, "full", ua=0.8, wa=0.8, val=0.8)
    # CI runs as root, which may read anything: permission errors are simulated
    real_open, real_is_file = open, Path.is_file

    def no_permission(file, *args, **kwargs):
        if str(file) == str(locked.path("metrics.json")):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    def unsearchable(self):  # Path.is_file raises on a file in a folder without search permission
        if self.parent == fold_locked.dir:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr("builtins.open", no_permission)
    monkeypatch.setattr(Path, "is_file", unsearchable)
    first, second, third, student = inventory.list_runs()
    assert first.problems == [f"{locked.path('metrics.json')}: cannot be read (Permission denied)"]
    assert first.complete == {} and [p.fold for p in first.partial] == [1]
    assert second.problems == [f"{fold_locked.dir}: cannot be read (Permission denied)"]
    assert third.problems == [f"{numbered.path('metrics.json')}: its corpus is not a name (5)"]
    assert third.corpus is None and sorted(third.complete) == [1]
    assert student.problems == [] and student.corpus == "synth" and sorted(student.complete) == [1]
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for summary in (first, second, third):
        assert f"      unreadable: {summary.problems[0]}" in lines
    assert any(line.strip().startswith(fine.dir.parent.name) for line in lines)


def test_a_run_folder_it_cannot_list_is_named(runs, monkeypatch):
    finished("student", get_config("tiny"), 1, "full", ua=0.8, wa=0.8, val=0.8)
    folder = next((runs / "student").iterdir())
    real_iterdir = Path.iterdir

    def no_permission(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", no_permission)
    (summary,) = inventory.list_runs()
    assert summary.problems == [f"{folder}: cannot list this folder (Permission denied)"]
    assert summary.complete == {} and summary.partial == []


def test_a_stage_folder_it_cannot_list_is_named_and_the_other_stages_listed(runs, monkeypatch, capsys):
    finished("prosodic_teacher", get_config("tiny"), 1, "aaa", ua=0.5, wa=0.5, val=0.5)
    finished("student", get_config("tiny"), 1, "full", ua=0.8, wa=0.8, val=0.8)
    real_iterdir = Path.iterdir

    def no_permission(self):  # CI runs as root, which may list anything: simulated
        if self == runs / "prosodic_teacher":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", no_permission)
    unlisted, student = inventory.list_runs()
    assert (unlisted.stage, unlisted.name, unlisted.complete) == ("prosodic_teacher", inventory.UNLISTED, {})
    assert unlisted.problems == [f"{runs / 'prosodic_teacher'}: cannot list this folder (Permission denied)"]
    assert student.stage == "student" and sorted(student.complete) == [1]
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert f"      unreadable: {runs / 'prosodic_teacher'}: cannot list this folder (Permission denied)" in out
    assert "student (1 run;" in out


def test_a_run_from_hub_models_says_which_commit_it_was_trained_from(runs, capsys):
    cfg = get_config("tiny")
    models = {"student.backbone": {"hub": "facebook/hubert-base-ls960", "revision": "c0ffee"},
              "linguistic_teacher.model": {"packaged": "minilm", "version": "0.1.0"}}
    run = Run("student", cfg, 1, label="full").start({"corpus": "synth", "utterances": 3, "fingerprint": "f",
                                                      "models": models})
    run.finish({"ua": 0.8, "wa": 0.8, "best_val_ua": 0.8, "corpus": "synth"})
    finished("prosodic_teacher", cfg, 1, "aaa", ua=0.5, wa=0.5, val=0.5)  # no corpus record: nothing to say
    teacher, student = inventory.list_runs()
    assert student.hub == {"student.backbone": "facebook/hubert-base-ls960@c0ffee"} and teacher.hub == {}
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "      from the hub: student.backbone=facebook/hubert-base-ls960@c0ffee" in lines
    assert sum("from the hub" in line for line in lines) == 1


def test_a_config_json_of_another_type_is_a_problem_naming_it(runs):
    run = finished("student", get_config("tiny"), 1, "full", ua=0.5, wa=0.5, val=0.5)
    saved = json.loads(run.path("config.json").read_text())
    run.path("config.json").write_text(json.dumps({**saved, "student": {**saved["student"], "backbone": 5}}))
    (summary,) = inventory.list_runs()
    assert summary.problems == [f"{run.path('config.json')}: student.backbone: expected a string, got 5. A damaged or "
                                "hand-edited file: restore it from where the run came from, or train the run again"]
