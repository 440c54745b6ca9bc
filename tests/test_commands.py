"""The ``teacher``, ``student`` and ``gap`` commands on manifests of the toy corpus
(tests/toy.py), run in-process through ``main(argv)`` on the tiny preset: a line per fold
that matches the run's result files, the closing mean line, reuse without training, the
right teacher for the right manifest, the note on a corpus without transcripts, the gap's
validation and test blocks, and one-line errors."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emolib import __main__ as cli
from emolib import pipeline, train
from emolib import runs as runs_mod
from emolib.config import get_config
from emolib.metrics import format_p, paired_bootstrap

from toy import toy_corpus

FOLD_LINE = re.compile(r"^fold (\d+): UA (\d+\.\d\d) WA (\d+\.\d\d) macro-F1 (\d+\.\d\d) "
                       r"\((best epoch \d+ of \d+, \d+\.\d s|reused)\)$")
MEAN_LINE = re.compile(r"^mean UA (\d+\.\d\d) WA (\d+\.\d\d) \(pooled UA \d+\.\d\d WA \d+\.\d\d; (\d+) folds?\)$")
# One torch thread: on 2 shared cores a second thread makes these tiny models ~30x slower.
FAST = ["--preset", "tiny", "--set", "training.num_threads=1"]
AUDIO_LIST = ".wav, .flac, .ogg, .oga, .opus, .mp3, .aif, .aiff"
NO_TRANSCRIPTS = "corpus '{}' has no usable transcripts: the linguistic teacher's terms are switched off"


def write_manifest(path: Path, utterances, columns: list[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for u in utterances:
            values = {"id": u.id, "path": u.path, "label": u.label, "speaker": u.speaker, "session": u.session,
                      "text": u.text}
            writer.writerow([values[c] for c in columns])
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Audio of 6 speakers in 3 sessions (48 utterances) and three manifests of it."""
    root = tmp_path_factory.mktemp("toy")
    utts = toy_corpus(root / "audio", per_class=2).utterances
    return {
        "both": write_manifest(root / "toy.csv", utts, ["path", "label", "speaker", "session", "text"]),
        "text": write_manifest(root / "toy-text.csv", utts, ["id", "label", "speaker", "session", "text"]),
        "audio": write_manifest(root / "toy-audio.csv", utts, ["path", "label", "speaker", "session"]),
        "utterances": utts,
        "cache": root / "cache",  # eGeMAPS descriptors are keyed by file content: safe to share
    }


@pytest.fixture
def roots(tmp_path, monkeypatch, toy):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("EMOLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EMOLIB_CACHE", str(toy["cache"]))
    # What a batch run sees (progress "auto", output not a terminal): one log line per epoch. An
    # EMOLIB_PROGRESS exported in the shell that runs the tests (bar, none) would change what is printed.
    monkeypatch.delenv("EMOLIB_PROGRESS", raising=False)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # training.num_threads=1 is process-wide


def run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def fold_lines(lines: list[str]) -> dict[int, tuple[float, float, float, str]]:
    found = [FOLD_LINE.match(line) for line in lines]
    return {int(m[1]): (float(m[2]), float(m[3]), float(m[4]), m[5]) for m in found if m}


def assert_matches_result_files(lines: list[str], stage_dir: Path, folds: list[int]) -> None:
    """Each fold line shows its run's metrics.json; the last line is the mean over those folds."""
    printed = fold_lines(lines)
    assert sorted(printed) == folds, lines
    (run_dir,) = stage_dir.iterdir()  # one config -> one run folder
    metrics = {k: json.loads((run_dir / f"fold{k}" / "metrics.json").read_text()) for k in folds}
    for k, (ua, wa, f1, _) in printed.items():
        m = metrics[k]
        assert (ua, wa, f1) == (round(100 * m["ua"], 2), round(100 * m["wa"], 2), round(100 * m["macro_f1"], 2))
    mean = MEAN_LINE.match(lines[-1])
    assert mean, lines[-1]
    assert float(mean[1]) == round(100 * np.mean([m["ua"] for m in metrics.values()]), 2)
    assert float(mean[2]) == round(100 * np.mean([m["wa"] for m in metrics.values()]), 2)
    assert int(mean[3]) == len(folds)


def test_teacher_trains_every_fold_then_reuses_them(roots, toy, capsys, monkeypatch):
    argv = ["teacher", "--kind", "prosodic", "--corpus", toy["both"], "--protocol", "session", *FAST]
    code, lines, _ = run(capsys, *argv)
    assert code == 0
    assert lines[0].startswith("prosodic teacher on toy (48 utterances), leave-one-session-out, folds 1 2 3 of 3; "
                               f"results in {roots / 'runs' / 'prosodic_teacher'}/resnet-")
    assert_matches_result_files(lines, roots / "runs" / "prosodic_teacher", [1, 2, 3])
    assert all(how != "reused" for *_, how in fold_lines(lines).values())
    # batch runs log one line per epoch (the tiny preset trains the prosodic teacher for 3)
    assert len([line for line in lines if re.match(r"prosodic teacher fold \d epoch +\d/3 ", line)]) == 9

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "fit", no_training)
    code, again, _ = run(capsys, *argv)
    assert code == 0
    assert [how for *_, how in fold_lines(again).values()] == ["reused"] * 3
    assert len(again) == 5 and again[0] == lines[0] and again[-1] == lines[-1]


def test_a_fold_another_process_trained_while_this_one_waited_is_said_to_be_reused(roots, toy, capsys, monkeypatch):
    """Two commands asked for the same fold: the second waits behind the first's lock and then reuses its result
    (Run.start). Its fold line says so, not "best epoch 3 of 3, 0.4 s" as if it had trained it itself."""
    argv = ["teacher", "--kind", "prosodic", "--corpus", toy["both"], "--protocol", "session", "--folds", "1", *FAST]
    assert run(capsys, *argv)[0] == 0
    looked = set()
    complete = runs_mod.Run.is_complete

    def completed_meanwhile(self):  # incomplete when first looked at; complete once start() got the lock
        if self.dir not in looked:
            looked.add(self.dir)
            return False
        return complete(self)

    monkeypatch.setattr(runs_mod.Run, "is_complete", completed_meanwhile)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained again"))
    code, lines, _ = run(capsys, *argv)
    assert code == 0 and looked
    assert [how for *_, how in fold_lines(lines).values()] == ["reused"]


