"""The student end to end on the toy corpus (``tests/toy.py``) with the ``tiny`` preset's
``tiny-random`` backbone and linguistic teacher: one fold distilled with every term, each
variant training with exactly its terms (and only the teachers it needs), one run per
variant whatever the temperatures it ignores, exact resume after a kill, the three input
modes, padding-free pooling, and bf16 autocast on CPU.

Torch runs on one thread here, also outside training (feature caching): on a shared 2-core
machine a tiny-random CNN forward of a 0.6 s clip took 0.25 s with two OpenMP threads
waiting for each other under load, and 1 ms with one (see also ``conftest.py``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from emolib import inventory, losses, pipeline, runs
from emolib.backbones import load_backbone
from emolib.config import get_config
from emolib.losses import TERMS
from emolib.student import EmoDistillStudent, StudentDataset, cached_inputs, input_mode, make_collate

from toy import toy_data

KD_COLUMNS = [f"train_{t}" for t in TERMS if t != "ce"]
TERM_COLUMNS = [f"train_{t}" for t in TERMS]
RESULT_FILES = ("config.json", "best.safetensors", "history.csv", "predictions.csv", "metrics.json")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """48 utterances: 3 sessions x 2 speakers x 4 classes x 2; fold 1 tests session T1 (16),
    validates on 2 speakers (16) and trains on 2 (16)."""
    return toy_data(tmp_path_factory.mktemp("toy"), per_class=2)


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """eGeMAPS and backbone caches are keyed by audio content and settings: one per module."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def roots(tmp_path, monkeypatch, feature_cache):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("EMOLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EMOLIB_CACHE", str(feature_cache))
    torch.set_num_threads(1)  # see the module docstring; conftest.py restores the count afterwards
    return tmp_path


def _cfg(**overrides):
    # per-head layer mixes: the most parameters and the most code paths of the student
    return get_config("tiny", {"training.progress": "none", "student.layer_mix": "per_head", **overrides})


def _teacher_dirs(roots) -> dict[str, bool]:
    return {kind: (roots / "runs" / f"{kind}_teacher").exists() for kind in pipeline.TEACHER_KINDS}


