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
    sample one (ddof=1), the usual spread reported across cross-validation folds.
    """
    if not per_fold:
        raise ValueError("summarize_folds needs at least one fold")
    fold_metrics = [classification_metrics(t, p, classes) for t, p in per_fold]
    out: dict = {"folds": len(fold_metrics)}
    for key in ("ua", "wa", "macro_f1"):
        values = np.array([m[key] for m in fold_metrics])
        out[f"{key}_mean"] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
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


def format_mean_line(summary: dict) -> str:
    """The closing line of the ``teacher`` / ``student`` commands, in percent."""
    return (
        f"mean UA {100 * summary['ua_mean']:.2f} WA {100 * summary['wa_mean']:.2f} "
        f"(pooled UA {100 * summary['ua_pooled']:.2f} WA {100 * summary['wa_pooled']:.2f}; "
        f"{summary['folds']} fold{'s' if summary['folds'] != 1 else ''})"
    )
