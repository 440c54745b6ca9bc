"""Reading speech audio the way every model in the paper sees it: 16 kHz mono float32.

The student (HuBERT in the paper, Sec. 3) and the prosodic teacher's eGeMAPS
descriptors (openSMILE) both expect 16 kHz mono, so every clip goes through
:func:`read_audio`: soundfile decodes it, channels are averaged, and a file at
another rate is resampled with soxr (libsoxr's "HQ" recipe, not a
hand-written filter). torchaudio is deliberately not used (see docs/ENVIRONMENT.md).

Bad audio raises :class:`AudioError` naming the file and the problem:

===========================  ==================================================
problem                      behaviour
===========================  ==================================================
missing file                 ``AudioError`` ("no such audio file")
unreadable / corrupt file    ``AudioError`` (libsndfile's reason; a git-lfs
                             pointer stub is recognised and named as such)
truncated WAV, AIFF, W64,    ``AudioError`` (the header declares more audio
RF64                         than the file holds: an interrupted copy)
truncated Ogg (Opus,         ``AudioError`` (the file does not end with a whole
Vorbis)                      end-of-stream page); found by the header probes too
truncated MP3                ``AudioError`` when read (fewer samples decode than
                             the header promises); the header probes cannot tell
truncated FLAC               ``AudioError`` when read (libsndfile loses sync)
WAV header not finalised     ``AudioError`` (its data chunk declares 0 bytes but
                             audio follows: a recorder stopped before writing it)
empty (0 samples)            ``AudioError``
NaN or infinite samples      ``AudioError`` (possible in float WAVs)
silent                       ``AudioError`` unless ``allow_silent=True``;
                             :func:`is_silent` is the test (peak below
                             :data:`SILENCE_PEAK`)
===========================  ==================================================

Silence is an error by default because a silent clip carries no evidence for
its emotion label: training on it teaches the label prior, and evaluating on it
scores a guess. A caller that wants to keep it (e.g. to count such clips before
deciding) passes ``allow_silent=True`` and calls :func:`is_silent` itself. The models
of a corpus all do: the eGeMAPS extraction and the speech backbones keep a silent clip
(the prosodic teacher's ``metrics.json`` counts them as ``silent_utterances``), so that
one silent file among thousands neither stops a run nor gives the teachers and the
student different utterances.

Samples of integer PCM files lie in [-1, 1]; a float file is returned as stored (its
values may exceed full scale; no model here assumes otherwise).

Corpus loaders read headers only (:func:`audio_info`, :func:`probe_corpus_file`):
listing thousands of files must take about a second. Those probes catch a cut WAV, AIFF,
W64, RF64 or Ogg file and a WAV whose header was never finalised; a cut MP3 or FLAC
passes them (both declare their length at the start, which a cut leaves intact, and
nothing at the end a header read could check cheaply) and is refused by
:func:`read_audio`, the first time its samples are decoded. A limit: libsndfile's length
of an MP3 without a Xing/Info frame is an estimate from the first frame's bit rate (far
too short for a variable bit rate file; too long when an ID3v2 tag or cover art comes
first), and it decodes no more than that, so such a file is never called cut (it would be
wrongly) and, cut or not, can read short unnoticed (LAME writes the frame for every file).
An Ogg Vorbis file without the end-of-stream flag that reads in full is accepted (some
writers never set it), so one cut exactly at a page boundary that still gives a length
reads short unnoticed.
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from .runs import atomic_path

#: The rate of every model input: HuBERT, wav2vec2, WavLM and Whisper are all trained at 16 kHz.
SAMPLE_RATE = 16000

#: The audio files a folder is searched for (``python -m emolib predict``): what soundfile
#: (libsndfile >= 1.1) reads.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")

#: Peak absolute amplitude (full scale = 1.0) below which a clip counts as silent:
#: -80 dBFS, about 3 least significant bits of 16-bit PCM (1 LSB = 3.05e-5), i.e. only
#: digital silence or dither. Speech recorded at any usable level peaks far above it.
SILENCE_PEAK = 1e-4

#: Resampling quality: soxr's "HQ" (20-bit precision), its own default.
RESAMPLE_QUALITY = "HQ"

#: The first bytes of a git-lfs pointer file: what a clone without ``git lfs pull`` holds
#: instead of audio (a known trap with CREMA-D's repository).
_GIT_LFS_POINTER = b"version https://git-lfs"


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty, silent or holds non-finite samples."""