def test_full_distillation_of_one_fold(roots, toy):
    # teachers that learn the toy set (the settings of test_teachers.py) and a student long enough to learn it
    cfg = _cfg(**{"prosodic_teacher.optim.epochs": 15, "prosodic_teacher.optim.lr": 1e-2,
                  "prosodic_teacher.crop_frames": 40, "linguistic_teacher.optim.epochs": 15,
                  "linguistic_teacher.optim.lr": 3e-3, "student.optim.epochs": 30, "student.optim.lr": 1e-2})
    assert cfg.distill.variant == "full" and cfg.student.freeze == "all"
    run = pipeline.train_student(cfg, 1, toy, verbose=False)
    fold = toy.fold(1)

    assert run.is_complete() and run.dir.name == "fold1" and run.dir.parent.name.startswith("full-tl4-tp1-")
    for name in RESULT_FILES:
        assert run.path(name).is_file(), name
    assert not run.path("resume.pt").exists()

    # every test utterance predicted once, with its true label and a probability per class
    pred = run.predictions()
    assert list(pred["id"]) == list(fold.test_ids) and len(pred) == 16
    assert list(pred["label"]) == [toy.corpus.by_id()[i].label for i in fold.test_ids]
    assert set(pred["pred"]) <= set(toy.corpus.classes)
    probs = pred[[f"p_{c}" for c in toy.corpus.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert list(pred["pred"]) == [toy.corpus.classes[k] for k in probs.argmax(1)]

    # every term of Eq. 5 was trained with, in every epoch, and the total is their weighted sum
    history = run.history()
    assert list(history["epoch"]) == list(range(1, 31))
    for column in TERM_COLUMNS:
        assert (history[column] != 0).all(), column
    embedding = history[["train_embedding_linguistic", "train_embedding_prosodic"]]
    assert (embedding.abs() <= 1).all().all()  # negative cosines
    assert (embedding.iloc[-1] < -0.5).all(), embedding  # the heads aligned with the teachers' embeddings
    d = cfg.distill
    total = (d.alpha * history["train_ce"]
             + d.beta * (history["train_logit_linguistic"] + history["train_logit_prosodic"])
             + d.gamma * (history["train_embedding_linguistic"] + history["train_embedding_prosodic"]))
    np.testing.assert_allclose(history["train_loss"], total, rtol=1e-5)

    m = run.metrics()
    assert m["variant"] == "full" and m["terms"] == list(TERMS) and m["n"] == 16 and m["epochs_run"] == 30
    assert (m["tau_linguistic"], m["tau_prosodic"]) == (4.0, 1.0) and m["corpus"] == "toy" and m["note"] is None
    assert m["ua"] >= 0.75, m  # the pitch of the toy tones gives the class away
    ua = np.mean([np.mean(pred["pred"][pred["label"] == c] == c) for c in toy.corpus.classes])
    assert m["ua"] == pytest.approx(ua) and m["wa"] == pytest.approx(np.mean(pred["pred"] == pred["label"]))

    # the teachers it needed were trained first, and are complete runs
    for kind in pipeline.TEACHER_KINDS:
        teacher = pipeline.teacher_run(kind, cfg, 1)
        assert teacher.is_complete() and teacher.path("outputs.safetensors").is_file(), kind

    # a second call reuses the complete run
    again = pipeline.train_student(cfg, 1, toy, verbose=False)
    assert again.dir == run.dir and again.metrics() == m


def test_the_config_s_coefficients_temperatures_and_smoothing_reach_the_loss(roots, toy, monkeypatch):
    # every value distinct, so that two of them swapped on the way to Eq. 5 fail here
    settings = {"distill.alpha": 0.5, "distill.beta": 2.0, "distill.gamma": 0.25, "distill.tau_linguistic": 2.0,
                "distill.tau_prosodic": 0.5, "student.optim.label_smoothing": 0.1, "student.optim.epochs": 2}
    calls = []
    real = losses.distillation_loss

    def spy(outputs, batch, variant, *args):
        calls.append(args)
        return real(outputs, batch, variant, *args)

    monkeypatch.setattr(losses, "distillation_loss", spy)
    run = pipeline.train_student(_cfg(**settings), 1, toy, verbose=False)
    # (tau_L, tau_P, alpha, beta, gamma, label smoothing), in every training step
    assert calls and set(calls) == {(2.0, 0.5, 0.5, 2.0, 0.25, 0.1)}
    h = run.history()
    total = (0.5 * h["train_ce"] + 2.0 * (h["train_logit_linguistic"] + h["train_logit_prosodic"])
             + 0.25 * (h["train_embedding_linguistic"] + h["train_embedding_prosodic"]))
    np.testing.assert_allclose(h["train_loss"], total, rtol=1e-5)
    m = run.metrics()
    assert (m["tau_linguistic"], m["tau_prosodic"]) == (2.0, 0.5) and run.dir.parent.name.startswith("full-tl2-tp0.5-")


@pytest.mark.parametrize("variant, zero, trained", [
    ("no_teachers", KD_COLUMNS, {"prosodic": False, "linguistic": False}),
    ("no_prosodic_teacher", ["train_logit_prosodic", "train_embedding_prosodic"],
     {"prosodic": False, "linguistic": True}),
])
def test_each_variant_trains_only_with_its_terms(roots, toy, variant, zero, trained):
    run = pipeline.train_student(_cfg(**{"distill.variant": variant}), 1, toy, verbose=False)
    history = run.history()
    for column in TERM_COLUMNS:
        if column in zero:
            assert (history[column] == 0.0).all(), column  # not computed at all: exactly zero
        else:
            assert (history[column] != 0.0).all(), column
    assert run.metrics()["terms"] == [t for t in TERMS if f"train_{t}" not in zero]
    # a teacher the variant does not use is never trained: not even a partial run folder
    assert _teacher_dirs(roots) == trained


def test_a_temperature_the_variant_ignores_does_not_make_a_new_run(roots, toy, capsys):
    def run_dir(variant, tl, tp):
        return pipeline.student_run(_cfg(**{"distill.variant": variant, "distill.tau_linguistic": tl,
                                            "distill.tau_prosodic": tp}), 1).dir

    # no_teachers uses no temperature; each sweep variant uses exactly one
    assert run_dir("no_teachers", 2.0, 1.0) == run_dir("no_teachers", 4.0, 0.5)
    assert run_dir("no_teachers", 2.0, 1.0).parent.name.startswith("no_teachers-tl0-tp0-")
    assert run_dir("no_prosodic_logit_kd", 2.0, 1.0) == run_dir("no_prosodic_logit_kd", 2.0, 8.0)
    assert run_dir("no_prosodic_logit_kd", 2.0, 1.0) != run_dir("no_prosodic_logit_kd", 4.0, 1.0)
    assert run_dir("no_linguistic_logit_kd", 2.0, 0.5) == run_dir("no_linguistic_logit_kd", 8.0, 0.5)
    assert run_dir("no_linguistic_logit_kd", 2.0, 0.5) != run_dir("no_linguistic_logit_kd", 2.0, 1.0)
    assert run_dir("full", 2.0, 1.0) != run_dir("full", 4.0, 1.0) != run_dir("full", 4.0, 0.5)

    canonical = pipeline.canonical_student_config(_cfg(**{"distill.variant": "no_teachers"}))
    assert (canonical.distill.tau_linguistic, canonical.distill.tau_prosodic) == (0.0, 0.0)
    # nor the coefficients of the terms it does not have: a gamma study reuses the plain baseline
    plain = {"distill.variant": "no_teachers", "distill.beta": 0.5, "distill.gamma": 2.0, "distill.alpha": 0.5}
    d = pipeline.canonical_student_config(_cfg(**plain)).distill
    assert (d.alpha, d.beta, d.gamma) == (0.5, 1.0, 1.0)
    d = pipeline.canonical_student_config(_cfg(**{**plain, "distill.variant": "no_embedding_kd"})).distill
    assert (d.beta, d.gamma) == (0.5, 1.0)
    d = pipeline.canonical_student_config(_cfg(**{**plain, "distill.variant": "no_logit_kd"})).distill
    assert (d.beta, d.gamma) == (1.0, 2.0)
    # a coefficient that is not 1 names itself in the run's folder (the teachers alone are not the full student)
    assert pipeline.student_run(_cfg(**plain), 1).dir.parent.name.startswith("no_teachers-tl0-tp0-a0.5-")
    assert pipeline.student_run(_cfg(**{"distill.alpha": 0.0}), 1).dir.parent.name.startswith("full-tl4-tp1-a0-")
    assert pipeline.student_run(_cfg(**{**plain, "distill.variant": "full", "distill.teacher_targets": "oracle"}),
                                1).dir.parent.name.startswith("full-tl4-tp1-a0.5-b0.5-g2-oracle-")

    # trained once: the second temperature reuses the first run
    first = pipeline.train_student(_cfg(**{"distill.variant": "no_teachers", "distill.tau_linguistic": 2.0}), 1, toy)
    capsys.readouterr()
    second = pipeline.train_student(_cfg(**{"distill.variant": "no_teachers", "distill.tau_linguistic": 4.0}), 1, toy)
    assert second.dir == first.dir
    assert capsys.readouterr().out == f"student no_teachers-tl0-tp0 fold 1: reusing {first.dir}\n"
    assert [p.name for p in (roots / "runs" / "student").iterdir()] == [first.dir.parent.name]


def test_killed_student_run_resumes_to_the_same_result(roots, toy, kill_after_epoch):
    cfg = _cfg(**{"student.optim.epochs": 4})
    reference = pipeline.train_student(cfg, 2, toy, verbose=False)
    ref_metrics, ref_history, ref_pred = reference.metrics(), reference.history(), reference.predictions()
    shutil.rmtree(reference.dir.parent)  # the student only: its teachers stay complete

    killer = kill_after_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_student(cfg, 2, toy, verbose=False)
    run = pipeline.student_run(cfg, 2)
    assert killer.calls == 2  # the teachers were reused, so every _report call was the student's
    # this process lives on (as a JupyterLab kernel does): it no longer holds the run's lock
    import fcntl

    fd = os.open(runs.lock_path(run.dir), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    assert run.is_partial() and run.path("resume.pt").is_file() and not run.path("predictions.csv").exists()
    assert torch.load(run.path("resume.pt"), weights_only=False)["epoch"] == 2
    assert list(run.history()["epoch"]) == [1, 2]  # written after every epoch
    (listed,) = inventory.list_runs(["student"])
    assert listed.partial == [inventory.PartialFold(fold=2, epochs=2, resumes=True)] and listed.complete == {}

    killer.disarm()
    resumed = pipeline.train_student(cfg, 2, toy, verbose=False)
    assert resumed.dir == reference.dir and resumed.is_complete() and not resumed.path("resume.pt").exists()
    history = resumed.history()
    assert list(history["epoch"]) == [1, 2, 3, 4]
    for column in ["train_loss", *TERM_COLUMNS, "val_ua"]:
        np.testing.assert_array_equal(history[column], ref_history[column], err_msg=column)
    metrics = resumed.metrics()
    for key in ("ua", "wa", "macro_f1", "confusion", "best_epoch", "best_val_ua", "epochs_run", "layer_weights"):
        assert metrics[key] == ref_metrics[key], key
    pd.testing.assert_frame_equal(resumed.predictions(), ref_pred)


def _head_parameters(width: int) -> int:
    """Trainable parameters of the tiny student's heads on ``width``-wide pooled states: each
    projection head Linear(width, 16) + Linear(16, its teacher's embedding: 32 linguistic,
    16 prosodic), the FFN Linear(48, 16) + Linear(16, 4), and per head one weight per hidden state (2 x 3)."""
    def linear(n_in, n_out):
        return n_in * n_out + n_out

    return linear(width, 16) + linear(16, 32) + linear(width, 16) + linear(16, 16) + linear(48, 16) + linear(16, 4) + 2 * 3


#: tiny-random is 64 wide; statistics pooling gives the heads its mean and standard deviation
WIDTH = 64 * (2 if get_config("tiny").student.pooling == "stats" else 1)


#: Plus the backbone's trainable part (as tests/test_backbones.py counts it): the top layer
#: 33,472; all but the CNN feature encoder 102,544 - 16,768.
@pytest.mark.parametrize("freeze, backbone_trainable", [("all", 0), ("top:1", 33472),
                                                         ("feature_encoder", 102544 - 16768), ("none", 102544)])
def test_each_input_mode_trains_end_to_end(roots, toy, freeze, backbone_trainable, monkeypatch):
    cfg = _cfg(**{"student.freeze": freeze, "student.optim.epochs": 1})
    if freeze == "feature_encoder":
        # the frozen CNN's output is cached once; training and evaluation never run the CNN
        cached_inputs(cfg, toy.corpus, progress=False)
        from emolib.backbones import WaveformBackbone

        def no_cnn(*args):
            raise AssertionError("the frozen feature encoder ran again")

        monkeypatch.setattr(WaveformBackbone, "_features", no_cnn)
    run = pipeline.train_student(cfg, 1, toy, verbose=False)
    m = run.metrics()
    assert run.is_complete() and m["epochs_run"] == 1
    assert m["n_trainable"] == _head_parameters(WIDTH) + backbone_trainable
    # per head, a weight for each hidden state: the CNN output and the two layers
    assert {k: len(v) for k, v in m["layer_weights"].items()} == {"linguistic": 3, "prosodic": 3}
    history = run.history()
    assert len(history) == 1 and np.isfinite(history[TERM_COLUMNS + ["train_loss", "val_ua"]].to_numpy()).all()
    pred = run.predictions()
    probs = pred[[f"p_{c}" for c in toy.corpus.classes]].to_numpy()
    assert len(pred) == 16 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("freeze, mode", [("none", "waveform"), ("feature_encoder", "features"),
                                          ("top:1", "frames")])
def test_pooling_ignores_padding(roots, toy, freeze, mode):
    cfg = _cfg(**{"student.freeze": freeze})
    s = cfg.student
    backbone = load_backbone(s.backbone, freeze=freeze, max_seconds=s.max_seconds)
    inputs, index = {}, None
    assert input_mode(cfg) == mode
    if mode != "waveform":
        inputs = cached_inputs(cfg, toy.corpus, progress=False)
        index = inputs.get("index")
    if mode == "frames":
        assert index == 1  # top:1 of 2 layers starts from hidden state 1
    torch.manual_seed(0)
    model = EmoDistillStudent(backbone.num_hidden_states, WIDTH, 4, 32, 16, s, backbone=backbone,
                              input_index=index).eval()
    corpus = toy.corpus
    by_length = sorted(corpus, key=lambda u: u.duration)
    short, long = by_length[0], by_length[-1]
    assert long.duration > 1.3 * short.duration
    dataset = StudentDataset([short.id, long.id], corpus.labels([short.id, long.id]), inputs, {}, mode,
                             {u.id: u.path for u in corpus}, s.max_seconds)
    collate = make_collate(mode, backbone)
    padded = collate([dataset[1], dataset[0]])
    alone = collate([dataset[0]])
    if mode == "waveform":
        assert padded["backbone.inputs"].shape[1] > alone["backbone.inputs"].shape[1]
    else:
        mask = "frame_mask" if mode == "frames" else "feature_mask"
        assert not padded[mask][1].all() and alone[mask].all()
    with torch.no_grad():
        out_padded, out_alone = model(padded), model(alone)
    assert out_padded["logits"].shape == (2, 4)
    for key in ("logits", "embedding_linguistic", "embedding_prosodic"):
        torch.testing.assert_close(out_padded[key][1], out_alone[key][0], atol=1e-5, rtol=1e-5)


def _offset_states(n: int = 64) -> torch.Tensor:
    """(n, 2 layers, 6 dims) pooled states whose dimension 0 has a huge constant offset and
    spread, as a few dimensions of Whisper's top layer do (docs/distillation_gap.md, "The student's inputs")."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(n, 2, 6, generator=g)
    states[..., 0] = 5e4 + 1e3 * states[..., 0]
    return states


def test_standardised_inputs_give_every_dimension_the_same_scale():
    s = get_config("tiny").student
    assert s.input_norm == "standardise"
    model = EmoDistillStudent(2, 6, 4, 5, 3, s).train()
    states = _offset_states()
    z = model.normalised_states({"pooled_states": states})
    torch.testing.assert_close(z.mean(0), torch.zeros(2, 6), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2, 6), atol=1e-3, rtol=0)
    # evaluation uses the running statistics of the training batches (no batch statistics)
    for _ in range(200):
        model.normalised_states({"pooled_states": states})
    model.eval()
    torch.testing.assert_close(model.normalised_states({"pooled_states": states[:1]}), z[:1], atol=0.02, rtol=0)
    # a training batch of one (a last batch) uses the running statistics and leaves them alone
    model.train()
    before = model.standardise.running_mean.clone()
    one = model.normalised_states({"pooled_states": states[:1]})
    torch.testing.assert_close(one, z[:1], atol=0.02, rtol=0)
    torch.testing.assert_close(model.standardise.running_mean, before)


def test_a_per_utterance_layer_norm_lets_an_offset_dimension_dominate():
    """Why ``standardise`` is the default: under "layer" the other dimensions nearly vanish."""
    s = get_config("tiny", {"student.input_norm": "layer"}).student
    model = EmoDistillStudent(2, 6, 4, 5, 3, s).train()
    assert model.standardise is None and not any("standardise" in k for k in model.state_dict())
    z = model.normalised_states({"pooled_states": _offset_states()})
    assert z[..., 0].abs().min() > 2.2  # the offset dimension takes the whole unit variance ...
    assert z[..., 1:].std(0).max() < 1e-3  # ... and what varies in the others is scaled away
    with pytest.raises(ValueError, match="student.input_norm must be one of .*standardise.*layer"):
        # (an override is refused before this, test_config; a config built in code reaches the model)
        EmoDistillStudent(2, 6, 4, 5, 3, dataclasses.replace(get_config("tiny").student, input_norm="batch"))


@pytest.mark.parametrize("mix", ["last", "shared", "per_head", "split", "concat"])
def test_each_layer_mix_reads_the_layers_it_names(mix):
    """Which hidden states reach each head: a change below the top layer must reach exactly the
    heads whose mix includes the lower layers, and the learned weights start uniform."""
    s = dataclasses.replace(get_config("tiny").student, layer_mix=mix, input_norm="layer", dropout=0.0)
    torch.manual_seed(0)
    model = EmoDistillStudent(3, 4, 4, 5, 3, s).eval()
    x = torch.randn(2, 3, 4)
    y = x.clone()
    y[:, :-1] = torch.randn(2, 2, 4)  # every state but the top one changes
    a, b = model({"pooled_states": x}), model({"pooled_states": y})
    reads_lower = {"last": (False, False), "shared": (True, True), "per_head": (True, True),
                   "split": (False, True), "concat": (True, True)}[mix]
    for head, lower in zip(("linguistic", "prosodic"), reads_lower):
        assert torch.equal(a[f"embedding_{head}"], b[f"embedding_{head}"]) is not lower, head
    weights = model.layer_weights()
    expected = {"last": None, "concat": None, "shared": ["shared"], "per_head": ["linguistic", "prosodic"],
                "split": ["prosodic"]}[mix]
    assert (weights if weights is None else sorted(weights)) == expected
    for w in (weights or {}).values():
        assert w == [pytest.approx(1 / 3, abs=1e-4)] * 3  # softmax of zeros: uniform before training
    width = 3 * 4 if mix == "concat" else 4
    assert model.linguistic_head[0].in_features == model.prosodic_head[0].in_features == width
    # a learned mix is the softmax-weighted sum of the states: set one weight's logit high and it reads that state
    if weights:
        with torch.no_grad():
            for logits in model.mix_logits.values():
                logits.copy_(torch.tensor([0.0, 50.0, 0.0]))
        only_middle = torch.zeros_like(x)
        only_middle[:, 1] = x[:, 1]
        key = "prosodic" if mix != "shared" else "linguistic"
        torch.testing.assert_close(model({"pooled_states": x})[f"embedding_{key}"],
                                   model({"pooled_states": only_middle})[f"embedding_{key}"], atol=1e-5, rtol=0)


def test_bf16_autocast_path_runs_on_cpu(roots, toy, monkeypatch):
    # through the backbone (from the cached feature-encoder output) and every KD term
    base = {"student.freeze": "feature_encoder", "student.optim.epochs": 1}
    fp32 = pipeline.train_student(_cfg(**base), 1, toy, verbose=False)
    from emolib import backbones

    real_load, built = backbones.load_backbone, []

    def load(*args, **kwargs):
        built.append(real_load(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(backbones, "load_backbone", load)
    bf16 = pipeline.train_student(_cfg(**base, **{"training.precision": "bf16"}), 1, toy, verbose=False)
    # the backbone that learns runs under bf16 too (its own autocast would otherwise switch the outer one off)
    assert [b.precision for b in built] == ["bf16"]
    assert bf16.dir != fp32.dir and bf16.is_complete()
    h32, h16 = fp32.history(), bf16.history()
    assert np.isfinite(h16[TERM_COLUMNS + ["train_loss"]].to_numpy()).all()
    # autocast really ran in bfloat16 (8-bit mantissa): the loss moves, but only a little
    assert h16["train_loss"][0] != h32["train_loss"][0]
    assert h16["train_loss"][0] == pytest.approx(h32["train_loss"][0], abs=0.05)
    probs = bf16.predictions()[[f"p_{c}" for c in toy.corpus.classes]].to_numpy()
    assert np.isfinite(probs).all()


# -- cross-fitted teacher targets (distill.teacher_targets = "cross_fit") ---------------------------------


def test_cross_fit_folds_hold_out_each_training_speaker_once(toy):
    fold = toy.fold(1)
    inner = pipeline.cross_fit_folds(toy.corpus, fold)
    speaker = {u.id: u.speaker for u in toy.corpus}
    assert len(inner) == min(pipeline.CROSS_FIT_GROUPS, len(fold.train_speakers)) == 2  # the toy fold trains on 2
    # every training utterance is "tested" by exactly one extra teacher, which never trained on its speaker
    assert sorted(i for f in inner for i in f.test_ids) == sorted(fold.train_ids)
    for f in inner:
        assert not {speaker[i] for i in f.train_ids} & {speaker[i] for i in f.test_ids}
        assert set(f.train_ids) | set(f.test_ids) == set(fold.train_ids)
        assert f.val_ids == fold.val_ids  # selected on the fold's own validation speakers, never its test fold
        assert not set(f.train_ids + f.test_ids) & set(fold.test_ids)
        assert set(f.test_speakers) == {speaker[i] for i in f.test_ids}


@pytest.fixture
def teacher_targets(monkeypatch):
    """The teacher targets the student's training set was given, by key (filled when it is built)."""
    from emolib import student as st

    seen = {}
    real = st.StudentDataset

    def spy(ids, labels, inputs, teacher, *args, **kwargs):
        if teacher:
            seen.update(teacher)
        return real(ids, labels, inputs, teacher, *args, **kwargs)

    monkeypatch.setattr(st, "StudentDataset", spy)
    return seen


def test_cross_fitted_targets_come_from_the_teacher_that_did_not_see_the_speaker(roots, toy, teacher_targets):
    cfg = _cfg(**{"distill.teacher_targets": "cross_fit"})
    seen = teacher_targets
    run = pipeline.train_student(cfg, 1, toy, verbose=False)
    assert run.dir.parent.name.startswith("full-tl4-tp1-xfit-") and run.metrics()["teacher_targets"] == "cross_fit"

    fold = toy.fold(1)
    inner = pipeline.cross_fit_folds(toy.corpus, fold)
    for kind in pipeline.TEACHER_KINDS:
        own_ids, own = pipeline.load_outputs(pipeline.teacher_run(kind, cfg, 1))
        own_pos = {u: n for n, u in enumerate(own_ids)}
        for g, f in enumerate(inner):
            ids, out = pipeline.load_outputs(pipeline.teacher_run(kind, cfg, 1, without=g))
            pos = {u: n for n, u in enumerate(ids)}
            for u in f.test_ids:  # the logit target of a training utterance: the teacher without its speaker
                np.testing.assert_array_equal(seen[f"teacher_logits_{kind}"][u], out["logits"][pos[u]])
        for u in fold.train_ids:  # embedding targets stay the fold's own teacher's (one embedding space)
            np.testing.assert_array_equal(seen[f"teacher_embedding_{kind}"][u], own["embedding"][own_pos[u]])
        # the extra teachers are distinct runs: the fold's own teacher is untouched
        assert pipeline.teacher_run(kind, cfg, 1, without=0).dir != pipeline.teacher_run(kind, cfg, 1).dir


@pytest.mark.parametrize("content, message", [
    (lambda ids: {"logits": np.zeros((len(ids), 4))}, "have no tensor embedding"),
    (lambda ids: {"logits": np.zeros((3, 4)), "embedding": np.zeros((3, 8))},
     r"have logits of shape \(3, 4\) for 48 utterance ids"),
    (lambda ids: {"logits": np.zeros((3, 4)), "embedding": np.zeros((3, 8)), "ids": ["a", "b", "c"]},
     r"have no row for 16 of the 16 utterances needed \(e\.g\. '.+'\)"),
    (lambda ids: {"logits": np.zeros((len(ids), 7)), "embedding": np.zeros((len(ids), 8))},
     "have logits 7 wide for the corpus's 4 classes"),
])
def test_teacher_outputs_of_the_wrong_content_are_named_with_the_folder_to_delete(roots, toy, monkeypatch, content,
                                                                                   message):
    """A readable outputs.safetensors without an embedding, with rows for other utterances than the
    fold trains on, or logits of another width (a hand edit, a bad copy) ended in a KeyError or in
    a size mismatch inside kl_div."""
    cfg = _cfg()
    teacher = runs.Run("linguistic_teacher", cfg, 1, label="planted").start()
    outputs = content(list(toy.corpus.ids))
    pipeline.save_outputs(teacher, outputs.pop("ids", toy.corpus.ids), outputs)
    teacher.finish({"ua": 0.5})
    monkeypatch.setattr(pipeline, "train_teacher", lambda *args, **kwargs: teacher)
    with pytest.raises(runs.ResultFileError, match=rf"outputs\.safetensors: the teacher's cached outputs {message}; "
                                                   rf"delete {teacher.dir} to train that teacher again$"):
        pipeline.train_student(cfg, 1, toy, verbose=False)


def test_cross_fitting_is_off_where_no_logit_target_exists_and_checked(roots, toy):
    plain = pipeline.student_run(_cfg(**{"distill.variant": "no_teachers"}), 1)
    assert pipeline.student_run(_cfg(**{"distill.variant": "no_teachers", "distill.teacher_targets": "cross_fit"}),
                                1).dir == plain.dir
    assert pipeline.student_run(_cfg(**{"distill.variant": "no_logit_kd", "distill.teacher_targets": "cross_fit"}),
                                1).dir == pipeline.student_run(_cfg(**{"distill.variant": "no_logit_kd"}), 1).dir
    with pytest.raises(ValueError, match="^config distill.teacher_targets: 'oof' is not one of in_sample, cross_fit, "
                                         "oracle$"):
        _cfg(**{"distill.teacher_targets": "oof"})
    with pytest.raises(ValueError, match="teacher_targets='oof'; choose one of .*in_sample.*cross_fit.*oracle"):
        pipeline.train_student(dataclasses.replace(_cfg(), distill=dataclasses.replace(_cfg().distill,
                                                                                   teacher_targets="oof")), 1, toy)


# -- oracle teachers (distill.teacher_targets = "oracle", the built-in corpus only) -------------------


def _as_synth(toy):
    """The toy corpus renamed 'synth', with recorded cues: words carry the label on even items,
    the voice on utterances of the F speakers."""
    import dataclasses

    from emolib.corpora import Corpus
    from emolib.folds import make_folds

    utts = [dataclasses.replace(u, meta={"lexical_cue": int(u.id[-1]) % 2 == 0, "vocal_cue": u.speaker.endswith("F")})
            for u in toy.corpus]
    corpus = Corpus("synth", utts, has_transcripts=True)
    return pipeline.Data(corpus, make_folds(corpus, "session", validation_speakers=2))


def test_oracle_targets_are_the_channel_posteriors_and_codes(toy):
    data = _as_synth(toy)
    cfg = _cfg()
    angry = data.corpus.by_id()["T1F_angry_0"]  # both cues
    sad = data.corpus.by_id()["T2M_sad_1"]  # neither
    ling = pipeline.oracle_targets("linguistic", cfg, data.corpus, [angry.id, sad.id], 32)
    pros = pipeline.oracle_targets("prosodic", cfg, data.corpus, [angry.id, sad.id], 16)
    floor = np.log(pipeline.ORACLE_FLOOR)
    np.testing.assert_allclose(ling["logits"][angry.id], [floor, 0.0, floor, floor], rtol=1e-6)
    np.testing.assert_allclose(ling["logits"][sad.id], np.log([0.25] * 4), rtol=1e-6)
    np.testing.assert_allclose(pros["logits"][angry.id], [floor, 0.0, floor, floor], rtol=1e-6)
    p_v = cfg.data.synth.p_vocal_cue
    np.testing.assert_allclose(pros["logits"][sad.id], np.log(np.array([1, 1 - p_v, 1 - p_v, 1 - p_v]) / (1 + 3 * (1 - p_v))),
                               rtol=1e-6)
    assert ling["embedding"][angry.id].argmax() == 1 and ling["embedding"][sad.id].argmax() == 4
    assert pros["embedding"][angry.id].argmax() == 1 and pros["embedding"][sad.id].argmax() == 0
    assert all(e.sum() == 1 and e.shape == (32,) for e in ling["embedding"].values())
    with pytest.raises(ValueError, match="embedding has 4 dimensions, too few .* needs 5"):
        pipeline.oracle_targets("linguistic", cfg, data.corpus, [sad.id], 4)


def test_oracle_targets_follow_the_expressed_emotion_under_label_noise(toy):
    """With label noise the oracle's posterior is over the released label, centred on the
    emotion the turn expresses (``meta["expressed"]``), not on the (possibly flipped) label."""
    import dataclasses

    from emolib.corpora import Corpus

    data = _as_synth(toy)
    angry = data.corpus.by_id()["T1F_angry_0"]  # both cues, expressed angry ...
    flipped = dataclasses.replace(angry, label="sad", meta={**angry.meta, "expressed": "angry"})  # ... released sad
    corpus = Corpus("synth", [flipped if u.id == angry.id else u for u in data.corpus], has_transcripts=True)
    cfg = _cfg(**{"data.synth.label_noise": 0.3})
    ling = pipeline.oracle_targets("linguistic", cfg, corpus, [angry.id], 32)
    np.testing.assert_allclose(np.exp(ling["logits"][angry.id]), [0.1, 0.7, 0.1, 0.1], rtol=1e-6)
    assert ling["embedding"][angry.id].argmax() == 1  # the code of what the words show


def test_an_oracle_student_trains_no_teacher_and_is_a_run_of_its_own(roots, toy, teacher_targets):
    data = _as_synth(toy)
    cfg = _cfg(**{"distill.teacher_targets": "oracle"})
    seen = teacher_targets
    run = pipeline.train_student(cfg, 1, data, verbose=False)
    assert run.is_complete() and run.dir.parent.name.startswith("full-tl4-tp1-oracle-")
    assert run.metrics()["teacher_targets"] == "oracle"
    assert _teacher_dirs(roots) == {"prosodic": False, "linguistic": False}  # no teacher was trained
    train = data.fold(1).train_ids
    assert sorted(seen) == sorted(f"teacher_{w}_{k}" for w in ("logits", "embedding") for k in ("linguistic", "prosodic"))
    for kind, dim in (("linguistic", 32), ("prosodic", cfg.prosodic_teacher.embedding_dim)):
        want = pipeline.oracle_targets(kind, cfg, data.corpus, train, dim)
        assert set(seen[f"teacher_logits_{kind}"]) == set(train)
        for u in train:
            np.testing.assert_array_equal(seen[f"teacher_logits_{kind}"][u], want["logits"][u])
            np.testing.assert_array_equal(seen[f"teacher_embedding_{kind}"][u], want["embedding"][u])
    # without a teacher term there is nothing to replace: the plain run
    assert pipeline.student_run(_cfg(**{"distill.variant": "no_teachers", "distill.teacher_targets": "oracle"}),
                                1).dir == pipeline.student_run(_cfg(**{"distill.variant": "no_teachers"}), 1).dir


def test_oracle_teachers_need_the_built_in_corpus(roots, toy):
    with pytest.raises(ValueError, match="needs the built-in corpus 'synth'.*corpus 'toy' does not"):
        pipeline.train_student(_cfg(**{"distill.teacher_targets": "oracle"}), 1, toy, verbose=False)


@pytest.mark.parametrize("settings, message", [
    ({"distill.variant": "no_teachers", "distill.alpha": 0.0},
     r"variant 'no_teachers' trains with ce, and every one of them has coefficient 0 \(distill\.alpha=0\.0, "
     r"beta=1\.0, gamma=1\.0\): the loss is 0, so nothing would learn"),
    ({"distill.variant": "no_logit_kd", "distill.alpha": 0.0, "distill.gamma": 0.0},
     r"variant 'no_logit_kd' trains with ce, embedding_linguistic, embedding_prosodic, and every one of them"),
    ({"distill.beta": -1.0}, r"config distill\.beta: -1\.0 \(must be a number >= 0\)"),
])
def test_a_loss_that_cannot_be_nonzero_is_refused_before_training(roots, toy, settings, message):
    with pytest.raises(ValueError, match=message):
        pipeline.train_student(_cfg(**settings), 1, toy, verbose=False)
    assert not (roots / "runs").exists()  # nothing trained, not even a teacher


def _backbone_move(run) -> dict[str, np.ndarray]:
    """How far each trained backbone tensor moved from the seeded tiny-random start."""
    from safetensors.torch import load_file

    start = load_backbone("tiny-random", freeze="top:1").state_dict()
    trained = load_file(str(run.path("best.safetensors")))
    return {k: (trained[f"backbone.{k}"] - v).numpy() for k, v in start.items()
            if not torch.equal(trained[f"backbone.{k}"], v)}


def test_a_top_k_student_loads_its_backbone_once(roots, toy, monkeypatch):
    # it was loaded twice per fold: once only to find the first trainable layer, then again to train
    from emolib import backbones
    from emolib import student as st

    # regularised as the paper preset's HuBERT (the layer that learns trains with it; the cache is the same)
    cfg = _cfg(**{"student.freeze": "top:1", "student.optim.epochs": 1, "distill.variant": "no_teachers",
                  "student.layerdrop": 0.05, "student.activation_dropout": 0.0, "student.spec_augment": False})
    st.cached_inputs(cfg, toy.corpus, progress=False)  # the frozen layers' cache, filled beforehand
    real, loaded, made = backbones.load_backbone, [], []

    def counting(*args, **kwargs):
        loaded.append(kwargs.get("freeze"))
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(backbones, "load_backbone", counting)
    run = pipeline.train_student(cfg, 1, toy, verbose=False)
    assert loaded == ["top:1"] and run.is_complete()
    assert made[0].layerdrop == 0.05 and not made[0].net.config.apply_spec_augment
    assert {layer.feed_forward.intermediate_dropout.p for layer in made[0]._layers()} == {0.0}
    given = st.cached_inputs(cfg, toy.corpus, progress=False, backbone=real("tiny-random", freeze="top:1"))
    assert given["index"] == 1 and loaded == ["top:1"]  # the index from the backbone given: no load
    assert st.cached_inputs(cfg, toy.corpus, progress=False)["index"] == 1 and loaded == ["top:1", "top:1"]


def test_a_feature_encoder_student_loads_its_backbone_after_a_cold_cache_is_filled(roots, toy, monkeypatch):
    # loaded before, it was in memory beside the copy the extraction loads (two HuBERTs instead of one)
    import gc
    import weakref

    from emolib import backbones

    monkeypatch.setenv("EMOLIB_CACHE", str(roots / "cold-cache"))
    real, live, alive_at_load = backbones.load_backbone, [], []

    def tracking(*args, **kwargs):
        gc.collect()
        alive_at_load.append((kwargs.get("freeze"), sum(r() is not None for r in live)))
        backbone = real(*args, **kwargs)
        live.append(weakref.ref(backbone))
        return backbone

    monkeypatch.setattr(backbones, "load_backbone", tracking)
    cfg = _cfg(**{"student.freeze": "feature_encoder", "student.optim.epochs": 1, "distill.variant": "no_teachers"})
    assert pipeline.train_student(cfg, 1, toy, verbose=False).is_complete()
    assert alive_at_load == [("all", 0), ("feature_encoder", 0)]


def test_the_backbone_learns_at_its_own_rate(roots, toy):
    """One AdamW step (16 training utterances, batch 16): the first step moves every weight by
    lr * g / (|g| + eps) plus lr * wd * w, so a backbone at 1 % of the heads' rate moves exactly
    1 % as far from the same start, on the same gradient, while the heads keep their rate."""
    base = {"student.freeze": "top:1", "student.optim.epochs": 1, "distill.variant": "no_teachers"}
    same = pipeline.train_student(_cfg(**base), 1, toy, verbose=False)
    gentle = pipeline.train_student(_cfg(**base, **{"student.backbone_lr_scale": 0.01}), 1, toy, verbose=False)
    assert gentle.dir != same.dir
    moved, moved_gently = _backbone_move(same), _backbone_move(gentle)
    assert moved and moved.keys() == moved_gently.keys()  # the top layer learns in both runs
    assert all(".layers.1." in k for k in moved), sorted(moved)  # the top of tiny-random's 2 layers, nothing else
    for k in moved:
        # to float32 rounding of the weights (~6e-8 near 0.5), against moves of 3e-3 and 3e-5
        np.testing.assert_allclose(moved_gently[k], 0.01 * moved[k], rtol=0, atol=1e-7, err_msg=k)
    # the log shows the heads' rate in both runs (the schedule's last step reaches 0 after one epoch)
    assert same.history()["lr"].tolist() == gentle.history()["lr"].tolist()


def test_param_groups_scale_the_backbone_and_spare_biases_from_decay():
    from emolib.train import _param_groups

    model = torch.nn.ModuleDict({"backbone": torch.nn.Linear(3, 2), "head": torch.nn.Linear(2, 4),
                                 "frozen": torch.nn.Linear(2, 2)})
    model["frozen"].requires_grad_(False)
    groups = _param_groups(model, weight_decay=0.01, lr=1e-3, lr_scales={"backbone.": 0.1})
    got = [([id(p) for p in g["params"]], g["lr"], g["lr_scale"], g["weight_decay"]) for g in groups]
    assert got == [([id(model["head"].weight)], 1e-3, 1.0, 0.01), ([id(model["head"].bias)], 1e-3, 1.0, 0.0),
                   ([id(model["backbone"].weight)], pytest.approx(1e-4), 0.1, 0.01),
                   ([id(model["backbone"].bias)], pytest.approx(1e-4), 0.1, 0.0)]
    # without scales: the two groups of before, decay first
    assert [len(g["params"]) for g in _param_groups(model, 0.01, 1e-3)] == [2, 2]


def test_a_frozen_backbone_ignores_its_rate_and_a_bad_rate_is_refused(roots, toy):
    def run_dir(**kw):
        return pipeline.student_run(_cfg(**kw), 1).dir

    assert run_dir(**{"student.backbone_lr_scale": 0.1}) == run_dir()  # tiny freezes everything
    regularised = {"student.layerdrop": 0.05, "student.activation_dropout": 0.0, "student.spec_augment": False}
    assert run_dir(**regularised) == run_dir()
    assert run_dir(**{"student.freeze": "top:1", **regularised}) != run_dir(**{"student.freeze": "top:1"})
    assert (run_dir(**{"student.freeze": "top:1", "student.backbone_lr_scale": 0.1})
            != run_dir(**{"student.freeze": "top:1"}))
    with pytest.raises(ValueError, match=r"config student.backbone_lr_scale: 0.0 \(must be a number > 0 \(freeze the backbone"):
        pipeline.train_student(_cfg(**{"student.backbone_lr_scale": 0.0}), 1, toy, verbose=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("freeze", ["all", "feature_encoder"])
def test_the_trained_student_classifies_audio_alone_as_in_its_test_predictions(roots, toy, freeze, precision):
    # inference needs the audio only: the whole backbone runs in front of the heads, and gives the
    # probabilities the run wrote from its cached inputs (under bf16 too: the frozen part runs in
    # fp32 there, as it did for the cache; what learns runs in bf16 in both)
    cfg = _cfg(**{"student.freeze": freeze, "student.optim.epochs": 2, "training.precision": precision})
    run = pipeline.train_student(cfg, 1, toy, verbose=False)
    table = toy.corpus.by_id()
    expected = run.predictions()
    got = pipeline.classify(cfg, 1, [table[i].path for i in expected["id"]], toy, batch_size=3)
    assert list(got["path"]) == [str(table[i].path) for i in expected["id"]]
    assert list(got["pred"]) == list(expected["pred"])
    columns = [f"p_{c}" for c in toy.corpus.classes]
    # layers that learn under bf16 round differently with the padding of other batches (bf16 keeps 3
    # significant digits); the frozen part is exact (test_backbones: frozen parts run in fp32)
    atol = 1e-3 if precision == "bf16" and freeze != "all" else 1e-4
    np.testing.assert_allclose(got[columns].to_numpy(), expected[columns].to_numpy(), atol=atol)
    from emolib.audio import AudioError

    with pytest.raises(AudioError, match="nope.wav"):
        pipeline.classify(cfg, 1, [table[expected["id"][0]].path, roots / "nope.wav"], toy)


def test_an_ensemble_on_a_frozen_backbone_runs_it_once_per_file(roots, toy, monkeypatch):
    from emolib import backbones

    cfg = _cfg(**{"student.optim.epochs": 2})  # tiny: the backbone is wholly frozen
    for fold in (1, 2):
        pipeline.train_student(cfg, fold, toy, verbose=False)
    files = [u.path for u in toy.corpus.utterances[:5]]
    loaded, passes = [], []
    real = backbones.load_backbone

    def counting(*args, **kwargs):
        backbone = real(*args, **kwargs)
        loaded.append(backbone)
        backbone.register_forward_hook(lambda module, inputs, output: passes.append(len(output.hidden_states[0])))
        return backbone

    monkeypatch.setattr(backbones, "load_backbone", counting)
    shared = pipeline.classify(cfg, [1, 2], files, toy, batch_size=2, chunk=3)
    # one backbone for both students; each file through it once (chunks of 3 in batches of 2)
    assert len(loaded) == 1 and passes == [2, 1, 2]
    loaded.clear(), passes.clear()
    whole = pipeline.classify(cfg, [1, 2], files, toy, batch_size=2, share_backbone=False)
    assert len(loaded) == 2 and passes == [2, 2, 1] * 2
    pd.testing.assert_frame_equal(shared, whole, check_exact=False, atol=2e-6)
    with pytest.raises(ValueError, match="classify: no audio files given"):
        pipeline.classify(cfg, [1, 2], [], toy)


def test_classify_needs_a_trained_student(roots, toy):
    with pytest.raises(FileNotFoundError, match="no trained student for fold 2"):
        pipeline.classify(_cfg(), 2, [], toy)


def test_a_student_without_its_backbone_refuses_other_weights_of_it_when_classifying(tmp_path):
    # a freeze=all student saves only its heads: predict ran them on a backbone folder saved again since, and its
    # probabilities moved without a word (training refused to reuse that run, classifying did not)
    import json

    from emolib.cache import directory_digest
    from emolib.runs import ResultFileError

    folder = tmp_path / "hubert tiny"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights of the first save")
    fold = tmp_path / "student" / "full" / "fold1"
    fold.mkdir(parents=True)
    (fold / "corpus.json").write_text(json.dumps({"models": {"student.backbone": directory_digest(folder)}}))
    pipeline._require_trained_backbone(fold, str(folder))  # the weights it was trained on
    (folder / "model.safetensors").write_bytes(b"weights of a second save, longer")
    with pytest.raises(ResultFileError, match=r"fold1: trained on other weights of student\.backbone \(digest "
                                              r"[0-9a-f]+; now [0-9a-f]+\): the model folder was saved again since; "
                                              r"its heads read"):
        pipeline._require_trained_backbone(fold, str(folder))
    (fold / "corpus.json").write_text(json.dumps({"models": {}}))  # trained on a model with no record (tiny-random)
    pipeline._require_trained_backbone(fold, str(folder))