def test_a_run_killed_after_its_metrics_loses_its_resume_state_when_reused(roots, toy, capsys, monkeypatch):
    """Killed in Run.finish between metrics.json and deleting resume.pt: the run is complete, and a
    complete run is reused without being started again, so the training state (~1 GB on the paper
    preset) stayed in its folder for good. The next command that reuses the run removes it."""
    from emolib.runs import Run

    argv = ["teacher", "--kind", "prosodic", "--corpus", toy["both"], "--protocol", "session", "--folds", "1", *FAST]
    real_unlink = Path.unlink

    def killed_at_resume_state(self, *args, **kwargs):
        if self.name == "resume.pt":
            raise KeyboardInterrupt  # stands for the SIGKILL: nothing after this line ran
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", killed_at_resume_state)
    code, _, err = run(capsys, *argv)
    assert code == 130, err
    monkeypatch.setattr(Path, "unlink", real_unlink)
    (folder,) = (roots / "runs" / "prosodic_teacher").glob("*/fold1")
    assert (folder / "metrics.json").is_file() and (folder / "resume.pt").is_file()

    monkeypatch.setattr(Run, "start", lambda *args, **kwargs: pytest.fail("a complete run was started again"))
    code, lines, _ = run(capsys, *argv)
    assert code == 0 and fold_lines(lines)[1][-1] == "reused"
    assert sorted(p.name for p in folder.iterdir()) == ["best.safetensors", "config.json", "corpus.json",
                                                       "history.csv", "metrics.json", "outputs.safetensors",
                                                       "predictions.csv"]


def test_folds_option_restricts_the_folds(roots, toy, capsys):
    code, lines, _ = run(capsys, "teacher", "--kind", "prosodic", "--corpus", toy["both"], "--protocol", "speaker",
                         "--folds", "4", *FAST)
    assert code == 0
    assert ", leave-one-speaker-out, fold 4 of 6; " in lines[0]
    assert_matches_result_files(lines, roots / "runs" / "prosodic_teacher", [4])
    assert sorted(p.name for p in next((roots / "runs" / "prosodic_teacher").iterdir()).iterdir()) == ["fold4"]


def test_text_only_manifest_trains_the_linguistic_teacher_and_not_the_prosodic(roots, toy, capsys):
    code, lines, _ = run(capsys, "teacher", "--kind", "linguistic", "--corpus", toy["text"], "--protocol", "session",
                         "--folds", "1", *FAST)
    assert code == 0
    assert_matches_result_files(lines, roots / "runs" / "linguistic_teacher", [1])

    code, out, err = run(capsys, "teacher", "--kind", "prosodic", "--corpus", toy["text"], "--protocol", "session",
                         *FAST)
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith("error: the prosodic teacher needs audio") and "'toy-text'" in err[0]
    assert not (roots / "runs" / "prosodic_teacher").exists()


def test_audio_only_manifest_is_refused_by_the_linguistic_teacher(roots, toy, capsys):
    code, out, err = run(capsys, "teacher", "--kind", "linguistic", "--corpus", toy["audio"], "--protocol", "session",
                         *FAST)
    assert code == 2 and out == []
    assert err == [f"error: the linguistic teacher cannot be trained on corpus 'toy-audio': the manifest "
                   f"{Path(toy['audio']).name} has no 'text' column."]
    assert not (roots / "runs").exists()


def test_student_without_transcripts_says_so_first_and_uses_only_the_prosodic_teacher(roots, toy, capsys,
                                                                                      monkeypatch):
    # an empty clip makes the loader print a skip line: it must come after the note
    # no text model is looked up either (the paper preset names a hub id, unreachable offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    utts = toy["utterances"]
    sf.write(roots / "silent.wav", np.zeros(0, dtype=np.float32), 16000)
    manifest = write_manifest(roots / "voices.csv", utts, ["path", "label", "speaker", "session"])
    with manifest.open("a") as f:
        f.write(f"silent.wav,neutral,{utts[0].speaker},{utts[0].session}\n")

    code, lines, _ = run(capsys, "student", "--variant", "full", "--corpus", manifest, "--protocol", "session",
                         "--folds", "1", *FAST, "--set", "linguistic_teacher.model=no-such-org/no-such-model")
    assert code == 0
    assert lines[0] == NO_TRANSCRIPTS.format("voices")
    assert lines[1] == "[voices] skipped 1 item(s): empty audio (0 samples)"
    assert lines[2].startswith("student full (ce + logit_prosodic + embedding_prosodic) on voices (48 utterances), "
                               "leave-one-session-out, fold 1 of 3; ")
    assert_matches_result_files(lines, roots / "runs" / "student", [1])
    (run_dir,) = (roots / "runs" / "student").iterdir()
    metrics = json.loads((run_dir / "fold1" / "metrics.json").read_text())
    assert metrics["terms"] == ["ce", "logit_prosodic", "embedding_prosodic"]
    assert metrics["note"] == NO_TRANSCRIPTS.format("voices")
    assert sorted(p.name for p in (roots / "runs").iterdir() if p.name != ".locks") == ["prosodic_teacher", "student"]


SEEDS_LINE = re.compile(r"^mean UA (\d+\.\d\d) WA (\d+\.\d\d) over (\d+) seeds \(([\d ]+); std across seeds "
                        r"UA (\d+\.\d\d) WA (\d+\.\d\d); UA per seed ([\d. ]+); (\d+) folds? each\)$")