class AudioInfo(NamedTuple):
    """What a file's header says, without decoding the samples."""

    duration: float  # seconds
    sample_rate: int  # Hz
    channels: int


def _unreadable(path: Path, err: Exception) -> AudioError:
    try:
        with open(path, "rb") as f:
            head = f.read(len(_GIT_LFS_POINTER))
    except OSError:
        head = b""
    if head == _GIT_LFS_POINTER:
        return AudioError(f"{path}: a git-lfs pointer file, not audio (fetch the audio with `git lfs pull`)")
    return AudioError(f"{path}: unreadable audio file ({err})")


def _sf_name(path: Path) -> str | bytes:
    """The name to give soundfile: the path as text, or as bytes when it holds bytes that are not
    valid in the file-system encoding (soundfile would fail to encode them)."""
    name = os.fspath(path)
    try:
        name.encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such audio file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")


#: libsndfile's note on a file shorter than its header declares, in the line of the chunk that
#: says so: the audio chunk of a WAV (``data``) or an AIFF (``SSND``), the whole file of a Sony
#: Wave64 (``riff``) or an RF64 (``Riff size``, from its ds64 chunk).
_SHORT_CHUNK = {fmt: re.compile(rf"^\s*{chunk}\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
                for fmt, chunk in (("WAV", "data"), ("WAVEX", "data"), ("AIFF", "SSND"), ("W64", "riff"),
                                   ("RF64", "Riff size"))}


#: The longest Ogg page: a 27-byte header, a 255-entry segment table, 255 segments of 255 bytes.
_OGG_MAX_PAGE = 27 + 255 + 255 * 255

#: The end-of-stream bit of an Ogg page's header_type byte (RFC 3533, section 6).
_OGG_END_OF_STREAM = 0x04


def _ogg_end_problem(path: Path, subtype: str, frames: int) -> str | None:
    """What is wrong with the end of an Ogg file, or None when it looks whole. A whole Ogg stream
    ends with a page flagged end-of-stream; a cut one ends inside a page, or after a whole page
    without the flag. libsndfile does not notice: it reads a cut Opus file as a shorter clip and
    gives a cut Vorbis file 0 frames (which would pass for empty audio).

    Some writers never set the flag (Android's OggWriter, Telegram voice notes, MuseScore), so a
    whole last page without it is refused only where it cannot be such a file: an Opus stream
    (libsndfile refuses an Opus file without the flag anyway) or one that gives 0 frames (a
    Vorbis file cut at a page boundary; a whole one without the flag reads in full)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - _OGG_MAX_PAGE))
        tail = fh.read()  # holds the start of the last page of a whole file
    at = tail.rfind(b"OggS")
    while at >= 0:
        header = tail[at : at + 27]
        if len(header) < 27:
            return "its last Ogg page is cut off"
        if header[4] == 0:  # stream structure version 0: a page, not the four letters inside a packet
            segments = tail[at + 27 : at + 27 + header[26]]
            if len(segments) < header[26] or at + 27 + len(segments) + sum(segments) > len(tail):
                return "its last Ogg page is cut off"
            if not header[5] & _OGG_END_OF_STREAM and (subtype == "OPUS" or frames == 0):
                return "its last Ogg page does not end the stream"
            return None
        at = tail.rfind(b"OggS", 0, at)
    return "no Ogg page in its last 64 KiB"


def _chunks_fill(fh, at: int, size: int) -> bool:
    """True when RIFF chunks (4 printable letters, a little-endian size, the data, a pad byte to
    an even size) run from byte ``at`` exactly to the end of the file (a missing last pad byte is fine)."""
    while at + 8 <= size:
        fh.seek(at)
        header = fh.read(8)
        if not all(0x20 <= c < 0x7F for c in header[:4]):
            return False
        length = int.from_bytes(header[4:], "little")
        at += 8 + length + (length & 1)
    return at in (size, size + 1)


#: Bytes after a 0-byte data chunk from which a WAV counts as a recording whose header was never
#: finalised (10 ms of 16-bit mono at 16 kHz); fewer are stray bytes of an empty file.
_UNDECLARED_MIN = 320


def _undeclared_wav_bytes(path: Path) -> int:
    """Bytes that follow the ``data`` chunk of a RIFF WAV whose data chunk declares 0 bytes, and
    that are not further chunks (some writers put metadata after the audio): audio a recorder wrote
    but never declared, because it stopped before going back to finalise the header. 0 for a truly
    empty WAV."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        at = 12
        while at + 8 <= size:
            fh.seek(at)
            header = fh.read(8)
            length = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                held = size - at - 8
                if length != 0 or held < _UNDECLARED_MIN or _chunks_fill(fh, at + 8, size):
                    return 0
                fh.seek(at + 8)
                return 0 if fh.read(3) in (b"TAG", b"ID3") else held  # an ID3 tag appended to an empty WAV
            at += 8 + length + (length & 1)
    return 0


def _check_whole(f: sf.SoundFile, path: Path) -> None:
    """Refuse a file cut short (an interrupted copy or download): libsndfile would read it as a
    shorter clip, or as empty. Streamed WAVs that declare no length (0xFFFFFFFF bytes: libsndfile
    reads to the end of the file) are fine, and so is a missing pad byte; a WAV that declares 0
    bytes of audio but holds some is a recording whose header was never finalised (libsndfile
    would read 0 samples from it). FLAC and MP3 carry no length this can compare: a cut one fails
    when read (:func:`read_audio`)."""
    pattern = _SHORT_CHUNK.get(f.format)
    m = pattern.search(f.extra_info) if pattern is not None else None
    if m is not None:
        declared, held = int(m[1]), int(m[2])
        if 0 < declared < 0xFFFFFFFF and held < declared - 1:
            raise AudioError(f"{path}: truncated: its header declares {declared} bytes of audio, the file holds "
                             f"{held} (an interrupted copy? copy the file again)")
    if f.format == "OGG":
        problem = _ogg_end_problem(path, f.subtype, f.frames)
        if problem is not None:
            raise AudioError(f"{path}: truncated: {problem} (an interrupted copy? copy the file again)")
    if f.frames == 0 and f.format in ("WAV", "WAVEX"):
        held = _undeclared_wav_bytes(path)
        if held > 0:
            raise AudioError(f"{path}: header not finalised: its data chunk declares 0 bytes of audio, {held} bytes "
                             "follow it (a recorder stopped before writing the header's sizes? export the file again)")


def _mp3_has_frame_count(path: Path) -> bool:
    """True when the MP3's first frame (after any ID3v2 tag) is a Xing, Info or VBRI header, i.e.
    when the file states its length. Without one libsndfile estimates the length from the file's
    size and bit rate (an ID3v2 tag or cover art then counts as audio), so its count is no
    promise a whole file keeps."""
    with open(path, "rb") as fh:
        head = fh.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:  # size: 4 syncsafe bytes, +10 for a footer
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
            start += 10 if head[5] & 0x10 else 0
        fh.seek(start)
        window = fh.read(4096)
    for at in range(len(window) - 1):
        if window[at] == 0xFF and window[at + 1] & 0xE0 == 0xE0:  # the first frame's sync word
            first = window[at + 4 : at + 4 + 40]  # the side information, then the tag (Xing/Info/VBRI)
            return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))
    return False


