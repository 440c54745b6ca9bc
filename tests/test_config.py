"""Configs: presets, dotted overrides, the stable hash and the per-stage hashes."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import pytest

from emolib.config import (
    PRESETS,
    STAGE_SECTIONS,
    Config,
    config_hash,
    from_dict,
    get_config,
    stage_hash,
    valid_names,
)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_build_and_round_trip(preset):
    cfg = get_config(preset)
    assert cfg.preset == preset
    assert from_dict(cfg.to_dict()) == cfg
    # config.json goes through JSON, where tuples become lists: still the same config and hash
    again = from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.hash() == cfg.hash()
    assert isinstance(again.prosodic_teacher.channels, tuple)


def test_presets_differ_where_documented():
    tiny, default, paper = (get_config(p) for p in ("tiny", "default", "paper"))
    assert (tiny.student.backbone, default.student.backbone, paper.student.backbone) == (
        "tiny-random",
        "whisper-base",
        "facebook/hubert-base-ls960",
    )
    assert paper.linguistic_teacher.model == "bert-base-uncased"
    assert (paper.student.optim.batch_size, paper.training.precision) == (128, "bf16")
    # the recipes' rates scaled by sqrt(batch ratio) to batch 128 (README, "GPU student and teachers"):
    # SpeechBrain's 1e-4 / 1e-5 at batch 4 and Devlin et al.'s 2e-5..3e-5 at batch 32
    student, bert = paper.student, paper.linguistic_teacher
    rates = (student.optim.lr, student.optim.lr * student.backbone_lr_scale, bert.optim.lr)
    assert rates == pytest.approx((1e-4 * 32**0.5, 1e-5 * 32**0.5, 2.5e-5 * 4**0.5), rel=0.15)
    assert default == Config()  # the default preset is the dataclass defaults
    assert len({tiny.hash(), default.hash(), paper.hash()}) == 3


def test_paper_preset_sets_what_the_paper_states():
    # Sec. 4.2: "We train all models ... using a batch size of 128" (64 only for the HuBERT-large
    # student), AdamW, HuBERT-base student, 'bert-base-uncased' teacher; Sec. 4.1: IEMOCAP, 4 classes;
    # Fig. 2: hard logits (small tau) for the prosodic teacher, soft (large tau) for the linguistic one
    from emolib.report import SWEEPS

    paper = get_config("paper")
    assert [m.optim.batch_size for m in (paper.student, paper.linguistic_teacher, paper.prosodic_teacher)] == [128] * 3
    assert (paper.student.backbone, paper.linguistic_teacher.model) == ("facebook/hubert-base-ls960",
                                                                        "bert-base-uncased")
    assert paper.data.corpus.startswith("iemocap:") and paper.data.labels == "iemocap4"
    assert paper.distill.variant == "full" and paper.distill.tau_prosodic <= 1 < paper.distill.tau_linguistic
    # Fig. 2 left sweeps tau_P with the linguistic logit-KD term removed, right tau_L without the prosodic one
    assert SWEEPS == (("prosodic", "no_linguistic_logit_kd", "tau_prosodic"),
                      ("linguistic", "no_prosodic_logit_kd", "tau_linguistic"))


def test_dotted_overrides_coerce_strings_from_the_command_line():
    cfg = get_config(
        "default",
        {
            "student.optim.lr": "1e-4",
            "training.seed": "3",
            "data.max_seconds": "8",
            "training.deterministic": "false",
            "linguistic_teacher.freeze_embeddings": "False",
            "prosodic_teacher.channels": "(8, 16)",
            "sweep.taus_prosodic": "[0.5, 2]",
            "data.corpus": "iemocap:/data/IEMOCAP",
            "linguistic_teacher.model": "1",
        },
    )
    assert cfg.student.optim.lr == 1e-4 and type(cfg.student.optim.lr) is float
    assert cfg.training.seed == 3 and type(cfg.training.seed) is int
    assert cfg.data.max_seconds == 8.0 and type(cfg.data.max_seconds) is float
    assert cfg.training.deterministic is False and cfg.linguistic_teacher.freeze_embeddings is False
    assert cfg.prosodic_teacher.channels == (8, 16)
    assert cfg.sweep.taus_prosodic == (0.5, 2.0) and [type(t) for t in cfg.sweep.taus_prosodic] == [float, float]
    assert cfg.data.corpus == "iemocap:/data/IEMOCAP"
    assert cfg.linguistic_teacher.model == "1"  # a string field keeps a string that looks like a number
    # other sections and the preset itself are untouched
    assert cfg.prosodic_teacher.optim.lr == 1e-3 and get_config("default").student.optim.lr == 1e-3
    # a grid given with integers is the same grid, with the same hash
    assert get_config("tiny", {"sweep.taus_prosodic": [0.5, 2]}).hash() == get_config("tiny").hash()
    assert cfg.replace(**{"training.seed": 4}).training.seed == 4


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("training.seed", "2.5", "config training.seed: expected an integer, got 2.5"),
        ("training.deterministic", "1", "config training.deterministic: expected true/false, got 1"),
        ("data.max_seconds", "long", "config data.max_seconds: cannot read 'long' as float"),
        ("data.corpus", 5, "config data.corpus: expected a string, got 5"),
        ("prosodic_teacher.channels", "[8, 16.5]", "config prosodic_teacher.channels[1]: expected an integer, got 16.5"),
    ],
)
def test_badly_typed_override_is_an_error(name, value, message):
    with pytest.raises(ValueError) as err:
        get_config("default", {name: value})
    assert str(err.value) == message


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("student.input_norm", "standardize", "config student.input_norm: 'standardize' is not one of standardise, layer"),
        ("student.pooling", "max", "config student.pooling: 'max' is not one of mean, stats"),
        ("student.layer_mix", "splt", "config student.layer_mix: 'splt' is not one of last, shared, per_head, split, concat"),
        ("linguistic_teacher.pooling", "max", "config linguistic_teacher.pooling: 'max' is not one of mean, cls"),
        ("training.precision", "fp16", "config training.precision: 'fp16' is not one of fp32, bf16"),
        ("student.freeze", "top4", "config student.freeze: 'top4' is not a freeze mode; use none, feature_encoder, all "
                                   "or top:K (K >= 1: all but the top K layers are frozen)"),
        ("student.freeze", "top:0", "config student.freeze: 'top:0' is not a freeze mode; use none, feature_encoder, "
                                    "all or top:K (K >= 1: all but the top K layers are frozen)"),
    ],
)
def test_a_word_a_setting_does_not_take_is_refused_before_anything_loads(name, value, message):
    """A misspelt value is caught where the override is read, not after the teachers trained."""
    with pytest.raises(ValueError) as err:
        get_config("default", {name: value})
    assert str(err.value) == message
    assert get_config("default", {"student.freeze": "top:12"}).student.freeze == "top:12"  # K is checked on loading


@pytest.mark.parametrize(
    "name, value, message",
    [
        # each was a traceback deep in training (batch 0: ZeroDivisionError; lr < 0 from AdamW; no validation
        # speakers: IndexError), or a run that trained nothing and reported chance (epochs 0, embedding_dim 0)
        ("student.optim.batch_size", 0, "config student.optim.batch_size: 0 (must be an integer >= 1)"),
        ("student.optim.epochs", 0, "config student.optim.epochs: 0 (must be an integer >= 1)"),
        ("prosodic_teacher.optim.lr", -1, "config prosodic_teacher.optim.lr: -1.0 (must be a number > 0)"),
        ("linguistic_teacher.optim.warmup_ratio", 1.5, "config linguistic_teacher.optim.warmup_ratio: 1.5 "
                                                       "(must be a number in [0, 1])"),
        ("student.dropout", 1.5, "config student.dropout: 1.5 (must be a number in [0, 1))"),
        ("prosodic_teacher.embedding_dim", 0, "config prosodic_teacher.embedding_dim: 0 (must be an integer >= 1)"),
        ("data.validation_speakers", -1, "config data.validation_speakers: -1 (must be an integer >= 0 (0: no model "
                                         "selection, the last epoch is kept))"),
        ("data.n_folds", 1, "config data.n_folds: 1 (must be 0 (a fold per held-out group) or an integer >= 2)"),
        ("data.max_seconds", 0, "config data.max_seconds: 0.0 (must be a number of seconds >= 0.025 (the shortest "
                                "clip a speech model's front end takes))"),
        # a traceback from the backbone's front end after the teachers had trained, or teachers trained on 1 ms
        ("student.max_seconds", 0.01, "config student.max_seconds: 0.01 (must be a number of seconds >= 0.025 (the "
                                      "shortest clip a speech model's front end takes))"),
        # a traceback from numpy's generator after the first teacher had trained
        ("training.seed", -1, "config training.seed: -1 (must be an integer in [0, 2^32))"),
        ("distill.tau_linguistic", -1, "config distill.tau_linguistic: -1.0 (must be a number > 0 (0: unused, for a "
                                       "variant without the term))"),
        ("distill.gamma", -0.5, "config distill.gamma: -0.5 (must be a number >= 0)"),
        ("sweep.taus_prosodic", "[0, 1]", "config sweep.taus_prosodic: (0.0, 1.0) (each of a non-empty list must be "
                                          "a number > 0)"),
        ("sweep.taus_linguistic", "[]", "config sweep.taus_linguistic: () (each of a non-empty list must be "
                                        "a number > 0)"),
        ("prosodic_teacher.channels", "[16, 0]", "config prosodic_teacher.channels: (16, 0) (each of a non-empty "
                                                 "list must be an integer >= 1)"),
        ("linguistic_teacher.max_tokens", 2, "config linguistic_teacher.max_tokens: 2 (must be an integer >= 3 "
                                             "(the [CLS] and [SEP] tokens and a word))"),
    ],
)
def test_a_number_a_setting_does_not_take_is_refused_before_anything_loads(name, value, message):
    with pytest.raises(ValueError) as err:
        get_config("default", {name: value})
    assert str(err.value) == message


@pytest.mark.parametrize("value", ["1e400", "-1e400", "float('nan')", 1e400])
def test_a_loss_weight_that_is_not_finite_is_refused(value):
    # 1e400 reads as inf and passed "a number >= 0": every epoch's loss was NaN, and the run was saved as complete
    with pytest.raises(ValueError, match=r"^config distill.alpha: (expected a finite number|cannot read)"):
        get_config("default", {"distill.alpha": value})


def test_the_shortest_clip_a_config_takes_is_the_shortest_a_corpus_keeps():
    from emolib import corpora
    from emolib.config import MIN_CLIP_SECONDS

    assert MIN_CLIP_SECONDS == corpora.MIN_SECONDS
    assert get_config("default", {"data.max_seconds": MIN_CLIP_SECONDS, "student.max_seconds": MIN_CLIP_SECONDS})


def test_every_preset_and_the_edges_of_each_range_are_accepted():
    from emolib.config import RANGES, check_values

    for preset in PRESETS:
        check_values(get_config(preset))
    edges = {"student.optim.batch_size": 1, "student.optim.epochs": 1, "student.optim.patience": 0,
             "student.optim.grad_clip": 0, "student.optim.warmup_ratio": 0, "student.dropout": 0,
             "prosodic_teacher.optim.warmup_ratio": 1,
             "data.validation_speakers": 0, "data.n_folds": 2, "distill.alpha": 0, "distill.tau_prosodic": 0.05,
             "linguistic_teacher.max_tokens": 3, "training.num_threads": 0, "training.seed": 2**32 - 1}
    assert get_config("default", edges)
    # every rule names a setting (or the last part of an optimiser's or a dropout's): none is dead
    names = valid_names()
    assert all(any(n == rule or n.endswith(f".{rule}") for n in names) for rule in RANGES)


def test_a_config_changed_in_python_is_checked_before_it_loads_a_corpus():
    from emolib import pipeline

    cfg = get_config("tiny")
    cfg.student.optim.batch_size = 0
    with pytest.raises(ValueError, match=r"^config student.optim.batch_size: 0 \(must be an integer >= 1\)$"):
        pipeline.load_data(cfg)


def test_the_preset_is_not_an_override():
    """``--set preset=paper`` would only relabel a default config (runs would list it as paper)."""
    with pytest.raises(ValueError, match=r"^config preset: choose the preset itself \(--preset paper, "):
        get_config("default", {"preset": "paper"})


def test_the_words_settings_take_are_the_ones_the_modules_use():
    from emolib import backbones, progress
    from emolib.config import CHOICES, FRAME_POOLINGS, PROGRESS_MODES

    assert set(backbones.POOLINGS) == set(FRAME_POOLINGS)
    assert set(PROGRESS_MODES) == {"auto", *progress.MODES}
    for preset in ("tiny", "default", "paper"):  # every preset's own words are valid
        cfg = get_config(preset)
        for name, choices in CHOICES.items():
            value = functools.reduce(getattr, name.split("."), cfg)
            assert value in choices, (preset, name, value)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError) as err:
        get_config("default", {"student.optim.learning_rate": 1e-4})
    message = err.value.args[0]
    assert message.startswith("unknown config name 'student.optim.learning_rate'. Valid names: preset, data.corpus, ")
    assert all(name in message for name in valid_names())
    assert "(sections: data, data.synth, distill, linguistic_teacher," in message
    with pytest.raises(KeyError, match=r"Did you mean prosodic_teacher.optim.lr, linguistic_teacher.optim.lr, student.optim.lr\?"):
        get_config("default", {"optim.lr": 1e-4})
    with pytest.raises(ValueError, match=r"^unknown preset 'large'; valid presets: tiny, default, paper$"):
        get_config("large")


def test_hash_is_insensitive_to_key_order_and_sees_every_result_setting():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    base = get_config("default")
    assert len(base.hash()) == 10 and base.hash() == get_config("default").hash()
    changed = {name: base.replace({name: value}).hash() for name, value in [
        ("student.optim.lr", 5e-4),
        ("data.synth.seed", 1),
        ("distill.tau_linguistic", 2.0),
        ("sweep.taus_linguistic", (1.0,)),
    ]}
    assert base.hash() not in changed.values() and len(set(changed.values())) == 4
    # settings that cannot change a result are left out
    for name, value in [("training.num_threads", 2), ("training.num_workers", 4), ("training.progress", "log")]:
        assert base.replace({name: value}).hash() == base.hash(), name
    assert dataclasses.replace(base, preset="x").hash() == base.hash()


def test_a_setting_added_later_changes_the_hash_only_away_from_its_default():
    """distill.teacher_targets came after the committed results: at its default the hashes (and so
    every existing run folder) are what they were without it; any other value is a new run."""
    base = get_config("default")
    assert "teacher_targets" not in base.to_dict_hashed()["distill"]
    assert base.to_dict()["distill"]["teacher_targets"] == "in_sample"  # still saved in config.json
    without = base.to_dict_hashed()
    assert base.hash() == config_hash(without)
    crossed = base.replace({"distill.teacher_targets": "cross_fit"})
    assert crossed.to_dict_hashed()["distill"]["teacher_targets"] == "cross_fit"
    assert crossed.hash() != base.hash() and stage_hash(crossed, "student") != stage_hash(base, "student")
    assert stage_hash(crossed, "prosodic_teacher") == stage_hash(base, "prosodic_teacher")
    # a config.json written before the setting existed reads back as the default
    old = base.to_dict()
    del old["distill"]["teacher_targets"]
    assert from_dict(old) == base and from_dict(old).hash() == base.hash()


def test_hash_is_the_same_in_another_process():
    code = "from emolib.config import get_config; print(get_config('paper', {'student.optim.lr': '1e-4'}).hash())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == get_config("paper", {"student.optim.lr": 1e-4}).hash()


def test_stage_hashes_cover_only_their_sections():
    base = get_config("tiny")
    stages = list(STAGE_SECTIONS)
    assert stages == ["data", "prosodic_teacher", "linguistic_teacher", "student"]

    def changed_stages(name, value):
        other = base.replace({name: value})
        return [s for s in stages if stage_hash(other, s) != stage_hash(base, s)]

    assert changed_stages("student.optim.lr", 1e-2) == ["student"]
    assert changed_stages("distill.tau_prosodic", 2.0) == ["student"]
    assert changed_stages("prosodic_teacher.dropout", 0.1) == ["prosodic_teacher", "student"]
    assert changed_stages("linguistic_teacher.max_tokens", 32) == ["linguistic_teacher", "student"]
    assert changed_stages("data.max_seconds", 4.0) == stages
    assert changed_stages("training.seed", 1) == ["prosodic_teacher", "linguistic_teacher", "student"]
    assert changed_stages("training.num_threads", 2) == []
    assert changed_stages("sweep.taus_linguistic", (1.0,)) == []  # the grid names runs, it does not change one
    assert base.hash("student") == stage_hash(base, "student")
    with pytest.raises(KeyError, match="unknown stage 'teacher'; stages: data, prosodic_teacher"):
        stage_hash(base, "teacher")


def test_only_the_default_config_writes_the_committed_figures(tmp_path, monkeypatch):
    from emolib import paths

    monkeypatch.delenv("EMOLIB_FIGURES", raising=False)
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path))
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    default = get_config("default")
    assert paths.figures_dir(default) == paths.figures_dir() == tmp_path / "figures"
    # the thread count is not part of a result's identity: still the committed figures
    assert paths.figures_dir(default.replace({"training.num_threads": 1})) == tmp_path / "figures"
    for cfg in (get_config("tiny"), get_config("paper"), default.replace({"data.synth.label_noise": 0.1})):
        assert paths.figures_dir(cfg) == tmp_path / "runs" / "figures" / f"{cfg.preset}-{cfg.hash()}"
    monkeypatch.setenv("EMOLIB_FIGURES", str(tmp_path / "mine"))
    assert paths.figures_dir(get_config("tiny")) == tmp_path / "mine"


def test_relative_local_paths_in_overrides_become_absolute(tmp_path, monkeypatch):
    # the notebook kernels run in notebooks/: a path relative to where the command was typed must
    # mean the same folder there; hub ids and built-in names are left alone
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hubert tiny").mkdir()
    cfg = get_config("tiny", {"data.corpus": "iemocap:IEMOCAP full", "student.backbone": "hubert tiny",
                              "linguistic_teacher.model": "bert-base-uncased"})
    assert cfg.data.corpus == f"iemocap:{tmp_path / 'IEMOCAP full'}"
    assert cfg.student.backbone == str(tmp_path / "hubert tiny")
    assert cfg.linguistic_teacher.model == "bert-base-uncased"
    cfg = get_config("tiny", {"data.corpus": "lists/train.jsonl", "student.backbone": "facebook/hubert-base-ls960",
                              "linguistic_teacher.model": "./bert"})
    assert (cfg.data.corpus, cfg.student.backbone, cfg.linguistic_teacher.model) == (
        str(tmp_path / "lists/train.jsonl"), "facebook/hubert-base-ls960", str(tmp_path / "bert"))
    home = get_config("tiny", {"linguistic_teacher.model": "~/bert"}).linguistic_teacher.model
    assert home == os.path.join(os.path.expanduser("~"), "bert")
    assert get_config("tiny", {"data.corpus": "synth"}).data.corpus == "synth"
    # an absolute folder written with a trailing slash (a shell's completion) or a doubled one is the same run
    plain = get_config("tiny", {"student.backbone": str(tmp_path / "hubert tiny")})
    for written in (f"{tmp_path / 'hubert tiny'}/", f"{tmp_path}//hubert tiny", f"{tmp_path}/./hubert tiny"):
        cfg = get_config("tiny", {"student.backbone": written})
        assert cfg.student.backbone == str(tmp_path / "hubert tiny") and cfg.hash() == plain.hash(), written


def test_a_corpus_kind_registered_once_loads_and_its_relative_path_becomes_absolute(tmp_path, monkeypatch):
    # a new layout is one entry in corpora.LOADERS: load_corpus reads it, and a relative KIND:PATH means
    # the same folder in the notebook kernels (they run in notebooks/), as for the built-in kinds
    from emolib import corpora
    from fixtures import trees

    monkeypatch.setitem(corpora.LOADERS, "mine", "emodb")  # an EmoDB-layout loader under another name
    monkeypatch.chdir(tmp_path)
    trees.build_emodb(tmp_path / "data")
    cfg = get_config("tiny", {"data.corpus": "mine:data"})
    assert cfg.data.corpus == f"mine:{tmp_path / 'data'}"
    assert get_config("tiny", {"data.corpus": f"mine:{tmp_path / 'data'}"}).hash() == cfg.hash()
    monkeypatch.chdir(tmp_path.parent)
    assert len(corpora.load_from_config(cfg.data)) == 17
    assert "mine:PATH" in corpora.spec_help()


def test_the_device_is_where_a_run_trains_not_what_it_is():
    for stage in (None, "prosodic_teacher", "student"):
        hashes = {get_config("paper", {"training.device": d}).hash(stage) for d in ("auto", "cpu", "cuda", "cuda:1")}
        assert hashes == {get_config("paper").hash(stage)}, stage
    assert get_config("paper", {"training.device": "cuda:1"}).to_dict()["training"]["device"] == "cuda:1"
    assert get_config("default").hash() == "960538b749"  # the committed figures' config (Whisper base student)


def test_student_changes_leave_what_is_not_given_to_the_config():
    from emolib.config import student_changes

    assert student_changes() == {}
    assert student_changes("no_teachers") == {"distill.variant": "no_teachers"}
    assert student_changes(tau_linguistic=0.5, tau_prosodic=2.0) == {"distill.tau_linguistic": 0.5,
                                                                      "distill.tau_prosodic": 2.0}
    cfg = get_config("tiny", student_changes("full", tau_prosodic=8.0))
    assert (cfg.distill.variant, cfg.distill.tau_prosodic) == ("full", 8.0)
    assert cfg.distill.tau_linguistic == get_config("tiny").distill.tau_linguistic


def _edited(change):
    saved = json.loads(json.dumps(get_config("tiny").to_dict()))
    change(saved)
    return saved


@pytest.mark.parametrize("change, problem", [
    (lambda d: d["student"].update(backbone=5), "student.backbone: expected a string, got 5"),
    (lambda d: d["student"].update(max_seconds="6"), "student.max_seconds: expected a number, got '6'"),
    (lambda d: d.update(student=[1]), "student: expected a section (a JSON object), got [1]"),
    (lambda d: d["student"].update(head_hidden=True), "student.head_hidden: expected an integer, got True"),
    (lambda d: d["prosodic_teacher"].update(channels="8"), "prosodic_teacher.channels: expected a list, got '8'"),
    (lambda d: d["student"].update(pooling="max"), "student.pooling: 'max' is not one of mean, stats"),
    (lambda d: d["student"]["optim"].update(batch_size=0), "student.optim.batch_size: 0 (must be an integer >= 1)"),
])
def test_a_saved_config_of_another_type_is_named_with_its_file(change, problem):
    """A damaged or hand-edited config.json is one message naming the file and the setting, not a
    TypeError deep in loading, nor a section silently replaced by its defaults."""
    from emolib.runs import ResultFileError

    with pytest.raises(ResultFileError) as err:
        from_dict(_edited(change), "/runs/student/full-x/fold1/config.json")
    assert str(err.value).startswith(f"/runs/student/full-x/fold1/config.json: {problem}. ")
    assert "\n" not in str(err.value)


def test_a_run_s_config_missing_a_setting_is_refused_unless_it_was_added_later():
    from emolib.runs import ResultFileError

    cfg = get_config("tiny")
    # an integer where a number is expected is fine, and kept as saved (the config hashes as the one that wrote it)
    six = from_dict(_edited(lambda d: d["student"].update(max_seconds=6)), complete=True)
    assert six.student.max_seconds == 6 and six == cfg
    # student.max_seconds deleted: not the default 12 s instead of the run's 6 s
    without = _edited(lambda d: d["student"].pop("max_seconds"))
    with pytest.raises(ResultFileError, match=r"^config\.json: student\.max_seconds missing "):
        from_dict(without, complete=True)
    assert from_dict(without).student.max_seconds == 12.0  # an older run, as the inventory reads it (stale)

    def older(d):  # settings added later (their defaults are what the older code did), or that change no result
        del d["student"]["layerdrop"], d["distill"]["teacher_targets"], d["training"]["progress"], d["preset"]
        del d["training"]["device"]

    old = from_dict(_edited(older), complete=True)
    assert old.hash("student") == cfg.hash("student") and old.student.layerdrop == -1.0


def test_classifying_with_a_damaged_run_config_names_it(tmp_path):
    from emolib import pipeline
    from emolib.runs import ResultFileError

    fold = tmp_path / "fold1"
    fold.mkdir()
    (fold / "config.json").write_text(json.dumps(_edited(lambda d: d["student"].update(backbone=5))))
    with pytest.raises(ResultFileError, match=f"^{fold / 'config.json'}: student.backbone: expected a string"):
        pipeline.classify_dirs([fold], [])
    (fold / "config.json").write_text(json.dumps(_edited(lambda d: d["student"].pop("max_seconds"))))
    with pytest.raises(ResultFileError, match=f"^{fold / 'config.json'}: student.max_seconds missing"):
        pipeline.classify_dirs([fold], [])
