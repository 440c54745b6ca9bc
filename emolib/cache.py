"""On-disk feature caches keyed by an audio file's content and the feature settings.

Used for the eGeMAPS descriptors (``prosody.py``) and the frozen backbone states
(``backbones.py``): each is computed once per utterance and reused by every fold,
teacher, student variant and notebook. The key is the SHA-1 of the file's bytes, so
a renamed file hits the cache and an edited one misses it. Entries are ``.npy``
files written atomically, so a killed extraction resumes where it stopped.

    cache_dir()/<kind>/<settings hash>/<aa>/<sha1>.npy
    cache_dir()/<kind>/<settings hash>/settings.json      (what the hash stands for)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .config import config_hash
from .runs import atomic_path, atomic_write_json


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    """One kind of feature under one set of settings."""

    def __init__(self, kind: str, settings: dict[str, Any], root: Path | None = None):
        self.kind = kind
        self.settings = settings
        self.key = config_hash(settings)
        self.dir = (root or paths.cache_dir()) / kind / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "settings.json").exists():
            atomic_write_json(self.dir / "settings.json", {"kind": kind, **settings})

    def path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: str) -> np.ndarray:
        return np.load(self.path(digest))

    def put(self, digest: str, array: np.ndarray) -> None:
        with atomic_path(self.path(digest)) as tmp:
            np.save(tmp, array)
