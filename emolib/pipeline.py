"""The stages of the report, one function each, every one reusing complete runs.

    prepare(cfg)                       corpus + folds + shared feature caches (run once, before parallel folds)
    train_teacher("prosodic", cfg, k)  T_P for fold k  -> runs/prosodic_teacher/...
    train_teacher("linguistic", cfg, k) T_L for fold k -> runs/linguistic_teacher/...
    train_student(cfg, k)              the student variant ``cfg.distill.variant`` for fold k

Data flows one way: a student reads the teachers' cached outputs
(``outputs.safetensors``), never the teachers themselves; nothing here regenerates
the corpus once it exists. Notebooks and the command line call these functions.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from . import paths, prosody
from .config import TEACHER_KINDS, TEACHER_TARGETS, Config, check_values, config_hash
from .corpora import Corpus, load_from_config
from .folds import Fold, get_fold, make_folds
from .metrics import classification_metrics
from .runs import COMPLETE_MARKER, ResultFileError, Run, atomic_path, check_metrics, fold_number


# -- data ------------------------------------------------------------------------------------


@dataclass
class Data:
    corpus: Corpus
    folds: list[Fold]

    def fold(self, index: int) -> Fold:
        return get_fold(self.folds, index)

    @functools.cached_property
    def corpus_record(self) -> dict[str, Any]:
        """What a run records of the corpus it was trained on (``corpus.json``): its name, size,
        fingerprint (ids, labels, speakers, transcripts, file names and sizes) and the digest of
        its audio files' bytes (``audio``, when it has audio: a file rewritten in place with as
        many bytes keeps the fingerprint)."""
        record = {"corpus": self.corpus.name, "utterances": len(self.corpus), "fingerprint": self.corpus.fingerprint()}
        audio = self.corpus.audio_digest()
        return record if audio is None else {**record, "audio": audio}


#: The model settings each stage's result depends on (a student's on its teachers' too).
STAGE_MODELS = {"prosodic": (), "linguistic": ("linguistic_teacher.model",), "probes": (),
                "student": ("student.backbone", "linguistic_teacher.model")}


def model_record(name: str) -> str | dict[str, Any] | None:
    """What a run records of the weights behind a model setting, the config naming only the
    model: a local folder's digest (a folder saved again under the same name is other weights);
    a packaged model's package version; a hub id's commit (``None`` when it cannot be resolved:
    offline with an empty Hugging Face cache). ``tiny-random`` (tests): None, its seed fixes it."""
    from importlib.metadata import version

    from .backbones import weights_identity
    from .cache import directory_digest
    from .teachers import MINILM_PACKAGE

    source = paths.model_source(name)  # a folder, or the name as it is
    if Path(source).is_dir():
        return directory_digest(source)
    if name == "tiny-random":
        return None
    if name == "minilm":
        return {"packaged": name, "version": version(MINILM_PACKAGE)}
    return weights_identity(name)  # a packaged Whisper: its package's version; a hub id: its commit


def run_record(data: Data, cfg: Config, stage: str) -> dict[str, Any]:
    """``corpus.json`` of a run: the corpus record, and what weights each model the stage reads
    had (:func:`model_record`), so that a run is never reused with other weights and a run copied
    from a GPU server says which hub commit it was trained from."""
    models = {}
    for name in STAGE_MODELS[stage]:
        if name == "linguistic_teacher.model" and not data.corpus.has_transcripts:
            continue  # no linguistic teacher on such a corpus
        section, field_name = name.split(".")
        record = model_record(getattr(getattr(cfg, section), field_name))
        if record is not None:
            models[name] = record
    return {**data.corpus_record, "models": models}


@functools.lru_cache(maxsize=4)
def _load_data(data_cfg_json: str, stamp: tuple[int, int] | None = None) -> Data:
    import json

    from .config import DataConfig, SynthConfig

    d = json.loads(data_cfg_json)
    d["synth"] = SynthConfig(**d["synth"])
    data_cfg = DataConfig(**d)
    corpus = load_from_config(data_cfg)
    present = sorted({u.label for u in corpus})
    if len(present) < 2:  # it trained, and scored UA 100 on every fold
        from .corpora import CorpusError

        raise CorpusError(f"{corpus.name}: every utterance is labelled {present[0]!r} (after the skips above, if "
                          f"any); a classifier needs at least two classes (data.labels={data_cfg.labels!r})")
    folds = make_folds(corpus, data_cfg.protocol, data_cfg.n_folds, data_cfg.validation_speakers)
    return Data(corpus, folds)


def load_data(cfg: Config) -> Data:
    """The corpus and its folds for ``cfg.data`` (memoised within a process; a manifest file
    edited since, e.g. in the same JupyterLab kernel, is loaded again)."""
    import dataclasses
    import json

    check_values(cfg)  # a config changed in Python, not through overrides (which check it already)
    return _load_data(json.dumps(dataclasses.asdict(cfg.data), sort_keys=True), _manifest_stamp(cfg.data.corpus))


def _manifest_stamp(spec: str) -> tuple[int, int] | None:
    """A manifest file's modification time and size (None for any other corpus spec)."""
    path = Path(str(spec)).expanduser()
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        return None
    try:
        st = path.stat()
    except OSError:
        return None  # the loader names the missing file
    return st.st_mtime_ns, st.st_size


def audio_items(corpus: Corpus, ids=None) -> list[tuple[str, Any]]:
    table = corpus.by_id()
    chosen = [table[i] for i in ids] if ids is not None else corpus.utterances
    return [(u.id, u.path) for u in chosen]


class Prepared(NamedTuple):
    folds: list[int]  # the fold numbers
    corpus: str  # the corpus fingerprint (Corpus.fingerprint), with the digests of local model folders when the
    # config names any: the driver re-runs notebooks when it changes
    audio: str = ""  # the digest of the corpus's audio bytes (Corpus.audio_digest; empty without audio): likewise


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    """Build the corpus and fill the feature caches every fold shares; return the fold numbers
    and the corpus fingerprint.

    The run driver calls this once before executing notebooks (in parallel processes),
    so that folds never race to extract the same features."""
    data = load_data(cfg)
    if data.corpus.has_audio:
        for level in ("lld", "functionals"):
            prosody.features(audio_items(data.corpus), level, cfg.data.max_seconds, progress=progress)
        from . import student

        if student.uses_cached_inputs(cfg):
            student.cached_inputs(cfg, data.corpus, progress=progress)
    models = run_record(data, cfg, "student")["models"]  # every model any stage reads
    fingerprint = data.corpus_record["fingerprint"]
    return Prepared([f.index for f in data.folds], config_hash([fingerprint, models]) if models else fingerprint,
                    data.corpus_record.get("audio", ""))


