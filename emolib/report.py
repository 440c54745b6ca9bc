"""The paper's tables and figures, rebuilt from result files only (never trains).

* Table 1 (``table1_comparison``): the paper's comparison on IEMOCAP, each literature
  row cited, and our rows marked with the corpus and backbone they come from.
* Table 2 (``table2_ablations``): the eight ablation rows in the paper's order, our
  UA/WA (mean +- std over folds, and pooled) beside the paper's.
* Figure 2 (``fig2_temperature``): accuracy against each teacher's temperature.

Every artefact carries its provenance (commit, preset, corpus, config hash) in a
sidecar JSON (and the PDF metadata for figures).
"""
from __future__ import annotations

import datetime as _dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import paths
from .config import Config, student_changes
from .losses import ABLATION_VARIANTS
from .metrics import format_p, paired_bootstrap, paired_difference, unweighted_accuracy

# -- the paper's numbers ------------------------------------------------------------------------

#: Table 1 of the paper (IEMOCAP; WA, UA in %). ``None`` = not reported.
PAPER_TABLE1: tuple[dict[str, Any], ...] = (
    {"ref": "[10]", "method": "Sun et al., ICASSP 2021", "backbone": "CNN+LSTM", "modality": "multimodal", "wa": 61.2, "ua": 56.01},
    {"ref": "[11]", "method": "Heusser et al., arXiv 2019", "backbone": "BiLSTM+XLNet", "modality": "multimodal", "wa": 71.40, "ua": 68.60},
    {"ref": "[12]", "method": "Triantafyllopoulos et al., Front. Comput. Sci. 2023", "backbone": "MFCNN+BERT", "modality": "multimodal", "wa": None, "ua": 72.60},
    {"ref": "[14]", "method": "Ho et al., IEEE Access 2020", "backbone": "RNN+BERT", "modality": "multimodal", "wa": 73.23, "ua": 74.33},
    {"ref": "[23]", "method": "Light-SERNet (Aftab et al.), ICASSP 2022", "backbone": "FCNN", "modality": "speech", "wa": 70.23, "ua": 70.76},
    {"ref": "[24]", "method": "Liu et al., ICASSP 2020", "backbone": "TFCNN+DenseCap+ELM", "modality": "speech", "wa": 70.34, "ua": 70.78},
    {"ref": "[25]", "method": "Cao et al., ICASSP 2021", "backbone": "LSTM+Attention", "modality": "speech", "wa": 70.50, "ua": 72.50},
    {"ref": "[26]", "method": "Lu et al., ICASSP 2020", "backbone": "RNN-T", "modality": "speech", "wa": 71.72, "ua": 72.56},
    {"ref": "[27]", "method": "Wu et al., IEEE/ACM TASLP 2021", "backbone": "CNN-GRU+SeqCap", "modality": "speech", "wa": 72.73, "ua": 59.71},
    {"ref": "[28]", "method": "Zou et al., ICASSP 2022", "backbone": "Wav2Vec2+CNN+LSTM", "modality": "speech", "wa": 71.64, "ua": 72.70},
    {"ref": "[22]", "method": "TIM-Net (Ye et al.), ICASSP 2023", "backbone": "TIM-Net", "modality": "speech", "wa": 72.50, "ua": 71.65},
    {"ref": "paper", "method": "EmoDistill (Shome & Etemad, ICASSP 2024)", "backbone": "HuBERT-base", "modality": "speech", "wa": 75.16, "ua": 76.12},
    {"ref": "paper", "method": "EmoDistill (Shome & Etemad, ICASSP 2024)", "backbone": "HuBERT-large", "modality": "speech", "wa": 77.49, "ua": 78.91},
)

TABLE1_NOTE = ("The paper's abstract gives 77.49 as UA and 78.91 as WA for HuBERT-large; its Table 1 puts them "
               "the other way round. We quote the table.")

#: Table 2 of the paper (HuBERT-base, IEMOCAP), rows restored from the text (docs/NOTES.md).
#: ``source`` says where our number for the row comes from.
PAPER_TABLE2: tuple[dict[str, Any], ...] = (
    {"row": 1, "variant": "full EmoDistill", "source": "student:full", "wa": 75.16, "ua": 76.12},
    {"row": 2, "variant": "w/o logit-level KD", "source": "student:no_logit_kd", "wa": 73.94, "ua": 74.02},
    {"row": 3, "variant": "w/o embedding-level KD", "source": "student:no_embedding_kd", "wa": 73.88, "ua": 74.01},
    {"row": 4, "variant": "w/o prosodic teacher", "source": "student:no_prosodic_teacher", "wa": 74.09, "ua": 72.82},
    {"row": 5, "variant": "w/o linguistic teacher", "source": "student:no_linguistic_teacher", "wa": 66.01, "ua": 67.27},
    {"row": 6, "variant": "w/o both teachers (plain fine-tuning)", "source": "student:no_teachers", "wa": 69.92, "ua": 70.17},
    {"row": 7, "variant": "prosodic teacher alone", "source": "teacher:prosodic", "wa": 49.42, "ua": 50.08},
    {"row": 8, "variant": "linguistic teacher alone", "source": "teacher:linguistic", "wa": 71.09, "ua": 71.83},
)
assert tuple(r["source"].split(":")[1] for r in PAPER_TABLE2[:6]) == ABLATION_VARIANTS

