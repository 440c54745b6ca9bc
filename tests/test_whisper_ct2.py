"""emolib.whisper_ct2: the CTranslate2 model.bin reader, checked against values recorded once
from CTranslate2 itself (tests/fixtures/whisper_make_reference.py); ctranslate2 is not needed."""
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from emolib import whisper_ct2 as W
from emolib.audio import read_audio
from emolib.pretrained import ModelError


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def reference():
    return json.loads((FIXTURES / "whisper_reference.json").read_text())


@pytest.fixture(scope="module")
def clip():
    return read_audio(FIXTURES / "whisper_clip.wav")


@pytest.fixture(scope="module")
def checkpoint():
    return W.read_model_bin(W.packaged_model("tiny.en")[1])


@pytest.fixture(scope="module")
def whisper():
    return W.load_whisper("tiny.en")


def _features(clip, own_length: bool):
    extractor = W.feature_extractor(80)
    if own_length:  # whole 20 ms frames, no 30 s padding (as backbones.py prepares clips)
        clip = np.pad(clip, (0, -len(clip) % 320))
        return extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt").input_features
    return extractor(clip, sampling_rate=16000, return_tensors="pt").input_features


# -- the file format ------------------------------------------------------------------------


def test_reads_every_variable_of_the_packaged_tiny_en(checkpoint):
    assert (checkpoint.spec, checkpoint.revision) == ("WhisperSpec", 3)
    # 148 stored variables (9 of them settings) + 1 alias: the tied output projection
    assert len(checkpoint.variables) == 149
    assert checkpoint.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert checkpoint.settings() == {
        "decoder/activation": 3, "decoder/alibi": 0, "decoder/alignment_heads": 1, "decoder/alignment_layer": -1,
        "decoder/num_heads": 6, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0, "encoder/num_heads": 6,
    }
    assert checkpoint.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert checkpoint.variables["encoder/conv1/weight"].dtype == np.float16


