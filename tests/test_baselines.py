"""The logistic-regression probes of each channel (``emolib/baselines.py``) on the toy corpus,
whose words and (here, synthetic) voice features give the class away."""
from __future__ import annotations

import numpy as np
import pytest

from emolib import baselines

from toy import toy_data


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_data(tmp_path_factory.mktemp("toy"), per_class=2)


def _functionals(corpus, seed=0):
    """88 'functionals' per utterance: a noisy one-hot code of the class in the first four, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in corpus:
        x = np.zeros(88)
        x[:4] = rng.normal(scale=0.1, size=4)
        x[corpus.classes.index(u.label)] += 1.0
        out[u.id] = x
    return out


def test_each_probe_learns_a_channel_that_gives_the_class_away(toy):
    fold = toy.fold(1)
    metrics, frame = baselines.run_probes(toy.corpus, fold, _functionals(toy.corpus))
    assert list(metrics) == ["text", "voice", "both"]
    for probe in metrics:
        assert metrics[probe]["ua"] == 1.0 and metrics[probe]["n"] == len(fold.test_ids), probe
    assert list(frame["id"]) == list(fold.test_ids)
    assert list(frame["pred_text"]) == list(frame["label"]) == list(frame["pred_both"])


def test_stacking_alone_fits_the_channels_it_needs(toy):
    # "both" stacks the text and voice probes; asked for alone, it fits them itself
    fold, functionals = toy.fold(1), _functionals(toy.corpus)
    alone, frame = baselines.run_probes(toy.corpus, fold, functionals, probes=("both",))
    every, every_frame = baselines.run_probes(toy.corpus, fold, functionals)
    assert list(alone) == ["both"] and alone["both"] == every["both"]
    assert list(frame["pred_both"]) == list(every_frame["pred_both"])


def test_no_probe_is_fitted_on_a_speaker_it_predicts(toy, monkeypatch):
    # the final probes predict the test speakers; the stacked probe's out-of-fold inputs are
    # predicted for each training speaker by a probe fitted without that speaker
    fold = toy.fold(1)
    speaker = {u.id: u.speaker for u in toy.corpus}
    calls = []
    for name in ("_text_features", "_voice_features"):
        real = getattr(baselines, name)

        def spy(source, fit_ids, pred_ids, real=real, name=name):
            calls.append((name, {speaker[i] for i in fit_ids}, {speaker[i] for i in pred_ids}))
            return real(source, fit_ids, pred_ids)

        monkeypatch.setattr(baselines, name, spy)
    baselines.run_probes(toy.corpus, fold, _functionals(toy.corpus))
    train_speakers = set(fold.train_speakers) | set(fold.val_speakers)
    assert len(train_speakers) == 4
    # per channel: 1 final probe on the test speakers + 4 out-of-fold probes, one per held-out speaker
    for name in ("_text_features", "_voice_features"):
        mine = [(fit, pred) for n, fit, pred in calls if n == name]
        assert len(mine) == 5, name
        assert all(not fit & pred for fit, pred in mine), name
        assert sorted(s for _, pred in mine[1:] for s in pred) == sorted(train_speakers)
        assert mine[0] == (train_speakers, set(fold.test_speakers))


def test_voice_features_are_standardised_on_the_training_speakers_only():
    # training values 0 and 2 (mean 1, std 1); the test outlier 100 does not move the statistics
    functionals = {"a": np.array([0.0, 5.0]), "b": np.array([2.0, 5.0]), "t": np.array([100.0, np.nan])}
    xtr, xte = baselines._voice_features(functionals, ["a", "b"], ["t"])
    np.testing.assert_array_equal(xtr, [[-1.0, 0.0], [1.0, 0.0]])  # a constant feature keeps std 1
    np.testing.assert_array_equal(xte, [[99.0, 0.0]])  # a missing value becomes the training mean
    # a non-finite training value is left out of the statistics, and becomes the mean itself
    functionals = {"a": np.array([0.0, np.inf]), "b": np.array([2.0, 5.0]), "c": np.array([4.0, 7.0]),
                   "t": np.array([-np.inf, 8.0])}
    xtr, xte = baselines._voice_features(functionals, ["a", "b", "c"], ["t"])
    np.testing.assert_allclose(xtr, [[-np.sqrt(1.5), 0.0], [0.0, -1.0], [np.sqrt(1.5), 1.0]])
    np.testing.assert_allclose(xte, [[0.0, 2.0]])


def test_one_probe_on_any_split_is_the_probe_run_probes_fits(toy):
    # probe_log_probs fits one channel's probe on any utterances (the evaluation exercises' random split):
    # on a fold's training and test speakers it is exactly run_probes' probe
    fold, functionals = toy.fold(1), _functionals(toy.corpus)
    fit_ids, test_ids = list(fold.train_ids) + list(fold.val_ids), list(fold.test_ids)
    _, frame = baselines.run_probes(toy.corpus, fold, functionals)
    for channel in ("text", "voice"):
        log_probs = baselines.probe_log_probs(channel, toy.corpus, fit_ids, test_ids, functionals)
        assert log_probs.shape == (len(test_ids), len(toy.corpus.classes))
        assert [toy.corpus.classes[k] for k in log_probs.argmax(1)] == list(frame[f"pred_{channel}"])
    # a class the fit never saw keeps a column, at the floor
    without_last = [i for i in fit_ids if toy.corpus.by_id()[i].label != toy.corpus.classes[-1]]
    log_probs = baselines.probe_log_probs("voice", toy.corpus, without_last, test_ids, functionals)
    np.testing.assert_array_equal(log_probs[:, -1], np.log(1e-6))
    with pytest.raises(ValueError, match="unknown probe channel 'both'"):
        baselines.probe_log_probs("both", toy.corpus, fit_ids, test_ids, functionals)
    with pytest.raises(ValueError, match="the voice probe needs the eGeMAPS functionals"):
        baselines.probe_log_probs("voice", toy.corpus, fit_ids, test_ids)
