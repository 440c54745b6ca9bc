"""Classical baselines, which double as probes of how much each channel carries.

* ``text``:  TF-IDF of word uni- and bigrams + logistic regression on the transcripts.
* ``voice``: the 88 eGeMAPSv02 functionals, z-normalised on the training speakers,
  + logistic regression (the usual acoustic SER baseline, Eyben et al. 2016).
* ``both``:  the two feature sets side by side.

Fixed, standard settings (scikit-learn's L2 logistic regression with C = 1, class
weights balanced for UA): nothing is selected, so the validation speakers simply
join the training speakers, and the test fold is only predicted.
"""
from __future__ import annotations

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
    mean, std = np.nanmean(xtr, 0), np.nanstd(xtr, 0)
    std[std < 1e-8] = 1.0
    return np.nan_to_num((xtr - mean) / std), np.nan_to_num((xte - mean) / std)


def run_probes(corpus: Corpus, fold: Fold, functionals: dict[str, np.ndarray] | None = None,
               probes=PROBES, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Fit each probe on the fold's training + validation speakers; metrics on its test speakers.

    ``functionals`` maps utterance id to its 88 eGeMAPS functionals (computed here when
    omitted). Probes a corpus cannot support (text without transcripts, voice without
    audio) are left out."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    train_ids = list(fold.train_ids) + list(fold.val_ids)
    test_ids = list(fold.test_ids)
    probes = [p for p in probes if (p != "text" or corpus.has_transcripts) and (p != "voice" or corpus.has_audio)
              and (p != "both" or (corpus.has_transcripts and corpus.has_audio))]
    if corpus.has_audio and functionals is None and any(p in ("voice", "both") for p in probes):
        functionals = prosody.features([(u.id, u.path) for u in corpus], "functionals").arrays
    ytr, yte = np.array(corpus.labels(train_ids)), np.array(corpus.labels(test_ids))
    metrics, frame = {}, pd.DataFrame({"id": test_ids, "label": [corpus.classes[y] for y in yte]})
    for probe in probes:
        if probe == "text":
            xtr, xte = _text_features(corpus, train_ids, test_ids)
        elif probe == "voice":
            xtr, xte = _voice_features(functionals, train_ids, test_ids)
        else:
            ttr, tte = _text_features(corpus, train_ids, test_ids)
            vtr, vte = _voice_features(functionals, train_ids, test_ids)
            xtr, xte = hstack([ttr, csr_matrix(vtr)]).tocsr(), hstack([tte, csr_matrix(vte)]).tocsr()
        clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", random_state=seed)
        pred = clf.fit(xtr, ytr).predict(xte)
        metrics[probe] = classification_metrics(yte, pred, corpus.classes)
        frame[f"pred_{probe}"] = [corpus.classes[p] for p in pred]
    return metrics, frame
