"""Classical baselines, which double as probes of how much each channel carries.

* ``text``:  TF-IDF of word uni- and bigrams + logistic regression on the transcripts.
* ``voice``: the 88 eGeMAPSv02 functionals, z-normalised on the training speakers,
  + logistic regression (the usual acoustic SER baseline, Eyben et al. 2016).
* ``both``:  stacking (Wolpert 1992): a logistic regression on the two probes'
  log-probabilities, where the training speakers' probabilities are out-of-fold
  (cross-validated by speaker), so the combiner learns how far to trust each channel.
  Concatenating the raw feature sets into one regression lets the 88 dense acoustic
  features swamp the sparse TF-IDF ones, and the product rule trusts an over-confident
  weak channel too much: both scored below the words alone.

Fixed, standard settings (scikit-learn's L2 logistic regression with C = 1, class
weights balanced for UA): nothing is selected, so the validation speakers simply
join the training speakers, and the test fold is only predicted.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from . import prosody
from .corpora import Corpus
from .folds import Fold
from .metrics import classification_metrics

PROBES = ("text", "voice", "both")


def _text_features(corpus: Corpus, train_ids, test_ids):
    from sklearn.feature_extraction.text import TfidfVectorizer

    table = corpus.by_id()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    xtr = vec.fit_transform([table[i].text or "" for i in train_ids])
    return xtr, vec.transform([table[i].text or "" for i in test_ids])


def _voice_features(functionals: dict[str, np.ndarray], train_ids, test_ids):
    xtr = np.stack([functionals[i] for i in train_ids]).astype(np.float64)
    xte = np.stack([functionals[i] for i in test_ids]).astype(np.float64)
    xtr[~np.isfinite(xtr)] = np.nan  # statistics of the finite values only; a non-finite value becomes the mean (0)
    xte[~np.isfinite(xte)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no finite value: handled below
        mean, std = np.nanmean(xtr, 0), np.nanstd(xtr, 0)
    std[~np.isfinite(std) | (std < 1e-8)] = 1.0
    mean[~np.isfinite(mean)] = 0.0
    return np.nan_to_num((xtr - mean) / std), np.nan_to_num((xte - mean) / std)


def probe_log_probs(channel: str, corpus: Corpus, fit_ids, pred_ids, functionals: dict[str, np.ndarray] | None = None,
                    seed: int = 0) -> np.ndarray:
    """One channel's probe (``"text"`` or ``"voice"``) fitted on the utterances ``fit_ids`` (the voice
    features standardised on them), and its log-probabilities of ``pred_ids``: ``(len(pred_ids),
    classes)``, floored at log 1e-6, a column per class of the corpus (one the fit never saw stays
    at the floor). ``functionals``: as in :func:`run_probes`, needed for the voice."""
    from sklearn.linear_model import LogisticRegression

    if channel not in ("text", "voice"):
        raise ValueError(f"unknown probe channel {channel!r}; choose text or voice")
    fit_ids, pred_ids = list(fit_ids), list(pred_ids)
    y = np.array(corpus.labels(fit_ids))
    if channel == "text":
        xa, xb = _text_features(corpus, fit_ids, pred_ids)
    else:
        if functionals is None:
            raise ValueError("the voice probe needs the eGeMAPS functionals")
        xa, xb = _voice_features(functionals, fit_ids, pred_ids)
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", random_state=seed).fit(xa, y)
    out = np.full((len(pred_ids), len(corpus.classes)), np.log(1e-6))
    # floored before the log (sklearn's predict_log_proba takes log(0) of a certain class and warns)
    out[:, clf.classes_] = np.log(np.maximum(clf.predict_proba(xb), 1e-6))
    return out


def run_probes(corpus: Corpus, fold: Fold, functionals: dict[str, np.ndarray] | None = None,
               probes=PROBES, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Fit each probe on the fold's training + validation speakers; metrics on its test speakers.

    ``functionals`` maps utterance id to its 88 eGeMAPS functionals (computed here when
    omitted). Probes a corpus cannot support (text without transcripts, voice without
    audio) are left out."""
    from sklearn.linear_model import LogisticRegression

    train_ids = list(fold.train_ids) + list(fold.val_ids)
    test_ids = list(fold.test_ids)
    probes = [p for p in probes if (p != "text" or corpus.has_transcripts) and (p != "voice" or corpus.has_audio)
              and (p != "both" or (corpus.has_transcripts and corpus.has_audio))]
    if corpus.has_audio and functionals is None and any(p in ("voice", "both") for p in probes):
        functionals = prosody.features([(u.id, u.path) for u in corpus], "functionals")
    ytr, yte = np.array(corpus.labels(train_ids)), np.array(corpus.labels(test_ids))
    metrics, frame = {}, pd.DataFrame({"id": test_ids, "label": [corpus.classes[y] for y in yte]})
    n_classes = len(corpus.classes)
    table = corpus.by_id()
    speakers = np.array([table[i].speaker for i in train_ids])

    def fit_predict(channel, fit_ids, pred_ids):
        return probe_log_probs(channel, corpus, fit_ids, pred_ids, functionals, seed)

    def out_of_fold(channel):
        """Training speakers' log-probabilities, each from a model that did not see its speaker."""
        from sklearn.model_selection import GroupKFold

        out = np.zeros((len(train_ids), n_classes))
        k = min(5, len(set(speakers)))
        for a, b in GroupKFold(n_splits=k).split(train_ids, groups=speakers):
            out[b] = fit_predict(channel, [train_ids[i] for i in a], [train_ids[i] for i in b])
        return out

    log_probs: dict[str, np.ndarray] = {}

    def test_log_probs(channel):
        """The test speakers' log-probabilities from the channel's probe on every training speaker."""
        if channel not in log_probs:
            log_probs[channel] = fit_predict(channel, train_ids, test_ids)
        return log_probs[channel]

    for probe in probes:
        if probe == "both":  # the channels' own probes are fitted here when they were not asked for
            stacked_train = np.hstack([out_of_fold("text"), out_of_fold("voice")])
            combiner = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", random_state=seed)
            pred = combiner.fit(stacked_train, ytr).predict(np.hstack([test_log_probs("text"),
                                                                       test_log_probs("voice")]))
        else:
            pred = test_log_probs(probe).argmax(1)
        metrics[probe] = classification_metrics(yte, pred, corpus.classes)
        frame[f"pred_{probe}"] = [corpus.classes[p] for p in pred]
    return metrics, frame
