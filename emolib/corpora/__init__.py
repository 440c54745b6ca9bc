"""Corpora: the common ``Utterance`` record and ``load_corpus(spec)``.

=========================  =====================================================
spec                       corpus
=========================  =====================================================
``synth``                  the built-in espeak-ng corpus (generated, cached)
``iemocap:PATH``           IEMOCAP release tree (4 classes, excited -> happy)
``ravdess:PATH``           RAVDESS ``Actor_XX/*.wav``
``cremad:PATH``            CREMA-D ``AudioWAV/`` (+ ``VideoFlash/``)
``emodb:PATH``             Berlin EmoDB ``wav/``
``PATH.csv|.jsonl|.json``  a manifest (any other corpus)
=========================  =====================================================

Every loader returns a :class:`Corpus`. Bad input raises :class:`CorpusError`
naming the file (and line), or is skipped with a reason counted in
``Corpus.skipped`` and printed once; nothing is dropped silently. A folder or
file that cannot be read (e.g. no permission) raises naming it: loaders list
folders with :func:`list_folder`, :func:`walk_folder` and :func:`find_files`,
never ``Path.glob`` or a bare ``os.walk``, which pass over such a folder.
"""
from __future__ import annotations

import collections
import fnmatch
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..audio import AudioError, AudioInfo, probe_corpus_file
from ..config import CLASSES, MIN_CLIP_SECONDS


def text_lines(text: str) -> list[str]:
    """``text`` split at its line breaks, as a file's lines: ``\\n``, ``\\r\\n`` or ``\\r`` only.
    ``str.splitlines`` also breaks at U+0085, U+2028, form feeds and other characters a line of a
    transcript or a manifest may hold: a Windows-1252 "…" read as Latin-1 is U+0085, and cut an
    IEMOCAP transcript there, the rest counted as a line without an utterance id."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def csv_lines(text: str) -> io.StringIO:
    """``text`` for :mod:`csv`, which splits it at ``\\n``, ``\\r\\n`` or ``\\r`` only (the csv module's
    ``newline=""`` reading), not at the characters :func:`text_lines` keeps."""
    return io.StringIO(text, newline="")


#: The skip reason every loader counts for an audio file without samples.
SKIP_EMPTY = "empty audio (0 samples)"
SKIP_UNREADABLE_FOLDER = "folders that cannot be read and are not named as the corpus's (e.g. lost+found)"
#: Shorter clips are skipped too: 400 samples at 16 kHz is the receptive field of the wav2vec 2.0 /
#: HuBERT / WavLM convolutional front end, the shortest input those backbones accept (no emotion
#: corpus has a turn this short; IEMOCAP's shortest is 0.58 s).
MIN_SECONDS = MIN_CLIP_SECONDS  # the shortest max_seconds a config takes: shorter audio is skipped
SKIP_SHORT = f"audio shorter than {MIN_SECONDS * 1000:g} ms (too short for a speech model's front end)"


class CorpusError(ValueError):
    """A corpus file is missing or malformed; the message names the file (and line)."""


def probe_or_skip(path: Path, skipped: "collections.Counter[str]", where: str | None = None) -> AudioInfo | None:
    """A corpus audio file's length and rate, or None once an empty or too short file is counted
    in ``skipped`` (:data:`SKIP_EMPTY`, :data:`SKIP_SHORT`). A file that cannot be read raises :class:`CorpusError`
    naming it, after ``where`` it is referenced from (``file:line`` of a manifest or label file)."""
    try:
        info = probe_corpus_file(path)
    except AudioError as err:
        raise CorpusError(str(err) if where is None else f"{where}: {err}") from err
    if info is None:
        skipped[SKIP_EMPTY] += 1
    elif info.duration < MIN_SECONDS:
        skipped[SKIP_SHORT] += 1
        return None
    return info


def _unreadable(path: Path, err: OSError, what: str) -> CorpusError:
    """The error for ``err`` met at ``path`` (a ``what``: folder, file, path). When permission is
    denied because a folder on the way cannot be searched, that folder is named instead."""
    path = Path(path)
    if isinstance(err, PermissionError):
        for step in [*reversed(path.parents), path]:
            try:
                os.stat(step)
            except OSError:
                path, what = step.parent, "folder"
                break
    return CorpusError(f"{path}: cannot read this {what} ({err.strerror or err})")


def list_folder(folder: Path) -> list[str]:
    """The names in ``folder``, sorted. A folder that cannot be read (no permission, an I/O error,
    not a folder) raises :class:`CorpusError` naming it: a folder passed over in silence would
    change the corpus without a word (``Path.glob`` and ``os.walk`` do that)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entry.name for entry in entries)
    except OSError as err:
        raise _unreadable(folder, err, "folder") from err


