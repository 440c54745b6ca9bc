"""Prosodic features: openSMILE eGeMAPSv02 (Eyben et al. 2016).

* Low-level descriptors (LLDs): 25 values every 10 ms, the prosodic teacher's input
  (the paper, Sec. 3).
* Functionals: 88 per utterance, for the logistic-regression baseline and the
  corpus probes.

Both are extracted once per utterance into a :class:`~emolib.cache.FeatureCache`
keyed by the audio's content and the settings, in parallel over processes, with a
progress bar.

Defined treatment of difficult audio (counted and reported, never a crash deep
inside a batch):

* **NaN / inf descriptors** (openSMILE emits them rarely, e.g. on clipped frames):
  replaced by 0 *after* z-normalisation, i.e. by the mean the normaliser was fitted on
  (the training speakers', or the speaker's own); counted.
* **Too short** utterances (fewer than ``MIN_FRAMES`` LLD frames, 0.1 s): padded
  with the fitted mean (0) up to ``MIN_FRAMES`` so every network layer sees a valid
  map; counted. Below ~60 ms openSMILE returns a single all-NaN frame (with a
  "Segment too short" warning), which the NaN rule above turns into the mean.
* **Silent** audio (digital silence: openSMILE's loudness stays at its floor, about
  0.001, in every frame; a -80 dBFS tone already reads 0.006): openSMILE returns valid
  descriptors (unvoiced F0 = 0); kept as they are (a silent turn is still a turn), and
  counted. A clip too short for any finite frame is counted as too short, not as silent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .audio import SAMPLE_RATE, read_audio
from .cache import CachedArrays, FeatureCache, file_digest, fits_in_memory
from .machine import available_cores, forked_map, interrupts_deferred

MIN_FRAMES = 10  # 0.1 s of 10 ms LLD frames
SILENT_LOUDNESS = 2e-3  # Loudness_sma3 of all-zero audio is 0.00103, of a 200 Hz tone at -80 dBFS 0.0058

LLD_NAMES = (
    "Loudness_sma3", "alphaRatio_sma3", "hammarbergIndex_sma3", "slope0-500_sma3", "slope500-1500_sma3",
    "spectralFlux_sma3", "mfcc1_sma3", "mfcc2_sma3", "mfcc3_sma3", "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz", "jitterLocal_sma3nz", "shimmerLocaldB_sma3nz", "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz", "logRelF0-H1-A3_sma3nz", "F1frequency_sma3nz", "F1bandwidth_sma3nz",
    "F1amplitudeLogRelF0_sma3nz", "F2frequency_sma3nz", "F2bandwidth_sma3nz", "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz", "F3bandwidth_sma3nz", "F3amplitudeLogRelF0_sma3nz",
)

_SMILE: dict[str, object] = {}


def _fs_bytes(text: str, encoding: str) -> bytes:
    """What ``bytes(text, "ascii")`` becomes inside openSMILE's binding: the bytes the file system uses."""
    return os.fsencode(text)


def _smile(level: str):
    """One openSMILE extractor per process and level (building one costs ~50 ms)."""
    if level not in _SMILE:
        import opensmile
        import opensmile.core.lib

        # The binding hands every path to the C library as bytes(path, "ascii") (its config files
        # sit in site-packages), so a checkout or venv under a folder such as /home/jürgen could
        # not build an extractor: UnicodeEncodeError (audeering/opensmile-python#63, open). The C
        # library opens the bytes it is given, and those of os.fsencode name the same files; every
        # other string the binding encodes is an ASCII component name, encoded alike.
        opensmile.core.lib.bytes = _fs_bytes
        feature_level = {"lld": opensmile.FeatureLevel.LowLevelDescriptors,
                         "functionals": opensmile.FeatureLevel.Functionals}[level]
        _SMILE[level] = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=feature_level)
    return _SMILE[level]


def extract(path: str | os.PathLike, level: str = "lld", max_seconds: float | None = None) -> np.ndarray:
    """eGeMAPSv02 of one file: ``(frames, 25)`` LLDs or ``(88,)`` functionals, float32."""
    signal = read_audio(path, sample_rate=SAMPLE_RATE, max_seconds=max_seconds, allow_silent=True)
    with interrupts_deferred():  # a Ctrl-C inside openSMILE's callback is dropped, with the frames (see there)
        frame = _smile(level).process_signal(signal, SAMPLE_RATE)
    values = frame.to_numpy(dtype=np.float32)
    if level == "lld":
        if values.shape[1] != len(LLD_NAMES):
            raise RuntimeError(f"{path}: openSMILE returned {values.shape[1]} LLDs, expected {len(LLD_NAMES)}")
        return values
    return values[0]


def _settings(level: str, max_seconds: float | None) -> dict:
    import opensmile

    return {"feature_set": "eGeMAPSv02", "level": level, "sample_rate": SAMPLE_RATE,
            "max_seconds": max_seconds, "opensmile": opensmile.__version__}


#: The shape and dtype of a cached entry by level (:func:`extract`'s output).
ENTRIES = {"lld": ((None, len(LLD_NAMES)), "float32"), "functionals": ((88,), "float32")}


