"""The EmoDistill student (Sec. 3, "Student KD"): speech in, emotion out.

    speech backbone -> per-layer hidden states -> pooled over real frames (mean, or mean + std)
        -> a layer mix (``student.layer_mix``: the top layer, or learned weighted sums)
        -> linguistic projection head  -> e_L  (matched to T_L's embedding)
        -> prosodic projection head    -> e_P  (matched to T_P's embedding)
        -> FFN(concat(e_L, e_P)) -> logits

The two heads are disjoint (no shared parameters) GELU feed-forward projections,
each sized to its teacher's embedding so the cosine of Eq. 4 needs no extra
projection: Linear -> GELU -> dropout -> Linear. The output layer is left linear on
purpose: a GELU's output is almost never negative, and could not point where the
teachers' embeddings have negative components. Through the hidden width
(``student.head_hidden``) each embedding spans at most that many dimensions (256 of
BERT's 768 in the ``paper`` preset). At inference the student needs audio only.

Four ways to feed it, chosen by ``student.freeze``:

* ``all``: the backbone is frozen, so its pooled per-layer states are computed once
  (``backbones.pooled_states``) and cached; training touches only the heads.
  Exact: every layer is pooled first and the learned layer weights mix the pooled
  vectors, so nothing that learns acts before the pooling. This is the CPU default.
* ``top:K``: the input of the first trainable layer is cached frame by frame and
  only the top K layers run in training.
* ``feature_encoder``: the frozen feature encoder's output (HuBERT's CNN, Whisper's
  convolutions) is cached frame by frame; training runs the projection and every layer
  (the ``paper`` preset: HuBERT-base fine-tuned with its CNN frozen, on a GPU server).
* ``none``: waveforms through the whole backbone, nothing cached.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .config import INPUT_NORMS, LAYER_MIXES, Config, StudentConfig


# How the heads read the backbone's hidden states (LAYER_MIXES, ``student.layer_mix``): ``last`` the
# top one (the paper: the transformer's output), ``shared`` one learned softmax-weighted sum (SUPERB),
# ``per_head`` one learned sum per projection head, ``split`` the top layer for the linguistic head and
# a learned sum for the prosodic head (prosody lives lower in speech encoders than words do), ``concat``
# all of them side by side. How the pooled states are scaled before the layer mix: INPUT_NORMS
# (``student.input_norm``).


class EmoDistillStudent(nn.Module):
    def __init__(self, num_states: int, hidden_size: int, n_classes: int, linguistic_dim: int, prosodic_dim: int,
                 cfg: StudentConfig, backbone: nn.Module | None = None, input_index: int | None = None):
        super().__init__()
        self.backbone = backbone  # None when the inputs are cached pooled states
        self.input_index = input_index  # top:K - index of the cached hidden state the top layers start from
        self.pooling = cfg.pooling
        if cfg.layer_mix not in LAYER_MIXES:
            raise ValueError(f"student.layer_mix must be one of {LAYER_MIXES}, got {cfg.layer_mix!r}")
        self.layer_mix = cfg.layer_mix
        if cfg.input_norm not in INPUT_NORMS:
            raise ValueError(f"student.input_norm must be one of {INPUT_NORMS}, got {cfg.input_norm!r}")
        # per-dimension standardisation: running mean / variance of the training batches, no learned scale
        self.standardise = (nn.BatchNorm1d(num_states * hidden_size, affine=False)
                            if cfg.input_norm == "standardise" else None)
        # softmax logits over the hidden states: one shared mix, or one per head
        self.mix_logits = nn.ParameterDict({name: nn.Parameter(torch.zeros(num_states)) for name in
                                            {"shared": ("shared",), "per_head": ("linguistic", "prosodic"),
                                             "split": ("prosodic",)}.get(
                                                cfg.layer_mix, ())})
        width = hidden_size * num_states if cfg.layer_mix == "concat" else hidden_size

        def head(out_dim: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(width, cfg.head_hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.head_hidden, out_dim))

        self.linguistic_head = head(linguistic_dim)
        self.prosodic_head = head(prosodic_dim)
        self.ffn = nn.Sequential(nn.Linear(linguistic_dim + prosodic_dim, cfg.ffn_hidden), nn.GELU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn_hidden, n_classes))

    def pooled_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, layers, D): every hidden state pooled over the real frames only."""
        from .backbones import POOLINGS

        pool = POOLINGS[self.pooling]
        if "pooled_states" in batch:
            return batch["pooled_states"]
        if "features" in batch:  # feature_encoder - everything above the cached feature encoder
            out = self.backbone.forward_from_features(batch["features"], batch["feature_mask"])
            return torch.stack([pool(h, out.frame_mask) for h in out.hidden_states], dim=1)
        if "frame_states" in batch:  # top:K - run only the trainable top of the stack
            states = self.backbone.forward_from(self.input_index, batch["frame_states"], batch["frame_mask"])
            top = [pool(h, batch["frame_mask"]) for h in states[1:]]
            return torch.cat([batch["pooled_lower"], torch.stack(top, dim=1)], dim=1)
        inputs = {k[len("backbone."):]: v for k, v in batch.items() if k.startswith("backbone.")}
        out = self.backbone(**inputs)
        return torch.stack([pool(h, out.frame_mask) for h in out.hidden_states], dim=1)

    def normalised_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, layers, D): the pooled states scaled as ``student.input_norm`` says.

        Layers of a speech model differ in scale by orders of magnitude, and so do dimensions
        within a layer: "standardise" scales every (layer, dimension) by its running training
        statistics; "layer" normalises each layer of each utterance (no parameters, SUPERB)."""
        states = self.pooled_states(batch).float()
        if self.standardise is None:
            return F.layer_norm(states, states.shape[-1:])
        b, n, d = states.shape
        flat = states.reshape(b, n * d)
        bn = self.standardise
        if self.training and b == 1:  # a last batch of one has no batch statistics: use the running ones
            flat = F.batch_norm(flat, bn.running_mean, bn.running_var, training=False, eps=bn.eps)
        else:
            flat = bn(flat)
        return flat.reshape(b, n, d)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        states = self.normalised_states(batch)

        def mix(name: str) -> torch.Tensor:
            if self.layer_mix == "last" or (self.layer_mix == "split" and name == "linguistic"):
                return states[:, -1]
            if self.layer_mix == "concat":
                return states.flatten(1)
            key = "shared" if self.layer_mix == "shared" else name
            return (torch.softmax(self.mix_logits[key], 0)[None, :, None] * states).sum(1)

        e_l, e_p = self.linguistic_head(mix("linguistic")), self.prosodic_head(mix("prosodic"))
        return {"logits": self.ffn(torch.cat([e_l, e_p], dim=-1)), "embedding_linguistic": e_l,
                "embedding_prosodic": e_p}

    def layer_weights(self) -> dict[str, list[float]] | None:
        """The learned layer mix(es), for the result files (None for ``last`` and ``concat``)."""
        if not len(self.mix_logits):
            return None
        return {name: [round(float(w), 4) for w in torch.softmax(logits.detach(), 0).cpu()]
                for name, logits in self.mix_logits.items()}


def pooled_width(backbone, pooling: str) -> int:
    """Width of one pooled hidden state: the backbone's, twice that with ``stats`` (mean + std)."""
    return backbone.hidden_size * (2 if pooling == "stats" else 1)