def walk_folder(root: Path, may_skip=None, skipped: "collections.Counter[str] | None" = None):
    """``os.walk(root)``, except that a folder that cannot be read raises :class:`CorpusError`
    naming it. ``dirnames`` may be pruned in place, as with ``os.walk``.

    ``may_skip(folder)``: True for a folder that cannot hold the corpus's files (a file system's
    root-owned ``lost+found`` when the corpus has a disk of its own); such a folder, unreadable, is
    counted in ``skipped`` under :data:`SKIP_UNREADABLE_FOLDER` instead (never ``root`` itself)."""
    def fail(err: OSError) -> None:
        folder = Path(err.filename or root)
        if may_skip is not None and skipped is not None and folder != Path(root) and may_skip(folder):
            skipped[SKIP_UNREADABLE_FOLDER] += 1
            return
        raise _unreadable(folder, err, "folder") from err

    yield from walk_links(root, fail)


def walk_links(root: Path | str, onerror):
    """``os.walk(root)`` top-down, entering symbolic links to folders (a corpus assembled from
    links, an actor's folder linked from another disk: ``os.walk`` passed over them, and their
    speakers were left out without a word), each real folder once: a link to a folder above it
    would loop for ever, and a second link to one folder would list its files twice."""
    seen: set[tuple[int, int]] = set()
    for top, dirs, names in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(top)
        except OSError as err:
            onerror(err)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []  # reached before, through another path: neither listed nor entered again
            continue
        seen.add((st.st_dev, st.st_ino))
        yield top, dirs, names


