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
# # 00 · The data: corpus, folds, and how much each channel carries
#
# EmoDistill is trained and tested on IEMOCAP (Sec. 4.1 of the paper): four classes
# (neutral, angry, sad, happy with excited merged in), five sessions of two actors,
# leave-one-session-out cross-validation. IEMOCAP cannot be downloaded on the machines
# this report is built on, so the default run uses a corpus the project **generates
# itself** with espeak-ng, shaped like IEMOCAP: the same classes, five sessions of two
# speakers, and two channels that each carry the emotion only part of the time.
#
# * the **words** carry a cue of the emotion in some turns and are emotion-free fillers
#   ("Yeah.", "Tell me about it.") in others;
# * the **voice** (pitch, range, rate, loudness) carries the emotion in some turns and is
#   the speaker's neutral delivery in others;
# * the two are drawn independently, so a model of the words alone, or of the voice alone,
#   has a ceiling below 100 %, and one that hears both can do better: the situation in
#   which a speech-only student can learn from a linguistic and a prosodic teacher and beat
#   both.
#
# Its labels are the emotion each turn expresses. IEMOCAP's are majority votes of
# evaluators who often disagree: `overrides = {"data.synth.label_noise": 0.1}` releases one
# turn in ten with another class (same audio and words), for a course exercise on how label
# noise changes what the teachers' soft targets are worth (`docs/distillation_gap.md`, "Label noise").
#
# This notebook shows the corpus, its folds, and simple probes of each channel for one
# fold. Set `overrides = {"data.corpus": "iemocap:/path/to/IEMOCAP_full_release"}` to look
# at a real corpus instead.

# %% tags=["parameters"]
preset = "default"  # tiny (the tests': random models, its numbers mean nothing) | default (the CPU report) | paper (GPU)
overrides = {}  # dotted config overrides, e.g. {"data.protocol": "speaker"}
fold = 1  # the test fold of this run

# %%
import emolib  # first, before numpy loads: the probes' OpenBLAS then runs the portable kernels (README)
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Audio, Markdown, display

from emolib import pipeline, plots, report
from emolib.config import get_config

cfg = get_config(preset, overrides)
data = pipeline.load_data(cfg)
corpus = data.corpus
frame = corpus.frame()
print(f"{corpus.name}: {len(corpus)} utterances, {frame['duration'].sum() / 3600:.2f} h, "
      f"{frame['speaker'].nunique()} speakers, {frame['session'].nunique()} sessions, classes {corpus.classes}")
# how this kernel computes floats: "portable" results match every x86-64 CPU with AVX2 (README, EMOLIB_NUMERICS)
print("numerics:", emolib.machine.numerics_label(emolib.machine.numerics()))

# %% [markdown]
# ## The corpus card
#
# For the built-in corpus, the card written beside the audio states its sizes, the
# generation parameters, the voices, and the **Bayes ceilings**: the best accuracy any model
# can reach from the words, the voice, or both, computed exactly from the design. For a
# real corpus, the loader's notes say what it lacks (for instance transcripts).

# %%
if corpus.name == "synth":
    from emolib.corpora import synth

    display(Markdown(synth.card_path(cfg.data.synth).read_text()))
else:
    display(Markdown("\n".join(f"- {n}" for n in corpus.notes) or "(no notes)"))

# %% [markdown]
# ## Counts per class, session and speaker
#
# IEMOCAP is unbalanced (neutral 1,708 vs sad 1,084), which is why the paper reports UA
# (mean per-class recall) beside WA (accuracy). The built-in corpus is balanced: every
# speaker has the same number of turns of each class, so UA and WA coincide on it (unless
# `data.synth.label_noise` relabels some turns).

# %%
display(pd.crosstab(frame["session"], frame["label"], margins=True))
display(pd.crosstab(frame["speaker"], frame["label"], margins=True).T)

# %% [markdown]
# ## Durations
#
# IEMOCAP's turns have a median of 3.58 s and a 95th percentile of 11.1 s. Clips longer
# than `data.max_seconds` are cut before feature extraction.

# %%
plots.paper_style()
fig, ax = plt.subplots(figsize=(5, 2.4))
ax.hist(frame["duration"], bins=40, color="0.4")
ax.axvline(frame["duration"].median(), color="black", ls="--", lw=1, label=f"median {frame['duration'].median():.2f} s")
ax.set_xlabel("duration (s)")
ax.set_ylabel("utterances")
ax.legend()
print(frame["duration"].describe(percentiles=[0.5, 0.95]).round(2).to_dict())
plots.save_figure(fig, pipeline.fold_figure_path(cfg, "durations", fold), report.provenance(cfg, corpus.name));

# %% [markdown]
# ## A few utterances
#
# One per class. On the built-in corpus each utterance records which channels carry its
# label (`meta.lexical_cue`, `meta.vocal_cue`): listen for the voice, read the words.

# %%
columns = [c for c in ("id", "speaker", "label", "text", "meta.lexical_cue", "meta.vocal_cue") if c in frame]
examples = frame.groupby("label", sort=False).head(1)
display(examples[columns])
if corpus.has_audio:
    for _, row in examples.iterrows():
        print(f"{row['label']}: {row['text']!r}")
        display(Audio(filename=row["path"]))

# %% [markdown]
# ## Folds
#
# Leave-one-session-out by default (the paper's "5-fold leave-one-speaker-out" on
# IEMOCAP). Each fold holds out two of its *training* speakers for validation: early
# stopping and checkpoint selection never look at the test speakers.

# %%
display(pd.DataFrame([{"fold": f.index, "test": ", ".join(f.test_speakers), "validation": ", ".join(f.val_speakers),
                       "train speakers": len(f.train_speakers), "train": len(f.train_ids), "val": len(f.val_ids),
                       "test utts": len(f.test_ids)} for f in data.folds]))
print(data.fold(fold).summary())

# %% [markdown]
# ## Probes: what each channel carries (this fold)
#
# Logistic regression on TF-IDF of the transcripts (the words), on the 88 eGeMAPS
# functionals (the voice), and on both (a third regression on the first two's class
# log-probabilities, stacked: each training speaker's come from probes fitted without that
# speaker), trained on the fold's training and validation speakers and tested on its test
# speakers. Fixed, standard settings: nothing is tuned. On
# the built-in corpus the card's Bayes ceilings are expectations over the random draw of
# cues; one fold's 240 test utterances scatter a probe's score by about 3 points (one standard
# deviation) around its expected value, so a probe at its channel's ceiling can land a little above it (the report's
# `teachers_vs_baselines.md` shows the text probe at 73.75 against 71.50 over 5 folds).
# Below the ceiling, the gap is what a better model of that channel could still gain.

# %%
run = pipeline.run_probes(cfg, fold, data)
probes = run.metrics()["probes"]
table = pd.DataFrame({name: {"UA": 100 * m["ua"], "WA": 100 * m["wa"], "macro-F1": 100 * m["macro_f1"]}
                      for name, m in probes.items()}).T.round(2)
if corpus.name == "synth":
    from emolib.corpora import synth

    ceilings = synth.corpus_ceilings(cfg.data.synth)
    table["Bayes ceiling (UA)"] = [round(100 * ceilings[name]["UA"], 2) for name in table.index]
display(table)