def _mp3_frame_samples(rate: int) -> int:
    """Samples in one MPEG Layer III frame: 1152 at MPEG-1's rates (32 kHz and up), 576 below."""
    return 1152 if rate >= 32000 else 576


def _check_decoded(f: sf.SoundFile, path: Path, wanted: int, decoded: int) -> None:
    """Refuse a file that decodes fewer samples than its header promises: a cut MP3 (or any cut
    file :func:`_check_whole` let through) would otherwise be read as a shorter clip.

    An MP3's count comes from its Xing/Info frame or an estimate, so one MPEG frame short is let
    through (whole LAME files decode exactly the count; a cut that loses less than a frame of
    audio is not told apart from that)."""
    tolerance = _mp3_frame_samples(f.samplerate) if f.format == "MP3" else 0
    if f.format == "MP3" and not _mp3_has_frame_count(path):
        return  # the count was an estimate from the file's size: nothing to compare (module docstring)
    if decoded < wanted - tolerance:
        asked = "" if wanted == f.frames else f" of the first {wanted} asked for"
        raise AudioError(f"{path}: truncated: its header promises {f.frames} samples, only {decoded}{asked} decode "
                         "(an interrupted copy? copy the file again)")


def _frames_and_header(path: Path) -> tuple[int, int, int]:
    _check_exists(path)
    try:
        with sf.SoundFile(_sf_name(path)) as f:
            _check_whole(f, path)
            return f.frames, f.samplerate, f.channels
    except sf.SoundFileError as err:
        raise _unreadable(path, err) from err


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Duration, sample rate and channel count from the header alone (about 30 us a file)."""
    path = Path(path)
    frames, rate, channels = _frames_and_header(path)
    return AudioInfo(frames / rate, rate, channels)


def probe_corpus_file(path: str | os.PathLike) -> AudioInfo | None:
    """For loaders: the header of a corpus file, or ``None`` when it holds no samples.

    A loader skips a ``None`` with a counted reason ("empty audio"); a missing or
    unreadable file raises :class:`AudioError`, because that is a broken copy of the
    corpus the user has to fix, not a property of the corpus.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        return None
    frames, rate, channels = _frames_and_header(path)
    return AudioInfo(frames / rate, rate, channels) if frames > 0 else None