def _kind(path: Path, test) -> bool:
    try:
        return test(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise _unreadable(path, err, "path") from err


def is_folder(path: Path) -> bool:
    """True for a folder, False when there is none; raises :class:`CorpusError` when it cannot be told
    (e.g. a folder on the way cannot be searched)."""
    return _kind(path, stat.S_ISDIR)


def is_file(path: Path) -> bool:
    """True for a file, False when there is none; raises :class:`CorpusError` when it cannot be told."""
    return _kind(path, stat.S_ISREG)


def read_file(path: Path) -> bytes:
    """The bytes of a corpus text file (labels, transcripts, a manifest); a file that cannot be read
    raises :class:`CorpusError` naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise _unreadable(path, err, "file") from err


def find_files(root: Path, pattern: str) -> list[Path]:
    """``sorted(root.glob(pattern))`` for files, for a pattern of ``/``-separated name patterns
    (no ``**``; matched case-sensitively; names starting with ``.`` never match), except that a
    folder on the way that cannot be read raises :class:`CorpusError` naming it: ``Path.glob``
    passes over it in silence, and a corpus loads with part of it missing."""
    found = [Path(root)]
    parts = pattern.split("/")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        found = [folder / name for folder in found for name in list_folder(folder)
                 if not name.startswith(".") and fnmatch.fnmatchcase(name, part)
                 and (is_file if last else is_folder)(folder / name)]
    return sorted(found)


def skip_unmapped(native: str, mapping: dict[str, str], labels: str, skipped: "collections.Counter[str]") -> bool:
    """True, with the skip counted, when a corpus's native class has no class under ``labels``."""
    if native in mapping:
        return False
    skipped[f"emotion '{native}' has no class in labels='{labels}'"] += 1
    return True


@dataclass
class Utterance:
    id: str
    label: str
    speaker: str
    session: str
    path: Path | None = None  # audio (16 kHz after emolib.audio.read_audio); None for a text-only corpus
    text: str | None = None  # transcript; None when the corpus has none
    duration: float | None = None  # seconds, when known without reading the audio
    video: Path | None = None  # the matching video file, when the corpus has one
    meta: dict[str, Any] = field(default_factory=dict)  # corpus-specific: native label, gender, synth cues


@dataclass
class Corpus:
    name: str
    utterances: list[Utterance]
    classes: tuple[str, ...] = CLASSES
    #: False when transcripts are absent or carry no signal (a few fixed sentences).
    has_transcripts: bool = False
    has_audio: bool = True
    root: Path | None = None
    #: Facts a user must know (e.g. why there is no linguistic teacher on this corpus).
    notes: list[str] = field(default_factory=list)
    #: reason -> number of items skipped by the loader (documented skips).
    skipped: dict[str, int] = field(default_factory=dict)
    #: Why a corpus without transcripts has none, for the linguistic teacher's refusal.
    why_no_transcripts: str = ""

    def __post_init__(self) -> None:
        unknown = sorted({u.label for u in self.utterances} - set(self.classes))
        if unknown:
            raise CorpusError(f"{self.name}: labels {unknown} are not in the class set {list(self.classes)}")
        ids = collections.Counter(u.id for u in self.utterances)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:  # e.g. X.wav and X.WAV side by side
            same = [u for u in self.utterances if u.id == dup[0]]
            files = [str(u.path) for u in same if u.path is not None]
            holders = " and ".join(files) if len(files) == len(same) else f"{len(same)} utterances"
            many = f"{len(dup)} duplicate utterance ids, e.g. " if len(dup) > 1 else "duplicate utterance id "
            raise CorpusError(f"{self.name}: {many}{dup[0]!r} ({holders})")

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self):
        return iter(self.utterances)

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.utterances]

    def by_id(self) -> dict[str, Utterance]:
        return {u.id: u for u in self.utterances}

    def label_index(self, label: str) -> int:
        return self.classes.index(label)

    def labels(self, ids: Iterable[str] | None = None) -> list[int]:
        table = self.by_id()
        chosen = self.utterances if ids is None else [table[i] for i in ids]
        return [self.classes.index(u.label) for u in chosen]

    def fingerprint(self) -> str:
        """A hash of what every result depends on: each utterance's id, label, speaker, session,
        transcript, and its audio file's name and size (not its bytes: reading a whole corpus
        would take minutes). Runs record it and refuse to be reused on a corpus that changed."""
        import hashlib
        import json

        def size(path: Path | None) -> int | None:
            try:
                return path.stat().st_size if path is not None else None
            except OSError:
                return None

        rows = sorted((u.id, u.label, u.speaker, u.session, u.text, u.path.name if u.path else None, size(u.path))
                      for u in self.utterances)
        return hashlib.sha1(json.dumps([list(self.classes), rows]).encode()).hexdigest()[:12]

    def audio_digest(self) -> str | None:
        """A hash of every audio file's bytes (with its utterance's id); None for a corpus without
        audio. :meth:`fingerprint` sees a file replaced by one of another size; this sees one
        rewritten in place with as many bytes (loudness-normalised, denoised, re-cut to the same
        length), which would otherwise reuse runs trained on the old audio. Reading every file
        costs a second a gigabyte, but the feature caches key their entries on the same digests
        (:func:`emolib.cache.file_digest`, memoised per process), so a command that extracts or
        reads features pays it once either way. A file that cannot be read counts as missing: the
        loader or the extractor names it."""
        import hashlib

        from ..cache import file_digest

        if not self.has_audio:
            return None

        def digest(path: Path | None) -> str:
            try:
                return file_digest(path) if path is not None else "-"
            except OSError:
                return "?"

        h = hashlib.sha1()
        for uid, path in sorted((u.id, u.path) for u in self.utterances):
            h.update(f"{uid}\0{digest(path)}\n".encode())
        return h.hexdigest()[:12]

    def frame(self):
        """One row per utterance (id, label, speaker, session, path, text, duration, meta columns)."""
        import pandas as pd

        rows = []
        for u in self.utterances:
            row = {"id": u.id, "label": u.label, "speaker": u.speaker, "session": u.session,
                   "path": str(u.path) if u.path else None, "text": u.text, "duration": u.duration}
            row.update({f"meta.{k}": v for k, v in u.meta.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def report_skips(self) -> None:
        """Print the documented skips once (a loader calls this before returning)."""
        for reason, n in sorted(self.skipped.items()):
            print(f"[{self.name}] skipped {n} item(s): {reason}")


def label_set(corpus: str, labels: str, to_iemocap4: dict[str, str],
              native_classes: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """``(mapping, classes)`` of an acted corpus for ``labels``: its native classes mapped onto
    IEMOCAP's four (``iemocap4``; a native class missing from ``to_iemocap4`` is skipped), or kept
    as they are (``native``)."""
    if labels == "iemocap4":
        return dict(to_iemocap4), CLASSES
    if labels == "native":
        return {name: name for name in native_classes}, tuple(native_classes)
    raise CorpusError(f"{corpus}: unknown labels={labels!r}; choose iemocap4 or native")


def acted_corpus(name: str, utterances: list[Utterance], classes: tuple[str, ...], root: Path,
                 skipped: "collections.Counter[str]", *, empty: str, sentences: str, which: str,
                 labels_note: str) -> Corpus:
    """What every loader of an acted corpus whose clips all say a few fixed sentences (CREMA-D,
    EmoDB, RAVDESS) ends with: ``empty`` as a :class:`CorpusError` when no utterance is left,
    else the corpus, without transcripts (the words carry no emotion), its skips printed.
    ``sentences`` says what every clip says, ``which`` where an utterance's sentence is recorded."""
    if not utterances:
        raise CorpusError(empty)
    why = f"every clip says {sentences}, so the words carry no emotion signal."
    corpus = Corpus(
        name=name, utterances=utterances, classes=classes, has_transcripts=False, has_audio=True, root=root,
        notes=[f"No transcripts: {why[:-1]} and the linguistic teacher refuses this corpus. {which}", labels_note],
        skipped=dict(skipped), why_no_transcripts=why,
    )
    corpus.report_skips()
    return corpus


#: ``KIND:PATH`` corpus specs: kind -> the module of this package whose ``load(root, labels=...)`` reads
#: that layout. The one registry: ``load_corpus``, the ``--corpus`` help and the override that makes a
#: relative ``KIND:PATH`` absolute (``config._absolute_paths``) all read it.
LOADERS: dict[str, str] = {"iemocap": "iemocap", "ravdess": "ravdess", "cremad": "cremad", "emodb": "emodb",
                           "manifest": "manifest"}


def spec_help() -> str:
    """The corpus specs ``load_corpus`` accepts, in words (for help and error messages)."""
    kinds = ", ".join(f"{kind}:PATH" for kind in LOADERS if kind != "manifest")
    return f"synth, {kinds}, or the path of a .csv/.jsonl/.json manifest"


def load_corpus(spec: str, **options: Any) -> Corpus:
    """Load a corpus by spec (see the module docstring). ``options`` go to the loader,
    e.g. ``labels="native"`` or ``synth=SynthConfig(...)``."""
    spec = str(spec)
    name, _, rest = spec.partition(":")
    if name == "synth" and not rest:
        from . import synth

        return synth.load(**options)
    if name in LOADERS and rest:
        import importlib

        module = importlib.import_module(f".{LOADERS[name]}", __name__)
        return module.load(Path(rest).expanduser(), **options)
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".csv", ".jsonl", ".json"):
        from . import manifest

        return manifest.load(path, **options)
    raise CorpusError(f"unknown corpus spec {spec!r}: use {spec_help()}")


def load_from_config(data_cfg) -> Corpus:
    """The corpus a ``DataConfig`` names, with its options (label set, synth parameters)."""
    options: dict[str, Any] = {"labels": data_cfg.labels}
    if data_cfg.corpus == "synth":
        options = {"synth": data_cfg.synth}
    return load_corpus(data_cfg.corpus, **options)
