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
# # 02 · Distillation: a speech-only student learns from both teachers
#
# The student (Sec. 3, "Student KD") hears only the audio. A pre-trained speech encoder is
# followed by two **disjoint** GELU projection heads, a *linguistic* one and a *prosodic*
# one, whose outputs are concatenated and classified by a small feed-forward network. It
# is trained with (Eq. 5)
#
# $$\mathcal{L} = \alpha\,\mathrm{CE}(y, s)
#   + \beta\,\big[\tau_L^2\,\mathrm{KL}(\sigma(t_L/\tau_L)\,\|\,\sigma(s/\tau_L))
#               + \tau_P^2\,\mathrm{KL}(\sigma(t_P/\tau_P)\,\|\,\sigma(s/\tau_P))\big]
#   + \gamma\,\big[-\cos(e^s_L, e^{T}_L) - \cos(e^s_P, e^{T}_P)\big]$$
#
# * **logit-level KD**: the student's temperature-softened class distribution follows each
#   teacher's, with one temperature per teacher (the $\tau^2$ factor keeps the soft targets'
#   gradients roughly independent of $\tau$, exactly so only for large $\tau$, so that β and not
#   τ sets their weight against the cross-entropy; Hinton et al. 2015);
# * **embedding-level KD**: the linguistic head's output is pulled towards the linguistic
#   teacher's embedding, the prosodic head's towards the prosodic teacher's.
#
# Here $\sigma$ is the softmax, $s$ the student's logits, $t_L, t_P$ the teachers' and $e$ the
# embeddings. Reading the terms:
#
# * **Why KL, and in this direction.** $\mathrm{KL}(p_T\,\|\,p_S) = \sum_c p_T(c)\,[\log p_T(c) -
#   \log p_S(c)]$ is the cross-entropy against the teacher's soft labels minus the teacher's
#   own entropy, a constant: the student is trained on the teacher's distribution as on a
#   label that says *how likely* every class is, not only which one wins. It is summed over
#   classes and averaged over the batch (`reduction="batchmean"`, the mathematically correct
#   mean; `"mean"` would also divide by the number of classes).
# * **Temperatures.** $\sigma(z/\tau)$ with $\tau > 1$ flattens a distribution (the
#   teacher's second and third choices become visible), $\tau < 1$ sharpens it towards a
#   one-hot on the teacher's top choice (which need not be the true label). The cell after training shows each teacher's distribution at several $\tau$.
# * **Negative cosine** only asks for the same *direction* as the teacher's embedding, not its
#   length: the student's heads keep their own scale. Its best value is -1, so the total loss
#   can go below 0.
# * **Frozen teachers.** The teachers are trained first (notebook 01) and never updated here:
#   their logits and embeddings for every training utterance are read from their result
#   files, so a distillation step costs what a plain step costs (`benchmarks/bench_student.py`
#   measures both).
#
# At inference the teachers, the transcripts and openSMILE are gone: audio in, emotion out
# (the last cell classifies audio files with the student alone).
#
# On the CPU default the speech encoder is Whisper base's encoder, frozen; the linguistic
# head reads its top layer and the prosodic head a learned weighted sum of its layers
# (`student.layer_mix = "split"`). Its pooled states are computed once and cached, so training
# touches only the heads. The `paper` preset fine-tunes HuBERT-base instead, its new layers
# at ten times HuBERT's learning rate (`student.backbone_lr_scale`). To fine-tune Whisper's
# top K layers on a CPU, try `overrides = {"student.freeze": "top:2", "student.backbone_lr_scale": 0.1,
# "student.optim.epochs": 12, "student.optim.patience": 4}` (the budget of the runs in `docs/distillation_gap.md`, which
# fine-tuned all four layers of Whisper tiny.en, `"student.backbone": "whisper-tiny.en"` with
# `"top:4"`, at about 150 times the frozen student's training time per run; that page reports
# what it changed). Whisper base has six layers: `"top:6"` fine-tunes them all (the same page
# reports that too, on the default Whisper base).

# %% tags=["parameters"]
preset = "default"  # tiny (the tests': random models, its numbers mean nothing) | default (the CPU report) | paper (GPU)
overrides = {}  # dotted config overrides, e.g. {"distill.gamma": 0.5}
fold = 1  # the test fold of this run
variant = None  # a row of Table 2: full, no_logit_kd, no_embedding_kd, ...; None: the config's (distill.variant)
tau_linguistic = None  # None: the config's value (distill.tau_linguistic)
tau_prosodic = None  # None: the config's value (distill.tau_prosodic)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from emolib import pipeline, plots, report
from emolib.config import get_config, student_changes

