"""What the speech backbones cost on this CPU (issue 5: "backbone forward cost per
audio-second, cached vs not; peak memory"). A script that prints figures, not a test:

    python benchmarks/bench_backbones.py [--clips 16] [--seconds 4] [--threads 2]

* forward: CPU seconds (``time.process_time``, all threads) and wall seconds per second
  of audio, frozen (inference mode), batches of 8 clips of ``--seconds``: Whisper
  tiny.en with positions cut to the clips (what ``backbones.py`` does) vs padded to
  its 30 s window (what Whisper itself does), in fp32 and bf16 autocast; tiny-random.
* cache: ``pooled_states`` on fresh clips (read + hash + forward + write), then again
  (read from the cache: the cost a training epoch pays per audio-second).
* fine-tuning with the feature encoder frozen (``student.freeze=feature_encoder``, the paper's
  setting): one training step (forward, backward, AdamW) on a batch of 4 clips from the
  waveform vs from the cached feature-encoder output (``backbones.feature_states``), for the
  paper's student architecture (HuBERT-base's shape, random weights: cost does not depend on
  the values, and the hub is out of reach) and for Whisper tiny.en; the ratio is what caching
  saves per step.
* peak resident memory of the process (``resource.getrusage``).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emolib import backbones, whisper_ct2  # noqa: E402
from emolib.audio import read_audio, write_wav  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "whisper_clip.wav"


def clips(n: int, seconds: float) -> list[np.ndarray]:
    """``n`` clips of speech (the espeak-ng fixture, looped, shifted per clip)."""
    speech = read_audio(FIXTURE)
    length = round(seconds * 16000)
    looped = np.tile(speech, length // len(speech) + 2)
    return [looped[i * 1601 : i * 1601 + length].copy() for i in range(n)]


def timed(fn, repeats: int = 2) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of ``repeats`` runs after one warm-up."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.process_time() - c, time.perf_counter() - w))
    return best


def per_audio_second(label: str, cost: tuple[float, float], audio_seconds: float) -> None:
    cpu, wall = cost
    print(f"  {label:<44} {1000 * cpu / audio_seconds:8.2f} ms CPU  {1000 * wall / audio_seconds:8.2f} ms wall"
          "  per audio-second")


def forward_costs(waves: list[np.ndarray], batch: int) -> None:
    audio = sum(len(w) for w in waves) / 16000
    batches = [waves[i : i + batch] for i in range(0, len(waves), batch)]
    print(f"backbone forward, {len(waves)} clips x {len(waves[0]) / 16000:.1f} s, batches of {batch}:")

    for precision in ("fp32", "bf16"):
        whisper = backbones.load_backbone("whisper-tiny.en", max_seconds=30.0, precision=precision)

        def cut(bb=whisper):
            with torch.inference_mode():
                for b in batches:
                    bb(**bb.prepare(b))

        per_audio_second(f"whisper-tiny.en, positions cut ({precision})", timed(cut), audio)

    encoder = whisper_ct2.load_whisper("tiny.en", encoder_only=True)
    extractor = whisper_ct2.feature_extractor(80)

    def window():
        with torch.inference_mode():
            for b in batches:  # Whisper's own recipe: every clip padded to 30 s
                encoder(extractor(b, sampling_rate=16000, return_tensors="pt").input_features)

    per_audio_second("whisper-tiny.en, padded to 30 s (fp32)", timed(window, repeats=1), audio)

    tiny = backbones.load_backbone("tiny-random")

    def tiny_forward():
        with torch.inference_mode():
            for b in batches:
                tiny(**tiny.prepare(b))

    per_audio_second("tiny-random (fp32)", timed(tiny_forward), audio)


def cache_costs(waves: list[np.ndarray], batch: int) -> None:
    audio = sum(len(w) for w in waves) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EMOLIB_CACHE"] = str(Path(tmp) / "cache")
        items = []
        for i, w in enumerate(waves):
            items.append((f"clip{i}", write_wav(Path(tmp) / f"clip{i}.wav", w)))
        print(f"pooled_states cache, {len(waves)} clips, {audio:.0f} s of audio:")
        for name in ("whisper-tiny.en", "tiny-random"):
            c, w = time.process_time(), time.perf_counter()
            backbones.pooled_states(name, items, batch_size=batch, progress=False)
            first = (time.process_time() - c, time.perf_counter() - w)
            per_audio_second(f"{name}: first call (load, encode, write)", first, audio)
            per_audio_second(f"{name}: cached lookup", timed(
                lambda n=name: backbones.pooled_states(n, items, batch_size=batch, progress=False)), audio)


def fine_tune_costs(waves: list[np.ndarray], repeats: int = 3) -> None:
    """One training step of a backbone whose feature encoder is frozen: from the waveform
    (the encoder runs every step) vs from its cached output (it ran once, before training)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    batch_waves = waves[:4]
    audio = sum(len(w) for w in batch_waves) / 16000
    print(f"fine-tuning step, feature encoder frozen, batch of {len(batch_waves)} x "
          f"{len(batch_waves[0]) / 16000:.1f} s (forward, backward, AdamW):")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hubert_base = backbones.WaveformBackbone(
            "hubert-base shape (random weights)", HubertModel(HubertConfig()),
            Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True), freeze="feature_encoder")
    whisper = backbones.load_backbone("whisper-tiny.en", freeze="feature_encoder", max_seconds=30.0)
    for bb in (hubert_base, whisper):
        bb.train()
        params = [p for p in bb.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        batch = bb.prepare(batch_waves)
        with torch.no_grad():
            cached = bb.features(**batch)

        def step(out):
            loss = sum(backbones.masked_mean(h, out.frame_mask).pow(2).mean() for h in out.hidden_states[1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        from_wave = timed(lambda bb=bb, batch=batch: step(bb(**batch)), repeats)
        from_cache = timed(lambda bb=bb, cached=cached: step(bb.forward_from_features(cached.features,
                                                                                     cached.frame_mask)), repeats)
        per_audio_second(f"{bb.name}: from the waveform", from_wave, audio)
        per_audio_second(f"{bb.name}: from cached features", from_cache, audio)
        print(f"  {bb.name}: waveform / cached = {from_wave[0] / from_cache[0]:.2f}x CPU, "
              f"{from_wave[1] / from_cache[1]:.2f}x wall; trainable parameters "
              f"{sum(p.numel() for p in params) / 1e6:.1f} M of {sum(p.numel() for p in bb.parameters()) / 1e6:.1f} M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (IEMOCAP median: 3.6 s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    waves = clips(args.clips, args.seconds)
    forward_costs(waves, args.batch)
    cache_costs(waves, args.batch)
    fine_tune_costs(waves)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
