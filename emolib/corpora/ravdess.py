"""RAVDESS (Livingstone & Russo 2018): one of LiSER's two benchmarks (docs/NOTES.md).

Files are named ``MM-VV-EE-II-SS-RR-AA.ext``: modality (01 audio-visual, 02
video-only, 03 audio-only), vocal channel (01 speech, 02 song), emotion (01
neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08
surprised), intensity (01 normal, 02 strong), statement (01 "Kids are talking by
the door", 02 "Dogs are sitting by the door"), repetition (01, 02), actor (01-24;
odd = male). The loader walks ``root`` at any depth, so both the per-actor
``Actor_XX/`` folders and the release's ``Audio_Speech_Actors_01-24/Actor_XX/``
work.

* Utterances are the audio-only ``03-*.wav`` files (48 kHz; :func:`emolib.audio.read_audio`
  resamples them). ``id`` is the file stem.
* Speech (vocal channel 01) by default; ``include_song=True`` adds the sung
  clips, otherwise they are skipped with a count.
* ``video``: the matching audio-visual ``01-*.mp4`` (same codes after the
  modality), else the video-only ``02-*.mp4``, when present. A video without a
  matching audio file is counted, not loaded: audio is never extracted from video.
* Labels: ``labels="native"`` keeps the 8 classes. ``labels="iemocap4"`` maps
  neutral, happy, sad and angry to themselves and, with ``calm_as_neutral=True``
  (default), calm to neutral: IEMOCAP has no calm category, and its annotators
  label calm, low-arousal delivery as neutral; RAVDESS's neutral has only normal
  intensity (96 clips) and calm fills the low-arousal corner the 4-class task
  calls neutral. ``calm_as_neutral=False`` skips calm with a count instead.
  Fearful, disgust and surprised have no IEMOCAP-4 class: skipped with a count.
* Speaker = session = ``Actor_XX`` (each actor is recorded alone, so
  leave-one-session-out is leave-one-speaker-out).
* No transcripts (``text=None``, ``has_transcripts=False``): every clip says one
  of two fixed sentences, so the words carry no emotion signal and the
  linguistic teacher refuses this corpus. The statement number is kept in
  ``meta["statement"]``.

A folder that cannot be read raises naming it, unless it is not an actor's (``lost+found`` on a
disk of the corpus's own): that one is skipped with a count. A ``.wav`` or ``.mp4`` not named by
the scheme is skipped with a count; one named
by the scheme with an impossible code (e.g. emotion 09, or a ``.wav`` of
modality 01) raises :class:`CorpusError`. Empty audio is skipped with a count. Other
files and names starting with ``.`` are ignored. A folder that cannot be read
(e.g. no permission) raises :class:`CorpusError` naming it, rather than leaving its actor out. Licence: CC BY-NC-SA 4.0.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

from . import (Corpus, CorpusError, Utterance, acted_corpus, is_folder, label_set, probe_or_skip, skip_unmapped,
               walk_folder)

#: Emotion codes and names (RAVDESS's own words, as adjectives like IEMOCAP's classes).
EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgusted", "08": "surprised",
}
NATIVE_CLASSES = tuple(EMOTIONS.values())
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_CODES = {
    "vocal channel": {"01": "speech", "02": "song"},
    "intensity": {"01": "normal", "02": "strong"},
    "statement": STATEMENTS,
    "repetition": {"01": 1, "02": 2},
}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_MODALITY = {".wav": {"03"}, ".mp4": {"01", "02"}}

SKIP_SONG = "song clips (vocal channel 02; include_song=False)"
SKIP_MISNAMED = "files not named MM-VV-EE-II-SS-RR-AA"
SKIP_VIDEO_ONLY = "videos without a matching audio-only .wav (audio is read from the 03-*.wav files only)"


def _scan(root: Path, skipped: collections.Counter) -> tuple[dict[str, Path], dict[str, Path]]:
    """(audio stem -> path, video stem -> path) for every file named by the scheme."""
    audio: dict[str, Path] = {}
    video: dict[str, Path] = {}
    # an unreadable folder of an actor (Actor_01, Video_Song_Actor_01, ...) is an error: the corpus would
    # lose a speaker; any other (lost+found on a disk of its own) is counted and passed over
    for dirpath, dirnames, filenames in walk_folder(root, lambda folder: "actor" not in folder.name.lower(),
                                                    skipped):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            ext = path.suffix.lower()
            if name.startswith(".") or ext not in _MODALITY:
                continue
            m = _NAME.match(path.stem)
            if m is None:
                skipped[SKIP_MISNAMED] += 1
                continue
            modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
            problems = []
            if modality not in _MODALITY[ext]:
                problems.append(f"modality {modality} in a {ext} file (expected {' or '.join(sorted(_MODALITY[ext]))})")
            if emotion not in EMOTIONS:
                problems.append(f"emotion {emotion} (valid 01-08)")
            for field, code in zip(_CODES, (channel, intensity, statement, repetition)):
                if code not in _CODES[field]:
                    problems.append(f"{field} {code} (valid {', '.join(_CODES[field])})")
            if actor == "00":
                problems.append("actor 00 (actors are numbered from 01)")
            if problems:
                raise CorpusError(f"{path}: not a valid RAVDESS name: {'; '.join(problems)}")
            table = audio if ext == ".wav" else video
            if path.stem in table:
                raise CorpusError(f"{path}: the same recording is also at {table[path.stem]}")
            table[path.stem] = path
    return audio, video


def load(root: Path, labels: str = "iemocap4", include_song: bool = False, calm_as_neutral: bool = True) -> Corpus:
    """RAVDESS under ``root`` as a :class:`Corpus` (see the module docstring)."""
    root = Path(root)
    to_iemocap4 = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry"}
    if calm_as_neutral:
        to_iemocap4["calm"] = "neutral"
    mapping, classes = label_set("ravdess", labels, to_iemocap4, NATIVE_CLASSES)
    if not is_folder(root):
        raise CorpusError(f"{root}: no such directory (expected the RAVDESS folder holding Actor_XX/)")

    skipped: collections.Counter = collections.Counter()
    audio, video = _scan(root, skipped)
    if not audio:
        raise CorpusError(f"{root}: no RAVDESS audio files (03-VV-EE-II-SS-RR-AA.wav) at any depth")
    by_codes = {stem[3:]: stem for stem in audio}
    unmatched_videos = sum(1 for stem in video if stem[3:] not in by_codes)
    if unmatched_videos:
        skipped[SKIP_VIDEO_ONLY] = unmatched_videos

    utterances: list[Utterance] = []
    for stem in sorted(audio):
        _, channel, emotion, intensity, statement, repetition, actor = stem.split("-")
        if channel == "02" and not include_song:
            skipped[SKIP_SONG] += 1
            continue
        native = EMOTIONS[emotion]
        if skip_unmapped(native, mapping, labels, skipped):
            continue
        info = probe_or_skip(audio[stem], skipped)
        if info is None:
            continue
        codes = stem[3:]
        clip = video.get(f"01-{codes}") or video.get(f"02-{codes}")
        speaker = f"Actor_{actor}"
        utterances.append(Utterance(
            id=stem, label=mapping[native], speaker=speaker, session=speaker, path=audio[stem],
            text=None, duration=info.duration, video=clip,
            meta={
                "native": native, "gender": "male" if int(actor) % 2 else "female",
                "vocal_channel": _CODES["vocal channel"][channel], "intensity": _CODES["intensity"][intensity],
                "statement": int(statement), "repetition": int(repetition),
                "video_modality": None if clip is None else ("audio-visual" if clip.stem[:2] == "01" else "video-only"),
            },
        ))
    return acted_corpus(
        "ravdess", utterances, classes, root, skipped,
        empty=f"{root}: no RAVDESS utterances left with labels='{labels}', include_song={include_song}",
        sentences="one of two fixed sentences ('Kids are talking by the door', 'Dogs are sitting by the door')",
        which="meta['statement'] says which sentence.",
        labels_note={"native": "RAVDESS native classes (8).", "iemocap4": "IEMOCAP-4 classes; calm "
                     f"{'merged into neutral' if calm_as_neutral else 'skipped'}."}[labels],
    )