def _work(job):
    path, digest, level, max_seconds, cache_dir = job
    from pathlib import Path

    cache = FeatureCache("egemaps", _settings(level, max_seconds), root=Path(cache_dir), entry=ENTRIES.get(level))
    if not cache.has(digest):
        cache.put(digest, extract(path, level, max_seconds))
    return digest


class Selection(Sequence):
    """``arrays[uid]`` for each of ``ids``, in order, looked up each time it is asked for: what a
    list comprehension would be, without reading every array into memory at once (the arrays of
    :func:`features` come from disk, those of :func:`prepare_lld` are computed on demand)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], ids: Sequence[str]):
        self.arrays, self.ids = arrays, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Selection(self.arrays, self.ids[i])
        return self.arrays[self.ids[i]]


def features(
    items: Iterable[tuple[str, os.PathLike]], level: str = "lld", max_seconds: float | None = None,
    processes: int | None = None, progress: bool = True,
) -> CachedArrays:
    """eGeMAPSv02 for every ``(utterance id, wav path)``; cached, parallel, resumable.

    Returns id -> array, each read from the cache when asked for (:class:`~emolib.cache.CachedArrays`):
    the descriptors of a large corpus need not fit in memory. ``processes`` defaults to the
    machine's cores (capped by the work to do)."""
    from . import paths

    items = list(items)
    cache = FeatureCache("egemaps", _settings(level, max_seconds), entry=ENTRIES.get(level))
    digests = {uid: file_digest(path) for uid, path in items}

    def to_do() -> list[tuple]:
        jobs = [(str(path), digests[uid], level, max_seconds, str(paths.cache_dir()))
                for uid, path in items if not cache.has(digests[uid])]
        return list({job[1]: job for job in jobs}.values())  # identical files are extracted once

    if to_do():
        with cache.writing(f"eGeMAPS {level}"):  # another process extracting: wait, then reuse
            _extract_all(to_do(), level, processes, progress)
    return CachedArrays(cache, {uid: digests[uid] for uid, _ in items})


def _extract_all(todo: list[tuple], level: str, processes: int | None, progress: bool) -> None:
    """Run the extraction jobs of :func:`features`, in ``processes`` forked processes."""
    from .progress import progress_bar

    if todo:
        n = min(processes or available_cores(), len(todo))
        desc = f"eGeMAPS {level} ({len(todo)} files, {n} proc)"
        if n > 1:
            for _ in progress_bar(forked_map(_work, todo, n, f"eGeMAPS {level} into {todo[0][4]}", chunksize=4),
                                  total=len(todo), desc=desc, enabled=progress):
                pass
        else:
            for job in progress_bar(todo, desc=desc, enabled=progress):
                _work(job)


# -- normalisation (statistics from the training speakers of a fold, or from each speaker) --


#: Descriptors openSMILE computes on voiced frames only (``_sma3nz``: 0 when unvoiced).
VOICED_ONLY = np.array([name.endswith("nz") for name in LLD_NAMES])


@dataclass
class Normaliser:
    """Per-descriptor z-normalisation with statistics from training utterances only.

    The ``_sma3nz`` descriptors (F0, jitter, shimmer, HNR, formants) are *undefined* on
    unvoiced frames, where openSMILE writes 0 (eGeMAPS, Eyben et al. 2016). Their
    statistics come from voiced frames only, and unvoiced frames become 0 after scaling,
    i.e. the voiced mean: otherwise "unvoiced" would read as a pitch tens of semitones
    below anyone's voice and swamp the real pitch differences. Voicing itself stays
    visible in the other descriptors (loudness, HNR's neighbours, spectral slope).
    """

    mean: np.ndarray
    std: np.ndarray
    voiced_only: np.ndarray | None = None

    @classmethod
    def fit(cls, arrays: Sequence[np.ndarray], voiced_only: np.ndarray | None = None) -> "Normaliser":
        """Mean and (population) standard deviation per descriptor over every frame of ``arrays``,
        leaving out non-finite values (an inf frame, a clipped one, must not take its column's
        statistics) and, for the ``voiced_only`` columns, zeros. Two passes over ``arrays``
        (sums, then squared deviations from the mean, in float64: what ``np.nanmean`` and
        ``np.nanstd`` compute, without stacking the training set's frames into one array)."""
        def valid(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = a.reshape(-1, a.shape[-1]).astype(np.float64)
            ok = np.isfinite(x)
            if voiced_only is not None:
                ok[:, voiced_only] &= x[:, voiced_only] != 0
            return x, ok

        width = next(iter(arrays)).shape[-1]
        total, count, squares = np.zeros(width), np.zeros(width, np.int64), np.zeros(width)
        for a in arrays:
            x, ok = valid(a)
            total += np.where(ok, x, 0.0).sum(axis=0)
            count += ok.sum(axis=0)
        with np.errstate(all="ignore"):  # an all-unvoiced column: handled below
            mean = total / count
        for a in arrays:
            x, ok = valid(a)
            d = np.where(ok, x - mean, 0.0)
            squares += (d * d).sum(axis=0)
        with np.errstate(all="ignore"):
            std = np.sqrt(squares / count)
        std[~np.isfinite(std) | (std < 1e-8)] = 1.0  # a constant descriptor stays constant (0) after scaling
        mean[~np.isfinite(mean)] = 0.0
        return cls(mean.astype(np.float32), std.astype(np.float32), voiced_only)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.std).astype(np.float32)
        if self.voiced_only is not None:
            z[:, self.voiced_only] = np.where(x[:, self.voiced_only] == 0, 0.0, z[:, self.voiced_only])
        return z