#: Fig. 2: the paper found hard logits (a small temperature) best for the prosodic teacher,
#: soft logits (a large one) best for the linguistic one, and both too small and too large a
#: temperature worse. The exact values were lost in extraction; our defaults mark the same choice.
PAPER_FIG2_NOTE = ("paper: best prosodic temperature small (hard logits), best linguistic temperature large "
                   "(soft logits), both extremes worse; the values were lost in the text's extraction")


# -- provenance ----------------------------------------------------------------------------------


def git_commit() -> str:
    """The checkout's commit (``+dirty`` when there are uncommitted changes); without a checkout (a
    ``git archive`` or GitHub's "Download ZIP", extracted), the commit the archive was made from,
    ``+archive``; else ``unknown``. A repository around the project that does not track its code
    (an archive extracted into a home folder kept in git) is not its checkout: its commit would
    name other files. One that does (the project copied into a monorepo) is."""
    root = paths.project_root()
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "--", "emolib/__init__.py"], cwd=root,
                                 capture_output=True, timeout=10)
        if tracked.returncode != 0:
            return archived_commit() or "unknown"
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "emolib", "notebooks"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return archived_commit() or "unknown"


def archived_commit() -> str | None:
    """The commit ``git archive`` wrote into ``emolib/ARCHIVE_COMMIT`` (``export-subst`` in
    ``.gitattributes``), cut to 12 digits with ``+archive``; None in a checkout, where the file
    holds its placeholder, or without the file (a wheel)."""
    try:
        text = (Path(__file__).parent / "ARCHIVE_COMMIT").read_text().strip()
    except OSError:
        return None
    return f"{text[:12]}+archive" if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else None


def provenance(cfg: Config, corpus_name: str, **extra: Any) -> dict[str, Any]:
    return {"commit": git_commit(), "preset": cfg.preset, "corpus": corpus_name, "config_hash": cfg.hash(),
            "student_hash": cfg.hash("student"), "backbone": cfg.student.backbone,
            "linguistic_teacher": cfg.linguistic_teacher.model, "protocol": cfg.data.protocol,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}