# -- teachers --------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-")[-40:]


def teacher_run(kind: str, cfg: Config, fold: int, without: int | None = None) -> Run:
    """The teacher of ``fold``; with ``without=g``, the cross-fitting teacher of that fold trained
    without the training speakers of group ``g`` (see :func:`cross_fit_folds`)."""
    if kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; choose one of {TEACHER_KINDS}")
    label = "resnet" if kind == "prosodic" else _slug(cfg.linguistic_teacher.model)
    if without is not None:
        label += f"-xfit{without}of{CROSS_FIT_GROUPS}"
    return Run(f"{kind}_teacher", cfg, fold, label=label)


#: Groups of training speakers for ``distill.teacher_targets = "cross_fit"``: each group's logit
#: targets come from a teacher trained on the other groups (3: each extra teacher sees two thirds
#: of the training speakers, the usual cost/bias trade-off of 3-5 folds for out-of-fold predictions).
CROSS_FIT_GROUPS = 3
#: Oracle logits are log posteriors; a class the channel rules out gets this probability, not 0
#: (which has no finite logit): a margin of ln(1e4) = 9.2 nats, softmax-exact to 4 decimals at tau 1.
ORACLE_FLOOR = 1e-4


def cross_fit_folds(corpus: Corpus, fold: Fold) -> list[Fold]:
    """Split a fold's training speakers into :data:`CROSS_FIT_GROUPS` groups (sorted, dealt
    round-robin) and return one fold per group: trained on the other groups' speakers, selected
    on the fold's own validation speakers, and "tested" on the group's training utterances (whose
    outputs become the student's logit targets). The fold's test speakers are in none of them."""
    import dataclasses

    speakers = sorted(fold.train_speakers)
    if len(speakers) < 2:
        raise ValueError(f"fold {fold.index}: cross-fitted teacher targets need at least 2 training speakers, "
                         f"found {speakers}")
    speaker_of = {u.id: u.speaker for u in corpus}
    out = []
    for g in range(min(CROSS_FIT_GROUPS, len(speakers))):
        held = tuple(speakers[g::CROSS_FIT_GROUPS])
        out.append(dataclasses.replace(
            fold, test_groups=held, test_speakers=held,
            train_speakers=tuple(s for s in speakers if s not in held),
            train_ids=tuple(i for i in fold.train_ids if speaker_of[i] not in held),
            test_ids=tuple(i for i in fold.train_ids if speaker_of[i] in held)))
    return out


def check_teacher_input(kind: str, corpus: Corpus) -> None:
    """Refuse, with the reason, a corpus a teacher cannot learn from."""
    if kind == "linguistic" and not corpus.has_transcripts:
        why = corpus.why_no_transcripts or "it has no transcripts."
        raise ValueError(f"the linguistic teacher cannot be trained on corpus {corpus.name!r}: {why}")
    if kind == "prosodic" and not corpus.has_audio:
        raise ValueError(f"the prosodic teacher needs audio, and corpus {corpus.name!r} is text-only "
                         "(a manifest without a 'path' column)")


def _prediction_frame(corpus: Corpus, ids, logits: np.ndarray) -> pd.DataFrame:
    table = corpus.by_id()
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    pred = logits.argmax(-1)
    frame = pd.DataFrame({
        "id": list(ids),
        "speaker": [table[i].speaker for i in ids],
        "session": [table[i].session for i in ids],
        "label": [table[i].label for i in ids],
        "pred": [corpus.classes[p] for p in pred],
    })
    for c, name in enumerate(corpus.classes):
        frame[f"p_{name}"] = probs[:, c].round(6)
    return frame


