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
# # 05 · The report: the paper's tables and figure, rebuilt from result files
#
# This notebook **never trains**. It reads the result files that notebooks 00-04 wrote for
# every fold (`config.json`, `metrics.json`, `predictions.csv` under `runs/`) and writes
# into `figures/` (for the default config; any other config's report goes to
# `runs/figures/<preset>-<hash>/`, printed below):
#
# * `table2_ablations.md/.tex`: the paper's eight ablation rows, ours beside the paper's;
# * `fig2_temperature.pdf/.png`: accuracy against each teacher's temperature, and its values in
#   `fig2_temperature_values.md/.tex`;
# * `table1_comparison.md/.tex`: the paper's comparison table, with our rows marked by the
#   corpus and backbone they come from;
# * `teachers_vs_baselines.md/.tex`: each teacher against the logistic-regression probe of its
#   channel (and, on the built-in corpus, the channel's Bayes ceiling);
# * `channels.md/.tex` (on a corpus that records which channel carries each label, as the built-in
#   one does): every model's accuracy where the words, the voice, both or neither carry it.
#
# Each artefact carries the commit, preset, corpus and config hash it came from (a sidecar
# `.json`, and the PDF metadata). Scores are in %: the **mean over folds** ± the standard
# deviation across folds, and the **pooled** score (every fold's test predictions together).

# %% tags=["parameters"]
preset = "default"  # tiny (the tests': random models, its numbers mean nothing) | default (the CPU report) | paper (GPU)
overrides = {}  # dotted config overrides (must match those the runs were made with)
folds = None  # None: every fold of the corpus; the run driver passes the folds it ran
taus_prosodic = None  # Fig. 2's grids, as given to 03_temperature_sweep (None: sweep.taus_prosodic)
taus_linguistic = None  # None: sweep.taus_linguistic

# %%
from IPython.display import Markdown, display

from emolib import paths, plots, report
from emolib.config import get_config

cfg = report.with_sweep_grids(get_config(preset, overrides), taus_prosodic, taus_linguistic)
study = report.discover(cfg, folds)
folds, classes = study.folds, study.classes
n_folds = f"{len(folds)} fold{'s' if len(folds) != 1 else ''}"  # for the captions
prov = report.provenance(cfg, study.corpus, folds=len(folds), numerics=list(study.numerics))
out = paths.figures_dir(cfg)  # figures/ for the default config, runs/figures/<preset>-<hash>/ otherwise
print(f"corpus {study.corpus}, {n_folds}, preset {cfg.preset}, commit {prov['commit']} -> {out}")
if replaced := report.replaced_report(out, prov):  # EMOLIB_FIGURES takes every config's report
    print(replaced)

# %% [markdown]
# ## Table 2: ablations
#
# Rows 1-6 are students (HuBERT-base in the paper; here the backbone named in the caption),
# rows 7-8 the teachers alone. Folds differ more from one another than the rows often do
# (the students' ± in the table below is several points on the default's 5 folds), so the next-to-last column compares each
# row with the full student fold by fold: the mean and spread of the differences, and in how many folds the full
# student was ahead. A difference that is consistent across folds can be read even when it
# is smaller than the ± of the means. The last column asks how far the test utterances
# alone could move that mean difference: a paired bootstrap (every fold's test utterances
# drawn again with replacement, the same draw for both models, 10,000 times) gives its 95 %
# interval, and p is the share of draws in which the full student was not ahead. It says
# nothing about a new training seed, which moves both models (`python -m emolib gap --seeds`).

# %%
t2 = report.table2(cfg, study)
shown = report.display_table2(t2)
caption = (f"Table 2 (ablations). Paper: IEMOCAP, HuBERT-base student. Ours: corpus '{study.corpus}', "
           f"student backbone {cfg.student.backbone} (freeze={cfg.student.freeze}), linguistic teacher "
           f"{cfg.linguistic_teacher.model}, leave-one-{cfg.data.protocol}-out cross-validation over {n_folds}; "
           f"UA/WA in %, mean ± std over folds, and pooled over folds.")
report.write_table(shown, "table2_ablations", caption, "tab:ablations",
                   ["Paper rows restored from its text (the symbols were lost in extraction).",
                    "Last two columns: each row's UA minus the full student's, fold by fold (every row is tested on "
                    "the same folds, so the spread from fold to fold cancels): mean ± std over folds, and in how "
                    "many folds the full student scored higher. Then the 95 % interval of that mean difference "
                    "from a paired bootstrap over the test utterances (each fold's utterances drawn again with "
                    f"replacement, the same draw for both models, {report.BOOTSTRAP_RESAMPLES:,} times), and p, the "
                    "share of draws in which the full student was not ahead: the test sets' sampling noise only, "
                    "not a new training seed's."], prov, out)