def test_seeds_repeat_every_fold_per_seed_and_close_with_the_mean_over_seeds(roots, toy, capsys):
    argv = ["teacher", "--kind", "prosodic", "--corpus", toy["both"], "--protocol", "session", "--folds", "1", "2",
            *FAST]
    code, lines, _ = run(capsys, *argv, "--seeds", "3", "5", "3")
    assert code == 0
    # a block per seed (a repeated seed runs once): "seed S:", the header, the fold lines, the mean line
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"seed \d+:", line)]
    assert [lines[i] for i in starts] == ["seed 3:", "seed 5:"]
    blocks = [lines[starts[0] + 1:starts[1]], lines[starts[1] + 1:-1]]
    stage = roots / "runs" / "prosodic_teacher"
    run_dirs = {json.loads((d / "fold1" / "config.json").read_text())["training"]["seed"]: d for d in stage.iterdir()}
    assert sorted(run_dirs) == [3, 5]  # one run folder per seed
    means = []
    for seed, block in zip((3, 5), blocks):
        assert block[0].startswith("prosodic teacher on toy") and block[0].endswith(f"; results in {run_dirs[seed]}")
        metrics = [json.loads((run_dirs[seed] / f"fold{k}" / "metrics.json").read_text()) for k in (1, 2)]
        printed = fold_lines(block)
        assert sorted(printed) == [1, 2]
        for k, m in zip((1, 2), metrics):
            assert printed[k][:2] == (round(100 * m["ua"], 2), round(100 * m["wa"], 2))
        mean = MEAN_LINE.match(block[-1])
        assert mean and float(mean[1]) == round(100 * np.mean([m["ua"] for m in metrics]), 2)
        means.append((np.mean([m["ua"] for m in metrics]), np.mean([m["wa"] for m in metrics])))
    last = SEEDS_LINE.match(lines[-1])
    assert last, lines[-1]
    ua, wa = np.array(means).T
    assert (float(last[1]), float(last[2])) == (round(100 * ua.mean(), 2), round(100 * wa.mean(), 2))
    assert (int(last[3]), last[4], int(last[8])) == (2, "3 5", 2)
    # the spread across seeds: the sample standard deviation of the two seeds' means, |a - b| / sqrt(2)
    assert float(last[5]) == round(100 * abs(ua[0] - ua[1]) / np.sqrt(2), 2)
    assert float(last[6]) == round(100 * abs(wa[0] - wa[1]) / np.sqrt(2), 2)
    assert last[7].split() == [f"{100 * u:.2f}" for u in ua]

    # one seed is a plain run with that seed, reused here; a seed given twice over is refused
    code, again, _ = run(capsys, *argv, "--seeds", "5")
    assert code == 0 and MEAN_LINE.match(again[-1]) and again[-1] == blocks[1][-1]
    assert [how for *_, how in fold_lines(again).values()] == ["reused"] * 2
    code, _, err = run(capsys, *argv, "--seeds", "1", "--set", "training.seed=2")
    assert (code, err) == (2, ["error: training.seed given both as an option and with --set; give it once"])


def _metrics_of(stage_dir: Path, prefix: str, fold: int) -> dict:
    (run_dir,) = [d for d in stage_dir.iterdir() if d.name.startswith(prefix)]
    return json.loads((run_dir / f"fold{fold}" / "metrics.json").read_text())


GAP_FOLD_LINE = re.compile(r"^fold (\d+): validation UA (.+) \| test UA (.+)$")


def _named_scores(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in (item.rsplit(" ", 1) for item in text.split(", "))}


def test_gap_prints_validation_and_test_apart_with_paired_differences_from_the_result_files(
        roots, toy, capsys, monkeypatch):
    argv = ["gap", "--corpus", toy["both"], "--protocol", "session", "--folds", "1", "2", *FAST]
    code, lines, _ = run(capsys, *argv)
    assert code == 0
    assert lines[0] == ("no oracle row: only the built-in corpus records which channel carries each label, "
                        "and this is 'toy'")
    assert lines[1].startswith("gap: prosodic, linguistic, full, no_teachers on toy (48 utterances), "
                               "leave-one-session-out, folds 1 2 of 3; ")
    runs = roots / "runs"
    where = {"prosodic": (runs / "prosodic_teacher", ""), "linguistic": (runs / "linguistic_teacher", ""),
             "full": (runs / "student", "full-"), "no_teachers": (runs / "student", "no_teachers-")}
    metrics = {name: [_metrics_of(d, prefix, k) for k in (1, 2)] for name, (d, prefix) in where.items()}
    printed = [GAP_FOLD_LINE.match(line) for line in lines]
    printed = [m for m in printed if m]
    assert [int(m[1]) for m in printed] == [1, 2]
    for k, m in enumerate(printed):
        validation, test = _named_scores(m[2]), _named_scores(m[3])
        assert list(validation) == list(where) and list(test) == list(where)
        for name in where:
            assert validation[name] == round(100 * metrics[name][k]["best_val_ua"], 2)
            assert test[name] == round(100 * metrics[name][k]["ua"], 2)
            assert metrics[name][k]["threads"] == 1  # the shared loop records torch's threads
    closing = lines[-6:]
    for block, key, head, scores, gap in ((0, "best_val_ua", "validation", closing[1], closing[2]),
                                          (1, "ua", "test", closing[4], closing[5])):
        assert closing[3 * block].startswith(f"{head} UA, mean over 2 folds (")
        assert _named_scores(scores.strip()) == {
            name: round(100 * np.mean([m[key] for m in metrics[name]]), 2) for name in where}
        diff = np.array([m[key] for m in metrics["full"]]) - np.array([m[key] for m in metrics["no_teachers"]])
        higher = int((diff > 0).sum())
        interval = ""
        if head == "test":  # the paired bootstrap over the test utterances, from the predictions files
            (full_dir,), (plain_dir,) = ([d for d in (runs / "student").iterdir() if d.name.startswith(p)]
                                         for p in ("full-", "no_teachers-"))
            triples = []
            for k in (1, 2):
                full_pred, plain_pred = (list(csv.DictReader(open(d / f"fold{k}" / "predictions.csv")))
                                         for d in (full_dir, plain_dir))
                assert [r["id"] for r in full_pred] == [r["id"] for r in plain_pred]
                triples.append(([r["label"] for r in full_pred], [r["pred"] for r in full_pred],
                                [r["pred"] for r in plain_pred]))
            boot = paired_bootstrap(triples)
            assert boot["diff"] == pytest.approx(diff.mean(), abs=1e-12)
            p = format_p(boot["p_not_higher"], boot["n_resamples"])  # its format is checked in test_metrics
            interval = (f"; 95 % interval [{100 * boot['low']:+.2f}, {100 * boot['high']:+.2f}] over the test "
                        f"utterances, {p}")
        assert gap == (f"  full - no_teachers: {100 * diff.mean():+.2f} ± {100 * abs(diff[0] - diff[1]) / np.sqrt(2):.2f} "
                       f"(higher in {higher} of 2 folds){interval}")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "fit", no_training)
    code, again, _ = run(capsys, *argv)
    assert code == 0 and again[:2] == lines[:2] and again[-6:] == closing
    assert [line for line in again if GAP_FOLD_LINE.match(line)] == [m[0] for m in printed]

    code, _, err = run(capsys, *argv, "--variant", "no_teachers")
    assert (code, err) == (2, ["error: gap compares a distilled variant with plain fine-tuning (no_teachers); "
                               "choose another --variant"])
    code, _, err = run(capsys, *argv, "--validation-speakers", "0")
    assert (code, err) == (2, ["error: gap reads the validation speakers' UA, and data.validation_speakers is 0"])


