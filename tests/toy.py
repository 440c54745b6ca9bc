"""A toy corpus for fast training tests: tones whose pitch and transcripts whose words
give the class away, so that a working model learns it within a few epochs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from emolib.config import CLASSES
from emolib.corpora import Corpus, Utterance
from emolib.folds import make_folds
from emolib.pipeline import Data

WORDS = {"neutral": ["table", "paper", "window"], "angry": ["furious", "hate", "outrage"],
         "sad": ["miss", "lonely", "cry"], "happy": ["wonderful", "love", "great"]}
PITCH = {"neutral": 110.0, "angry": 260.0, "sad": 80.0, "happy": 400.0}


def toy_corpus(root: Path, sessions: int = 3, per_class: int = 3, seconds: float = 0.6, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    sr = 16000
    utts = []
    for s in range(1, sessions + 1):
        for g in "FM":
            speaker = f"T{s}{g}"
            (root / speaker).mkdir(parents=True, exist_ok=True)
            for c, label in enumerate(CLASSES):
                for i in range(per_class):
                    uid = f"{speaker}_{label}_{i}"
                    n = int(sr * seconds * rng.uniform(0.8, 1.2))
                    t = np.arange(n) / sr
                    f0 = PITCH[label] * rng.uniform(0.95, 1.05)
                    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3)) * 0.2
                    x = (x + rng.normal(0, 0.005, n)).astype(np.float32)
                    path = root / speaker / f"{uid}.wav"
                    sf.write(path, x, sr, subtype="PCM_16")
                    word = WORDS[label][i % len(WORDS[label])]
                    utts.append(Utterance(id=uid, label=label, speaker=speaker, session=f"T{s}", path=path,
                                          text=f"well it is {word} today", duration=n / sr))
    return Corpus("toy", utts, has_transcripts=True)


def toy_data(root: Path, **kw) -> Data:
    corpus = toy_corpus(root, **kw)
    return Data(corpus, make_folds(corpus, "session", validation_speakers=2))