# -- inputs -------------------------------------------------------------------------------------


def uses_cached_inputs(cfg: Config) -> bool:
    """Whether the student reads the backbone's frozen work from the feature cache: every mode
    but ``none``, where nothing is frozen."""
    return cfg.student.freeze != "none"


def input_mode(cfg: Config) -> str:
    """What a :class:`StudentDataset` item holds for ``student.freeze``: ``pooled`` states (all),
    ``frames`` (top:K), the feature encoder's ``features`` (feature_encoder), the ``waveform`` (none)."""
    freeze = cfg.student.freeze
    if freeze == "all":
        return "pooled"
    if freeze.startswith("top:"):
        return "frames"
    return "features" if freeze == "feature_encoder" else "waveform"


def cached_inputs(cfg: Config, corpus, progress: bool = True, backbone=None) -> dict:
    """The frozen part of the backbone's work for every utterance, from the feature cache.

    ``freeze=all``: ``{"pooled": {id: (layers, D)}}``; ``top:K``: also the frame-level
    input of the first trainable layer, ``{"frames": {id: (T, D)}, "index": i}``;
    ``feature_encoder``: the feature encoder's output only, ``{"features": {id: (T, C)}}``.
    ``backbone``: the student's, already loaded with ``student.freeze``, which tells ``top:K``'s
    first trainable layer (without it, the backbone is loaded here to find it)."""
    from .backbones import feature_states, frame_states, load_backbone, pooled_states

    s = cfg.student
    items = [(u.id, u.path) for u in corpus]
    # computed in fp32 on the training device (a frozen part gains nothing from bf16 but rounding)
    where = {"max_seconds": s.max_seconds, "progress": progress, "device": cfg.training.device}
    if s.freeze == "feature_encoder":
        return {"features": feature_states(s.backbone, items, **where)}
    out: dict = {"pooled": pooled_states(s.backbone, items, pooling=s.pooling, **where)}
    if s.freeze.startswith("top:"):
        if backbone is None:
            backbone = load_backbone(s.backbone, freeze=s.freeze, max_seconds=s.max_seconds)
        index = backbone.first_trainable_state - 1
        out["index"] = index
        out["frames"] = frame_states(s.backbone, items, index, **where)
    return out


