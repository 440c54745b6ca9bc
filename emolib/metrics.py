"""The paper's metrics (Sec. 4.3), on top of scikit-learn.

* WA, weighted accuracy: overall accuracy (each utterance counts once).
* UA, unweighted accuracy: the mean of per-class recalls (balanced accuracy), so
  each class counts once whatever its size.
* macro-F1 and the confusion matrix, for the report.
* Paired differences over folds (:func:`paired_difference`): two models scored on the
  same folds differ by less than the spread from one fold to the next, so they are
  compared fold by fold.

Cross-validation summaries give both the **mean over folds** (what most SER
papers report) and the **pooled** score (all folds' test predictions together);
tables say which one they show. Values are fractions in [0, 1]; the report
prints percentages.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score


def unweighted_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (= balanced accuracy)."""
    return float(balanced_accuracy_score(y_true, y_pred))


def weighted_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Plain accuracy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("weighted_accuracy of an empty set")
    return float((y_true == y_pred).mean())


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """UA, WA, macro-F1, per-class recall and the confusion matrix (rows = truth)."""
    labels = list(range(len(classes)))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    present = set(np.asarray(y_true).tolist())
    return {
        "ua": unweighted_accuracy(y_true, y_pred),
        "wa": weighted_accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "n": int(len(y_true)),
        "recall": {c: (float(r) if i in present else None) for i, (c, r) in enumerate(zip(classes, recalls))},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def summarize_folds(per_fold: Sequence[tuple[Sequence[int], Sequence[int]]], classes: Sequence[str]) -> dict:
    """Mean and standard deviation over folds, and the pooled score.

    ``per_fold`` holds ``(y_true, y_pred)`` per fold. The standard deviation is the
    sample one (ddof=1), the usual spread reported across cross-validation folds; NaN for one
    fold, which has no spread (a table then prints the mean alone, not "± 0.00").
    """
    if not per_fold:
        raise ValueError("summarize_folds needs at least one fold")
    fold_metrics = [classification_metrics(t, p, classes) for t, p in per_fold]
    out: dict = {"folds": len(fold_metrics)}
    for key in ("ua", "wa", "macro_f1"):
        values = np.array([m[key] for m in fold_metrics])
        out[f"{key}_mean"] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    pooled_true = np.concatenate([np.asarray(t) for t, _ in per_fold])
    pooled_pred = np.concatenate([np.asarray(p) for _, p in per_fold])
    pooled = classification_metrics(pooled_true, pooled_pred, classes)
    for key in ("ua", "wa", "macro_f1"):
        out[f"{key}_pooled"] = pooled[key]
    out["confusion_pooled"] = pooled["confusion"]
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """``a - b`` fold by fold, for two models scored on the same folds: ``mean`` and sample
    ``std`` (ddof=1; NaN for one fold) of the differences, in how many folds each model
    scored strictly higher (``a_higher``, ``b_higher``; ties count for neither), and ``n``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists of per-fold scores, "
                         f"got shapes {a.shape} and {b.shape}")
    d = a - b
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
            "a_higher": int((d > 0).sum()), "b_higher": int((d < 0).sum()), "n": int(d.size)}


def format_p(p: float, n_resamples: int) -> str:
    """A bootstrap p as printed: none of ``n_resamples`` draws is "p <= 1 / (n_resamples + 1)",
    not 0, and a p below 0.001 keeps its first significant digit."""
    if p == 0:
        return f"p ≤ {1 / (n_resamples + 1):.1g}"
    return f"p = {p:.3f}" if p >= 0.001 else f"p = {p:.1g}"


def format_mean_line(summary: dict) -> str:
    """The closing line of the ``teacher`` / ``student`` commands, in percent."""
    return (
        f"mean UA {100 * summary['ua_mean']:.2f} WA {100 * summary['wa_mean']:.2f} "
        f"(pooled UA {100 * summary['ua_pooled']:.2f} WA {100 * summary['wa_pooled']:.2f}; "
        f"{summary['folds']} fold{'s' if summary['folds'] != 1 else ''})"
    )


#: Resamples drawn at once per fold in :func:`paired_bootstrap`: bounds its memory (a chunk of a
#: 1,100-utterance IEMOCAP session is ~9 MB of indices) without changing the draws.
BOOTSTRAP_CHUNK = 1000
#: Differences within this of 0 count as ties (not ahead): a tie's float sum can come out at +-1e-17.
TIE = 1e-12


def _resampled_ua(codes: np.ndarray, correct: Sequence[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    """UA of each resample ``idx[r]`` (indices into one fold's utterances) for each model's
    ``correct`` flags: the mean recall over the classes present in that resample, as
    :func:`unweighted_accuracy` computes it. ``codes``: the labels as integers 0..C-1."""
    y = codes[idx]
    hits = [c[idx] for c in correct]
    sums = [np.zeros(len(idx)) for _ in correct]
    present = np.zeros(len(idx))
    for c in range(int(codes.max()) + 1):
        inside = y == c
        count = inside.sum(axis=1)
        seen = count > 0
        present += seen
        safe = np.maximum(count, 1)
        for total, hit in zip(sums, hits):
            total += np.where(seen, (inside & hit).sum(axis=1) / safe, 0.0)
    return [total / present for total in sums]


def paired_bootstrap(per_fold: Sequence[tuple[Sequence, Sequence, Sequence]],
                     n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict:
    """How far the test utterances alone could move the difference in UA between two models.

    ``per_fold`` holds ``(y_true, pred_a, pred_b)`` per fold, both models' predictions of the
    same test utterances (labels of any kind: integers or class names). The statistic is the
    cross-validation one, the mean over folds of ``UA(a) - UA(b)``; each resample draws every
    fold's utterances with replacement, the same draw for both models (a paired,
    fold-stratified bootstrap: Efron & Tibshirani 1993; Koehn 2004 for comparing two systems
    on one test set).

    Returns ``diff`` (the observed statistic), ``low`` / ``high`` (the percentile interval at
    ``confidence``), ``p_not_higher`` (the share of resamples in which a was not ahead of b,
    ties included: Koehn's bootstrap estimate, not a test under a null hypothesis),
    ``n_resamples``, ``n`` (utterances) and ``confidence``, as fractions. It measures the
    sampling noise of the test utterances only, for the two trained models as they are: a new
    training seed moves both (``python -m emolib gap --seeds``), and new speakers more."""
    if not per_fold:
        raise ValueError("paired_bootstrap needs at least one fold")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap needs n_resamples >= 1 and 0 < confidence < 1, "
                         f"got {n_resamples} and {confidence}")
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_resamples)
    observed, n = 0.0, 0
    for k, (y, a, b) in enumerate(per_fold):
        y, a, b = np.asarray(y), np.asarray(a), np.asarray(b)
        if not (y.shape == a.shape == b.shape) or y.ndim != 1 or y.size == 0:
            raise ValueError(f"paired_bootstrap: fold {k + 1} needs three equally long, non-empty lists "
                             f"(labels, a's and b's predictions), got shapes {y.shape}, {a.shape}, {b.shape}")
        observed += unweighted_accuracy(y, a) - unweighted_accuracy(y, b)
        classes, codes = np.unique(y, return_inverse=True)  # integer codes: fast comparisons, whatever the labels
        correct = (a == y, b == y)
        for start in range(0, n_resamples, BOOTSTRAP_CHUNK):  # the same draws as one (n_resamples, n) call
            idx = rng.integers(0, y.size, size=(min(BOOTSTRAP_CHUNK, n_resamples - start), y.size))
            ua_a, ua_b = _resampled_ua(codes.reshape(-1), correct, idx)
            diffs[start:start + len(idx)] += ua_a - ua_b
        n += y.size
    diffs /= len(per_fold)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return {"diff": observed / len(per_fold), "low": float(low), "high": float(high),
            "p_not_higher": float((diffs <= TIE).mean()), "n_resamples": int(n_resamples), "n": int(n),
            "confidence": float(confidence)}