def replaced_report(out_dir: Path, prov: dict[str, Any]) -> str | None:
    """A line saying whose report ``out_dir`` holds, when it is another config's or corpus's
    than ``prov``'s, which this report is about to replace (None otherwise): ``EMOLIB_FIGURES``
    sends every config's report to one folder, so a `tiny` check run after a `paper` one
    would replace the paper's tables without a word (they can be rebuilt, by ``python -m emolib
    figures`` with that config, from the result files, which are kept)."""
    try:
        old = json.loads((Path(out_dir) / "table2_ablations.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no earlier report, or one this report rewrites whole anyway
    if not isinstance(old, dict):
        return None
    before = (old.get("config_hash"), old.get("corpus"))
    if before == (prov.get("config_hash"), prov.get("corpus")):
        return None
    return (f"note: {paths.printable(Path(out_dir))} holds the report of preset {old.get('preset', '?')}, config "
            f"{old.get('config_hash', '?')}, corpus {old.get('corpus', '?')}; this report (preset {prov['preset']}, "
            f"config {prov['config_hash']}, corpus {prov['corpus']}) replaces it")


# -- collecting results ----------------------------------------------------------------------------


class MissingResults(FileNotFoundError):
    """A result the report needs has not been computed yet."""


@dataclass
class Summary:
    """One row of results: per-fold metrics and the summary over folds."""

    name: str
    per_fold: list[dict]
    summary: dict
    predictions: list[pd.DataFrame]  # each fold's test predictions (id, label, pred)

    def pct(self, key: str) -> float:
        return 100.0 * self.summary[key]


def _require_complete(name: str, runs) -> None:
    missing = [str(r.dir) for r in runs if not r.is_complete()]
    if missing:
        raise MissingResults(f"{name}: {len(missing)} run(s) missing, e.g. {missing[0]}. "
                             "Run the notebooks first (make report, or python -m emolib run).")


def _summarise(name: str, runs, classes) -> Summary:
    from .pipeline import collect

    _require_complete(name, runs)
    frames = [r.predictions() for r in runs]
    return Summary(name, [r.metrics("ua", "wa") for r in runs], collect(runs, list(classes), frames), frames)


def teacher_summary(kind: str, cfg: Config, folds: Sequence[int], classes) -> Summary:
    from .pipeline import teacher_run

    return _summarise(f"{kind} teacher", [teacher_run(kind, cfg, k) for k in folds], classes)


def student_summary(cfg: Config, folds: Sequence[int], classes, variant: str | None = None,
                    tau_linguistic: float | None = None, tau_prosodic: float | None = None,
                    has_transcripts: bool = True) -> Summary:
    from .pipeline import student_run

    changes = student_changes(variant, tau_linguistic, tau_prosodic)
    c = cfg.replace(changes) if changes else cfg
    return _summarise(f"student {c.distill.variant}", [student_run(c, k, has_transcripts) for k in folds], classes)


@dataclass
class Study:
    """What the report needs to know about the corpus, read from the data stage's result files
    (so the report never loads or regenerates the corpus)."""

    corpus: str
    classes: tuple[str, ...]
    folds: tuple[int, ...]
    has_transcripts: bool
    #: how the runs computed their floats (``machine.numerics_label`` of each distinct record): one entry
    #: when every run was made alike, several when the runs come from machines that compute differently
    numerics: tuple[str, ...] = ()


def discover(cfg: Config, folds: Sequence[int] | None = None) -> Study:
    """The corpus, classes and folds of the results for ``cfg`` (``folds``: a subset)."""
    from .pipeline import data_run

    first = data_run(cfg, folds[0] if folds else 1)
    if not first.is_complete():
        raise MissingResults(f"no data results for preset {cfg.preset!r} at {first.dir}: run the notebooks first "
                             "(make report, or python -m emolib run)")
    m = first.metrics("n_folds", "corpus", "classes", "has_transcripts")
    every = tuple(range(1, m["n_folds"] + 1))
    chosen = tuple(folds) if folds else every
    return Study(m["corpus"], tuple(m["classes"]), chosen, m["has_transcripts"],
                 run_numerics(cfg, chosen, m["has_transcripts"]))


def run_numerics(cfg: Config, folds: Sequence[int], has_transcripts: bool = True) -> tuple[str, ...]:
    """How the report's main runs computed (the data stage, both teachers, the full student and plain
    fine-tuning, every fold done so far): each distinct ``machine.numerics_label``, sorted. Runs that
    disagree are said at once, since their figures then depend on which machine made which run."""
    from .machine import numerics_label
    from .pipeline import data_run, student_run, teacher_run

    runs = [data_run(cfg, k) for k in folds] + [teacher_run(kind, cfg, k) for kind in ("prosodic", "linguistic")
                                                 for k in folds]
    for variant in ("full", "no_teachers"):
        changes = student_changes(variant, None, None)
        runs += [student_run(cfg.replace(changes) if changes else cfg, k, has_transcripts) for k in folds]
    records = [rec for r in runs if r.is_complete()
               for rec in (r.metrics().get("numerics"), *r.metrics().get("numerics_earlier", []))]
    labels = tuple(sorted({numerics_label(rec) for rec in records}))
    if len(labels) > 1:
        print(f"note: these results were computed in {len(labels)} ways ({'; '.join(labels)}): runs made on "
              "different kinds of CPU, or in native and portable mode, differ by float rounding (README, EMOLIB_NUMERICS)")
    return labels


# -- tables ------------------------------------------------------------------------------------------


def _fmt(mean: float, std: float | None = None) -> str:
    if np.isnan(mean):  # a row that cannot exist on the corpus (no transcripts: no linguistic teacher)
        return "-"
    return f"{mean:.2f}" if std is None or np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _ours(study: "Study", cfg: Config, source: str) -> "Summary | None":
    """Our result for a Table 2 source (``student:<variant>`` or ``teacher:<kind>``); None
    for the linguistic teacher on a corpus without transcripts."""
    kind, name = source.split(":")
    if kind == "teacher":
        if name == "linguistic" and not study.has_transcripts:
            return None
        return teacher_summary(name, cfg, study.folds, study.classes)
    return student_summary(cfg, study.folds, study.classes, variant=name, has_transcripts=study.has_transcripts)


#: Resamples of the paired bootstrap in Table 2 (Efron & Tibshirani 1993 ask for 1,000 or more for a
#: percentile interval). With 10,000 the ends moved by at most 0.11 UA (std 0.01 and 0.03) over
#: 10 bootstrap seeds, measured on the default report's full student against plain fine-tuning.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_CONFIDENCE = 0.95


def paired_bootstrap_of(a: Summary, b: Summary) -> dict:
    """:func:`emolib.metrics.paired_bootstrap` of ``UA(a) - UA(b)`` over the test utterances
    both were scored on, fold by fold (matched by utterance id; a mismatch is an error)."""
    return paired_bootstrap_frames(a.predictions, b.predictions, (a.name, b.name))


def paired_bootstrap_frames(a: Sequence[pd.DataFrame], b: Sequence[pd.DataFrame], names: tuple[str, str]) -> dict:
    """:func:`paired_bootstrap_of` on two models' per-fold prediction tables (id, label, pred)."""
    per_fold = []
    for k, (pa, pb) in enumerate(zip(a, b), start=1):
        for name, frame in zip(names, (pa, pb)):
            if not frame["id"].is_unique:
                raise ValueError(f"{name}: fold {k}'s predictions list an utterance more than once "
                                 f"(e.g. {frame['id'][frame['id'].duplicated()].iloc[0]!r})")
        joined = pa[["id", "label", "pred"]].merge(pb[["id", "label", "pred"]], on="id", suffixes=("", "_b"))
        if not len(joined) == len(pa) == len(pb):
            raise ValueError(f"{names[0]} and {names[1]}: fold {k}'s predictions are not of the same test "
                             f"utterances ({len(pa)} and {len(pb)} rows, {len(joined)} shared ids)")
        if (joined["label"] != joined["label_b"]).any():
            raise ValueError(f"{names[0]} and {names[1]}: fold {k}'s predictions give the same utterances "
                             f"different labels (e.g. {joined['id'][joined['label'] != joined['label_b']].iloc[0]!r})")
        per_fold.append((joined["label"].to_numpy(), joined["pred"].to_numpy(), joined["pred_b"].to_numpy()))
    if len(per_fold) != len(a) or len(per_fold) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} cover {len(a)} and {len(b)} folds")
    return paired_bootstrap(per_fold, n_resamples=BOOTSTRAP_RESAMPLES, confidence=BOOTSTRAP_CONFIDENCE)


def table2(cfg: Config, study: "Study") -> pd.DataFrame:
    """The eight rows of Table 2 with the paper's numbers and ours (NaN where a row cannot
    exist on the corpus, e.g. the linguistic teacher without transcripts).

    Every row is also compared with the full student fold by fold (the folds are shared, so
    the fold-to-fold spread, often larger than the differences between rows, cancels):
    ``UA diff mean`` / ``UA diff std`` of (row - full) over folds, and ``full higher`` = in
    how many folds the full student scored strictly higher; ``UA diff low`` / ``UA diff
    high``: the interval of that mean difference (``BOOTSTRAP_CONFIDENCE``) from a paired bootstrap over the test
    utterances (:func:`paired_bootstrap_of`), and ``p full not higher``: the share of
    resamples in which the full student was not ahead."""
    rows = []
    full = _ours(study, cfg, PAPER_TABLE2[0]["source"])
    for spec in PAPER_TABLE2:
        s = _ours(study, cfg, spec["source"])
        pct = (lambda key: s.pct(key)) if s is not None else (lambda key: float("nan"))
        paired = s is not None and spec is not PAPER_TABLE2[0]
        diff = paired_difference([100 * m["ua"] for m in s.per_fold], [100 * m["ua"] for m in full.per_fold]) \
            if paired else None
        boot = paired_bootstrap_of(full, s) if paired else None  # full - row: its p says "full ahead"
        rows.append({
            "row": spec["row"], "variant": spec["variant"], "paper WA": spec["wa"], "paper UA": spec["ua"],
            "UA mean": pct("ua_mean"), "UA std": pct("ua_std"), "WA mean": pct("wa_mean"),
            "WA std": pct("wa_std"), "UA pooled": pct("ua_pooled"), "WA pooled": pct("wa_pooled"),
            "UA diff mean": diff["mean"] if diff else float("nan"),
            "UA diff std": diff["std"] if diff else float("nan"),
            "full higher": diff["b_higher"] if diff else None, "folds": diff["n"] if diff else None,
            # of row - full, as the mean (0 - x, not -x: a zero difference prints as +0.00, not -0.00)
            "UA diff low": 0.0 - 100 * boot["high"] if boot else float("nan"),
            "UA diff high": 0.0 - 100 * boot["low"] if boot else float("nan"),
            "p full not higher": boot["p_not_higher"] if boot else float("nan"),
        })
    return pd.DataFrame(rows)


def table1(cfg: Config, study: "Study") -> pd.DataFrame:
    """The paper's Table 1 plus our rows, which name their corpus (never mixed with IEMOCAP rows)."""
    rows = [{"source": "paper Table 1", "ref": r["ref"], "method": r["method"], "backbone": r["backbone"],
             "inference input": r["modality"], "corpus": "IEMOCAP", "WA": r["wa"], "UA": r["ua"]} for r in PAPER_TABLE1]
    backbone = f"{cfg.student.backbone} (freeze={cfg.student.freeze})"
    ours = [("EmoDistill student (ours)", "student:full", backbone, "speech"),
            ("plain fine-tuning, no teachers (ours)", "student:no_teachers", backbone, "speech"),
            ("linguistic teacher (ours)", "teacher:linguistic", cfg.linguistic_teacher.model, "transcript"),
            ("prosodic teacher (ours)", "teacher:prosodic", "2D ResNet on eGeMAPS LLDs", "speech + openSMILE")]
    for method, source, bb, modality in ours:
        s = _ours(study, cfg, source)
        if s is None:
            continue
        rows.append({"source": "this re-implementation", "ref": "ours", "method": method, "backbone": bb,
                     "inference input": modality, "corpus": study.corpus,
                     "WA": round(s.pct("wa_mean"), 2), "UA": round(s.pct("ua_mean"), 2)})
    return pd.DataFrame(rows)


def teachers_vs_baselines(cfg: Config, study: "Study") -> pd.DataFrame:
    """Each teacher beside the logistic-regression probe of its channel (and, on the
    built-in corpus, the channel's Bayes ceiling from the corpus card)."""
    from .pipeline import data_run, read_channels

    folds, classes = study.folds, study.classes
    probe_runs = [data_run(cfg, k) for k in folds]
    missing = [str(r.dir) for r in probe_runs if not r.is_complete()]
    if missing:
        raise MissingResults(f"data probes missing, e.g. {missing[0]}")
    probes = [r.metrics("probes")["probes"] for r in probe_runs]
    ceilings = realised = None
    if study.corpus == "synth":
        from .corpora.synth import bayes_ceilings, corpus_ceilings

        ceilings = corpus_ceilings(cfg.data.synth)
        if all(r.path("channels.csv").is_file() for r in probe_runs):
            # the same closed forms at the shares of cues the test turns hold (a finite draw of the design)
            flags = pd.concat([read_channels(r) for r in probe_runs])
            realised = bayes_ceilings(float(flags["lexical_cue"].astype(bool).mean()),
                                      float(flags["vocal_cue"].astype(bool).mean()),
                                      label_noise=cfg.data.synth.label_noise)

    def stats(values):
        v = 100 * np.asarray(values, dtype=float)
        return _fmt(v.mean(), v.std(ddof=1) if len(v) > 1 else None)

    rows = []
    channels = [("voice", "prosodic teacher (2D ResNet on eGeMAPS LLDs)", "prosodic"),
                ("text", "linguistic teacher (fine-tuned on transcripts)", "linguistic"),
                ("both", None, None)]
    for channel, teacher_name, kind in channels:
        if channel not in probes[0]:
            continue
        ceiling = {"Bayes ceiling UA": "-" if ceilings is None else f"{100 * ceilings[channel]['UA']:.2f}"}
        if realised is not None:
            ceiling[REALISED_CEILING] = f"{100 * realised[channel]['UA']:.2f}"
        rows.append({"channel": channel, "model": "logistic regression probe",
                     "UA": stats([p[channel]["ua"] for p in probes]), "WA": stats([p[channel]["wa"] for p in probes]),
                     **ceiling})
        if kind is not None:
            s = teacher_summary(kind, cfg, folds, classes)
            rows.append({"channel": channel, "model": teacher_name,
                         "UA": _fmt(s.pct("ua_mean"), s.pct("ua_std")), "WA": _fmt(s.pct("wa_mean"), s.pct("wa_std")),
                         **ceiling})
    return pd.DataFrame(rows)


#: The column of :func:`teachers_vs_baselines` with the ceiling at the test turns' own shares of cues.
REALISED_CEILING = "ceiling at the test turns' cue shares"
#: Said under that table on the built-in corpus.
CEILING_NOTE = ("Bayes ceiling: the best UA any model of the channel can expect from the corpus design (its cue "
                "probabilities; corpora/synth.py, bayes_ceilings); the next column puts in the shares of turns with "
                "a lexical and a vocal cue that these test folds actually hold. A model can still pass it by chance, "
                "on the turns where its channel carries nothing: there the corpus's draw of sentences or voices may "
                "happen to favour a class that a probe picks up.")


#: The cells of the built-in corpus's design: which channels carry an utterance's label.
CHANNEL_CELLS = (("both cues", True, True), ("words only", True, False), ("voice only", False, True),
                 ("neither", False, False))
CHANNELS_NOTE = ("Accuracy (% of the cell's test utterances predicted correctly), pooled over folds; 'n' is the "
                 "cell's share of the test utterances. Where no channel carries the label ('neither') every model "
                 "can only guess (about 25 % with four classes). A model of one channel should be near chance on "
                 "the cell that only the other channel carries; well above chance, it reaches the other channel "
                 "by a side door (eGeMAPS includes MFCC 1-4 and spectral descriptors, which carry some of what "
                 "is said). 'all' is the accuracy over every test utterance, pooled; the last column is the UA of "
                 "each fold, its mean and standard deviation over folds, as in Table 2.")
#: The channel table's last column (see :func:`channel_breakdown`).
CHANNELS_UA = "UA (mean ± std over folds)"


ORACLE_ROW = "student, full EmoDistill, oracle teachers (upper bound)"
ORACLE_NOTE = ("Oracle teachers (built-in corpus only, `distill.teacher_targets=oracle`): the student of the row "
               "above trained on what a perfect teacher of each channel would pass on, the exact posterior given "
               "that channel as logits and a one-hot code of what it shows as embedding, from the generator's "
               "record of the cues. It bounds what any pair of teachers can add to this student.")


def channel_breakdown(cfg: Config, study: "Study") -> pd.DataFrame | None:
    """Accuracy of every model on each cell of (lexical cue, vocal cue), pooled over folds.

    Reads the ``channels.csv`` the data stage writes when the corpus records which channel
    carries each label (the built-in corpus); None for corpora that do not. It shows which
    channel each model uses: a linguistic teacher is right only where the words carry the
    label, a prosodic teacher where the voice does, and a student that learned from both
    should be right where either does."""
    from .pipeline import data_run, read_channels, student_run, teacher_run

    data_runs = [data_run(cfg, k) for k in study.folds]
    if not all(r.path("channels.csv").is_file() for r in data_runs):
        return None
    flags = pd.concat([read_channels(r) for r in data_runs]).set_index("id")
    probes = [r.predictions().set_index("id") for r in data_runs]
    models: list[tuple[str, list[pd.DataFrame]]] = []  # a model's predictions, one frame per fold
    for channel in ("text", "voice", "both"):
        if all(f"pred_{channel}" in p for p in probes):
            models.append((f"{channel} probe (logistic regression)",
                           [p[["label", f"pred_{channel}"]].rename(columns={f"pred_{channel}": "pred"})
                            for p in probes]))
    sources = [("linguistic teacher", "teacher:linguistic"), ("prosodic teacher", "teacher:prosodic"),
               ("student, plain fine-tuning (no teachers)", "student:no_teachers"),
               ("student, w/o prosodic teacher", "student:no_prosodic_teacher"),
               ("student, w/o linguistic teacher", "student:no_linguistic_teacher"),
               ("student, full EmoDistill", "student:full")]
    if study.corpus == "synth":  # only the built-in corpus's generator knows what a perfect teacher would say
        sources.append((ORACLE_ROW, "oracle:full"))
    for name, source in sources:
        kind, what = source.split(":")
        if kind == "teacher" and what == "linguistic" and not study.has_transcripts:
            continue
        targets = {"distill.teacher_targets": "oracle"} if kind == "oracle" else {}
        runs = ([teacher_run(what, cfg, k) for k in study.folds] if kind == "teacher" else
                [student_run(cfg.replace({"distill.variant": what, **targets}), k, study.has_transcripts)
                 for k in study.folds])
        _require_complete(name, runs)
        models.append((name, [r.predictions().set_index("id")[["label", "pred"]] for r in runs]))
    rows = []
    for name, per_fold in models:
        joined = pd.concat(per_fold).join(flags, how="inner")
        if len(joined) != len(flags):
            raise ValueError(f"{name}: predictions cover {len(joined)} of the {len(flags)} test utterances "
                             "that channels.csv lists")
        correct = joined["label"] == joined["pred"]
        row = {"model": name}
        for cell, lexical, vocal in CHANNEL_CELLS:
            inside = (joined["lexical_cue"] == lexical) & (joined["vocal_cue"] == vocal)
            row[cell] = 100 * correct[inside].mean() if inside.any() else float("nan")
        row["all"] = 100 * correct.mean()
        fold_ua = pd.Series([100 * unweighted_accuracy(f["label"], f["pred"]) for f in per_fold])
        row[CHANNELS_UA] = _fmt(float(fold_ua.mean()), float(fold_ua.std(ddof=1)))  # one fold: NaN, left out
        rows.append(row)
    frame = pd.DataFrame(rows)
    shares = {cell: 100 * ((flags["lexical_cue"] == lx) & (flags["vocal_cue"] == vc)).mean()
              for cell, lx, vc in CHANNEL_CELLS}
    return frame.rename(columns={cell: f"{cell} (n = {shares[cell]:.0f} %)" for cell, _, _ in CHANNEL_CELLS})


def markdown_table(frame: pd.DataFrame, caption: str, notes: Sequence[str] = ()) -> str:
    """A GitHub Markdown table with its caption above and notes below."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v).replace("|", r"\|")  # a bare | would split the cell

    cols = list(frame.columns)
    lines = [f"**{caption}**", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


_LATEX = str.maketrans({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#",
                        "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                        "±": r"$\pm$", "≤": r"$\leq$", "[": "{[}", "]": "{]}"})


def latex_table(frame: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    """A booktabs LaTeX table (no pandas Styler, so no jinja2 needed)."""
    def esc(v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "--"
        s = f"{v:.2f}" if isinstance(v, float) else str(v)
        return s.translate(_LATEX)  # one pass: the braces an escape adds are never escaped again

    cols = list(frame.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{esc(caption)}}}", f"\\label{{{label}}}",
             r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\",
             r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"\\par\\footnotesize {esc(n)}" for n in notes]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


#: Said under every table that gives a standard deviation (metrics.summarize_folds computes it).
STD_NOTE = "std: the sample standard deviation over folds (divided by n - 1)."


def write_table(frame: pd.DataFrame, stem: str, caption: str, label: str, notes: Sequence[str],
                prov: dict[str, Any], out_dir: Path | None = None) -> list[Path]:
    """``<stem>.md``, ``<stem>.tex`` and ``<stem>.json`` (provenance) in ``figures/``."""
    from .runs import atomic_write_json, atomic_write_text

    out_dir = out_dir or paths.figures_dir()
    stamp = f"commit {prov['commit']}, preset {prov['preset']}, corpus {prov['corpus']}, config {prov['config_hash']}"
    if prov.get("numerics"):
        stamp += f", numerics {' + '.join(prov['numerics'])}"
    notes = list(notes)
    if any("std" in str(text) for text in (caption, *frame.columns)):
        notes.append(STD_NOTE)
    notes.append(f"Generated from result files by emolib ({stamp}).")
    md = atomic_write_text(out_dir / f"{stem}.md", markdown_table(frame, caption, notes))
    tex = atomic_write_text(out_dir / f"{stem}.tex", latex_table(frame, caption, label, notes))
    # an empty cell (a reference that gives no WA) is null, not NaN, which strict JSON parsers (jq, JSON.parse) refuse
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    js = atomic_write_json(out_dir / f"{stem}.json", {**prov, "caption": caption, "rows": rows})
    return [md, tex, js]


#: The paired column of the printed Table 2 (see :func:`table2`).
TABLE2_PAIRED = "our UA minus full, per fold (mean ± std; full higher in)"
#: The bootstrap column beside it.
TABLE2_INTERVAL = (f"{100 * BOOTSTRAP_CONFIDENCE:.0f} % interval of that mean (paired bootstrap over test "
                   "utterances; p full not higher)")


def display_table2(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as printed: mean ± std per metric, pooled beside it, each row's paired
    difference from the full student and that difference's bootstrap interval."""
    def paired(row) -> str:
        if pd.isna(row["UA diff mean"]):
            return "-"
        spread = "" if pd.isna(row["UA diff std"]) else f" ± {row['UA diff std']:.2f}"
        return f"{row['UA diff mean']:+.2f}{spread} ({int(row['full higher'])} of {int(row['folds'])})"

    def interval(row) -> str:
        if pd.isna(row["UA diff low"]):
            return "-"
        shown = format_p(row["p full not higher"], BOOTSTRAP_RESAMPLES)
        return f"[{row['UA diff low']:+.2f}, {row['UA diff high']:+.2f}] ({shown})"

    return pd.DataFrame({
        "row": frame["row"], "variant": frame["variant"], "paper WA": frame["paper WA"], "paper UA": frame["paper UA"],
        "our WA (mean ± std)": [_fmt(m, s) for m, s in zip(frame["WA mean"], frame["WA std"])],
        "our UA (mean ± std)": [_fmt(m, s) for m, s in zip(frame["UA mean"], frame["UA std"])],
        "our WA pooled": frame["WA pooled"].round(2), "our UA pooled": frame["UA pooled"].round(2),
        TABLE2_PAIRED: [paired(row) for _, row in frame.iterrows()],
        TABLE2_INTERVAL: [interval(row) for _, row in frame.iterrows()],
    })


# -- Figure 2 ------------------------------------------------------------------------------------------


SWEEPS = (("prosodic", "no_linguistic_logit_kd", "tau_prosodic"),
          ("linguistic", "no_prosodic_logit_kd", "tau_linguistic"))


def with_sweep_grids(cfg: Config, taus_prosodic=None, taus_linguistic=None) -> Config:
    """``cfg`` with the sweep's grids replaced where given (the notebooks' ``taus_*`` parameters;
    None keeps ``sweep.taus_*``). Notebooks 03 and 05 both call it, so that a grid passed with
    ``-p`` to a run reaches the students trained and the figure drawn alike."""
    grids = {f"sweep.taus_{k}": tuple(float(t) for t in v)
             for k, v in (("prosodic", taus_prosodic), ("linguistic", taus_linguistic)) if v}
    return cfg.replace(grids) if grids else cfg


def temperature_sweep(cfg: Config, study: "Study") -> pd.DataFrame:
    """Long table: teacher swept, tau, fold, UA, WA (from the sweep's result files). The
    linguistic sweep needs transcripts; without them it is left out."""
    rows = []
    for teacher, variant, key in SWEEPS:
        if teacher == "linguistic" and not study.has_transcripts:
            continue
        for tau in getattr(cfg.sweep, f"taus_{teacher}"):
            s = student_summary(cfg, study.folds, study.classes, variant=variant,
                                has_transcripts=study.has_transcripts, **{key: tau})
            for k, m in zip(study.folds, s.per_fold):
                rows.append({"teacher": teacher, "tau": tau, "fold": k, "ua": 100 * m["ua"], "wa": 100 * m["wa"]})
    return pd.DataFrame(rows)


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """The numbers behind Fig. 2: for each teacher swept and each temperature, in the grid's order,
    UA and WA as mean ± standard deviation over folds (a single fold: its score alone)."""
    rows = []
    for (teacher, tau), part in sweep.groupby(["teacher", "tau"], sort=False):
        rows.append({"teacher swept": teacher, "temperature": f"{tau:g}",  # std of one fold: NaN, left out
                     **{f"{m.upper()} (mean ± std)": _fmt(float(part[m].mean()), float(part[m].std(ddof=1)))
                        for m in ("ua", "wa")}, "folds": len(part)})
    return pd.DataFrame(rows)


def plot_fig2(sweep: pd.DataFrame, cfg: Config):
    """Two panels as in the paper: accuracy vs tau_P (left) and vs tau_L (right); mean over
    folds with the standard deviation as a band; our default temperatures marked. A sweep of
    one fold (notebook 03) draws its curve alone, without a band, and names the fold."""
    import matplotlib.pyplot as plt

    from .plots import LINESTYLES, MARKERS, paper_style

    paper_style()
    teachers = [t for t in ("prosodic", "linguistic") if t in set(sweep["teacher"])]
    fig, axes = plt.subplots(1, len(teachers), figsize=(3.6 * len(teachers), 2.8), sharey=True, squeeze=False)
    axes = axes[0]
    chosen = {"prosodic": cfg.distill.tau_prosodic, "linguistic": cfg.distill.tau_linguistic}
    symbols = {"prosodic": r"prosodic temperature $\tau_P$", "linguistic": r"linguistic temperature $\tau_L$"}
    titles = {"prosodic": "linguistic logit KD removed", "linguistic": "prosodic logit KD removed"}
    # On a corpus with balanced test folds WA equals UA: one line, labelled as such.
    same = bool(np.allclose(sweep["ua"], sweep["wa"]))
    metrics = [("ua", "UA (= WA, balanced classes)" if same else "UA")] + ([] if same else [("wa", "WA")])
    folds = sorted(sweep["fold"].unique()) if "fold" in sweep else []
    over = "mean over folds" if len(folds) != 1 else f"fold {folds[0]}"
    for ax, teacher in zip(axes, teachers):
        part = sweep[sweep["teacher"] == teacher]
        for j, (metric, label) in enumerate(metrics):
            g = part.groupby("tau")[metric]
            mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
            ax.plot(mean.index, mean.values, LINESTYLES[j], marker=MARKERS[j], color="black" if j == 0 else "0.45",
                    label=f"{label}, {over}")
            if len(folds) != 1:
                ax.fill_between(mean.index, mean - std, mean + std, color="0.6" if j == 0 else "0.85", alpha=0.35,
                                lw=0, label="± 1 std over folds" if j == 0 else None)
        ax.axvline(chosen[teacher], color="0.3", ls=":", lw=1)
        ax.annotate("default", (chosen[teacher], ax.get_ylim()[0]), xytext=(3, 3), textcoords="offset points",
                    fontsize=7, color="0.3")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(part["tau"].unique()), [f"{t:g}" for t in sorted(part["tau"].unique())])
        ax.set_xlabel(symbols[teacher])
        ax.set_title(titles[teacher], fontsize=9)
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    return fig