def test_a_model_that_cannot_be_used_is_one_error_line_not_a_traceback(roots, toy, capsys):
    # a speech family emolib does not support (whatever the freeze: freeze=none caches nothing, so the backbone was
    # first loaded after the teachers trained), an adapter checkpoint, a top:K beyond the backbone's layers, a model
    # path that is not a folder, text weights that do not fit their config: each was a traceback (exit 1); the
    # backbone's are refused before any teacher trains
    import safetensors.torch
    from transformers import (Data2VecAudioConfig, Data2VecAudioModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model)

    from emolib.teachers import load_text_encoder

    base = ["--corpus", toy["audio"], "--protocol", "session", *FAST]
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    d2v, adapter = roots / "models" / "d2v", roots / "models" / "adapter"
    Data2VecAudioModel(Data2VecAudioConfig(**small)).save_pretrained(d2v)
    Wav2Vec2Model(Wav2Vec2Config(**small, add_adapter=True, output_hidden_size=32)).save_pretrained(adapter)
    for folder in (d2v, adapter):
        Wav2Vec2FeatureExtractor().save_pretrained(folder)
    for freeze in ("all", "none"):
        code, _, err = run(capsys, "student", *base, "--set", f"student.backbone={d2v}", "--set",
                           f"student.freeze={freeze}")
        assert (code, err) == (2, [f"error: student.backbone: {d2v}: model type 'data2vec-audio' is not a supported "
                                   "speech backbone (hubert, wav2vec2, wavlm, whisper)"]), freeze
    code, _, err = run(capsys, "student", *base, "--set", f"student.backbone={adapter}")
    assert (code, err) == (2, [f"error: student.backbone: {adapter}: checkpoints with adapters are not supported"])
    code, _, err = run(capsys, "student", *base, "--set", "student.freeze=top:9")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: student.backbone: freeze='top:9': K must be")
    missing = roots / "models" / "missing"
    code, _, err = run(capsys, "student", *base, "--set", f"student.backbone={missing}")
    assert (code, err) == (2, [f"error: student.backbone: {missing}: no such model directory (a local model is a "
                               "folder written by save_pretrained; anything else is read as a hub id)"])
    assert not (roots / "runs").exists()  # no teacher trained
    bert = roots / "models" / "bert"
    tokenizer, encoder = load_text_encoder("tiny-random")
    tokenizer.save_pretrained(bert)
    encoder.save_pretrained(bert)
    weights = safetensors.torch.load_file(bert / "model.safetensors")
    safetensors.torch.save_file({f"other.{k}": v for k, v in weights.items()}, bert / "model.safetensors",
                                metadata={"format": "pt"})
    text = ["--corpus", toy["text"], *base[2:]]
    code, _, err = run(capsys, "teacher", "--kind", "linguistic", *text, "--set", f"linguistic_teacher.model={bert}")
    assert (code, len(err)) == (1, 1), err
    assert err[0].startswith(f"error: {bert}: the saved weights do not fit the BertModel its config.json describes: ")
    (bert / "config.json").write_text("garbage")  # transformers names the file, in an OSError that was a traceback
    code, _, err = run(capsys, "teacher", "--kind", "linguistic", *text, "--set", f"linguistic_teacher.model={bert}")
    assert (code, err) == (1, [f"error: linguistic_teacher.model: {bert}: It looks like the config file at "
                               f"'{bert / 'config.json'}' is not a valid JSON file. A local text model is a folder "
                               "written by save_pretrained (model + tokenizer): save it again"])


def test_a_damaged_ctranslate2_folder_is_one_error_line(roots, toy, capsys):
    # a truncated model.bin was a CT2FormatError traceback: it is a ModelError, refused before any teacher trains
    from emolib.whisper_ct2 import packaged_model

    packaged = packaged_model("tiny.en")[0]
    folder = roots / "models" / "cut"
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes((packaged / "model.bin").read_bytes()[:4096])
    code, _, err = run(capsys, "student", "--corpus", toy["audio"], "--protocol", "session", *FAST,
                       "--set", f"student.backbone={folder}")
    assert (code, err) == (2, [f"error: student.backbone: {folder / 'model.bin'}: truncated: data of "
                               "decoder/embeddings/weight needs 39831552 bytes at offset 187, but the file has "
                               "4096 bytes"])
    assert not (roots / "runs").exists()  # no teacher trained


def test_a_saved_folder_with_a_file_that_is_not_json_is_one_error_line(roots, toy, capsys):
    # transformers named the file, but in an OSError that the commands printed as a traceback
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    folder = roots / "models" / "hubert"
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(16,) * 7, num_conv_pos_embeddings=8,
                             num_conv_pos_embedding_groups=2)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    (folder / "config.json").write_text("garbage")
    code, _, err = run(capsys, "student", "--corpus", toy["audio"], "--protocol", "session", *FAST,
                       "--set", f"student.backbone={folder}")
    assert (code, err) == (2, [f"error: student.backbone: {folder}: It looks like the config file at "
                               f"'{folder / 'config.json'}' is not a valid JSON file. A local backbone is a folder "
                               "written by save_pretrained (model + feature extractor): save it again"])
    assert not (roots / "runs").exists()  # no teacher trained


def test_unknown_names_are_one_line_errors(roots, toy, capsys):
    base = ["--corpus", toy["audio"], "--protocol", "session", *FAST]
    code, out, err = run(capsys, "student", "--variant", "everything", *base)
    assert code == 2 and out == []
    assert err == ["error: unknown variant 'everything'; variants: full, no_logit_kd, no_embedding_kd, "
                   "no_prosodic_teacher, no_linguistic_teacher, no_teachers, no_linguistic_logit_kd, "
                   "no_prosodic_logit_kd"]
    code, _, err = run(capsys, "student", *base, "--set", "student.lr=1e-4")
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: unknown config name 'student.lr'. Did you mean ") and "student.optim.lr" in err[0]
    code, _, err = run(capsys, "student", *base, "--set", "student.input_norm=standardize")  # a value: no teacher trains
    assert (code, err) == (2, ["error: config student.input_norm: 'standardize' is not one of standardise, layer"])
    code, _, err = run(capsys, "student", *base, "--tau-linguistic", "-1")  # was a traceback after the teachers trained
    assert (code, err) == (2, ["error: config distill.tau_linguistic: -1.0 (must be a number > 0 (0: unused, for a "
                               "variant without the term))"])
    code, _, err = run(capsys, "student", *base, "--tau-prosodic", "0")  # 0 marks an unused temperature
    assert (code, err) == (2, ["error: config distill.tau_prosodic: 0.0 (variant 'full' distils the prosodic "
                               "teacher's logits: its temperature must be a number > 0)"])
    code, _, err = run(capsys, "teacher", "--kind", "prosodic", *base, "--set", "prosodic_teacher.optim.batch_size=0")
    assert (code, err) == (2, ["error: config prosodic_teacher.optim.batch_size: 0 (must be an integer >= 1)"])
    code, _, err = run(capsys, "student", *base, "--folds", "7")
    assert (code, err) == (2, ["error: fold 7 does not exist; folds are 1..3"])
    code, _, err = run(capsys, "teacher", "--kind", "prosodic", *base, "--set", "data.protocol=speaker")
    assert (code, err) == (2, ["error: data.protocol given both as an option and with --set; give it once"])
    code, _, err = run(capsys, "teacher", "--kind", "prosodic", *base[2:], "--corpus", roots / "missing.csv")
    assert (code, err) == (2, [f"error: {roots / 'missing.csv'}: no such manifest file"])
    with pytest.raises(SystemExit) as exit_:  # argparse lists the presets
        cli.main(["student", *map(str, base), "--preset", "huge"])
    assert exit_.value.code == 2
    assert "invalid choice: 'huge' (choose from 'tiny', 'default', 'paper')" in capsys.readouterr().err
    assert not (roots / "runs").exists()