def test_every_tensor_maps_onto_transformers_and_none_is_left_over(checkpoint):
    from transformers import WhisperForConditionalGeneration

    config = W.whisper_config(checkpoint, W.packaged_model("tiny.en")[0])
    state = W.to_state_dict(checkpoint)
    with torch.device("meta"):
        expected = WhisperForConditionalGeneration(config).state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in expected)
    assert len(state) == 168  # 60 + 96 in the 4 + 4 layers (fused q/k/v split, zero key biases dropped) + 12
    # settings became the config
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads,
            config.encoder_ffn_dim, config.num_mel_bins, config.vocab_size) == (384, 4, 4, 6, 1536, 80, 51864)
    assert (config.decoder_start_token_id, config.eos_token_id) == (50257, 50256)
    # the fused self-attention matrix is [q; k; v]
    fused = checkpoint.variables["encoder/layer_2/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(state["model.encoder.layers.2.self_attn.k_proj.weight"].numpy(), fused[384:768])


def test_loaded_model_ties_output_projection_and_cuts_positions(whisper):
    assert whisper.proj_out.weight is whisper.model.decoder.embed_tokens.weight
    cut = W.load_whisper("tiny.en", max_source_positions=100, encoder_only=True)
    assert cut.embed_positions.weight.shape == (100, 384)
    torch.testing.assert_close(cut.embed_positions.weight, whisper.model.encoder.embed_positions.weight[:100],
                               rtol=0, atol=0)
    assert not cut.embed_positions.weight.requires_grad  # fixed sinusoids
    with pytest.raises(ValueError, match="max_source_positions must be in 1..1500"):
        W.load_whisper("tiny.en", max_source_positions=1501, encoder_only=True)


def test_unknown_variable_or_nonzero_key_bias_is_refused(checkpoint):
    extra = W.CT2Checkpoint("x/model.bin", "WhisperSpec", 3, {**checkpoint.variables,
                                                            "encoder/adapter/weight": np.zeros((2, 2), np.float16)})
    with pytest.raises(W.CT2FormatError, match=r"x/model.bin: variable encoder/adapter/weight has no counterpart"):
        W.to_state_dict(extra)
    bias = checkpoint.variables["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[384 + 7] = 0.5  # inside the key part of [q; k; v]
    bad = W.CT2Checkpoint("x/model.bin", "WhisperSpec", 3, {**checkpoint.variables,
                                                          "encoder/layer_0/self_attention/linear_0/bias": bias})
    with pytest.raises(W.CT2FormatError, match="non-zero key bias"):
        W.to_state_dict(bad)
    setting = W.CT2Checkpoint("x/model.bin", "WhisperSpec", 3, {**checkpoint.variables,
                                                              "decoder/pre_norm": np.array(0, np.int8)})
    with pytest.raises(W.CT2FormatError, match="setting decoder/pre_norm = 0, Whisper has 1"):
        W.whisper_config(setting, W.packaged_model("tiny.en")[0])


def _string(s: str) -> bytes:
    return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"


def test_bad_files_name_the_file_and_the_problem(tmp_path):
    head = W.packaged_model("tiny.en")[1][0].read_bytes()[:4096]
    bad_version = tmp_path / "v5.bin"
    bad_version.write_bytes(struct.pack("<I", 5) + head[4:])
    with pytest.raises(W.CT2FormatError, match=r"v5\.bin: not a CTranslate2 model.bin of format version 6"):
        W.read_model_bin(bad_version)
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(head)
    with pytest.raises(W.CT2FormatError, match=r"cut\.bin: truncated: data of decoder/embeddings/weight needs "
                                               r"39831552 bytes"):
        W.read_model_bin(truncated)
    other = tmp_path / "other.bin"
    other.write_bytes(struct.pack("<I", 6) + _string("TransformerSpec") + struct.pack("<II", 1, 0))
    with pytest.raises(W.CT2FormatError, match=r"other\.bin: holds TransformerSpec revision 1"):
        W.read_model_bin(other)
    trailing = tmp_path / "trailing.bin"
    trailing.write_bytes(struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<III", 3, 0, 0) + b"xx")
    with pytest.raises(W.CT2FormatError, match=r"trailing\.bin: 2 unexpected bytes after the last alias"):
        W.read_model_bin(trailing)
    dangling = tmp_path / "alias.bin"
    dangling.write_bytes(struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<III", 3, 0, 1)
                         + _string("a") + _string("b"))
    with pytest.raises(W.CT2FormatError, match=r"alias\.bin: alias a -> b does not resolve"):
        W.read_model_bin(dangling)
    with pytest.raises(W.CT2FormatError, match=r"missing\.bin: no such file"):
        W.read_model_bin(tmp_path / "missing.bin")


def test_bad_files_beside_the_model_bin_name_the_file(tmp_path, checkpoint):
    # an empty or non-object config.json, an empty or non-UTF-8 tokenizer.json: each was a raw JSONDecodeError,
    # AttributeError or tokenizers' bare Exception ("EOF while parsing a value"), naming no file
    packaged = W.packaged_model("tiny.en")[0]
    folder = tmp_path / "ct2"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((packaged / "tokenizer.json").read_bytes())
    config = folder / "config.json"
    for text, problem in [(b"", "not a JSON file"), (b"\xff\xfe", "not a JSON file"),
                          (b"[]", "holds a JSON list, not an object")]:
        config.write_bytes(text)
        with pytest.raises(W.CT2FormatError, match=rf"^{re.escape(str(config))}: {problem}"):
            W.whisper_config(checkpoint, folder)
    config.unlink()
    assert W.whisper_config(checkpoint, folder).suppress_tokens is None  # none: nothing suppressed, as before
    tokenizer = folder / "tokenizer.json"
    for text in (b"", b"\xff\xfe{}"):
        tokenizer.write_bytes(text)
        with pytest.raises(W.CT2FormatError, match=rf"^{re.escape(str(tokenizer))}: not a tokenizers tokenizer.json"):
            W.whisper_config(checkpoint, folder)
    tokenizer.unlink()
    with pytest.raises(W.CT2FormatError, match=rf"^{re.escape(str(tokenizer))}: missing"):
        W.load_tokenizer(folder)
    assert issubclass(W.CT2FormatError, ModelError)  # the commands print a ModelError as one error: line


def test_split_model_bin_parts_are_read_in_order(tmp_path, checkpoint):
    data = W.packaged_model("tiny.en")[1][0].read_bytes()
    (tmp_path / "model.bin.part1").write_bytes(data[:1000])
    (tmp_path / "model.bin.part2").write_bytes(data[1000:])
    joined = W.read_model_bin([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])
    assert joined.variables.keys() == checkpoint.variables.keys()
    name = "encoder/conv2/weight"
    np.testing.assert_array_equal(joined.variables[name], checkpoint.variables[name])


# -- against CTranslate2's recorded outputs ----------------------------------------------------


def _check_encoder(out: np.ndarray, rec: dict) -> None:
    assert out.shape[0] == rec["frames"]
    np.testing.assert_allclose(out[np.ix_(rec["sample_frames"], rec["sample_dims"])], rec["values"], atol=2e-4)
    real = rec["sample_frames"][-1] + 1
    np.testing.assert_allclose(out[:real].mean(0), rec["pooled_real_frames"], atol=2e-5)


@torch.no_grad()
def test_encoder_matches_ctranslate2_alone_and_in_a_30s_window(reference, clip):
    rec = reference["tiny.en"]
    alone = _features(clip, own_length=True)
    assert alone.shape == (1, 80, 2 * rec["alone"]["frames"])
    encoder = W.load_whisper("tiny.en", max_source_positions=alone.shape[-1] // 2, encoder_only=True)
    _check_encoder(encoder(alone).last_hidden_state[0].numpy(), rec["alone"])
    full = W.load_whisper("tiny.en", encoder_only=True)
    _check_encoder(full(_features(clip, own_length=False)).last_hidden_state[0].numpy(), rec["window_30s"])


def test_greedy_transcription_matches_ctranslate2(reference, clip, whisper):
    rec = reference["tiny.en"]["greedy"]
    assert rec["prompt"] == [50257, 50362] and rec["text"] == " " + reference["clip"]["sentence"]
    assert W.english_prompt(whisper, W.load_tokenizer(W.packaged_model("tiny.en")[0])) == rec["prompt"]
    ids = W.greedy_decode(whisper, _features(clip, own_length=False), rec["prompt"])
    assert ids == rec["ids"]
    assert W.load_tokenizer(W.packaged_model("tiny.en")[0]).decode(ids) == rec["text"]


@torch.no_grad()
def test_cut_positions_differ_from_the_30s_window_as_ctranslate2_recorded(reference, clip):
    """Cutting the positions is not the same as Whisper's 30 s window: the clip's frames
    then also attend to the silence. Our encoder's two outputs relate as CTranslate2's did
    (final layer, the clip's real frames)."""
    rel = reference["tiny.en"]["alone_vs_window"]
    features = _features(clip, own_length=True)
    frames = features.shape[-1] // 2
    cut = W.load_whisper("tiny.en", max_source_positions=frames, encoder_only=True)
    alone = cut(features).last_hidden_state[0]
    window = W.load_whisper("tiny.en", encoder_only=True)(_features(clip, own_length=False)).last_hidden_state[0]
    real = reference["tiny.en"]["alone"]["sample_frames"][-1] + 1
    a, w = alone[:real], window[:real]
    pooled = torch.nn.functional.cosine_similarity(a.mean(0), w.mean(0), dim=0).item()
    per_frame = torch.nn.functional.cosine_similarity(a, w, dim=-1).mean().item()
    assert pooled == pytest.approx(rel["pooled_cosine"], abs=1e-4)
    assert per_frame == pytest.approx(rel["frame_cosine_mean"], abs=1e-4)
    assert per_frame < 0.99  # the two really differ: truncation is a choice, not a no-op


def test_multilingual_base_from_its_two_packages(reference, clip):
    rec = reference["base"]
    model = W.load_whisper("base")
    assert (model.config.d_model, model.config.encoder_layers, model.config.vocab_size) == (512, 6, 51865)
    with torch.no_grad():
        _check_encoder(model.model.encoder(_features(clip, own_length=False)).last_hidden_state[0].numpy(),
                       rec["window_30s"])
    prompt = W.english_prompt(model, W.load_tokenizer(W.packaged_model("base")[0]))
    assert prompt == rec["greedy"]["prompt"]  # the prefix CTranslate2 was given when the ids were recorded
    assert W.greedy_decode(model, _features(clip, own_length=False), prompt) == rec["greedy"]["ids"]
