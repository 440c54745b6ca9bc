"""UA / WA / macro-F1, paired differences over folds and the paired bootstrap: hand-computed cases and parity
with scikit-learn."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from emolib.metrics import (_resampled_ua, classification_metrics, format_mean_line, format_p, macro_f1,
                            paired_bootstrap, paired_difference, summarize_folds, unweighted_accuracy,
                            weighted_accuracy)

CLASSES = ("neutral", "angry", "sad", "happy")


def test_hand_computed_ua_differs_from_wa_on_imbalanced_classes():
    # 8 neutral (6 right), 2 angry (both right): WA = 8/10, UA = (6/8 + 2/2) / 2 = 0.875
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 6 + [1] * 2 + [1] * 2
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(0.8)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(0.875)
    # F1: neutral p=6/6 r=6/8 -> 6/7; angry p=2/4 r=1 -> 2/3; macro = (6/7 + 2/3)/2
    assert macro_f1(y_true, y_pred) == pytest.approx((6 / 7 + 2 / 3) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_parity_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    m = classification_metrics(y_true, y_pred, CLASSES)
    assert m["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["wa"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert np.array(m["confusion"]).sum() == 200
    assert np.trace(np.array(m["confusion"])) == int((y_true == y_pred).sum())
    recalls = recall_score(y_true, y_pred, labels=range(4), average=None)
    assert [m["recall"][c] for c in CLASSES] == pytest.approx(recalls.tolist())


def test_confusion_rows_are_the_truth_by_hand():
    # truth neutral, neutral, angry, sad; predicted neutral, angry, angry, neutral
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 0], CLASSES)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert m["recall"] == {"neutral": 0.5, "angry": 1.0, "sad": 0.0, "happy": None}
    assert m["ua"] == pytest.approx(0.5) and m["wa"] == pytest.approx(0.5) and m["n"] == 4


def test_absent_class_has_no_recall_and_does_not_count_in_ua():
    m = classification_metrics([0, 0, 1], [0, 1, 1], CLASSES)
    assert m["recall"]["sad"] is None and m["recall"]["neutral"] == pytest.approx(0.5)
    assert m["ua"] == pytest.approx(0.75)


def test_fold_summary_mean_std_and_pooled():
    fold1 = ([0, 0, 1, 1], [0, 0, 1, 1])  # UA 1.0, WA 1.0
    fold2 = ([0, 0, 0, 1], [0, 1, 1, 1])  # UA (1/3 + 1)/2 = 2/3, WA 0.5
    s = summarize_folds([fold1, fold2], CLASSES)
    assert s["ua_mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["wa_mean"] == pytest.approx(0.75)
    assert s["wa_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    # pooled: neutral 3/5 right, angry 3/3 -> UA 0.8; WA 6/8
    assert s["ua_pooled"] == pytest.approx(0.8)
    assert s["wa_pooled"] == pytest.approx(0.75)
    assert s["folds"] == 2 and s["ua_std"] == pytest.approx(np.std([1.0, 2 / 3], ddof=1))
    # macro-F1: fold 1 is perfect (1.0); fold 2 has neutral P 1, R 1/3 and angry P 1/3, R 1: F1 1/2 each;
    # pooled, neutral P 1, R 3/5 and angry P 3/5, R 1: F1 3/4 each
    assert s["macro_f1_mean"] == pytest.approx(0.75) and s["macro_f1_std"] == pytest.approx(np.std([1, 0.5], ddof=1))
    assert s["macro_f1_pooled"] == pytest.approx(0.75)
    assert s["confusion_pooled"] == [[3, 2, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert format_mean_line(s).startswith("mean UA 83.33 WA 75.00 (pooled UA 80.00 WA 75.00")


def test_one_fold_has_no_spread():
    s = summarize_folds([([0, 0, 1, 1], [0, 1, 1, 1])], CLASSES)  # UA (1/2 + 1)/2, WA 3/4
    assert s["folds"] == 1 and s["ua_mean"] == pytest.approx(0.75) and s["wa_mean"] == pytest.approx(0.75)
    assert all(np.isnan(s[f"{key}_std"]) for key in ("ua", "wa", "macro_f1"))  # not 0: one fold says nothing of it
    assert s["ua_pooled"] == s["ua_mean"]


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        weighted_accuracy([], [])
    with pytest.raises(ValueError):
        summarize_folds([], CLASSES)


def test_paired_difference_by_hand():
    # differences +0.05, 0, -0.02: mean 0.01; deviations 0.04, -0.01, -0.03 -> variance 0.0026 / 2
    d = paired_difference([0.75, 0.80, 0.70], [0.70, 0.80, 0.72])
    assert d["mean"] == pytest.approx(0.01, abs=1e-12)
    assert d["std"] == pytest.approx(np.sqrt(0.0013), abs=1e-12)
    assert (d["a_higher"], d["b_higher"], d["n"]) == (1, 1, 3)  # the tie counts for neither
    one = paired_difference([0.5], [0.25])
    assert (one["mean"], one["a_higher"], one["b_higher"], one["n"]) == (0.25, 1, 0, 1) and np.isnan(one["std"])
    for a, b in (([0.5, 0.6], [0.5]), ([], [])):
        with pytest.raises(ValueError, match="equally long, non-empty"):
            paired_difference(a, b)


def test_resampled_ua_matches_scikit_learn_on_every_resample():
    # six utterances, so that many resamples miss a class: UA then averages the classes present
    y = np.array([0, 0, 1, 2, 3, 3])
    pred_a, pred_b = np.array([0, 1, 1, 2, 0, 3]), np.array([1, 0, 1, 1, 3, 3])
    idx = np.random.default_rng(0).integers(0, y.size, size=(200, y.size))
    fast_a, fast_b = _resampled_ua(y, (pred_a == y, pred_b == y), idx)
    assert any(len(set(y[i])) < 4 for i in idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": sklearn drops them too
        for fast, pred in ((fast_a, pred_a), (fast_b, pred_b)):
            np.testing.assert_allclose(fast, [balanced_accuracy_score(y[i], pred[i]) for i in idx], rtol=0, atol=1e-12)


def _reference_bootstrap(per_fold, n_resamples, confidence, seed=0):
    """The bootstrap written out resample by resample with scikit-learn, and p counted exactly
    (with fractions, so that a tie is a tie however the floats round)."""
    from fractions import Fraction

    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_resamples)
    exact = [Fraction(0)] * n_resamples
    for y, a, b in per_fold:
        y, a, b = map(np.asarray, (y, a, b))
        idx = rng.integers(0, y.size, size=(n_resamples, y.size))
        for r, i in enumerate(idx):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                diffs[r] += balanced_accuracy_score(y[i], a[i]) - balanced_accuracy_score(y[i], b[i])
            recall = {m: [Fraction(int((pred[i][y[i] == c] == c).sum()), int((y[i] == c).sum()))
                          for c in np.unique(y[i])] for m, pred in (("a", a), ("b", b))}
            exact[r] += (sum(recall["a"]) - sum(recall["b"])) / len(recall["a"])
    diffs /= len(per_fold)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return low, high, sum(d <= 0 for d in exact) / n_resamples


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_paired_bootstrap_matches_a_resample_by_resample_reference(confidence):
    # three small folds of class names (one without "happy"), so that resamples miss classes and
    # many resamples tie; 1,200 resamples cross a chunk boundary (BOOTSTRAP_CHUNK = 1,000)
    rng = np.random.default_rng(8)  # a seed whose draws hold ties that float sums would put at +-1e-17
    names = np.array(CLASSES)
    per_fold = []
    for size, n_classes in ((9, 4), (14, 4), (6, 3)):
        y = names[rng.integers(0, n_classes, size)]
        per_fold.append((y, np.where(rng.random(size) < 0.7, y, "neutral"),
                         np.where(rng.random(size) < 0.6, y, "sad")))
    out = paired_bootstrap(per_fold, n_resamples=1200, confidence=confidence)
    low, high, p = _reference_bootstrap(per_fold, 1200, confidence)
    assert (out["low"], out["high"]) == pytest.approx((low, high), abs=1e-12)
    assert out["p_not_higher"] == p  # exact ties counted as "not ahead", whatever the float sums gave
    assert 0 < p < 1 and low < high


def test_paired_bootstrap_by_hand():
    y = [0, 1, 2, 3] * 5
    right, wrong = y, [(c + 1) % 4 for c in y]
    # a always right, b always wrong: every resample differs by exactly 1
    out = paired_bootstrap([(y, right, wrong), (y, right, wrong)], n_resamples=500)
    assert (out["diff"], out["low"], out["high"], out["p_not_higher"]) == (1.0, 1.0, 1.0, 0.0)
    assert (out["n"], out["n_resamples"], out["confidence"]) == (40, 500, 0.95)
    # the same predictions: nothing to tell apart, and a never beats b
    same = paired_bootstrap([(y, wrong, wrong)], n_resamples=200)
    assert (same["diff"], same["low"], same["high"], same["p_not_higher"]) == (0.0, 0.0, 0.0, 1.0)
    # fold 1: a right on 3 of 4 classes (UA .75), b on 1 (UA .25); fold 2: level (1.0 each).
    # The statistic is the mean over folds of the per-fold difference, (0.5 + 0) / 2
    a1, b1 = [0, 1, 2, 0], [0, 0, 0, 0]
    out = paired_bootstrap([([0, 1, 2, 3], a1, b1), ([0, 1], [0, 1], [0, 1])], n_resamples=300)
    assert out["diff"] == pytest.approx(0.25, abs=1e-12)
    assert 0 <= out["low"] <= out["diff"] <= out["high"] <= 0.5  # fold 1 alone can differ by at most 1


@pytest.mark.parametrize("seed", range(3))
def test_paired_bootstrap_statistic_seed_and_symmetry(seed):
    rng = np.random.default_rng(seed)
    folds = []
    for _ in range(3):
        y = rng.integers(0, 4, 120)
        folds.append((y, np.where(rng.random(120) < 0.8, y, rng.integers(0, 4, 120)),
                      np.where(rng.random(120) < 0.7, y, rng.integers(0, 4, 120))))
    out = paired_bootstrap(folds, n_resamples=2000, seed=seed)
    per_fold = [balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b) for y, a, b in folds]
    assert out["diff"] == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert out["low"] < out["diff"] < out["high"]
    assert paired_bootstrap(folds, n_resamples=2000, seed=seed) == out  # the seed fixes every draw
    swapped = paired_bootstrap([(y, b, a) for y, a, b in folds], n_resamples=2000, seed=seed)
    assert swapped["diff"] == pytest.approx(-out["diff"], abs=1e-12)
    assert (swapped["low"], swapped["high"]) == pytest.approx((-out["high"], -out["low"]), abs=1e-12)
    wider = paired_bootstrap(folds, n_resamples=2000, seed=seed, confidence=0.99)
    assert wider["low"] <= out["low"] and wider["high"] >= out["high"]


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one fold"):
        paired_bootstrap([])
    with pytest.raises(ValueError, match="fold 2 needs three equally long"):
        paired_bootstrap([([0, 1], [0, 1], [1, 0]), ([0, 1], [0], [0, 1])])
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        paired_bootstrap([([0], [0], [0])], confidence=1.0)


def test_a_bootstrap_p_of_zero_is_printed_as_at_most_one_in_n_plus_one():
    # none of n draws: p <= 1 / (n + 1)
    assert format_p(0.0, 10_000) == "p ≤ 0.0001" and format_p(0.0, 500) == "p ≤ 0.002"
    assert format_p(0.0291, 10_000) == "p = 0.029" and format_p(1.0, 10_000) == "p = 1.000"
    assert format_p(0.0003, 10_000) == "p = 0.0003" and format_p(0.001, 10_000) == "p = 0.001"