class StudentDataset(Dataset):
    """One item per utterance: the student's input (cached or raw), the label, and the
    cached teacher outputs the variant needs (``teacher_logits_linguistic``, ...)."""

    def __init__(self, ids: Sequence[str], labels: Sequence[int], inputs: dict, teacher: dict[str, dict],
                 mode: str, audio_paths: dict | None = None, max_seconds: float | None = None):
        self.ids, self.labels = list(ids), list(labels)
        self.inputs, self.teacher, self.mode = inputs, teacher, mode
        self.audio_paths, self.max_seconds = audio_paths, max_seconds

    def __len__(self) -> int:
        return len(self.ids)

    def longest(self) -> int:
        """The index of the item that pads a batch the most (``train.shared_memory_workers`` sizes
        the DataLoader workers on it): the most frames, or the longest clip; any for pooled states."""
        if self.mode == "pooled":
            return 0
        if self.mode in ("frames", "features"):
            table = self.inputs[self.mode]  # memory-mapped: the lengths come from the files' headers
            return int(np.argmax([len(table[uid]) for uid in self.ids]))
        from .audio import audio_info

        return int(np.argmax([audio_info(self.audio_paths[uid]).duration for uid in self.ids]))

    def __getitem__(self, i: int) -> dict:
        uid = self.ids[i]
        item: dict = {"labels": self.labels[i]}
        for key, table in self.teacher.items():
            item[key] = torch.from_numpy(table[uid])
        if self.mode == "pooled":
            item["pooled_states"] = torch.from_numpy(self.inputs["pooled"][uid])
        elif self.mode == "frames":
            index = self.inputs["index"]
            item["pooled_lower"] = torch.from_numpy(self.inputs["pooled"][uid][: index + 1])
            item["frame_states"] = torch.from_numpy(self.inputs["frames"][uid].astype(np.float32))
        elif self.mode == "features":
            item["features"] = torch.from_numpy(self.inputs["features"][uid].astype(np.float32))
        else:
            from .audio import read_audio

            item["waveform"] = read_audio(self.audio_paths[uid], 16000, self.max_seconds, allow_silent=True)
        return item


def make_collate(mode: str, backbone=None):
    """Stack fixed-size fields; pad frames (with a mask) or let the backbone prepare waveforms."""

    def collate(items: list[dict]) -> dict:
        batch: dict = {"labels": torch.tensor([it["labels"] for it in items], dtype=torch.long)}
        for key in items[0]:
            if key.startswith("teacher_") or key in ("pooled_states", "pooled_lower"):
                batch[key] = torch.stack([it[key] for it in items])
        if mode in ("frames", "features"):
            from .backbones import pad_frames

            key = "frame_states" if mode == "frames" else "features"
            batch[key], batch["frame_mask" if mode == "frames" else "feature_mask"] = pad_frames([it[key] for it in items])
        elif mode == "waveform":
            prepared = backbone.prepare([it["waveform"] for it in items])
            batch.update({f"backbone.{k}": v for k, v in prepared.items()})
        return batch

    return collate
