# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises · Evaluating a speech emotion model honestly
#
# A course handout on what a speech emotion recognition (SER) score can claim. Part A writes the
# two metrics every SER paper reports, UA and WA, and asks why UA comes first. Part B uses one
# fold of the corpus: a probe scored on a split that lets its test speakers into training, and
# a paired bootstrap that says how far the test utterances alone could move the difference
# between two trained students. Part C simulates what choosing on the test set does to a score;
# it needs no data.
#
# Each exercise is a cell that raises `NotImplementedError`: replace its body with your own
# code, then run the cell after it, which checks your answer (with the functions an exercise
# asks you not to use switched off). Questions in the text are answered in the solutions.

# %% [markdown] tags=["solution"]
# *For the lecturer.* This file is the solutions' source: cells tagged `exercise` hold the
# stubs, cells tagged `solution` the answers (the scikit-learn MOOC's convention).
# `make exercises` (`python -m emolib exercises`) writes two notebooks from it into
# `runs/exercises/`: the handout, without the solution cells, and the solutions, without the
# stubs. The test suite runs both on the `tiny` preset: the solutions must pass every check,
# and the handout must stop at the first stub.

# %% tags=["parameters"]
preset = "default"  # tiny | default | paper: the corpus, the probes and the two students of Part B
overrides = {}  # dotted config overrides, as in notebook 02
fold = 1  # the fold Part B scores on (its students are trained by notebook 02, or here)

# %%
import inspect
import math
import warnings

import numpy as np
import pandas as pd
import sklearn.metrics
from IPython.display import display

from emolib import metrics
from emolib.exercises import forbidden  # the checks run your code with what an exercise forbids switched off

#: every function of scikit-learn's metrics and of emolib.metrics: switched off while exercise 1 runs your code
METRIC_FUNCTIONS = [f"sklearn.metrics.{name}" for name in sklearn.metrics.__all__
                    if callable(getattr(sklearn.metrics, name))] + [
    f"emolib.metrics.{name}" for name, f in vars(metrics).items() if inspect.isfunction(f)]

# %% [markdown]
# # Part A · Two accuracies
#
# ## 1. UA and WA by hand
#
# SER papers report two numbers (Sec. 4.3 of the paper): **WA**, weighted accuracy, the share
# of utterances predicted right (each utterance counts once, so each class by its size), and
# **UA**, unweighted accuracy, the mean over the classes of each class's recall (the share of
# its utterances predicted as that class), so that each class counts once whatever its size.
# UA averages over the classes **present in `y_true`**: a class that a test fold does not hold
# has no recall, even if the model predicts it. Write both with numpy; labels may be integers
# or class names.

