"""What the speech backbones cost on this CPU (issue 5: "backbone forward cost per
audio-second, cached vs not; peak memory"). A script that prints figures, not a test:

    python benchmarks/bench_backbones.py [--clips 16] [--seconds 4] [--threads 2]

* forward: CPU seconds (``time.process_time``, all threads) and wall seconds per second
  of audio, frozen (inference mode), batches of 8 clips of ``--seconds``: Whisper
  tiny.en with positions cut to the clips (what ``backbones.py`` does) vs padded to
  its 30 s window (what Whisper itself does), in fp32 and bf16 autocast; tiny-random.
* cache: ``pooled_states`` on fresh clips (read + hash + forward + write), then again
  (read from the cache: the cost a training epoch pays per audio-second).
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