def speaker_normalisers(arrays: Mapping[str, np.ndarray], speaker_of: Mapping[str, str]) -> dict[str, Normaliser]:
    """Speaker normalisation: one :class:`Normaliser` per speaker, fitted on all of that
    speaker's utterances in ``arrays`` (audio only, no labels), returned per utterance id.

    A voice's register, range and loudness then read as 0, and what is left is how each turn
    departs from its own speaker's habit, a common treatment of prosodic emotion
    features (Sethu et al. 2007; Busso et al. 2009). It needs a few utterances of every
    speaker, including held-out ones, as IEMOCAP's dyadic sessions provide."""
    by_speaker: dict[str, list[str]] = {}
    for uid in arrays:
        by_speaker.setdefault(speaker_of[uid], []).append(uid)
    fitted = {spk: Normaliser.fit(Selection(arrays, uids), voiced_only=VOICED_ONLY)
              for spk, uids in by_speaker.items()}
    return {uid: fitted[speaker_of[uid]] for uid in arrays}


REPAIRS = ("nan_frames_replaced", "short_utterances_padded", "silent_utterances")
_LOUDNESS = LLD_NAMES.index("Loudness_sma3")


def prepare_one(x: np.ndarray, normaliser: Normaliser) -> tuple[np.ndarray, dict[str, int]]:
    """One utterance's map, normalised, repaired and padded (see the module docstring), and
    what it needed: the counts of :data:`REPAIRS` for this utterance."""
    repairs = dict.fromkeys(REPAIRS, 0)
    loud = x[:, _LOUDNESS][np.isfinite(x[:, _LOUDNESS])]
    if loud.size and np.abs(loud).max() < SILENT_LOUDNESS:
        repairs["silent_utterances"] = 1
    z = normaliser(x)
    bad = ~np.isfinite(z)
    if bad.any():
        repairs["nan_frames_replaced"] = int(bad.any(axis=1).sum())
        z[bad] = 0.0
    if z.shape[0] < MIN_FRAMES:
        repairs["short_utterances_padded"] = 1
        z = np.concatenate([z, np.zeros((MIN_FRAMES - z.shape[0], z.shape[1]), np.float32)], axis=0)
    return z, repairs


class PreparedLLD(Mapping):
    """id -> the utterance's ready map (:func:`prepare_one`), computed each time it is asked for
    from the raw descriptors and its normaliser: nothing but the raw arrays' cache is kept."""

    def __init__(self, arrays: Mapping[str, np.ndarray], normaliser: Normaliser | Mapping[str, Normaliser]):
        self.arrays, self.normaliser = arrays, normaliser

    def prepared(self, uid: str) -> tuple[np.ndarray, dict[str, int]]:
        """:func:`prepare_one` of the utterance, with its normaliser."""
        norm = self.normaliser if isinstance(self.normaliser, Normaliser) else self.normaliser[uid]
        return prepare_one(self.arrays[uid], norm)

    def __getitem__(self, uid: str) -> np.ndarray:
        return self.prepared(uid)[0]

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def prepare_lld(arrays: Mapping[str, np.ndarray], normaliser: Normaliser | Mapping[str, Normaliser],
                hold: bool | None = None) -> tuple[Mapping[str, np.ndarray], dict[str, int]]:
    """Normalise, repair NaN/inf and pad too-short maps (see the module docstring).

    ``normaliser``: one for every utterance, or one per utterance id (:func:`speaker_normalisers`).
    Returns the ready arrays and the counts of each treatment over all of ``arrays`` (one pass
    here, reading each raw map once). ``hold``: keep the ready arrays in memory (a dict), or
    compute each again when it is read (:class:`PreparedLLD`: a large corpus's maps never sit in
    memory together); by default held when ``arrays`` (a :class:`~emolib.cache.CachedArrays`
    whose size is known without reading it, or arrays in memory already) take at most
    :func:`emolib.cache.hold_bytes` (``EMOLIB_HOLD``)."""
    if hold is None:
        size = arrays.nbytes() if isinstance(arrays, CachedArrays) else sum(a.nbytes for a in arrays.values())
        hold = fits_in_memory(size)
    ready = PreparedLLD(arrays, normaliser)
    held: dict[str, np.ndarray] = {}
    counts = {**dict.fromkeys(REPAIRS, 0), "utterances": len(arrays)}
    for uid in arrays:
        z, repairs = ready.prepared(uid)
        for key, n in repairs.items():
            counts[key] += n
        if hold:
            held[uid] = z
    return (held if hold else ready), counts