def test_gap_over_seeds_averages_each_students_difference_by_hand(capsys):
    from emolib.commands import gap_over_seeds

    def seed(val: float, test: float) -> dict:
        return {"gaps": {"validation": {"full": {"mean": val}}, "test": {"full": {"mean": test}}}}

    out = gap_over_seeds([0, 1, 2], [seed(0.01, 0.02), seed(0.03, -0.01), seed(0.02, 0.05)])
    # validation: mean 0.02, sample std 0.01; test: mean 0.02, deviations 0, -0.03, 0.03 -> std 0.03
    validation = out["gaps"]["validation"]["full"]
    assert (validation["mean"], validation["std"]) == (pytest.approx(0.02), pytest.approx(0.01))
    assert validation["per_seed"] == [0.01, 0.03, 0.02]
    assert out["gaps"]["test"]["full"]["mean"] == pytest.approx(0.02)
    assert out["gaps"]["test"]["full"]["std"] == pytest.approx(0.03)
    assert capsys.readouterr().out.splitlines() == [
        "over 3 seeds (0 1 2), each the mean over its folds:",
        "  validation full - no_teachers: +2.00 (std across seeds 1.00; per seed +1.00 +3.00 +2.00)",
        "  test full - no_teachers: +2.00 (std across seeds 3.00; per seed +2.00 -1.00 +5.00)"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU this machine lacks")
def test_a_gpu_the_machine_lacks_is_one_error_line_before_anything_runs(roots, toy, capsys):
    code, lines, err = run(capsys, "student", "--corpus", toy["both"], "--protocol", "session", *FAST,
                           "--set", "training.device=cuda")
    assert code == 2 and lines == []
    assert err == ["error: training.device='cuda' requested but CUDA is not available on this machine "
                   "(use training.device=auto or cpu)"]
    assert not (roots / "runs").exists()


@pytest.mark.parametrize("device", ["mps", "xpu", "meta"])
def test_another_kind_of_device_the_machine_lacks_is_one_error_line(roots, toy, capsys, device):
    # each was a traceback from deep in the backbone's cache filling: not linked with mps, not compiled with XPU,
    # no autocast for meta
    import torch

    backend = torch.backends.mps if device == "mps" else getattr(torch, device, None)
    if device != "meta" and backend is not None and backend.is_available():
        pytest.skip(f"this machine has a {device} device")
    code, lines, err = run(capsys, "student", "--corpus", toy["both"], "--protocol", "session", *FAST,
                           "--set", f"training.device={device}")
    assert (code, lines) == (2, [])
    assert err == [f"error: training.device={device!r}: this PyTorch build or machine has no {device} device to train "
                   "on (use training.device=auto, cpu or cuda)"]
    assert not (roots / "runs").exists()


def test_predict_classifies_audio_with_the_folds_students_averaged(roots, toy, capsys, tmp_path):
    base = ["--corpus", toy["both"], "--protocol", "session", *FAST]
    folder = tmp_path / "new audio"
    (folder / "sub").mkdir(parents=True)
    clips = [Path(u.path) for u in toy["utterances"][:3]]
    for i, clip in enumerate(clips):
        (folder / ("sub" if i else "") / f"clip{i}.WAV").write_bytes(clip.read_bytes())
    (folder / "notes.txt").write_text("not audio")

    # nothing trained yet: one error line naming what to do, nothing written
    code, out, err = run(capsys, "predict", clips[0], *base, "--folds", "1", "2")
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith("error: no trained student full for folds 1 2 of this config in ")
    assert err[0].endswith("train it first (python -m emolib student with the same options, or make report)")

    assert run(capsys, "student", *base, "--folds", "1", "2")[0] == 0
    code, out, err = run(capsys, "predict", clips[0], folder, *base, "--folds", "1", "2")
    assert code == 0
    # the CSV alone on standard output, what was used on standard error
    assert err[-2:] == ["student full (ce + logit_linguistic + logit_prosodic + embedding_linguistic + "
                        "embedding_prosodic) of toy, folds 1 2 (probabilities averaged), on 4 file(s)",
                        f"ignored 1 file(s) that are not audio ({AUDIO_LIST}) in {folder}"]
    rows = list(csv.DictReader(out))
    classes = pipeline.load_data(cli_config(base)).corpus.classes
    assert list(rows[0]) == ["path", "pred", *(f"p_{c}" for c in classes)]
    expected = [clips[0], folder / "clip0.WAV", folder / "sub" / "clip1.WAV", folder / "sub" / "clip2.WAV"]
    assert [r["path"] for r in rows] == [str(p) for p in expected]  # folders expanded, sorted; the .txt left out
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    assert [r["pred"] for r in rows] == [classes[k] for k in probs.argmax(1)]
    # each fold's student alone, averaged by hand; the copies of a clip score as the clip itself
    cfg = cli_config(base)
    alone = [pipeline.classify(cfg, k, expected)[[f"p_{c}" for c in classes]].to_numpy() for k in (1, 2)]
    np.testing.assert_allclose(probs, (alone[0] + alone[1]) / 2, atol=2e-6)
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)

    # --out writes the same CSV, atomically, and says so on standard output
    target = tmp_path / "preds.csv"
    code, out, _ = run(capsys, "predict", clips[0], folder, *base, "--folds", "1", "2", "--out", target)
    assert code == 0 and out[-1] == f"predictions written to {target}"
    assert list(csv.DictReader(target.read_text().splitlines())) == rows


