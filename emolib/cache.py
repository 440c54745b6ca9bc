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

import contextlib
import hashlib
import os
import re
import time
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import paths
from .config import config_hash
from .runs import ResultFileError, atomic_path, atomic_write_json, work_lock


#: What numpy raises on a damaged ``.npy``: a short file, or a header whose text no longer parses
#: (numpy tokenizes it: garbage there gives a TokenError or a SyntaxError, not a ValueError).
NPY_ERRORS = (ValueError, EOFError, OSError, SyntaxError, tokenize.TokenError)


#: What a cache's entries hold: their shape, ``None`` for a length that varies (frames), and dtype.
Entry = tuple[tuple[int | None, ...], str]


def _entry_problem(shape: tuple, dtype: np.dtype, entry: Entry | None) -> str | None:
    """Why an array of ``shape`` and ``dtype`` is not an entry of a cache holding ``entry``
    (in words); None when it is one, or when the cache does not say what it holds."""
    if entry is None:
        return None
    want, want_dtype = entry
    if (len(shape) == len(want) and all(w is None or n == w for n, w in zip(shape, want))
            and np.dtype(dtype) == np.dtype(want_dtype)):
        return None
    described = "(" + ", ".join("n" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
    return f"holds a {np.dtype(dtype)} array of shape {tuple(shape)} where this cache holds {want_dtype} {described}"


def _whole_npy(path: Path, entry: Entry | None = None) -> bool:
    """Whether a ``.npy`` file holds as many bytes as its header promises (reads the header only),
    and an array of the shape and dtype the cache holds (``entry``: a valid file of another array,
    copied or written over it, is damaged as well).
    A file that cannot be read at all (permissions, an I/O error, a stale NFS handle) is not
    damaged, and may be another process's good entry: :class:`ResultFileError` naming it."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return path.stat().st_size == expected and _entry_problem(shape, dtype, entry) is None
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read this cache entry ({exc}); it was left as it is") from exc
    except NPY_ERRORS:
        return False


_FILE_DIGESTS: dict[tuple, str] = {}  # (resolved path, inode, size, mtime, ctime) -> digest
#: A file changed less than this long ago is hashed again each time: the kernel stamps
#: modification times from a coarse clock (a few ms), so a file rewritten at once with as many
#: bytes could keep its stamp ("racy" entries, as git calls them).
RACY_SECONDS = 2.0


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes. Memoised per process on the file's inode, size and times: the
    feature caches ask for every clip of a corpus each time a model trains (some 80 times in the
    report). A file written again gets a new change time (``st_ctime``), which unlike the
    modification time no copy can set back (``cp -p``, ``rsync -a`` and ``touch -d`` keep or set
    ``st_mtime``), as git's index does."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _FILE_DIGESTS:
        return _FILE_DIGESTS[key]
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > RACY_SECONDS:
        _FILE_DIGESTS[key] = h.hexdigest()
    return h.hexdigest()


_DIR_DIGESTS: dict[tuple, str] = {}  # (folder, every file's name, inode, size and times) -> digest


def directory_digest(folder: str | os.PathLike) -> str:
    """SHA-1 over a folder's files (names and bytes, recursively): the identity of a model saved
    with ``save_pretrained``. Memoised per process on every file's inode, size and times (as
    :func:`file_digest`), so asking again (each reused run does) costs a ``stat`` per file, not a
    read of the weights."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(folder)), p.stat()) for p in files]
    key = (str(folder), tuple((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for name, st in stats))
    if key not in _DIR_DIGESTS:
        h = hashlib.sha1()
        for p in files:
            h.update(f"{p.relative_to(folder)}\0{file_digest(p)}\0".encode())
        _DIR_DIGESTS[key] = h.hexdigest()
    return _DIR_DIGESTS[key]


class FeatureCache:
    """One kind of feature under one set of settings; ``entry``: the shape and dtype of every entry
    (``((None, 25), "float32")``), as far as it is known before anything is computed."""

    def __init__(self, kind: str, settings: dict[str, Any], root: Path | None = None, entry: Entry | None = None):
        self.kind = kind
        self.settings = settings
        self.entry = entry
        self.key = config_hash(settings)
        self.dir = (root or paths.cache_dir()) / kind / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "settings.json").exists():
            atomic_write_json(self.dir / "settings.json", {"kind": kind, **settings})

    def path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def has(self, digest: str) -> bool:
        """The entry exists and is whole; a damaged one (cut short by a crash, emptied by a full
        disk, another array of the wrong shape or dtype) is deleted here, so the caller computes it again."""
        path = self.path(digest)
        if not path.is_file():
            return False
        if _whole_npy(path, self.entry):
            return True
        path.unlink(missing_ok=True)
        return False

    def get(self, digest: str) -> np.ndarray:
        path = self.path(digest)
        try:
            return self.checked(path, np.load(path))
        except NPY_ERRORS as exc:
            raise ResultFileError(f"{path}: damaged cache entry ({exc}); delete it and it is computed again") from exc

    def checked(self, path: Path, array: np.ndarray) -> np.ndarray:
        """``array``, read from the entry ``path``; :class:`ResultFileError` naming it when it is not of
        the shape and dtype the cache holds (written over since :meth:`has` looked at it)."""
        problem = _entry_problem(array.shape, array.dtype, self.entry)
        if problem:
            raise ResultFileError(f"{path}: damaged cache entry ({problem}); delete it and it is computed again")
        return array

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Around an extraction into this cache: holds its lock (another process extracting into it
        is waited for; :func:`emolib.runs.work_lock`, ``what`` names it in the waiting message), and
        first removes the temporary files of entries that a killed extraction was writing (SIGKILL
        runs no cleanup; a frame-level entry is megabytes). Every entry is written under this lock,
        so none of those files is another process's write in progress."""
        with work_lock(self.dir / ".lock", what):
            for leftover in self.dir.glob("*/.*"):
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
            yield

    def put(self, digest: str, array: np.ndarray) -> None:
        with atomic_path(self.path(digest)) as tmp:
            np.save(tmp, array)


