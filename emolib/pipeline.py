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
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import prosody
from .config import Config, config_hash
from .corpora import Corpus, load_from_config
from .folds import Fold, get_fold, make_folds
from .metrics import classification_metrics
from .runs import Run, atomic_path

TEACHER_KINDS = ("prosodic", "linguistic")


# -- data ------------------------------------------------------------------------------------


@dataclass
class Data:
    corpus: Corpus
    folds: list[Fold]

    def fold(self, index: int) -> Fold:
        return get_fold(self.folds, index)


@functools.lru_cache(maxsize=4)
def _load_data(data_key: str, data_cfg_json: str) -> Data:
    import json

    from .config import DataConfig, SynthConfig

    d = json.loads(data_cfg_json)
    d["synth"] = SynthConfig(**d["synth"])
    data_cfg = DataConfig(**d)
    corpus = load_from_config(data_cfg)
    folds = make_folds(corpus, data_cfg.protocol, data_cfg.n_folds, data_cfg.validation_speakers)
    return Data(corpus, folds)


def load_data(cfg: Config) -> Data:
    """The corpus and its folds for ``cfg.data`` (memoised within a process)."""
    import dataclasses
    import json

    d = dataclasses.asdict(cfg.data)
    return _load_data(config_hash(d), json.dumps(d, sort_keys=True))


def audio_items(corpus: Corpus, ids=None) -> list[tuple[str, Any]]:
    table = corpus.by_id()
    chosen = [table[i] for i in ids] if ids is not None else corpus.utterances
    return [(u.id, u.path) for u in chosen]


def prepare(cfg: Config, progress: bool = True) -> list[int]:
    """Build the corpus and fill the feature caches every fold shares; return the fold numbers.

    The run driver calls this once before executing notebooks (in parallel processes),
    so that folds never race to extract the same features."""
    data = load_data(cfg)
    if data.corpus.has_audio:
        prosody.features(audio_items(data.corpus), "lld", cfg.data.max_seconds, progress=progress)
        if cfg.student.freeze == "all" or cfg.student.freeze.startswith("top:"):
            from . import student

            student.cached_inputs(cfg, data.corpus, progress=progress)
    return [f.index for f in data.folds]


# -- teachers --------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-")[-40:]


def teacher_run(kind: str, cfg: Config, fold: int) -> Run:
    if kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; choose one of {TEACHER_KINDS}")
    label = "resnet" if kind == "prosodic" else _slug(cfg.linguistic_teacher.model)
    return Run(f"{kind}_teacher", cfg, fold, label=label)


def check_teacher_input(kind: str, corpus: Corpus) -> None:
    """Refuse, with the reason, a corpus a teacher cannot learn from."""
    if kind == "linguistic" and not corpus.has_transcripts:
        why = " ".join(corpus.notes) or "it has no transcripts."
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


def load_outputs(run: Run) -> tuple[list[str], dict[str, np.ndarray]]:
    import json

    from safetensors import safe_open

    path = run.path("outputs.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the teacher's cached outputs are missing; re-run the teacher")
    with safe_open(str(path), framework="np") as f:
        ids = json.loads(f.metadata()["ids"])
        return ids, {k: f.get_tensor(k) for k in f.keys()}


def _prosodic_datasets(cfg: Config, data: Data, fold: Fold):
    from .teachers import LLDDataset

    feats = prosody.features(audio_items(data.corpus), "lld", cfg.data.max_seconds)
    normaliser = prosody.Normaliser.fit([feats[i] for i in fold.train_ids])
    ready, counts = prosody.prepare_lld(feats.arrays, normaliser)
    labels = dict(zip(data.corpus.ids, data.corpus.labels()))

    def make(ids, crop):
        return LLDDataset([ready[i] for i in ids], [labels[i] for i in ids], crop_frames=crop, seed=cfg.training.seed)

    return make, counts


def train_teacher(kind: str, cfg: Config, fold: int, data: Data | None = None, verbose: bool = True) -> Run:
    """Fine-tune one teacher on one fold's training speakers (reusing a complete run).

    Writes ``best.safetensors``, ``history.csv``, ``predictions.csv`` (test speakers),
    ``outputs.safetensors`` (logits and embedding of every utterance, for the
    students) and ``metrics.json``."""
    from .teachers import (LinguisticTeacher, ProsodicResNet, TextDataset, collate_lld, cross_entropy_loss,
                           load_text_encoder, make_text_collate)
    from .train import fit, predict, setup

    data = data or load_data(cfg)
    check_teacher_input(kind, data.corpus)
    run = teacher_run(kind, cfg, fold)
    if run.is_complete():
        if verbose:
            print(f"{kind} teacher fold {fold}: reusing {run.dir}", flush=True)
        return run
    f = data.fold(fold)
    run.start()
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
                 desc=f"{kind} teacher fold {fold}", device=device)
    out = predict(model, datasets["all"], collate, tcfg.optim.batch_size, device, cfg.training.precision)
    save_outputs(run, data.corpus.ids, out)
    position = {uid: i for i, uid in enumerate(data.corpus.ids)}
    test_rows = [position[i] for i in f.test_ids]
    test_logits = out["logits"][test_rows]
    y_true = data.corpus.labels(f.test_ids)
    metrics = classification_metrics(y_true, test_logits.argmax(-1), data.corpus.classes)
    metrics.update({"stage": f"{kind}_teacher", "fold": fold, "best_epoch": result.best_epoch,
                    "best_val_ua": result.best_val_ua, "epochs_run": len(result.history),
                    "stopped_early": result.stopped_early, "train_seconds": result.seconds,
                    "n_parameters": sum(p.numel() for p in model.parameters()),
                    "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "embedding_dim": int(out["embedding"].shape[1]), "corpus": data.corpus.name, **extra})
    run.finish(metrics, _prediction_frame(data.corpus, f.test_ids, test_logits))
    if verbose:
        print(f"{kind} teacher fold {fold}: test UA {100 * metrics['ua']:.2f} WA {100 * metrics['wa']:.2f} "
              f"macro-F1 {100 * metrics['macro_f1']:.2f} (best epoch {result.best_epoch}, "
              f"{result.seconds:.1f} s)", flush=True)
    return run


def collect(runs: list[Run], classes) -> dict:
    """Per-fold metrics and the summary over folds (mean, std, pooled) of complete runs."""
    from .metrics import summarize_folds

    per_fold = []
    for run in runs:
        p = run.predictions()
        per_fold.append(([classes.index(x) for x in p["label"]], [classes.index(x) for x in p["pred"]]))
    return summarize_folds(per_fold, classes)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start