def test_predict_names_the_file_it_cannot_read(roots, toy, capsys, tmp_path):
    base = ["--corpus", toy["both"], "--protocol", "session", *FAST, "--folds", "1"]
    assert run(capsys, "student", *base)[0] == 0
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    empty = tmp_path / "empty"
    empty.mkdir()
    for target, message in [(broken, f"error: {broken}: unreadable audio file ("),
                            (tmp_path / "gone.wav", f"error: {tmp_path / 'gone.wav'}: no such file or folder"),
                            (empty, f"error: {empty}: no audio files (.wav, .flac, .ogg, .oga, .opus, .mp3, .aif, .aiff) in this folder")]:
        code, out, err = run(capsys, "predict", target, *base)
        assert code == 2 and out == [] and len(err) == 1 and err[0].startswith(message), err
    clip = Path(toy["utterances"][0].path)
    code, out, err = run(capsys, "predict", clip, *base, "--out", tmp_path)
    assert (code, out, err) == (2, [], [f"error: --out {str(tmp_path)!r}: not a file name"])

    # in a folder: hidden files and folders are left out, a clip under 25 ms is skipped and
    # counted, a name that is not UTF-8 is written escaped
    folder = tmp_path / "cut"
    (folder / ".git").mkdir(parents=True)
    for name in ("._a.wav", ".git/b.wav"):
        (folder / name).write_bytes(b"AppleDouble, not audio")
    name = os.fsdecode(b"caf\xe9.wav")
    (folder / name).write_bytes(clip.read_bytes())
    sf.write(folder / "blip.wav", np.full(200, 0.1, dtype=np.float32), 16000)  # 12.5 ms
    code, out, err = run(capsys, "predict", folder, *base)
    assert code == 0
    assert err[-1] == f"skipped 1 file(s): audio shorter than 25 ms (too short for a speech model's front end): " \
                      f"{folder / 'blip.wav'}"
    assert [row["path"] for row in csv.DictReader(out)] == [f"{folder}/caf\\xe9.wav"]