display(Markdown(report.markdown_table(shown, caption)))

# %% [markdown]
# ## Figure 2: the temperature sweep
#
# Left: the prosodic temperature, with the linguistic logit-KD term removed; right: the
# linguistic temperature, with the prosodic logit-KD term removed. Lines are the mean over
# folds, bands one standard deviation; the dotted line marks our default temperature.

# %%
sweep = report.temperature_sweep(cfg, study)
fig = report.plot_fig2(sweep, cfg)
plots.save_figure(fig, out / "fig2_temperature", {**prov, "note": report.PAPER_FIG2_NOTE,
                                                  "grid_prosodic": list(cfg.sweep.taus_prosodic),
                                                  "grid_linguistic": list(cfg.sweep.taus_linguistic)})
values = report.sweep_table(sweep)
caption2 = (f"Figure 2's values: the student's accuracy against each teacher's temperature (the other teacher's "
            f"logit KD removed), corpus '{study.corpus}', UA/WA in %, mean ± std over {n_folds}.")
report.write_table(values, "fig2_temperature_values", caption2, "tab:temperature", [], prov, out)
display(Markdown(report.markdown_table(values, caption2)))

# %% [markdown]
# ## Table 1: comparison with the literature
#
# The paper's rows are IEMOCAP results quoted from the paper; ours come from the corpus
# named in each row and are **not comparable** with IEMOCAP numbers unless that corpus is
# IEMOCAP.

# %%
t1 = report.table1(cfg, study)
caption1 = ("Table 1 (comparison). Literature and EmoDistill rows: IEMOCAP, as reported in the paper's Table 1 "
            "(references as numbered there). Rows marked 'ours' come from this re-implementation on the corpus "
            f"named in the row ('{study.corpus}'), UA/WA in %, mean over {n_folds}.")
report.write_table(t1, "table1_comparison", caption1, "tab:comparison", [report.TABLE1_NOTE], prov, out)
display(Markdown(report.markdown_table(t1, caption1, [report.TABLE1_NOTE])))

# %% [markdown]
# ## The teachers against the baselines of their channel

# %%
tb = report.teachers_vs_baselines(cfg, study)
caption3 = (f"Teachers vs logistic-regression probes of their channel, corpus '{study.corpus}', UA/WA in %, "
            f"mean ± std over {n_folds}.")
notes3 = [report.CEILING_NOTE] if study.corpus == "synth" else []
report.write_table(tb, "teachers_vs_baselines", caption3, "tab:teachers", notes3, prov, out)
display(Markdown(report.markdown_table(tb, caption3, notes3)))

# %% [markdown]
# ## Which channel does each model use?
#
# The built-in corpus records, for every utterance, whether its words and whether its voice
# carry its emotion (drawn independently). Scoring each model on the four cells shows what it
# learned: the linguistic teacher is right where the words carry the label and at chance
# elsewhere; the prosodic teacher is right on part of the cells where the voice carries it and
# above chance where only the words carry it (eGeMAPS keeps some of the words: the table's note
# says how), and where neither channel does, it guesses; a
# speech-only student can hear both,
# and the teachers' knowledge is what should lift it where only one channel speaks. On a corpus
# without these records (IEMOCAP and the others) the section is skipped.
#
# The last row asks how much distillation *could* add: the same student trained on what
# perfect teachers of each channel would say (notebook 04's oracle run). Its distance to
# plain fine-tuning bounds the gain any pair of teachers can give this student on this corpus.

# %%
channels = report.channel_breakdown(cfg, study)
if channels is None:
    print(f"corpus {study.corpus!r} does not record which channel carries each label: no channel table")
    for stale in out.glob("channels.*"):  # from an earlier report on another corpus: it would not describe this one
        stale.unlink()
else:
    caption4 = (f"Accuracy per channel cell, corpus '{study.corpus}', pooled over {n_folds}: where the words "
                "and/or the voice carry the emotion.")
    notes4 = [report.CHANNELS_NOTE] + ([report.ORACLE_NOTE] if report.ORACLE_ROW in set(channels["model"]) else [])
    report.write_table(channels, "channels", caption4, "tab:channels", notes4, prov, out)
    display(Markdown(report.markdown_table(channels, caption4, notes4)))