def save_outputs(run: Run, ids, outputs: dict[str, np.ndarray]) -> None:
    """Logits and embeddings of every utterance of the fold, beside the run's result files."""
    import json

    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in outputs.items() if k != "labels"}
    with atomic_path(run.path("outputs.safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(list(ids))})


def load_outputs(run: Run, needed=None, num_classes: int | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """The utterance ids and the ``logits`` and ``embedding`` (a row per id) a teacher saved.
    :class:`ResultFileError` naming the file when it cannot be read, lacks one of them, has rows
    for other ids than it lists, no row for an utterance of ``needed``, or logits of another
    width than ``num_classes`` (a hand edit, a bad copy: the student would fail in its loss)."""
    import json

    from safetensors import safe_open

    path = run.path("outputs.safetensors")
    if not path.is_file():
        # re-running a complete teacher reuses it and writes no outputs: only deleting the run trains it again
        todo = f"delete {run.dir} to train that teacher again" if run.is_complete() else "train that teacher first"
        raise ResultFileError(f"{path}: the teacher's cached outputs are missing; {todo}")
    try:
        with safe_open(str(path), framework="np") as f:
            ids = json.loads(f.metadata()["ids"])
            outputs = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged header or body
        raise ResultFileError(f"{path}: the teacher's cached outputs are damaged ({type(exc).__name__}: {exc}); "
                              f"delete {run.dir} to train that teacher again") from exc
    problem = _outputs_problem(ids, outputs, needed, num_classes)
    if problem:
        raise ResultFileError(f"{path}: the teacher's cached outputs {problem}; delete {run.dir} to train that "
                              "teacher again")
    return ids, outputs


def _outputs_problem(ids, outputs: dict[str, np.ndarray], needed, num_classes: int | None) -> str | None:
    """What is wrong with a teacher's saved outputs (see :func:`load_outputs`), in words; None when nothing is."""
    if not isinstance(ids, list) or not all(isinstance(u, str) for u in ids):
        return "list no utterance ids"
    missing = [k for k in ("logits", "embedding") if k not in outputs]
    if missing:
        return f"have no tensor {', '.join(missing)}"
    for k in ("logits", "embedding"):
        if outputs[k].ndim != 2 or len(outputs[k]) != len(ids):
            return f"have {k} of shape {tuple(outputs[k].shape)} for {len(ids)} utterance ids"
    if needed is not None:
        known = set(ids)
        absent = [u for u in needed if u not in known]
        if absent:
            return f"have no row for {len(absent)} of the {len(needed)} utterances needed (e.g. {absent[0]!r})"
    if num_classes is not None and outputs["logits"].shape[1] != num_classes:
        return f"have logits {outputs['logits'].shape[1]} wide for the corpus's {num_classes} classes"
    return None


def _prosodic_datasets(cfg: Config, data: Data, fold: Fold):
    from .teachers import LLDDataset

    t = cfg.prosodic_teacher
    feats = prosody.features(audio_items(data.corpus), "lld", cfg.data.max_seconds)
    if t.normalise == "speaker":
        normaliser = prosody.speaker_normalisers(feats, {u.id: u.speaker for u in data.corpus})
    else:
        normaliser = prosody.Normaliser.fit(prosody.Selection(feats, fold.train_ids), voiced_only=prosody.VOICED_ONLY)
    ready, counts = prosody.prepare_lld(feats, normaliser)  # held, or for a large corpus computed when read
    labels = dict(zip(data.corpus.ids, data.corpus.labels()))

    def make(ids, crop):  # crop=None: evaluation (whole utterances, no masking)
        augment = dict(time_masks=t.time_masks, time_mask_frames=t.time_mask_frames,
                       descriptor_mask=t.descriptor_mask) if crop else {}
        return LLDDataset(prosody.Selection(ready, ids), [labels[i] for i in ids], crop_frames=crop, seed=cfg.training.seed,
                          **augment)

    return make, counts


def train_teacher(kind: str, cfg: Config, fold: int, data: Data | None = None, verbose: bool = True,
                  without: int | None = None) -> Run:
    """Fine-tune one teacher on one fold's training speakers (reusing a complete run).

    Writes ``best.safetensors``, ``history.csv``, ``predictions.csv`` (test speakers),
    ``outputs.safetensors`` (logits and embedding of every utterance, for the
    students) and ``metrics.json``. With ``without=g``: the cross-fitting teacher trained
    without group ``g`` of the training speakers, "tested" on that group
    (:func:`cross_fit_folds`)."""
    from .teachers import (LinguisticTeacher, ProsodicResNet, TextDataset, collate_lld, cross_entropy_loss,
                           load_text_encoder, make_text_collate)
    from .train import fit, predict, setup

    data = data or load_data(cfg)
    check_teacher_input(kind, data.corpus)
    run = teacher_run(kind, cfg, fold, without)
    name = f"{kind} teacher fold {fold}" + ("" if without is None else f" without group {without}")
    # start() waits while another process trains this run, and leaves it alone if that completed it
    record = run_record(data, cfg, kind)
    if run.is_complete() or run.start(record).is_complete():
        run.reuse(record)
        if verbose:
            print(f"{name}: reusing {run.dir}", flush=True)
        return run
    with run.releasing_on_error():
        f = data.fold(fold) if without is None else cross_fit_folds(data.corpus, data.fold(fold))[without]
        device = setup(cfg.training)
        n_classes = len(data.corpus.classes)
        extra: dict[str, Any] = {}
        if kind == "prosodic":
            tcfg = cfg.prosodic_teacher
            make, counts = _prosodic_datasets(cfg, data, f)
            extra["feature_repairs"] = counts
            model = ProsodicResNet(len(prosody.LLD_NAMES), n_classes, tcfg)
            train_set = make(f.train_ids, tcfg.crop_frames)
            datasets = {s: make(ids, None) for s, ids in (("val", f.val_ids), ("all", data.corpus.ids))}
            collate = collate_lld
        else:
            tcfg = cfg.linguistic_teacher
            tokenizer, encoder = load_text_encoder(tcfg.model, seed=cfg.training.seed)
            model = LinguisticTeacher(encoder, n_classes, tcfg)
            table = data.corpus.by_id()
            labels = dict(zip(data.corpus.ids, data.corpus.labels()))

            def make(ids):
                return TextDataset([table[i].text or "" for i in ids], [labels[i] for i in ids], tokenizer,
                                   tcfg.max_tokens)

            train_set = make(f.train_ids)
            datasets = {"val": make(f.val_ids), "all": make(data.corpus.ids)}
            collate = make_text_collate(tokenizer.pad_token_id)
        result = fit(model, train_set, datasets["val"] if f.val_ids else None,
                     cross_entropy_loss(tcfg.optim.label_smoothing), tcfg.optim, cfg.training, collate=collate, run=run,
                     desc=name, device=device)
        # fp32 whatever the training precision: these are the students' targets, kept for good
        # (under bf16 autocast a logit near 10 would be rounded to a step of 0.06)
        out = predict(model, datasets["all"], collate, tcfg.optim.batch_size, device, "fp32")
        save_outputs(run, data.corpus.ids, out)
        position = {uid: i for i, uid in enumerate(data.corpus.ids)}
        test_rows = [position[i] for i in f.test_ids]
        test_logits = out["logits"][test_rows]
        y_true = data.corpus.labels(f.test_ids)
        metrics = classification_metrics(y_true, test_logits.argmax(-1), data.corpus.classes)
        metrics.update({"stage": f"{kind}_teacher", "fold": fold, "best_epoch": result.best_epoch,
                        "best_val_ua": result.best_val_ua, "epochs_run": len(result.history),
                        "stopped_early": result.stopped_early, "train_seconds": result.seconds,
                        "threads": result.threads, "n_parameters": sum(p.numel() for p in model.parameters()),
                        "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                        "embedding_dim": int(out["embedding"].shape[1]), "corpus": data.corpus.name,
                        "without_group": without, "test_speakers": list(f.test_speakers), **extra})
        run.finish(metrics, _prediction_frame(data.corpus, f.test_ids, test_logits))
    if verbose:
        print(f"{name}: test UA {100 * metrics['ua']:.2f} WA {100 * metrics['wa']:.2f} "
              f"macro-F1 {100 * metrics['macro_f1']:.2f} (best epoch {result.best_epoch}, "
              f"{result.seconds:.1f} s)", flush=True)
    return run


def collect(runs: list[Run], classes, frames: list | None = None) -> dict:
    """Per-fold metrics and the summary over folds (mean, std, pooled) of complete runs
    (``frames``: their predictions, when the caller has read them already)."""
    from .metrics import summarize_folds

    frames = [run.predictions() for run in runs] if frames is None else frames
    index = {c: k for k, c in enumerate(classes)}

    def codes(p, column: str, where) -> list[int]:
        unknown = [x for x in dict.fromkeys(p[column]) if x not in index]
        if unknown:
            raise ResultFileError(f"{where}: {column} {', '.join(map(repr, unknown[:3]))} "
                                  f"{'is' if len(unknown) == 1 else 'are'} not among the classes "
                                  f"({', '.join(classes)}): the run belongs to another corpus or its file is damaged")
        return [index[x] for x in p[column]]

    pairs = []
    for i, p in enumerate(frames):
        where = runs[i].dir / "predictions.csv" if i < len(runs) else f"predictions of run {i + 1}"
        pairs.append((codes(p, "label", where), codes(p, "pred", where)))
    return summarize_folds(pairs, classes)


# -- students --------------------------------------------------------------------------------


def _variant(cfg: Config, has_transcripts: bool):
    """The variant's terms; on a corpus without transcripts, minus the linguistic teacher's."""
    import dataclasses

    from .losses import get_variant

    variant = get_variant(cfg.distill.variant)
    if not has_transcripts:
        variant = dataclasses.replace(variant, logit_linguistic=False, embedding_linguistic=False)
    return variant


def effective_variant(cfg: Config, corpus: Corpus):
    """The variant's terms on this corpus, and the line that says when the linguistic
    teacher's were switched off (no transcripts), else None."""
    from .losses import get_variant

    if not corpus.has_transcripts and get_variant(cfg.distill.variant).needs_linguistic_teacher:
        return _variant(cfg, False), (
            f"corpus {corpus.name!r} has no usable transcripts: the linguistic teacher's terms are switched off")
    return _variant(cfg, True), None


def canonical_student_config(cfg: Config, has_transcripts: bool = True) -> Config:
    """Temperatures a variant does not use are set to 0 and coefficients of terms it does not
    have to 1 (cross-fitting off without logit targets, oracle teachers off without any teacher
    term), so that e.g. ``no_teachers`` is one run whatever the temperatures (no duplicated
    training in the sweep) or the KD coefficients; a frozen backbone
    ignores its learning-rate scale and its regularisation. On a corpus without transcripts the linguistic teacher's
    terms count as unused too."""
    variant = _variant(cfg, has_transcripts)
    changes = {}
    if not variant.logit_linguistic:
        changes["distill.tau_linguistic"] = 0.0
    if not variant.logit_prosodic:
        changes["distill.tau_prosodic"] = 0.0
    logits = variant.logit_linguistic or variant.logit_prosodic
    if not logits:
        changes["distill.beta"] = 1.0  # a coefficient of no term: the run is the same whatever its value
    if not (variant.embedding_linguistic or variant.embedding_prosodic):
        changes["distill.gamma"] = 1.0
    if (cfg.distill.teacher_targets == "cross_fit" and not logits) or (
            cfg.distill.teacher_targets == "oracle" and not (logits or variant.embedding_linguistic
                                                             or variant.embedding_prosodic)):
        changes["distill.teacher_targets"] = "in_sample"  # no target of that kind: nothing to replace
    if cfg.student.freeze == "all":  # no backbone weight learns: the same run without its rate and regularisation
        unused = {"student.backbone_lr_scale": 1.0, "student.layerdrop": -1.0, "student.activation_dropout": -1.0,
                  "student.spec_augment": True}
        changes.update({name: value for name, value in unused.items()
                        if getattr(cfg.student, name.split(".")[1]) != value})
    return cfg.replace(changes) if changes else cfg


def student_run(cfg: Config, fold: int, has_transcripts: bool = True) -> Run:
    cfg = canonical_student_config(cfg, has_transcripts)
    d = cfg.distill
    suffix = {"cross_fit": "-xfit", "oracle": "-oracle"}.get(d.teacher_targets, "")
    # Eq. 5's coefficients when not 1 (full-tl4-tp1-a0: the teachers alone), so that a run's name tells it apart
    weights = "".join(f"-{k}{v:g}" for k, v in (("a", d.alpha), ("b", d.beta), ("g", d.gamma)) if v != 1.0)
    return Run("student", cfg, fold, label=f"{d.variant}-tl{d.tau_linguistic:g}-tp{d.tau_prosodic:g}{weights}{suffix}")


def head_widths(cfg: Config, data: Data) -> tuple[int, int]:
    """The widths of the student's linguistic and prosodic embeddings: each teacher's. On a corpus
    without transcripts no variant uses the linguistic one, so it takes the prosodic width and no
    text model (perhaps a hub id) is looked up."""
    prosodic = cfg.prosodic_teacher.embedding_dim
    return (text_embedding_dim(cfg) if data.corpus.has_transcripts else prosodic), prosodic


def text_embedding_dim(cfg: Config) -> int:
    """Width of the linguistic teacher's embedding, without loading its weights."""
    name = cfg.linguistic_teacher.model
    from .teachers import TINY_TEXT_WIDTH, packaged_minilm_path

    if name == "tiny-random":
        return TINY_TEXT_WIDTH
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(packaged_minilm_path() if name == "minilm" else paths.model_source(name)).hidden_size


def cross_fitted_logits(kind: str, cfg: Config, fold: int, data: Data, verbose: bool = True) -> dict[str, np.ndarray]:
    """Logits for every training utterance of ``fold`` from the teacher that did not see its speakers."""
    out: dict[str, np.ndarray] = {}
    for g, inner in enumerate(cross_fit_folds(data.corpus, data.fold(fold))):
        ids, outputs = load_outputs(train_teacher(kind, cfg, fold, data, verbose=verbose, without=g), inner.test_ids,
                                    len(data.corpus.classes))
        pos = {uid: i for i, uid in enumerate(ids)}
        out.update({u: outputs["logits"][pos[u]] for u in inner.test_ids})
    return out


def oracle_available(cfg: Config, corpus: Corpus) -> bool:
    """Whether ``distill.teacher_targets=oracle`` can run: only the built-in corpus records
    which channel carries each label."""
    return corpus.name == "synth" and cfg.data.corpus == "synth"


def oracle_targets(kind: str, cfg: Config, corpus: Corpus, ids, dim: int) -> dict[str, dict[str, np.ndarray]]:
    """Perfect teachers of one channel, for the built-in corpus only (it records which channel
    carries each label, and its design gives the exact posteriors): logits are the log posterior
    given what the channel shows, embeddings a one-hot code of it in the teacher's width
    (see ``corpora.synth.oracle_channels``). An upper bound for distillation, never a result."""
    from .corpora.synth import oracle_channels

    if not oracle_available(cfg, corpus):
        raise ValueError(f"distill.teacher_targets='oracle' needs the built-in corpus 'synth', whose generator "
                         f"knows which channel carries each label; corpus {corpus.name!r} does not")
    synth = cfg.data.synth
    table = corpus.by_id()
    label_of = dict(zip(corpus.ids, corpus.labels()))
    logits, embedding = {}, {}
    for uid in ids:
        meta = table[uid].meta
        missing = [flag for flag in CHANNEL_FLAGS if flag not in meta]
        if missing:
            raise ValueError(f"{table[uid].path}: utterance {uid} does not record {', '.join(missing)}; "
                             f"regenerate the corpus")
        expressed = corpus.label_index(meta["expressed"]) if "expressed" in meta else label_of[uid]
        posterior, code = oracle_channels(expressed, bool(meta["lexical_cue"]), bool(meta["vocal_cue"]),
                                          synth.p_lexical_cue, synth.p_vocal_cue, corpus.classes,
                                          label_noise=synth.label_noise)[kind]
        if code >= dim:
            raise ValueError(f"the {kind} teacher's embedding has {dim} dimensions, too few for the oracle's "
                             f"one-hot codes (it needs {code + 1})")
        logits[uid] = np.log(np.maximum(posterior, ORACLE_FLOOR)).astype(np.float32)
        embedding[uid] = np.zeros(dim, dtype=np.float32)
        embedding[uid][code] = 1.0
    return {"logits": logits, "embedding": embedding}


def check_student_settings(cfg: Config, variant) -> None:
    """A ValueError saying why, for settings no student can train with (``variant``: the
    effective one, :func:`effective_variant`); checked before anything trains."""
    if cfg.distill.teacher_targets not in TEACHER_TARGETS:
        raise ValueError(f"distill.teacher_targets={cfg.distill.teacher_targets!r}; choose one of {TEACHER_TARGETS}")
    check_values(cfg)  # coefficients >= 0, temperatures >= 0, ...
    d = cfg.distill
    for kind in ("linguistic", "prosodic"):
        tau = getattr(d, f"tau_{kind}")
        if getattr(variant, f"logit_{kind}") and not tau > 0:
            raise ValueError(f"config distill.tau_{kind}: {tau!r} (variant {d.variant!r} distils the {kind} "
                             "teacher's logits: its temperature must be a number > 0)")
    weights = {"ce": d.alpha, "logit_linguistic": d.beta, "logit_prosodic": d.beta, "embedding_linguistic": d.gamma,
               "embedding_prosodic": d.gamma}
    if not any(weights[term] for term in variant.enabled()):
        raise ValueError(f"variant {d.variant!r} trains with {', '.join(variant.enabled())}, and every one of them "
                         f"has coefficient 0 (distill.alpha={d.alpha}, beta={d.beta}, gamma={d.gamma}): the loss is "
                         "0, so nothing would learn")


def train_student(cfg: Config, fold: int, data: Data | None = None, verbose: bool = True) -> Run:
    """Distil the variant ``cfg.distill.variant`` into a student for one fold.

    Trains (or reuses) the teachers the variant needs, reads their cached outputs,
    trains the student on the shared loop and writes its result files."""
    from . import student as st
    from .losses import distillation_loss
    from .train import fit, predict, setup

    data = data or load_data(cfg)
    variant, note = effective_variant(cfg, data.corpus)
    check_student_settings(cfg, variant)
    cfg = canonical_student_config(cfg, data.corpus.has_transcripts)
    if note and verbose:
        print(note, flush=True)
    run = student_run(cfg, fold, data.corpus.has_transcripts)
    # the run's label names the variant, its temperatures, coefficients and targets (full-tl4-tp1-oracle): log lines of
    # a sweep or of the oracle run say which run they belong to
    name = f"student {run.name.rsplit('-', 1)[0]} fold {fold}"
    record = run_record(data, cfg, "student")
    if run.is_complete():
        run.reuse(record)
        if verbose:
            print(f"{name}: reusing {run.dir}", flush=True)
        return run
    if not data.corpus.has_audio:
        raise ValueError(f"the student needs audio, and corpus {data.corpus.name!r} is text-only")
    f = data.fold(fold)

    teacher: dict[str, dict[str, np.ndarray]] = {}
    for kind, needed in (("linguistic", variant.needs_linguistic_teacher), ("prosodic", variant.needs_prosodic_teacher)):
        if not needed:
            continue
        if cfg.distill.teacher_targets == "oracle":  # no teacher is trained: see oracle_targets
            dim = text_embedding_dim(cfg) if kind == "linguistic" else cfg.prosodic_teacher.embedding_dim
            targets = oracle_targets(kind, cfg, data.corpus, f.train_ids, dim)
        else:
            ids, outputs = load_outputs(train_teacher(kind, cfg, fold, data, verbose=verbose), f.train_ids,
                                        len(data.corpus.classes))
            targets = {name: {u: outputs[name][i] for i, u in enumerate(ids)} for name in ("logits", "embedding")}
        if getattr(variant, f"logit_{kind}"):
            teacher[f"teacher_logits_{kind}"] = targets["logits"]
            if cfg.distill.teacher_targets == "cross_fit":
                teacher[f"teacher_logits_{kind}"].update(cross_fitted_logits(kind, cfg, fold, data, verbose))
        if getattr(variant, f"embedding_{kind}"):
            teacher[f"teacher_embedding_{kind}"] = targets["embedding"]
    if run.start(record).is_complete():  # another process trained it while this one waited
        run.reuse(record)
        if verbose:
            print(f"{name}: reusing {run.dir}", flush=True)
        return run
    with run.releasing_on_error():
        device = setup(cfg.training)
        s = cfg.student
        labels = dict(zip(data.corpus.ids, data.corpus.labels()))
        paths_by_id = {u.id: u.path for u in data.corpus}
        mode = st.input_mode(cfg)

        def learning_backbone():  # part of the backbone learns
            from .backbones import load_backbone

            # what learns runs under the training precision (bf16 autocast on a GPU server); fit() moves it
            backbone = load_backbone(s.backbone, freeze=s.freeze, max_seconds=s.max_seconds,
                                     precision=cfg.training.precision)
            backbone.regularise(s.layerdrop, s.activation_dropout, s.spec_augment)
            return backbone

        # top:K: loaded before the cache, as it tells the cached layer (loaded once); feature_encoder: after,
        # so that it is not in memory beside the copy a cold cache loads to extract
        backbone = learning_backbone() if mode == "frames" else None
        inputs = (st.cached_inputs(cfg, data.corpus, progress=verbose, backbone=backbone)
                  if st.uses_cached_inputs(cfg) else {})
        if mode in ("features", "waveform"):
            backbone = learning_backbone()
        if mode == "pooled":  # the frozen backbone's work is all in the cache
            index = None
            num_states, hidden = next(iter(inputs["pooled"].values())).shape
        else:
            num_states = backbone.num_hidden_states
            hidden = st.pooled_width(backbone, s.pooling)
            index = inputs.get("index")
        model = st.EmoDistillStudent(num_states, hidden, len(data.corpus.classes), *head_widths(cfg, data), s,
                                     backbone=backbone, input_index=index)

        def make(ids, with_teacher=True):
            return st.StudentDataset(ids, [labels[i] for i in ids], inputs, teacher if with_teacher else {}, mode,
                                     paths_by_id, s.max_seconds)

        collate = st.make_collate(mode, backbone)
        d = cfg.distill

        def loss_fn(model, batch):
            return distillation_loss(model(batch), batch, variant, d.tau_linguistic, d.tau_prosodic, d.alpha, d.beta,
                                     d.gamma, s.optim.label_smoothing)

        result = fit(model, make(f.train_ids), make(f.val_ids, with_teacher=False) if f.val_ids else None, loss_fn,
                     s.optim, cfg.training, collate=collate, run=run, desc=name,
                     device=device, lr_scales={"backbone.": s.backbone_lr_scale} if backbone is not None else None)
        out = predict(model, make(f.test_ids, with_teacher=False), collate, s.optim.batch_size, device,
                      cfg.training.precision)
        y_true = data.corpus.labels(f.test_ids)
        metrics = classification_metrics(y_true, out["logits"].argmax(-1), data.corpus.classes)
        weights = model.layer_weights()
        metrics.update({"stage": "student", "variant": d.variant, "terms": list(variant.enabled()),
                        "teacher_targets": d.teacher_targets,
                        "tau_linguistic": d.tau_linguistic, "tau_prosodic": d.tau_prosodic, "fold": fold,
                        "best_epoch": result.best_epoch, "best_val_ua": result.best_val_ua,
                        "epochs_run": len(result.history), "stopped_early": result.stopped_early,
                        "train_seconds": result.seconds, "threads": result.threads, "corpus": data.corpus.name,
                        "note": note,
                        "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                        "layer_weights": weights})
        run.finish(metrics, _prediction_frame(data.corpus, f.test_ids, out["logits"]))
    if verbose:
        print(f"{name}: test UA {100 * metrics['ua']:.2f} WA {100 * metrics['wa']:.2f} "
              f"(best epoch {result.best_epoch}, {result.seconds:.1f} s)", flush=True)
    return run


# -- inference: audio in, emotion out -------------------------------------------------------


def trained_student(cfg: Config, fold: int, has_transcripts: bool | None = None) -> Run:
    """The run of ``cfg``'s student for ``fold``. Whether the corpus has transcripts decides the
    run (without them the linguistic terms are off); when it is not given (``None``), the
    corpus is not read: the complete one of the two candidates is returned, else the first."""
    candidates = [student_run(cfg, fold, has) for has in ((True, False) if has_transcripts is None
                                                          else (has_transcripts,))]
    return next((run for run in candidates if run.is_complete()), candidates[0])


def complete_fold_dirs(parent: str | Path) -> list[Path]:
    """The complete ``fold<k>`` folders of a run folder, by fold number."""
    dirs = [d for d in Path(parent).glob("fold*") if fold_number(d) is not None and (d / COMPLETE_MARKER).is_file()]
    return sorted(dirs, key=fold_number)


def trained_folds(cfg: Config) -> list[int]:
    """The folds whose student of ``cfg`` is complete, read from the run folders alone."""
    for has in (True, False):
        folds = [fold_number(d) for d in complete_fold_dirs(student_run(cfg, 1, has).dir.parent)]
        if folds:
            return folds
    return []


def load_student(cfg: Config, fold: int, data: Data | None = None, backbone=None):
    """The trained student of ``cfg`` for ``fold`` and its classes: the selected weights
    (``best.safetensors``), ready for inference on audio alone, the whole backbone in front of
    the heads whatever part of it was cached in training. Needs the run folder, not the corpus
    (``data``, when given, only says whether it had transcripts). ``backbone``: see
    :func:`load_student_dir`. Raises when the run is not complete."""
    run = trained_student(cfg, fold, None if data is None else data.corpus.has_transcripts)
    if not run.is_complete():
        raise FileNotFoundError(f"{run.dir}: no trained student for fold {fold} (train it first: "
                                "pipeline.train_student or python -m emolib student)")
    return load_student_dir(run.dir, run.cfg, backbone)


def student_dir_shape(directory: str | Path) -> tuple[list[str], tuple[int, int]]:
    """A saved student's classes (``metrics.json``) and its linguistic and prosodic embedding
    widths (read from the ``best.safetensors`` header, no weights loaded); raises, naming the
    file, when the folder does not hold a complete student."""
    from safetensors import SafetensorError, safe_open

    from .runs import read_json

    directory = Path(directory)
    for name in ("config.json", COMPLETE_MARKER, "best.safetensors"):
        if not (directory / name).is_file():
            raise ResultFileError(f"{directory}: not a complete student run (no {name})")
    weights = directory / "best.safetensors"
    try:
        with safe_open(str(weights), "pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ResultFileError(f"{weights}: unreadable weights ({exc})") from exc
    marker = directory / COMPLETE_MARKER
    classes = check_metrics(read_json(marker, dict), marker, "classes")["classes"]
    widths = [shapes.get(f"{k}_head.3.bias") for k in ("linguistic", "prosodic")]
    if not classes or None in widths or shapes.get("ffn.3.bias") != [len(classes)]:
        raise ResultFileError(f"{directory}: metrics.json's classes and best.safetensors's heads do not make "
                              "a student")
    return list(classes), (widths[0][0], widths[1][0])


def load_student_dir(directory: str | Path, cfg: Config | None = None, backbone=None):
    """The student saved in a run folder ``.../student/<name>/fold<k>`` (perhaps copied from
    another machine) and its classes: the config from its ``config.json`` unless ``cfg`` is
    given, the classes from ``metrics.json``, the head widths from ``best.safetensors``.
    ``backbone``: an already loaded, wholly frozen backbone of the same config to share
    (its weights are the pre-trained ones, never saved with a run); else one is loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from . import student as st
    from .backbones import load_backbone
    from .config import from_dict
    from .runs import read_json

    directory = Path(directory)
    weights = directory / "best.safetensors"
    classes, widths = student_dir_shape(directory)
    cfg = cfg or from_dict(read_json(directory / "config.json", dict), directory / "config.json", complete=True)
    try:
        saved = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ResultFileError(f"{weights}: unreadable weights ({exc})") from exc
    s = cfg.student
    if backbone is None or s.freeze != "all":
        backbone = load_backbone(s.backbone, freeze=s.freeze, max_seconds=s.max_seconds,
                                 precision=cfg.training.precision)
    model = st.EmoDistillStudent(backbone.num_hidden_states, st.pooled_width(backbone, s.pooling), len(classes),
                                 *widths, s, backbone=backbone)
    try:
        missing, unexpected = model.load_state_dict(saved, strict=False)
    except RuntimeError as exc:  # a shape that differs: another backbone or pooling than the config's
        raise ResultFileError(f"{weights}: does not fit the student of this config ({exc})") from exc
    # a frozen backbone's weights are the pre-trained ones (not saved with the run), nothing else may be missing
    if unexpected or any(not k.startswith("backbone.") for k in missing) or (missing and s.freeze != "all"):
        raise ResultFileError(f"{weights}: does not fit the student of this config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}); delete {directory} to train it again")
    if missing:
        _require_trained_backbone(directory, s.backbone)
    return model.eval(), list(classes)


def _require_trained_backbone(directory: Path, backbone: str) -> None:
    """:class:`ResultFileError` when a student whose backbone was not saved with it (``freeze=all``)
    was trained on other weights of that backbone than those found now (a local folder saved
    again, a new hub commit, an upgraded package): its heads would read states they never saw,
    and classify without a word (training refuses to reuse such a run; this is classifying)."""
    from .runs import CORPUS_RECORD, _unresolved, _weights_change, read_json

    record = directory / CORPUS_RECORD
    if not record.is_file():  # a run from before the records: nothing to compare
        return
    then = read_json(record, dict).get("models", {}).get("student.backbone")
    now = model_record(backbone)
    if then is not None and then != now and not _unresolved(then, now):
        raise ResultFileError(f"{directory}: trained on {_weights_change('student.backbone', then, now)}; its heads "
                              "read the backbone's states, which these weights compute otherwise. Restore the weights "
                              f"it was trained on, or train it again (delete {directory.parent})")


def classify(cfg: Config, fold: int | Sequence[int], audio_paths, data: Data | None = None,
             batch_size: int = 8, share_backbone: bool = True, chunk: int = 256) -> pd.DataFrame:
    """Emotion probabilities for audio files, from trained students alone (no transcript, no
    openSMILE, no teacher, no corpus): one row per file, ``path``, ``pred`` and ``p_<class>``.

    ``fold`` is one fold's student, or several folds' (e.g. ``[1, 2, 3, 4, 5]``), whose
    probabilities are averaged: the usual ensemble of cross-validation models, each trained
    on other speakers. Students on one wholly frozen backbone share it, which then runs once
    per file (in chunks of ``chunk`` files); ``share_backbone=False`` runs each student whole
    (the same probabilities, as a test checks, at one backbone pass per student)."""
    folds = [fold] if isinstance(fold, int) else list(fold)
    return _classify([(cfg, lambda backbone, k=k: load_student(cfg, k, data, backbone)) for k in folds],
                     audio_paths, batch_size, share_backbone, chunk)


def classify_dirs(directories: Sequence[str | Path], audio_paths, overrides: dict[str, Any] | None = None,
                  batch_size: int = 8) -> pd.DataFrame:
    """:func:`classify` with the students saved in run folders (``.../student/<name>/fold<k>``,
    e.g. copied from a GPU server), each with its own ``config.json``; ``overrides`` (dotted
    keys, e.g. ``{"training.device": "cpu"}``) apply to each."""
    from .config import from_dict
    from .runs import read_json

    students = []
    for d in map(Path, directories):
        if not (d / "config.json").is_file():
            raise ResultFileError(f"{d}: not a complete student run (no config.json)")
        cfg = from_dict(read_json(d / "config.json", dict), d / "config.json", complete=True).replace(overrides or {})
        students.append((cfg, lambda backbone, d=d, cfg=cfg: load_student_dir(d, cfg, backbone)))
    return _classify(students, audio_paths, batch_size)


def _frozen_backbone(cfg: Config) -> tuple | None:
    """What a wholly frozen backbone's pooled states depend on (None when it is fine-tuned):
    students with the same key see the same pooled states for the same audio."""
    s, t = cfg.student, cfg.training
    return (s.backbone, s.max_seconds, s.pooling, t.precision, t.device) if s.freeze == "all" else None


class _PooledStates(torch.nn.Module):
    """A student's backbone and pooling alone: (B, layers, D) pooled states for waveforms."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return {"pooled": self.model.pooled_states(batch)}


def _classify(students: Sequence[tuple[Config, Any]], audio_paths, batch_size: int, share_backbone: bool = True,
              chunk: int = 256) -> pd.DataFrame:
    """Average the probabilities of ``(config, load)`` students, ``load(backbone)`` giving
    (model, classes). Students on the same wholly frozen backbone share it: it is loaded
    once and runs once per file (in chunks of ``chunk`` files, which bounds the memory),
    each student's heads then read its pooled states; else each student runs whole."""
    from . import student as st
    from .train import predict, resolve_device, set_threads

    set_threads(students[0][0].training)
    paths_by_id = {str(i): str(p) for i, p in enumerate(audio_paths)}
    ids = list(paths_by_id)
    keys = {_frozen_backbone(cfg) for cfg, _ in students}
    shared = share_backbone and len(students) > 1 and len(keys) == 1 and None not in keys
    models, classes, backbone = [], None, None
    probs: list[list[np.ndarray]] = [[] for _ in students]

    def waveforms(cfg: Config, part: list[str]):  # read as in training (an unreadable file raises, named)
        return st.StudentDataset(part, [0] * len(part), {}, {}, "waveform", paths_by_id, cfg.student.max_seconds)

    def add(m: int, logits: np.ndarray) -> None:
        probs[m].append(torch.softmax(torch.from_numpy(logits).double(), -1).numpy())

    for m, (cfg, load) in enumerate(students):
        device = resolve_device(cfg.training.device)
        model, these = load(backbone if shared else None)
        if not ids:
            raise ValueError("classify: no audio files given")
        if classes is not None and these != classes:
            raise ResultFileError(f"the students disagree on the classes ({classes} vs {these}): "
                                  "they cannot be averaged")
        classes = these
        model.to(device)
        if shared:
            backbone = model.backbone
            models.append(model)
            continue
        out = predict(model, waveforms(cfg, ids), st.make_collate("waveform", model.backbone), batch_size, device,
                      cfg.training.precision)
        add(m, out["logits"])
    if shared:
        cfg = students[0][0]
        device, precision = resolve_device(cfg.training.device), cfg.training.precision
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            pooled = predict(_PooledStates(models[0]), waveforms(cfg, part), st.make_collate("waveform", backbone),
                             batch_size, device, precision)["pooled"]
            states = st.StudentDataset(part, [0] * len(part), {"pooled": dict(zip(part, pooled))}, {}, "pooled")
            for m, model in enumerate(models):
                add(m, predict(model, states, st.make_collate("pooled"), batch_size, device, precision)["logits"])
    mean = np.mean([np.concatenate(p) for p in probs], axis=0)
    frame = pd.DataFrame({"path": [paths.printable(p) for p in paths_by_id.values()],
                          "pred": [classes[k] for k in mean.argmax(-1)]})
    for c, name in enumerate(classes):
        frame[f"p_{name}"] = mean[:, c].round(6)
    return frame


# -- data probes -----------------------------------------------------------------------------


def data_run(cfg: Config, fold: int) -> Run:
    return Run("data", cfg, fold, label="probes")


def run_probes(cfg: Config, fold: int, data: Data | None = None, verbose: bool = True) -> Run:
    """The classical baselines of ``baselines.py`` on one fold (the data notebook's result files)."""
    from .baselines import run_probes as fit_probes

    data = data or load_data(cfg)
    run = data_run(cfg, fold)
    record = run_record(data, cfg, "probes")
    if run.is_complete() or run.start(record).is_complete():
        run.reuse(record)
        write_channels(run, data.corpus, data.fold(fold).test_ids)  # runs made before channels.csv existed
        return run
    with run.releasing_on_error():
        write_channels(run, data.corpus, data.fold(fold).test_ids)
        functionals = None
        if data.corpus.has_audio:
            functionals = prosody.features(audio_items(data.corpus), "functionals", cfg.data.max_seconds,
                                           progress=verbose)
        metrics, frame = fit_probes(data.corpus, data.fold(fold), functionals, seed=cfg.training.seed)
        f = data.fold(fold)
        run.finish({"stage": "data", "fold": fold, "corpus": data.corpus.name, "probes": metrics,
                    "classes": list(data.corpus.classes), "n_folds": len(data.folds),
                    "has_transcripts": data.corpus.has_transcripts,
                    "n_train": len(f.train_ids) + len(f.val_ids), "n_test": len(f.test_ids),
                    "test_speakers": list(f.test_speakers)}, frame)
    if verbose:
        line = ", ".join(f"{k} UA {100 * v['ua']:.2f}" for k, v in metrics.items())
        print(f"probes fold {fold}: {line}", flush=True)
    return run


#: The per-utterance flags a corpus may record of which channel carries the label (the built-in corpus does).
CHANNEL_FLAGS = ("lexical_cue", "vocal_cue")


def write_channels(run: Run, corpus: Corpus, ids) -> bool:
    """Write ``channels.csv`` (id, lexical_cue, vocal_cue of the fold's test utterances) beside the
    data results when the corpus records them, so that the report can score every model per channel
    without loading the corpus. Idempotent; False (and nothing written) for corpora without flags."""
    table = corpus.by_id()
    if not ids or not all(flag in table[i].meta for i in ids for flag in CHANNEL_FLAGS):
        return False
    if not run.path("channels.csv").is_file():
        run.write_csv("channels.csv", pd.DataFrame(
            [{"id": i, **{flag: bool(table[i].meta[flag]) for flag in CHANNEL_FLAGS}} for i in ids]))
    return True


def read_channels(run: Run) -> pd.DataFrame:
    """The ``channels.csv`` of a data run, checked whole as :func:`~emolib.runs.check_predictions` checks
    predictions: :class:`ResultFileError` naming it when a column is missing, a flag is not True or
    False (a row cut short), its last line has no line end, or it has other than ``n_test`` rows
    (``metrics.json``): a file cut at a line end gave the report shares of half the test utterances."""
    import os

    from .runs import read_table

    path = run.path("channels.csv")
    frame = read_table(path)
    todo = f"delete {run.dir} to compute it again"
    missing = [c for c in ("id", *CHANNEL_FLAGS) if c not in frame.columns]
    if missing:
        raise ResultFileError(f"{path}: no column {', '.join(missing)}; {todo}")
    cut = frame["id"].isna() | (frame["id"] == "")
    for flag in CHANNEL_FLAGS:
        cut |= ~frame[flag].astype(str).isin(["True", "False"])
    if cut.any():
        row = int(cut.to_numpy().nonzero()[0][0])
        raise ResultFileError(f"{path}: row {row + 2} is cut short or not True/False flags (a crash or a full disk "
                              f"while it was written?); {todo}")
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
        last = f.read(1)
    if last != b"\n":
        raise ResultFileError(f"{path}: its last line (row {len(frame) + 1}) has no line end: cut short, or written "
                              f"by another program? {todo[0].upper()}{todo[1:]}")
    n = run.metrics("n_test")["n_test"] if run.is_complete() else None
    if n is not None and n != len(frame):
        raise ResultFileError(f"{path}: holds {len(frame)} rows but the fold has {n} test utterances "
                              f"(metrics.json; cut short by a crash or a full disk?); {todo}")
    return frame.assign(**{flag: frame[flag].astype(str) == "True" for flag in CHANNEL_FLAGS})


def fold_figure_path(cfg: Config, name: str, fold: int):
    """Where a per-fold diagnostic figure goes (beside the runs, not in ``figures/``)."""
    return paths.fold_figures_dir(cfg) / f"{name}_fold{fold}"