def test_predict_skips_damaged_files_counts_silent_ones_and_checks_out_first(roots, toy, capsys, tmp_path,
                                                                             monkeypatch):
    from emolib.audio import AudioError, read_audio

    base = ["--corpus", toy["both"], "--protocol", "session", *FAST, "--folds", "1", "--variant", "no_teachers"]
    assert run(capsys, "student", *base)[0] == 0
    clip = Path(toy["utterances"][0].path)
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.wav").write_bytes(clip.read_bytes())
    (folder / "b_cut.wav").write_bytes(clip.read_bytes()[:-1000])  # an interrupted copy
    wave = np.full(8000, 0.1, dtype=np.float32)
    wave[100] = np.nan
    sf.write(folder / "c_nan.wav", wave, 16000, subtype="FLOAT")
    sf.write(folder / "d_silent.wav", np.zeros(8000, dtype=np.float32), 16000)
    # the tiny preset's students hear the first 6 s (student.max_seconds): silence, then a tone they
    # never hear, then a NaN they never read
    window = get_config("tiny").student.max_seconds
    late = np.zeros(int(16000 * (window + 2)), dtype=np.float32)
    late[int(16000 * (window + 0.5)):] = 0.1
    late[-10] = np.nan
    sf.write(folder / "e_late.wav", late, 16000, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio")
    (folder / "list.csv").write_text("not audio either")
    reasons = []
    for name in ("b_cut.wav", "c_nan.wav"):
        with pytest.raises(AudioError) as err:
            read_audio(folder / name)
        reasons.append(str(err.value))
    assert reasons[1] == f"{folder / 'c_nan.wav'}: contains NaN or infinite samples"

    # the damaged files are skipped and named with their reasons, the others classified and written
    target = tmp_path / "out.csv"
    code, out, err = run(capsys, "predict", folder, *base, "--out", target)
    assert (code, err) == (0, [])
    assert out == [
        "student no_teachers (ce) of toy, fold 1, on 3 file(s)",
        f"ignored 2 file(s) that are not audio ({AUDIO_LIST}) in {folder}",
        f"skipped 2 unreadable file(s): {reasons[0]}; {reasons[1]}",
        f"2 file(s) silent (peak below 0.0001 of full scale), their prediction is a guess: {folder / 'd_silent.wav'}, "
        f"{folder / 'e_late.wav'}",
        # a file longer than the students' window is classified on its start alone: said, not left to be found out
        f"1 file(s) longer than {window:g} s (student.max_seconds), classified on their first {window:g} s only: "
        f"{folder / 'e_late.wav'}",
        f"predictions written to {target}"]
    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert [r["path"] for r in rows] == [str(folder / n) for n in ("a.wav", "d_silent.wav", "e_late.wav")]

    # nothing left to classify: one error line, nothing written
    for only, message in [(["c_nan.wav"], reasons[1]),
                          (["b_cut.wav", "c_nan.wav"], f"no file can be classified: 2 unreadable ({reasons[0]}; "
                                                       f"{reasons[1]})")]:
        code, out, err = run(capsys, "predict", *(folder / n for n in only), *base, "--out", tmp_path / "none.csv")
        assert (code, out, err) == (2, [], [f"error: {message}"])
    assert not (tmp_path / "none.csv").exists()

    # an --out that cannot be written is refused before any model loads
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pipeline, "classify", no_model)
    monkeypatch.setattr(pipeline, "student_dir_shape", no_model)
    bad_out = folder / "notes.txt" / "out.csv"
    assert run(capsys, "predict", folder, *base, "--out", bad_out) == \
        (2, [], [f"error: --out {str(bad_out)!r}: {folder / 'notes.txt'} is a file, not a folder"])
    recording = folder / "a.wav"  # the CSV would have replaced the recording
    before = recording.read_bytes()
    assert run(capsys, "predict", folder, *base, "--out", recording) == \
        (2, [], [f"error: --out {str(recording)!r} is one of the audio files to classify; name a new file for the CSV"])
    assert recording.read_bytes() == before
    import tempfile

    def read_only(*args, **kwargs):  # CI runs as root, which may write anywhere: simulated
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert run(capsys, "predict", folder, *base, "--out", tmp_path / "ro" / "out.csv") == \
        (2, [], [f"error: --out {str(tmp_path / 'ro' / 'out.csv')!r}: cannot write in {tmp_path / 'ro'} "
                 "(Permission denied)"])
    monkeypatch.undo()


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    from emolib.commands import RequestError, audio_files

    (tmp_path / "in" / "locked").mkdir(parents=True)
    (tmp_path / "in" / ".hidden").mkdir()
    for name in ("a.wav", "locked/b.wav", ".hidden/c.wav", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"")
    ignored: dict[Path, int] = {}
    assert audio_files([tmp_path / "in"], ignored) == [tmp_path / "in" / "a.wav", tmp_path / "in" / "locked" / "b.wav"]
    assert ignored == {tmp_path / "in": 1}
    real_scandir = os.scandir

    def no_permission(path="."):  # CI runs as root, which may read any folder: simulated
        if Path(path).name in ("locked", ".hidden"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", no_permission)
    with pytest.raises(RequestError) as err:
        audio_files([tmp_path / "in"])
    assert str(err.value) == f"{tmp_path / 'in' / 'locked'}: cannot list this folder (Permission denied)"


def test_predict_reads_only_the_run_folders_which_may_be_copied_anywhere(roots, toy, capsys, tmp_path):
    manifest = tmp_path / "elsewhere.csv"  # a corpus of its own, to be taken away
    manifest.write_bytes(Path(toy["both"]).read_bytes())
    base = ["--corpus", manifest, "--protocol", "session", *FAST, "--variant", "no_teachers"]
    assert run(capsys, "student", *base, "--folds", "1", "3")[0] == 0
    clips = [Path(u.path) for u in toy["utterances"][:2]]
    code, out, err = run(capsys, "predict", *clips, *base)
    # without --folds: every trained fold, found in the run folders
    assert code == 0 and err[-1] == "student no_teachers (ce) of elsewhere, folds 1 3 (probabilities averaged), " \
                                    "on 2 file(s)"
    before = list(csv.DictReader(out))
    assert len(before) == 2

    manifest.unlink()  # the corpus is gone: the students still classify
    code, out, err = run(capsys, "predict", *clips, *base)
    assert code == 0 and list(csv.DictReader(out)) == before

    # --run: a run folder copied to another place (another machine), with its own config;
    # the runs root is empty now
    copy = tmp_path / "from the server" / "no_teachers"
    shutil.copytree(next((roots / "runs" / "student").iterdir()), copy)
    shutil.rmtree(roots / "runs")
    code, out, err = run(capsys, "predict", *clips, "--run", copy, "--set", "training.num_threads=1")
    assert code == 0 and list(csv.DictReader(out)) == before
    # one fold's folder, or --folds within the run, give that fold's student alone
    code, out, _ = run(capsys, "predict", *clips, "--run", copy / "fold3", "--set", "training.num_threads=1")
    alone = list(csv.DictReader(out))
    assert code == 0 and alone != before
    code, out, err = run(capsys, "predict", *clips, "--run", copy, "--folds", "3", "--set", "training.num_threads=1")
    assert code == 0 and list(csv.DictReader(out)) == alone
    assert err[-1] == "student no_teachers (ce) of elsewhere, fold 3, on 2 file(s)"
    renamed = tmp_path / "best student"  # a fold folder copied under another name: its fold from its metrics
    shutil.copytree(copy / "fold3", renamed)
    code, out, err = run(capsys, "predict", *clips, "--run", renamed, "--set", "training.num_threads=1")
    assert code == 0 and err[-1] == "student no_teachers (ce) of elsewhere, fold 3, on 2 file(s)"

    # a wrong folder is one error line
    for args, message in [
            (["--run", copy, "--folds", "2"], f"error: --run {copy}: no complete student for fold 2 here (give a "
                                              "folder .../student/<name> or one of its fold<k> folders)"),
            (["--run", tmp_path / "nowhere"], f"error: --run {tmp_path / 'nowhere'}: no such folder")]:
        assert run(capsys, "predict", *clips, *args) == (2, [], [message])
    other = tmp_path / "other" / "fold3"  # a student of other classes is not averaged with these
    shutil.copytree(copy / "fold3", other)
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "classes": metrics["classes"][::-1]}))
    code, out, err = run(capsys, "predict", *clips, "--run", copy, "--run", other)
    assert code == 2 and out == [] and len(err) == 1
    assert err[0].startswith("error: the students have different classes: ")
    # students of several runs may be averaged (here the same fold twice: its own probabilities)
    shutil.copytree(copy / "fold3", tmp_path / "again" / "fold3")
    code, out, err = run(capsys, "predict", *clips, "--run", copy / "fold3", "--run", tmp_path / "again" / "fold3",
                         "--set", "training.num_threads=1")
    assert code == 0 and err[-1] == "2 students: no_teachers/fold3, again/fold3 (probabilities averaged), on 2 file(s)"
    assert list(csv.DictReader(out)) == alone
    (copy / "fold1" / "best.safetensors").write_bytes(b"truncated")
    code, out, err = run(capsys, "predict", "--run", copy / "fold1", *clips)
    assert code == 2 and out == [] and len(err) == 1
    assert err[0].startswith(f"error: {copy / 'fold1' / 'best.safetensors'}: unreadable weights")


def cli_config(base: list[str]):
    from emolib.commands import command_config

    named = dict(zip(base[0:4:2], base[1:4:2]))  # --corpus X --protocol Y
    overrides = {"training.num_threads": 1}
    return command_config("tiny", overrides, {"data.corpus": str(named["--corpus"]), "data.protocol": named["--protocol"]})


def test_every_option_of_student_and_teacher_reaches_the_config(roots, toy, monkeypatch):
    from emolib import commands

    seen = {}
    monkeypatch.setattr(commands, "student", lambda cfg, folds: seen.update(student=(cfg, folds)))
    monkeypatch.setattr(commands, "teacher", lambda kind, cfg, folds: seen.update(teacher=(kind, cfg, folds)))
    common = ["--corpus", str(toy["both"]), "--protocol", "speaker", "--folds", "2", "3", "--n-folds", "3",
              "--validation-speakers", "1", "--seeds", "7", *FAST]
    assert cli.main(["student", "--variant", "no_logit_kd", "--tau-linguistic", "2", "--tau-prosodic", "0.5",
                     *common]) == 0
    cfg, folds = seen["student"]
    assert folds == [2, 3] and cfg.distill.variant == "no_logit_kd"
    assert (cfg.distill.tau_linguistic, cfg.distill.tau_prosodic) == (2.0, 0.5)
    assert (cfg.data.corpus, cfg.data.protocol, cfg.data.n_folds) == (str(toy["both"]), "speaker", 3)
    assert (cfg.data.validation_speakers, cfg.training.seed, cfg.training.num_threads) == (1, 7, 1)
    assert cli.main(["teacher", "--kind", "linguistic", *common]) == 0
    kind, cfg, folds = seen["teacher"]
    assert (kind, folds, cfg.data.protocol, cfg.data.n_folds, cfg.training.seed) == ("linguistic", [2, 3], "speaker",
                                                                                      3, 7)