cfg = get_config(preset, {**overrides, **student_changes(variant, tau_linguistic, tau_prosodic)})
data = pipeline.load_data(cfg)
print(data.fold(fold).summary())
prov = report.provenance(cfg, data.corpus.name, fold=fold)  # the footer of every figure saved below
print(f"variant {cfg.distill.variant}: tau_L {cfg.distill.tau_linguistic}, tau_P {cfg.distill.tau_prosodic}, "
      f"alpha {cfg.distill.alpha}, beta {cfg.distill.beta}, gamma {cfg.distill.gamma}")

# %% [markdown]
# ## Training the student, and the plain fine-tuned baseline
#
# The teachers the variant needs are trained first (or reused from notebook 01). The
# baseline, `no_teachers`, is the same student trained with cross-entropy alone: the
# paper's row 6, "plain fine-tuned HuBERT" (on the CPU default the encoder stays frozen and
# only the heads learn, for both). It always weighs its cross-entropy by α = 1: with only one
# term, α would merely rescale the loss, and at α = 0 it would learn nothing.

# %%
student = pipeline.train_student(cfg, fold, data)
baseline = pipeline.train_student(cfg.replace({"distill.variant": "no_teachers", "distill.alpha": 1.0}), fold, data)

# %% [markdown]
# ## What a temperature does to a teacher's logits
#
# One training utterance, each teacher's class distribution softened at several
# temperatures: what the student's own softened distribution is pulled towards.

# %%
import numpy as np
import torch

plots.paper_style()
classes = data.corpus.classes
kinds = [k for k in pipeline.TEACHER_KINDS if pipeline.teacher_run(k, cfg, fold).is_complete()]
example = data.fold(fold).train_ids[0]
fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.2 * max(1, len(kinds)), 2.6), squeeze=False)
for ax, kind in zip(axes[0], kinds):
    ids, outputs = pipeline.load_outputs(pipeline.teacher_run(kind, cfg, fold))
    logits = torch.from_numpy(outputs["logits"][ids.index(example)])
    taus = (0.5, 1.0, 2.0, 4.0, 8.0)
    width = 0.8 / len(taus)
    for k, tau in enumerate(taus):
        ax.bar(np.arange(len(classes)) + k * width, torch.softmax(logits / tau, -1).numpy(), width,
               color=str(0.15 + 0.15 * k), label=f"τ = {tau:g}")
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
    ax.set_ylabel("softened probability")
    ax.set_title(f"{kind} teacher on {example} ({data.corpus.by_id()[example].label})", fontsize=8)
axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the bars, never over them
fig.tight_layout()
plots.save_figure(fig, student.dir / "temperatures", prov);

# %% [markdown]
# ## Loss terms and validation UA per epoch
#
# Each term of Eq. 5 as the student trains, before the coefficients α, β, γ weigh them (the
# logit terms include their τ² factor), and the weighted total the optimiser follows. The
# embedding terms are negative cosines, so they fall towards -1 as the heads align with the
# teachers' embeddings, and the total can go below 0.

# %%
history = student.history()
terms = [c for c in ("train_ce", "train_logit_linguistic", "train_logit_prosodic", "train_embedding_linguistic",
                     "train_embedding_prosodic") if c in history and history[c].abs().sum() > 0]
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
plots.learning_curves(axes[0], history, ["train_loss", *terms], title=f"student ({cfg.distill.variant}), fold {fold}",
                      ylabel="loss (terms unweighted)")
plots.learning_curves(axes[1], baseline.history(), ["train_ce"], title=f"no teachers, fold {fold}")
fig.tight_layout()
plots.save_figure(fig, student.dir / "loss_terms", prov);

# %% [markdown]
# ## Per-class recall next to both teachers (test speakers)
#
# The paper's central claim: the distilled student beats the plain fine-tuned model and both
# teachers. The per-class recalls show where each one is strong.

# %%
rows = {}
for name, run in (("student", student), ("no teachers", baseline)):
    rows[name] = run.metrics()
for kind in pipeline.TEACHER_KINDS:
    run = pipeline.teacher_run(kind, cfg, fold)
    if run.is_complete():
        rows[f"{kind} teacher"] = run.metrics()
table = pd.DataFrame({name: {**{f"recall {c}": (None if m["recall"][c] is None else 100 * m["recall"][c])
                                for c in m["classes"]},  # in the corpus's class order, as the matrices
                             "UA": 100 * m["ua"], "WA": 100 * m["wa"]} for name, m in rows.items()}).T.round(2)
