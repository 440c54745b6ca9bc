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
# # 01 · The teachers
#
# EmoDistill learns from two teachers, each fine-tuned for emotion recognition on the
# training speakers of the fold and then **frozen** (Sec. 3 of the paper):
#
# * the **prosodic teacher** $T_P$: a 2D ResNet over the openSMILE eGeMAPSv02 low-level
#   descriptors (25 values every 10 ms: loudness, pitch, jitter, shimmer, formants, ...),
#   trained on random 3-second crops and evaluated on whole utterances;
# * the **linguistic teacher** $T_L$: a BERT-family encoder fine-tuned on the transcripts
#   (BERT-base in the paper; offline, the 6-layer all-MiniLM-L6-v2 shipped in a pip
#   package).
#
# Both are trained by the same loop as the student (`emolib/train.py`): AdamW, warm-up then
# linear decay, and the epoch kept is the one with the best UA on the **validation
# speakers** (the prosodic teacher also stops early once 6 epochs bring no better one; the
# linguistic teacher trains for 3 epochs, BERT's recipe). Each teacher's **logits** and
# **embedding** for every utterance are cached beside its result files, so the student
# never runs a teacher. The embedding is the vector the teacher classifies from: the
# ResNet's 128-value embedding layer (a linear map of its channels' mean and standard
# deviation over time, read by the classifier through GELU and dropout), the language
# model's mean over its tokens' last hidden states (384 values for MiniLM). Notebook 02
# pulls the student's heads towards these vectors.

# %% tags=["parameters"]
preset = "default"  # tiny (the tests': random models, its numbers mean nothing) | default (the CPU report) | paper (GPU)
overrides = {}  # dotted config overrides, e.g. {"linguistic_teacher.model": "bert-base-uncased"} (a hub id: a machine that reaches the hub)
fold = 1  # the test fold of this run

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from emolib import pipeline, plots, report
from emolib.config import get_config

cfg = get_config(preset, overrides)
data = pipeline.load_data(cfg)
print(data.fold(fold).summary())
kinds = [k for k in pipeline.TEACHER_KINDS if k != "linguistic" or data.corpus.has_transcripts]
if "linguistic" not in kinds:
    print(f"no linguistic teacher: {' '.join(data.corpus.notes)}")

# %% [markdown]
# ## Training (or reusing) the teachers
#
# A complete run is reused; a run killed midway resumes from its last finished epoch.

# %%
runs = {kind: pipeline.train_teacher(kind, cfg, fold, data) for kind in kinds}
prov = report.provenance(cfg, data.corpus.name, fold=fold)  # the footer of every figure saved below

# %% [markdown]
# ## Learning curves
#
# Training loss per epoch and the validation UA that selects the checkpoint.

# %%
plots.paper_style()
fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 2.8), squeeze=False)
for ax, (kind, run) in zip(axes[0], runs.items()):
    plots.learning_curves(ax, run.history(), ["train_loss"], title=f"{kind} teacher, fold {fold}")
fig.tight_layout()
plots.save_figure(fig, pipeline.fold_figure_path(cfg, "teacher_learning_curves", fold), prov);

# %% [markdown]
# ## Confusion matrices on the test speakers
#
# Rows are the true classes, cells the share of each row. Expect the prosodic teacher to
# separate arousal (angry and happy vs sad) better than valence (angry vs happy), as on
# real speech. (What this notebook's prose expects is what the `default` preset shows; the
# `tiny` preset's random models, trained for seconds, show none of it.)

# %%
fig, axes = plt.subplots(1, len(runs), figsize=(3.4 * len(runs), 3.0), squeeze=False)
for ax, (kind, run) in zip(axes[0], runs.items()):
    m = run.metrics()
    plots.confusion_matrix(ax, m["confusion"], m["classes"], title=f"{kind}: UA {100 * m['ua']:.1f}")
fig.tight_layout()
plots.save_figure(fig, pipeline.fold_figure_path(cfg, "teacher_confusion", fold), prov);

# %% [markdown]
# ## Against the baselines and the ceilings
#
# Each teacher next to the simple model of its channel: logistic regression on the eGeMAPS
# functionals (the usual acoustic baseline, the `voice` probe of notebook 00) and on TF-IDF
# of the words (`text`). A teacher is worth distilling from when it is at least as good as its
# probe. On the built-in corpus the linguistic teacher and the text probe both sit at the
# words' Bayes ceiling (an expected value: a fold's score scatters by about 3 points around
# it, see notebook 00), so neither can beat the other by much; the prosodic teacher matches
# the eGeMAPS probe, both about 10 points below the voice's ceiling. On the default's 5
# folds: linguistic teacher 71.92 vs probe 73.75 (ceiling 71.50), prosodic 56.00 vs 55.92
# (ceiling 66.25; `figures/teachers_vs_baselines.md`).

# %%
probes = pipeline.run_probes(cfg, fold, data).metrics()["probes"]
channel = {"prosodic": "voice", "linguistic": "text"}
rows = []
for kind, run in runs.items():
    m, p = run.metrics(), probes.get(channel[kind])
    row = {"teacher": kind, "UA": 100 * m["ua"], "WA": 100 * m["wa"], "macro-F1": 100 * m["macro_f1"],
           "best epoch": m["best_epoch"], "train s": m["train_seconds"],
           "LR probe UA": None if p is None else 100 * p["ua"]}
    if data.corpus.name == "synth":
        from emolib.corpora import synth

        ceiling = synth.corpus_ceilings(cfg.data.synth)
        row["Bayes ceiling UA"] = 100 * ceiling[channel[kind]]["UA"]
    rows.append(row)
display(pd.DataFrame(rows).set_index("teacher").round(2))