#: Features up to this many bytes in all are read (or computed from the cache) once and held in
#: memory; beyond it each is read when asked for: :meth:`CachedArrays.held`, and the prosodic
#: teacher's ready maps (``prosody.prepare_lld``). Reading an entry back costs ~80 microseconds
#: (with normalising an LLD map, ~140), which made the built-in corpus's prosodic teacher (1,200
#: utterances, 28 MiB) train 15 % slower per epoch when every item was read on demand. 2 GiB holds
#: some 60 hours of LLDs, or the default student's pooled states of some 75,000 utterances (28 KB
#: each; IEMOCAP has 5,531), far from what a machine that trains needs to keep for itself. The
#: values are the same either way. ``EMOLIB_HOLD`` moves it for a machine (:func:`hold_bytes`).
HOLD_BYTES = 2 << 30

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def hold_bytes(environ=os.environ) -> int:
    """How many bytes of features are held in memory: ``EMOLIB_HOLD`` when set (``16G`` on a server
    with memory to spare, ``500M`` on a small one, ``0`` to read every entry on demand; K, M, G, T
    are powers of 1,024, a bare number is bytes), else :data:`HOLD_BYTES`."""
    value = environ.get("EMOLIB_HOLD", "").strip()
    if not value:
        return HOLD_BYTES
    size = re.fullmatch(r"(\d+(?:\.\d*)?) *([KMGT]?)(?:i?B)?", value, re.IGNORECASE)
    if size is None:
        raise ValueError(f"EMOLIB_HOLD={value!r} is not a size: write e.g. 16G, 500M, or 0 to hold nothing "
                         "(README, \"Large corpora\")")
    return int(float(size[1]) * _UNITS[size[2].upper()])


def fits_in_memory(nbytes: int) -> bool:
    """Whether features of ``nbytes`` in all are held in memory (:func:`hold_bytes`)."""
    return nbytes <= hold_bytes()


class CachedArrays(Mapping):
    """id -> a cache entry, read from disk each time it is asked for and not kept: a corpus's
    descriptors need not fit in memory at once (20,000 clips of two seconds hold 400 MB of eGeMAPS
    LLDs; MSP-Podcast's 237 hours, 8.5 GB), and the operating system's page cache keeps the files
    that fit. Reading one back costs some 80 microseconds."""

    def __init__(self, cache: FeatureCache, digests: dict[str, str]):
        self._cache = cache
        self._digests = digests

    def nbytes(self) -> int:
        """The entries' size on disk (headers included), from ``stat`` alone."""
        return sum(self._cache.path(d).stat().st_size for d in set(self._digests.values()))

    def held(self) -> Mapping[str, np.ndarray]:
        """Every entry read into a dict when they take at most :func:`hold_bytes`, else ``self``."""
        return {uid: self[uid] for uid in self} if fits_in_memory(self.nbytes()) else self

    def __getitem__(self, uid: str) -> np.ndarray:
        return self._cache.get(self._digests[uid])

    def __iter__(self) -> Iterator[str]:
        return iter(self._digests)

    def __len__(self) -> int:
        return len(self._digests)


class MappedArrays(CachedArrays):
    """id -> a cache entry, memory-mapped afresh each time it is asked for and not kept. A mapped
    file holds an open file descriptor as long as the array lives, and a corpus has more clips
    (IEMOCAP: 5,531) than a process may usually open (1,024): mapping every entry at once fails
    with "Too many open files". Read one, use it, drop it, as a dataset item does."""

    def __getitem__(self, uid: str) -> np.ndarray:
        path = self._cache.path(self._digests[uid])
        return self._cache.checked(path, np.load(path, mmap_mode="r"))