display(table)

# %% [markdown]
# Where the two students go wrong: the confusion matrices of the distilled student and of plain
# fine-tuning on the same test speakers (rows: the true class, normalised to 1, so the diagonal
# holds each class's recall).

# %%
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.0))
for ax, (name, run) in zip(axes, (("student", student), ("no teachers", baseline))):
    m = run.metrics()
    plots.confusion_matrix(ax, m["confusion"], m["classes"], title=f"{name}: UA {100 * m['ua']:.1f}")
fig.tight_layout()
plots.save_figure(fig, student.dir / "confusion", prov);

# %% [markdown]
# ## Which layers each head listens to
#
# With a learned layer mix (`student.layer_mix`), the softmax weight of every hidden state
# (0: the embeddings before the first transformer layer). On the default, `split`: the
# linguistic head reads the top layer, the prosodic head a learned mix (prosody lives lower in
# speech encoders than words do). Read each weight against the uniform 1/N of N hidden states:
# a head that prefers some layers departs from it; one that stays near it averages them all.

# %%
weights = student.metrics()["layer_weights"]
if weights:
    display(pd.DataFrame(weights).rename_axis("hidden state").round(3).T)
else:
    print(f"student.layer_mix={cfg.student.layer_mix}: no learned layer weights")

# %% [markdown]
# ## Audio in, emotion out
#
# The trained student alone classifies audio files: no transcript, no openSMILE, no teacher
# (`pipeline.classify`; the same probabilities as its test predictions above). Any WAV
# files will do; here, three of the test speakers' turns.

# %%
test_ids = data.fold(fold).test_ids[:3]
table = data.corpus.by_id()
result = pipeline.classify(cfg, fold, [table[i].path for i in test_ids], data)
result.insert(1, "label", [table[i].label for i in test_ids])
display(result.assign(path=[str(p).rsplit("/", 1)[-1] for p in result["path"]]).round(3))

# %% [markdown]
# ## Exercises
#
# For a course on distillation. Writing the loss by hand, term by term, and reading what the
# teachers hand the student is the handout `notebooks/exercises/distillation.py` (`make exercises`
# writes it without its solutions). The exercises here change the parameters cell and run this
# notebook again (headless:
# `python -m emolib run --notebooks 02_distill --folds 1`, with `-p variant=...` for a parameter
# and `--set distill.alpha=0` for an override). Complete runs are reused,
# so only what changed trains; on the `default` preset a student takes seconds (its backbone's
# states are cached), a new corpus or new teachers take minutes.
#
# 1. **Teachers instead of labels.** `overrides = {"distill.alpha": 0.0}` drops the
#    cross-entropy: the student learns from the teachers' soft labels and embeddings alone
#    (the `no_teachers` baseline keeps its cross-entropy).
#    How close does it come to the full student, and does it still beat the linguistic
#    teacher, whose mistakes it now copies? Look at the per-class recalls.
# 2. **Temperatures.** `tau_linguistic = 0.5`, then `8.0`. The temperature figure draws
#    τ = 0.5 to 8 whatever τ_L is: which bars are the student's target now, and what becomes
#    of the teacher's second choice? In the loss curves the logit terms carry their
#    τ² factor: how does the linguistic term's size change with τ, and what would it do
#    without that factor? (`tests/test_losses.py` checks the terms by hand, τ < 1 included.)
# 3. **Which teacher does what?** `variant = "no_linguistic_teacher"`, then
#    `"no_prosodic_teacher"`: which classes lose recall without each teacher? Compare with the
#    teachers' own per-class recalls above, and with rows 4 and 5 of the paper's Table 2.
# 4. **When are soft labels worth more?** `overrides = {"data.synth.label_noise": 0.1}`
#    gives one turn in ten the label of another emotion than the one it expresses (same audio
#    and words; IEMOCAP's labels are majority votes of evaluators who disagree). The teachers
#    and both students train again. Does the student's lead over `no_teachers` grow? `docs/distillation_gap.md`
#    ("Label noise") reports it over all folds.
# 5. **The most any teacher could give.** `overrides = {"distill.teacher_targets": "oracle"}`
#    replaces both teachers by the exact posteriors of each channel, which the corpus
#    generator knows (built-in corpus only). If even these add little over `no_teachers`,
#    what limits the student: its teachers, or its own (frozen) backbone? (The temperature
#    figure and the teacher rows of the tables above still show the real teachers, not the
#    oracle's targets.)