@pytest.mark.parametrize("argv, message", [
    (["teacher", "--kind", "prosodic"], "interrupted: complete folds are kept, and the next run resumes the killed one"),
    (["student"], "interrupted: complete folds are kept, and the next run resumes the killed one"),
])
def test_ctrl_c_in_training_ends_with_130_and_says_what_is_kept(roots, toy, capsys, monkeypatch, argv, message):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fit", interrupted)
    code, _, err = run(capsys, *argv, "--corpus", toy["both"], "--protocol", "session", *FAST)
    assert code == 130 and err[-1] == message


def test_ctrl_c_in_the_report_ends_with_130(monkeypatch, capsys):
    from emolib import driver

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "run", interrupted)
    for argv in (["run", "--preset", "tiny"], ["figures", "--preset", "tiny"]):
        code, _, err = run(capsys, *argv)
        assert code == 130
        assert err[-1] == "interrupted: complete notebooks are kept and skipped on the next run"


def test_a_closed_pipe_ends_a_command_quietly_with_141(tmp_path):
    # the reader is gone before the command writes (`python -m emolib runs | true`): no traceback
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "emolib", "runs"], stdout=write_end, stderr=subprocess.PIPE,
                              env={**os.environ, "EMOLIB_RUNS": str(tmp_path / "runs")}, timeout=120)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b"")


def test_a_student_that_could_not_learn_is_refused_before_anything_trains(roots, toy, capsys):
    code, out, err = run(capsys, "student", "--variant", "no_teachers", "--corpus", toy["audio"], "--protocol",
                         "session", *FAST, "--set", "distill.alpha=0")
    assert code == 2 and err == ["error: variant 'no_teachers' trains with ce, and every one of them has coefficient "
                                 "0 (distill.alpha=0.0, beta=1.0, gamma=1.0): the loss is 0, so nothing would learn"]
    assert not (roots / "runs").exists()


def test_a_run_trained_on_another_version_of_the_corpus_is_one_error_line(roots, toy, capsys, tmp_path):
    manifest = tmp_path / "corpus.csv"
    shutil.copy(toy["both"], manifest)
    argv = ["teacher", "--kind", "prosodic", "--corpus", manifest, "--protocol", "session", "--folds", "1", *FAST]
    assert run(capsys, *argv)[0] == 0
    lines = manifest.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",neutral,", ",sad,")  # a label corrected after training
    manifest.write_text("".join(lines))  # the same process sees the edit (a JupyterLab kernel, say)
    code, _, err = run(capsys, *argv)
    (run_dir,) = (roots / "runs" / "prosodic_teacher").iterdir()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {run_dir / 'fold1'}: trained on ") and f"Delete {run_dir} to train again" in err[0]


@pytest.mark.parametrize("entry", ["_train", "_drive"])
def test_a_folder_the_command_cannot_write_is_one_error_line_naming_it(entry, capsys):
    """A shared read-only corpus or cache works while it holds everything a command needs; the
    first write it would take (a corpus still to generate, features still to extract, a runs
    folder of another user's) ended in an OSError traceback. Measured with read-only mounts as
    EMOLIB_DATA, EMOLIB_CACHE and EMOLIB_RUNS under the student and run commands; a root process
    cannot be refused by chmod, so the error is raised here as the mount raised it."""
    import errno

    def refused():
        raise OSError(errno.EROFS, "Read-only file system", "/shared/emolib-cache/egemaps")

    assert getattr(cli, entry)(refused) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: /shared/emolib-cache/egemaps: Read-only file system. ") and err.count("\n") == 1
    assert "EMOLIB_CACHE" in err and "complete results are kept" in err

    def missing():  # any other OSError is not this one: its traceback stays
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")

    with pytest.raises(FileNotFoundError):
        getattr(cli, entry)(missing)


def test_a_corpus_of_one_class_is_one_error_line_before_anything_trains(roots, toy, capsys):
    # it trained, and every fold scored UA 100
    utts = [u for u in toy["utterances"] if u.label == "angry"]
    manifest = write_manifest(roots / "angry.csv", utts, ["path", "label", "speaker", "session", "text"])
    code, out, err = run(capsys, "teacher", "--kind", "prosodic", "--corpus", manifest, "--protocol", "session", *FAST)
    assert code == 2 and out == []
    assert err == ["error: angry: every utterance is labelled 'angry' (after the skips above, if any); a classifier "
                   "needs at least two classes (data.labels='iemocap4')"]
    assert not (roots / "runs").exists()


def test_a_root_under_a_regular_file_is_one_error_line_naming_it(capsys):
    import errno

    def refused():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", "/home/me/afile/runs/.locks")

    assert cli._train(refused) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: /home/me/afile/runs/.locks: Not a directory. ") and err.count("\n") == 1


def test_a_wait_for_another_process_is_said_while_the_loader_s_lines_are_held_back():
    # a command waiting for another one's corpus generation printed nothing at all: its loader's lines are held
    # back (so that the command's first line can be a note about the corpus), the wait with them
    import contextlib
    import io

    from emolib import commands, runs

    through = io.StringIO()
    held = commands._HeldBack(through)
    with contextlib.redirect_stdout(held):
        print("skipped 2 files (empty audio)")
        print(f"synth corpus: another process (pid 7) is making it; {runs.WAITING}")
    assert through.getvalue() == f"synth corpus: another process (pid 7) is making it; {runs.WAITING}\n"
    assert held.getvalue() == "skipped 2 files (empty audio)\n"


def test_predict_lists_linked_folders_once(tmp_path):
    # a linked day2/ folder was neither classified nor counted
    from emolib.commands import audio_files

    (tmp_path / "in" / "day1").mkdir(parents=True)
    (tmp_path / "day2").mkdir()
    for f in (tmp_path / "in" / "day1" / "a.wav", tmp_path / "day2" / "b.wav"):
        f.write_bytes(b"RIFF")
    (tmp_path / "in" / "day2").symlink_to(tmp_path / "day2", target_is_directory=True)
    (tmp_path / "in" / "again").symlink_to(tmp_path / "day2", target_is_directory=True)  # the same folder twice
    assert audio_files([tmp_path / "in"]) == [tmp_path / "in" / "again" / "b.wav", tmp_path / "in" / "day1" / "a.wav"]