# %% tags=["exercise"]
def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: the mean, over the classes present in y_true, of each class's recall."""
    raise NotImplementedError("exercise 1: write unweighted_accuracy and weighted_accuracy")


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: the share of utterances predicted right."""
    raise NotImplementedError("exercise 1: write unweighted_accuracy and weighted_accuracy")


# %% tags=["solution"]
def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: the mean, over the classes present in y_true, of each class's recall."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]  # only the classes y_true holds
    return float(np.mean(recalls))


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: the share of utterances predicted right."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


# %%
rng = np.random.default_rng(0)
EMOTIONS = np.array(["neutral", "happy", "angry", "sad"])
cases = {f"random, {n} utterances": (rng.integers(0, 4, n), rng.integers(0, 4, n)) for n in (5, 40, 500)}
names = rng.choice(EMOTIONS, 300, p=[0.4, 0.3, 0.2, 0.1])
guess = np.where(rng.random(300) < 0.6, names, rng.choice(EMOTIONS, 300))
cases["class names, imbalanced"] = (names, guess)
cases["sad never predicted"] = (names, np.where(guess == "sad", "neutral", guess))
cases["a class predicted that y_true lacks"] = (np.array([0, 0, 1, 1, 2]), np.array([0, 3, 1, 1, 3]))
cases["by hand: WA 3/4, UA (1 + 0) / 2"] = (np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
expected = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scikit-learn warns of a predicted class that y_true lacks
    for name, (y, p) in cases.items():
        expected[name] = (sklearn.metrics.balanced_accuracy_score(y, p), sklearn.metrics.accuracy_score(y, p))
        assert np.allclose(expected[name], (metrics.unweighted_accuracy(y, p), metrics.weighted_accuracy(y, p)))
assert expected["a class predicted that y_true lacks"][0] == 0.5  # (1/2 + 2/2 + 0/1) / 3: class 3 does not count
assert expected["by hand: WA 3/4, UA (1 + 0) / 2"] == (0.5, 0.75)
with forbidden(*METRIC_FUNCTIONS):
    answers = {name: (unweighted_accuracy(y, p), weighted_accuracy(y, p)) for name, (y, p) in cases.items()}
for name, (ua, wa) in answers.items():
    assert isinstance(ua, float) and isinstance(wa, float), "return floats: float(...)"
    assert math.isclose(ua, expected[name][0], abs_tol=1e-12), (name, "UA", ua, expected[name][0])
    assert math.isclose(wa, expected[name][1], abs_tol=1e-12), (name, "WA", wa, expected[name][1])
print("exercise 1: right")

# %% [markdown]
# ## 2. What always answering "neutral" scores
#
# IEMOCAP, as the paper and most SER papers use it (four classes, *excited* merged into *happy*,
# 5,531 utterances; `docs/NOTES.md`, "Protocol and data", gives the counts, the same as
# EmoBox's list of the corpus), holds neutral 1,708, happy 1,636 (595 happy and 1,041 excited),
# angry 1,103 and sad 1,084 utterances. Write `majority_scores(counts)`: the WA and the UA of a
# model that always predicts the most frequent class, for a dict of class counts (a class with
# count 0 is not in the test set). Your functions of exercise 1 may help.

# %% tags=["exercise"]
def majority_scores(counts: dict[str, int]) -> tuple[float, float]:
    """(WA, UA) of always predicting the most frequent class, on a test set with these class counts."""
    raise NotImplementedError("exercise 2: write majority_scores")


# %% tags=["solution"]
def majority_scores(counts: dict[str, int]) -> tuple[float, float]:
    """(WA, UA) of always predicting the most frequent class, on a test set with these class counts."""
    y_true = np.repeat(list(counts), list(counts.values()))
    y_pred = np.full(len(y_true), max(counts, key=counts.get))
    return weighted_accuracy(y_true, y_pred), unweighted_accuracy(y_true, y_pred)


# %%
IEMOCAP4 = {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
count_cases = {"IEMOCAP-4": IEMOCAP4, "90 / 10": {"a": 90, "b": 10}, "balanced": {"a": 5, "b": 5, "c": 5},
               "a class the test set lacks": {"a": 3, "b": 1, "c": 0}}
expected = {  # (WA, UA) by hand: the majority class's share of the utterances; one class of those present right
    "IEMOCAP-4": (1708 / sum(IEMOCAP4.values()), 1 / 4), "90 / 10": (0.9, 1 / 2), "balanced": (1 / 3, 1 / 3),
    "a class the test set lacks": (3 / 4, 1 / 2)}  # UA over the two classes the test set has
answers = {name: majority_scores(counts) for name, counts in count_cases.items()}
for name, answer in answers.items():
    assert len(answer) == 2 and all(isinstance(x, float) for x in answer), "return (WA, UA) as floats"
    assert np.allclose(answer, expected[name], atol=1e-12), (name, answer, expected[name])
print("exercise 2: right")
pd.DataFrame({name: {"WA (%)": 100 * wa, "UA (%)": 100 * ua} for name, (wa, ua) in answers.items()}).T.round(2)

# %% [markdown]
# **Question.** A model that answers "neutral" to everything scores WA 30.9 on IEMOCAP-4. Why do
# SER papers report UA (first, or beside WA)?

# %% [markdown] tags=["solution"]
# *Answer.* Any model that always gives the same answer (a class the test set holds) has UA exactly
# 1/C, C the number of classes the test set holds (one class recalled fully, the others not at all):
# 25 % on four classes whatever their sizes (50 % on the set above that lacks one of its three), so
# UA's chance level is the same on every corpus and every fold that holds every class. WA's is the
# majority share, which differs from corpus to corpus (30.9 on IEMOCAP-4, 90 on the 90 / 10 set
# above), and a model can raise WA by leaning towards the frequent classes at the rare ones' cost.
# UA weighs each emotion equally, which is usually what one wants: recognising sad speech matters
# as much as neutral.
# IEMOCAP-4 is only mildly imbalanced (its largest class 1.6 times its smallest), so WA and UA
# are close there; the 90 / 10 set shows how far they part on an imbalanced one. That is also
# why this project's probes weigh their classes as balanced (`emolib/baselines.py`): they are
# judged on UA. UA has a cost too: a class with few test utterances has a noisy recall that
# still counts for 1/C of the score.

# %% [markdown]
# # Part B · What one fold's score can claim
#
# The corpus of the preset, its folds (leave-one-session-out: each session's two speakers are
# a test fold, as on IEMOCAP) and the 88 eGeMAPS functionals of every utterance (cached: the
# ones notebook 00's voice probe reads).

# %%
from emolib import baselines, pipeline, prosody
from emolib.config import get_config

cfg = get_config(preset, overrides)
data = pipeline.load_data(cfg)
split = data.fold(fold)
print(split.summary())
functionals = prosody.features(pipeline.audio_items(data.corpus), "functionals", cfg.data.max_seconds,
                               progress=False)
speaker_of = {u.id: u.speaker for u in data.corpus}

# %% [markdown]
# ## 3. Speaker leakage
#
# A random split of the *utterances* puts every speaker on both sides: the model is tested on
# voices it has heard. Write `random_split(ids, n_test, seed)`: `(train_ids, test_ids)`, two
# lists, `n_test` utterances drawn at random for the test side and the rest for training,
# the same split for the same seed (use `np.random.default_rng(seed)`). The check cell then
# fits the voice probe of notebook 00 (a logistic regression on the eGeMAPS functionals,
# `baselines.probe_log_probs`) on 20 such splits, with as many test utterances as the fold, and
# on the fold's own split, and compares their UA.

# %% tags=["exercise"]
def random_split(ids: list[str], n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """(train_ids, test_ids): n_test of the utterances, drawn at random, for the test; the rest for training."""
    raise NotImplementedError("exercise 3: write random_split")


# %% tags=["solution"]
def random_split(ids: list[str], n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """(train_ids, test_ids): n_test of the utterances, drawn at random, for the test; the rest for training."""
    order = np.random.default_rng(seed).permutation(len(ids))
    test = set(order[:n_test].tolist())
    return [i for k, i in enumerate(ids) if k not in test], [i for k, i in enumerate(ids) if k in test]


# %%
all_ids = [u.id for u in data.corpus]
n_test = len(split.test_ids)
given = list(all_ids)
with forbidden("sklearn.model_selection.train_test_split", "sklearn.model_selection.ShuffleSplit"):
    train_a, test_a = map(list, random_split(all_ids, n_test, seed=0))
    again = tuple(map(list, random_split(all_ids, n_test, seed=0)))
    other = tuple(map(list, random_split(all_ids, n_test, seed=1)))
    small = tuple(map(list, random_split(["a", "b", "c", "d", "e"], 2, seed=3)))
assert all_ids == given, "leave the list you were given as it was"
assert len(test_a) == n_test and len(train_a) == len(all_ids) - n_test, (len(train_a), len(test_a))
assert not set(train_a) & set(test_a), "an utterance on both sides"
assert sorted(train_a + test_a) == sorted(all_ids), "every utterance once, on one side"
assert again == (train_a, test_a), "the same seed gives the same split"
assert set(other[1]) != set(test_a), "another seed gives another split"
assert len(small[1]) == 2 and sorted(small[0] + small[1]) == ["a", "b", "c", "d", "e"]
test_speakers = {speaker_of[i] for i in test_a}
assert test_speakers <= {speaker_of[i] for i in train_a} and len(test_speakers) > len(split.test_speakers), (
    "a random split of the utterances: its test speakers are more than the fold's, and every one also in training")
assert not set(split.test_speakers) & {speaker_of[i] for i in split.train_ids + split.val_ids}
print("exercise 3: right")


def voice_ua(fit_ids, test_ids) -> float:
    """UA of the voice probe fitted on fit_ids (its features standardised on them) on test_ids."""
    log_probs = baselines.probe_log_probs("voice", data.corpus, fit_ids, test_ids, functionals, seed=cfg.training.seed)
    return metrics.unweighted_accuracy(data.corpus.labels(test_ids), log_probs.argmax(1))


SPLIT_SEEDS = range(20)
random_uas = [voice_ua(*random_split(all_ids, n_test, seed)) for seed in SPLIT_SEEDS]
session_uas = {f.index: voice_ua(f.train_ids + f.val_ids, f.test_ids) for f in data.folds}  # the fold's probe of 00


def row(uas) -> dict:
    return {"UA mean (%)": 100 * np.mean(uas), "min": 100 * np.min(uas), "max": 100 * np.max(uas), "splits": len(uas)}


display(pd.DataFrame.from_dict({
    f"(a) random utterance split, {n_test} test utterances": row(random_uas),
    f"(b) leave-one-session-out, fold {fold}": row([session_uas[fold]]),
    f"    every session fold ({len(data.folds)})": row(list(session_uas.values()))}, orient="index").round(2))

# %% [markdown]
# **Question.** Both probes are the same model, fitted on as many utterances and tested on as
# many. Why is the score of the random split (a) optimistic, and which one estimates what a
# deployed model meets?

# %% [markdown] tags=["solution"]
# *Answer.* eGeMAPS functionals describe the voice as much as the emotion: pitch level and
# range, loudness, spectral shape. The built-in corpus gives each speaker a baseline of pitch,
# range, rate and loudness of their own, and expresses an emotion as a change from that
# baseline (`emolib/corpora/synth.py`), as people do. Trained on other utterances of the test
# speakers, the probe learns where each voice sits, so a change from it is easier to read; on a
# new speaker it must guess the baseline, and one speaker's neutral looks like another's anger.
# A deployed model meets new speakers, and a leave-one-session-out fold (b) measures that.
# (Measured on the default preset, fold 1: the 20 random splits scored 59.3 UA on average,
# 54.7 to 65.9; the fold 55.8, and the five session folds 55.9 on average, 53.8 to 58.3. The
# random splits' mean is about 3.5 points above the fold and 3.4 above the five folds' mean;
# one random split can still score below a session fold, for their own spread is 11 points:
# the optimism is a bias of the mean, hidden in the noise of any single split. On the `tiny`
# preset's 16 test utterances there is nothing to see.) On IEMOCAP a random split leaks more:
# the two actors of a dialogue, and the script of a scripted one, land on both sides too.

# %% [markdown]
# ## 4. A paired bootstrap by hand
#
# Two students of notebook 02 on this fold: the full student (Eq. 5) and the plain fine-tuned
# one, trained with the labels alone (`no_teachers`). Reused when notebook 02 trained them;
# otherwise trained now, with the fold's two teachers first (a few minutes on the `default`
# preset).

# %%
students = {"full": pipeline.train_student(cfg.replace({"distill.variant": "full"}), fold, data, verbose=False),
            "no_teachers": pipeline.train_student(cfg.replace({"distill.variant": "no_teachers", "distill.alpha": 1.0}),
                                                  fold, data, verbose=False)}
frames = {name: run.predictions().set_index("id").loc[list(split.test_ids)] for name, run in students.items()}
assert (frames["full"]["label"] == frames["no_teachers"]["label"]).all()
y_test = frames["full"]["label"].to_numpy()
pred_full, pred_plain = frames["full"]["pred"].to_numpy(), frames["no_teachers"]["pred"].to_numpy()
for name, frame in frames.items():
    print(f"{name}: test UA {100 * metrics.unweighted_accuracy(frame['label'], frame['pred']):.2f} "
          f"on {len(frame)} utterances")

# %% [markdown]
# How far could the test utterances alone move the difference `UA(full) - UA(no_teachers)`?
# Draw the fold's utterances again, with replacement, as many as there are; score **both**
# models on the **same** draw (a paired bootstrap: Efron & Tibshirani 1993; Koehn 2004 for two
# systems on one test set), and repeat. Write `paired_bootstrap_ua(y, pred_a, pred_b,
# n_resamples, seed)` returning `(diff, low, high, p_not_higher)`: the observed difference
# `UA(a) - UA(b)` on the utterances as they are; the 2.5 and 97.5 percentiles of the resampled
# differences (`np.quantile`), the 95 % interval; and the share of resamples in which a was
# *not* ahead (a difference ≤ 0, ties included; allow for rounding: ≤ 1e-12). A resample's UA
# is over the classes present in that resample, as in exercise 1.

# %% tags=["exercise"]
def paired_bootstrap_ua(y, pred_a, pred_b, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float,
                                                                                                  float]:
    """(UA(a) - UA(b), its 95 % percentile interval's low and high ends, the share of resamples in which a
    was not ahead), from n_resamples paired resamples of the utterances."""
    raise NotImplementedError("exercise 4: write paired_bootstrap_ua")


# %% tags=["solution"]
def paired_bootstrap_ua(y, pred_a, pred_b, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float,
                                                                                                  float]:
    """(UA(a) - UA(b), its 95 % percentile interval's low and high ends, the share of resamples in which a
    was not ahead), from n_resamples paired resamples of the utterances."""
    y, pred_a, pred_b = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = rng.integers(0, len(y), len(y))  # one draw of the utterances, the same for both models
        diffs[r] = unweighted_accuracy(y[idx], pred_a[idx]) - unweighted_accuracy(y[idx], pred_b[idx])
    low, high = np.quantile(diffs, [0.025, 0.975])
    diff = unweighted_accuracy(y, pred_a) - unweighted_accuracy(y, pred_b)
    return float(diff), float(low), float(high), float(np.mean(diffs <= 1e-12))


# %%
rng = np.random.default_rng(1)  # a second, made-up test set: imbalanced, where UA and WA part
y_made = rng.choice(4, 400, p=[0.6, 0.25, 0.1, 0.05])
easy = rng.random(400) < 0.6  # utterances both models get right
made = (y_made, np.where(easy | (rng.random(400) < 0.5), y_made, (y_made + 1) % 4),
        np.where(easy | (rng.random(400) < 0.3), y_made, (y_made + rng.integers(1, 4, 400)) % 4))
paired_cases = {f"fold {fold}'s two students": (y_test, pred_full, pred_plain), "made-up, imbalanced": made}
# the reference's 95 % interval, and its 97 % and 93 % ones (the same draws): the 1.5th and 3.5th percentiles
references = {name: [metrics.paired_bootstrap([case], n_resamples=10_000, confidence=c, seed=0)
                     for c in (0.95, 0.97, 0.93)] for name, case in paired_cases.items()}
BOOTSTRAP_LIBRARIES = ("emolib.metrics.paired_bootstrap", "emolib.metrics._resampled_ua", "scipy.stats.bootstrap",
                       "sklearn.utils.resample")
with forbidden(*BOOTSTRAP_LIBRARIES):  # read as tuples: a list or an array of the four numbers is as right
    answers = {name: tuple(paired_bootstrap_ua(*case, 10_000, seed=1))  # other draws than the reference's
               for name, case in paired_cases.items()}
    by_hand = tuple(paired_bootstrap_ua([0, 1], [0, 1], [0, 0], 10_000, seed=0))
    same = tuple(paired_bootstrap_ua(y_test, pred_full, pred_full, 1_000, seed=0))
    repeated = [tuple(paired_bootstrap_ua(*made, 200, seed=5)) for _ in range(2)]
for name, answer in answers.items():
    assert len(answer) == 4 and all(isinstance(x, float) for x in answer), "return (diff, low, high, p_not_higher)"
    reference, *bands = references[name]
    assert math.isclose(answer[0], reference["diff"], abs_tol=1e-9), (name, "the observed difference", answer[0],
                                                                      reference["diff"])
    for end, value in (("low", answer[1]), ("high", answer[2])):  # within half a point, or (on a small fold, whose
        # resampled differences take few values) between the reference's 1.5th and 3.5th (96.5th, 98.5th) percentiles
        band = sorted(b[end] for b in bands)
        assert abs(value - reference[end]) <= 0.005 or band[0] - 1e-9 <= value <= band[1] + 1e-9, (
            name, f"the interval's {end} end", value, reference[end])
    assert abs(answer[3] - reference["p_not_higher"]) <= 0.03, (name, "p_not_higher", answer[3],
                                                                reference["p_not_higher"])
# by hand: y = (0, 1), a right on both, b says 0 for both. UA(a) - UA(b) = 1 - 1/2. A resample holds
# both utterances (probability 1/2: a difference of 1/2), utterance 0 twice (1/4: only class 0, both
# right, 0) or utterance 1 twice (1/4: only class 1, b wrong, 1)
assert by_hand[0] == 0.5 and by_hand[1] == 0.0 and by_hand[2] == 1.0, ("by hand: diff 0.5, interval [0, 1]", by_hand)
assert abs(by_hand[3] - 0.25) <= 0.02, ("by hand: a is not ahead in a quarter of the resamples", by_hand[3])
assert same == (0.0, 0.0, 0.0, 1.0), ("a model against itself: no difference in any resample, a tie", same)
assert repeated[0] == repeated[1], "the same seed gives the same answer"
print("exercise 4: right")
diff, low, high, p_not_higher = answers[f"fold {fold}'s two students"]
reference = references[f"fold {fold}'s two students"][0]
print(f"UA(full) - UA(no_teachers), fold {fold}, {len(y_test)} test utterances: {100 * diff:+.2f} points; "
      f"95 % interval [{100 * low:+.2f}, {100 * high:+.2f}], full not ahead in {100 * p_not_higher:.1f} % of the "
      f"resamples\nemolib.metrics.paired_bootstrap (other draws): [{100 * reference['low']:+.2f}, "
      f"{100 * reference['high']:+.2f}], {100 * reference['p_not_higher']:.1f} %")

# %% [markdown]
# **Question.** What does this interval cover, and what does it not? Would it contain the
# difference you would measure after training both students again with another seed, or on
# another session's speakers?

# %% [markdown] tags=["solution"]
# *Answer.* It covers one source of noise: which utterances of the fold's two test speakers
# happened to be recorded, for the two trained models as they are. It says how far the
# difference could move had the same speakers recorded as many other turns of the same kind.
# It does not cover training: another seed trains two other models, whose difference moves as
# well (`python -m emolib gap` with `--seeds` measures that), and the interval of one pair of models
# says nothing about it. Nor does it cover new speakers: the resampled utterances all come
# from the same two voices, so they are not independent draws of what the model will meet;
# another session may favour the other student, and the spread over folds (the report's
# "± std over folds") is the estimate of that. Pairing keeps the interval as narrow as it is:
# both students are scored on the same draw, so the utterances that are easy or hard for both
# cancel out of the difference. Nor is `p_not_higher` a p-value of a test under
# a null hypothesis: it is Koehn's share of resamples, a description of this one test set.
# (Measured on the default preset, fold 1, with the report's runs, portable numerics, config
# 960538b749: full 73.75 and no_teachers 75.00 UA, a difference of -1.25 points, its 95 %
# interval [-5.68, +3.13] (the reference's draws: [-5.65, +3.18]), full not ahead in 71 % of
# the resamples; students trained with two threads instead of one computed other floats but
# made the same predictions. Plain fine-tuning is ahead on this fold, the full student over
# the five (README, "Results on the built-in corpus"): one fold's test utterances alone cannot
# tell the two students apart, before the seeds and the speakers add their own noise. With the
# libraries' native kernels, before portable numerics, the two had tied at 75.00, [-4.72,
# +4.73], and students trained with two threads differed by +0.83, [-3.98, +5.60].)

# %% [markdown]
# # Part C · Choosing on the test set
#
# ## 5. The best of K equally good models
#
# K models (configurations of a sweep, checkpoints of a run) are all equally good: each gets an
# utterance right with probability `accuracy`, independently of the others. Each is scored on
# the same test set of n utterances, and the best test score is reported. Write
# `best_of(k, n, accuracy, seed)`: the mean over `repetitions` (10,000) simulated test sets of
# the highest test accuracy among the k models. A pure simulation: no training, no data
# (`rng.binomial` draws how many of n utterances a model gets right).

# %% tags=["exercise"]
def best_of(k: int, n: int, accuracy: float, seed: int, repetitions: int = 10_000) -> float:
    """Mean over repetitions of the highest test accuracy among k models of true accuracy `accuracy`,
    each scored on n test utterances."""
    raise NotImplementedError("exercise 5: write best_of")


# %% tags=["solution"]
def best_of(k: int, n: int, accuracy: float, seed: int, repetitions: int = 10_000) -> float:
    """Mean over repetitions of the highest test accuracy among k models of true accuracy `accuracy`,
    each scored on n test utterances."""
    rng = np.random.default_rng(seed)
    right = rng.binomial(n, accuracy, size=(repetitions, k))  # each model's count of right answers, per test set
    return float((right.max(axis=1) / n).mean())


# %%
from scipy.stats import binom


def expected_best(k: int, n: int, accuracy: float) -> float:
    """The exact mean of the best of k binomial scores: E[max] = sum over m < n of P(max > m) = 1 - F(m)^k."""
    m = np.arange(n)
    return float(np.sum(1.0 - binom.cdf(m, n, accuracy) ** k) / n)


best_cases = [(1, 240, 0.6), (5, 240, 0.6), (20, 50, 0.7), (100, 1000, 0.55), (3, 16, 0.5)]
expected = [expected_best(*case) for case in best_cases]
with forbidden("scipy.stats.binom.cdf", "scipy.stats.binom.sf", "scipy.stats.binom.pmf"):
    answers = [best_of(*case, seed=0) for case in best_cases]
    repeated = [best_of(10, 240, 0.6, seed=7, repetitions=500) for _ in range(2)]
for case, answer, reference in zip(best_cases, answers, expected):
    assert isinstance(answer, float), "return a float"
    assert abs(answer - reference) <= 0.005, (case, answer, reference)  # the simulation's error is about 0.001
assert repeated[0] == repeated[1], "the same seed gives the same answer"
print("exercise 5: right")

ACCURACY = 0.6
ks = (1, 2, 4, 8, 16, 32, 64, 128)
sizes = {f"{n_test} (fold {fold}'s test)": n_test, "1,106 (an IEMOCAP session, on average)": 1106}
curve = pd.DataFrame({label: {k: 100 * (best_of(k, n, ACCURACY, seed=0) - ACCURACY) for k in ks}
                      for label, n in sizes.items()}).rename_axis("K")
assert all(curve[c].is_monotonic_increasing for c in curve), "the best of more models is never worse"
print(f"true accuracy {100 * ACCURACY:.0f} % for every model; the best test score's excess over it, in points, "
      "by test size:")
curve.round(2)

# %% [markdown]
# **Question.** Every model above is equally good, yet the best test score grows with K. What
# does that say about choosing a hyper-parameter (a temperature, an epoch, a variant) on the
# test fold? And about a temperature sweep like the paper's Fig. 2 (four values per teacher)?

# %% [markdown] tags=["solution"]
# *Answer.* The maximum of K noisy scores estimates the best *luck*, not the best model: its
# excess over the true accuracy grows with K (roughly with the square root of log K) and falls
# with the test size (with 1/√n). Measured on the default preset, fold 1 (n = 240, true
# accuracy 60 %): the best of 16 equally good models scored 5.5 points above their true
# accuracy, the best of 128 8.1 points; on 1,106 utterances the best of 16 was still 2.6
# points above. Fig. 2 sweeps four temperatures per teacher, one teacher at a time: each τ chosen
# on the test fold is the best of 4 (a joint 4 × 4 grid would be 16), and an epoch chosen by
# its test score one more candidate per epoch: the reported number is then a selection, not a
# measurement. Hence the rule: choose on data that is not the test fold (this project's
# validation speakers, `emolib/folds.py`), then score the chosen model on the test fold once.
# Its validation score is the one that carries the optimism, and it is not reported as a
# result. Real candidates share data and most of their predictions, so their test scores are
# correlated and the excess for a given K is smaller than in this simulation, whose models err
# independently; it is never negative.