def is_silent(audio: np.ndarray, threshold: float = SILENCE_PEAK) -> bool:
    """True when the peak absolute amplitude is below ``threshold`` (see :data:`SILENCE_PEAK`)."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < threshold


def resample(audio: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with soxr (e.g. RAVDESS's 48 kHz, espeak-ng's 22,050 Hz -> 16 kHz)."""
    if orig_rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), orig_rate, target_rate, quality=RESAMPLE_QUALITY)


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    allow_silent: bool = False,
) -> np.ndarray:
    """The clip as a 1-D float32 array at ``sample_rate``, mono (in [-1, 1] for PCM files).

    Channels are averaged (a stereo recording of one speaker holds the same speech in
    both channels). ``max_seconds`` keeps the first that many seconds (the config's
    ``data.max_seconds``: longer clips are cut, not dropped); only that part is decoded.
    Raises :class:`AudioError` for every problem listed in the module docstring.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    _check_exists(path)
    try:
        with sf.SoundFile(_sf_name(path)) as f:
            _check_whole(f, path)
            rate = f.samplerate
            frames = f.frames if max_seconds is None else min(f.frames, math.ceil(max_seconds * rate))
            data = f.read(frames, dtype="float32", always_2d=True)
            _check_decoded(f, path, frames, data.shape[0])
    except sf.SoundFileError as err:
        raise _unreadable(path, err) from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not allow_silent and is_silent(mono):
        peak = float(np.max(np.abs(mono)))
        if not is_silent(data):
            raise AudioError(f"{path}: its {data.shape[1]} channels cancel out when averaged to mono (peak "
                             f"{float(np.max(np.abs(data))):.2g} per channel, {peak:.2g} averaged): one is inverted?")
        raise AudioError(f"{path}: silent audio (peak {peak:.2g} below {SILENCE_PEAK:g} of full scale)")
    mono = resample(mono, rate, sample_rate)
    if max_seconds is not None:
        mono = mono[: round(max_seconds * sample_rate)]
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit PCM atomically (a killed writer never leaves a torn file).

    ``audio`` is float in [-1, 1]; values outside raise instead of being clipped or
    wrapped silently, so a too-loud generator is noticed.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"{path}: write_wav takes mono 1-D audio, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError(f"{path}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:
        raise ValueError(f"{path}: audio peak {peak:.3f} exceeds full scale 1.0 (it would clip)")
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)
