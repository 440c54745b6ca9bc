# ---
# jupyter:
#   jupytext:
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
#   teacher's, with one temperature per teacher (the $\tau^2$ factor keeps the gradient's
#   scale independent of $\tau$, Hinton et al. 2015);
# * **embedding-level KD**: the linguistic head's output is pulled towards the linguistic
#   teacher's embedding, the prosodic head's towards the prosodic teacher's.
#
# At inference the teachers, the transcripts and openSMILE are gone: audio in, emotion out.
#
# On the CPU default the speech encoder is Whisper tiny.en's encoder, frozen, with a learned
# weighted sum of its layers; its pooled states are computed once and cached, so training
# touches only the heads. The `paper` preset fine-tunes HuBERT-base instead, its new layers
# at ten times HuBERT's learning rate (`student.backbone_lr_scale`). To fine-tune Whisper's
# layers on a CPU, try `overrides = {"student.freeze": "top:4", "student.backbone_lr_scale": 0.1}`:
# about 100 times the default's training cost per epoch (the README reports what it changes).

# %% tags=["parameters"]
preset = "default"  # tiny | default | paper
overrides = {}  # dotted config overrides, e.g. {"distill.gamma": 0.5}
fold = 1  # the test fold of this run
variant = "full"  # a row of Table 2: full, no_logit_kd, no_embedding_kd, no_prosodic_teacher, ...
tau_linguistic = None  # None: the config's value (distill.tau_linguistic)
tau_prosodic = None  # None: the config's value (distill.tau_prosodic)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from emolib import pipeline, plots, report
from emolib.config import get_config

changes = {"distill.variant": variant}
if tau_linguistic is not None:
    changes["distill.tau_linguistic"] = tau_linguistic
if tau_prosodic is not None:
    changes["distill.tau_prosodic"] = tau_prosodic
cfg = get_config(preset, {**overrides, **changes})
data = pipeline.load_data(cfg)
print(data.fold(fold).summary())
print(f"variant {cfg.distill.variant}: tau_L {cfg.distill.tau_linguistic}, tau_P {cfg.distill.tau_prosodic}, "
      f"alpha {cfg.distill.alpha}, beta {cfg.distill.beta}, gamma {cfg.distill.gamma}")

# %% [markdown]
# ## Training the student, and the plain fine-tuned baseline
#
# The teachers the variant needs are trained first (or reused from notebook 01). The
# baseline, `no_teachers`, is the same student trained with cross-entropy alone: the
# paper's row 6, "plain fine-tuned HuBERT".

# %%
student = pipeline.train_student(cfg, fold, data)
baseline = pipeline.train_student(cfg.replace({"distill.variant": "no_teachers"}), fold, data)

# %% [markdown]
# ## Loss terms and validation UA per epoch
#
# Each term of Eq. 5 as the student trains. The embedding terms are negative cosines, so
# they fall towards -1 as the heads align with the teachers' embeddings.

# %%
plots.paper_style()
history = student.history()
terms = [c for c in ("train_ce", "train_logit_linguistic", "train_logit_prosodic", "train_embedding_linguistic",
                     "train_embedding_prosodic") if c in history and history[c].abs().sum() > 0]
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
plots.learning_curves(axes[0], history, terms, title=f"student ({cfg.distill.variant}), fold {fold}")
plots.learning_curves(axes[1], baseline.history(), ["train_ce"], title=f"no teachers, fold {fold}")
fig.tight_layout()
prov = report.provenance(cfg, data.corpus.name, fold=fold)
plots.save_figure(fig, student.dir / "loss_terms", prov)

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
table = pd.DataFrame({name: {**{f"recall {c}": (None if r is None else 100 * r) for c, r in m["recall"].items()},
                             "UA": 100 * m["ua"], "WA": 100 * m["wa"]} for name, m in rows.items()}).T.round(2)
display(table)

# %%
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.0))
for ax, (name, run) in zip(axes, (("student", student), ("no teachers", baseline))):
    m = run.metrics()
    plots.confusion_matrix(ax, m["confusion"], m["classes"], title=f"{name}: UA {100 * m['ua']:.1f}")
fig.tight_layout()
plots.save_figure(fig, student.dir / "confusion", prov)
if student.metrics()["layer_weights"]:  # per head: does the prosodic head lean on lower layers?
    print("learned layer weights:", student.metrics()["layer_weights"])
