"""CREMA-D (Cao et al. 2014): one of LiSER's two benchmarks (docs/NOTES.md).

Layout: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (e.g.
``1001_DFA_ANG_XX.wav``; 91 actors 1001-1091, 12 sentences, 16 kHz), the videos
in ``VideoFlash/<same stem>.flv`` and the actors' age and sex in
``VideoDemographics.csv``, all optional except ``AudioWAV/``.

* Emotions ANG DIS FEA HAP NEU SAD -> ``labels="native"``: angry, disgusted,
  fearful, happy, neutral, sad; ``labels="iemocap4"``: ANG, HAP, NEU, SAD map to
  angry, happy, neutral, sad, and DIS and FEA (no IEMOCAP-4 class) are skipped
  with a count.
* Level LO / MD / HI / XX (low, medium, high, unspecified) goes to
  ``meta["level"]``. Older copies name one file ``1040_ITH_SAD_X.wav``; it is
  read as level XX (the repository has since renamed it).
* Speaker = session = actor id (each actor is recorded alone).
* Skipped with a count: the known bad file ``1076_MTI_SAD_XX`` (no audio; listed
  in the corpus's issue tracker) whatever its size, and every other file with
  no samples. Files not named by the scheme are skipped with a count; a name
  that follows it with an unknown sentence, emotion or level raises.
* A git-lfs pointer instead of audio (a clone without ``git lfs pull``) raises
  :class:`CorpusError` saying so; so does a folder or file that cannot be read,
  naming it.
* No transcripts (``has_transcripts=False``): 12 fixed sentences carry no
  emotion signal; the linguistic teacher refuses this corpus. The sentence code
  is in ``meta["sentence"]`` (:data:`SENTENCES` has their texts). Licence: ODbL.
"""
from __future__ import annotations

import collections
import csv
import re
from pathlib import Path

from . import (Corpus, CorpusError, Utterance, acted_corpus, csv_lines, is_file, is_folder, label_set, list_folder,
               probe_or_skip, read_file, skip_unmapped)

EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
NATIVE_CLASSES = tuple(EMOTIONS.values())
TO_IEMOCAP4 = {"angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock.", "TIE": "That is exactly what happened.", "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.", "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.", "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.", "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.", "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
#: Files that are broken in the release itself: stem -> why.
KNOWN_BAD = {"1076_MTI_SAD_XX": "known bad file 1076_MTI_SAD_XX (no audio)"}
#: Misnamed files of older copies: stem -> the level it stands for.
KNOWN_MISNAMED = {"1040_ITH_SAD_X": "XX"}

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")
SKIP_MISNAMED = "files in AudioWAV/ not named <actor>_<sentence>_<emotion>_<level>.wav"


def _demographics(path: Path) -> dict[str, dict[str, object]]:
    """actor id -> {"gender", "age"} from VideoDemographics.csv (empty when absent)."""
    if not is_file(path):
        return {}
    out: dict[str, dict[str, object]] = {}
    try:
        text = read_file(path).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err})") from err
    reader = csv.DictReader(csv_lines(text))
    missing = {"ActorID", "Age", "Sex"} - set(reader.fieldnames or ())
    if missing:
        raise CorpusError(f"{path}: missing column(s) {sorted(missing)}")
    first: dict[str, int] = {}
    for row in reader:
        try:
            actor = row["ActorID"].strip()
            out[actor] = {"gender": row["Sex"].strip().lower(), "age": int(row["Age"])}
        except (ValueError, AttributeError, TypeError) as err:  # TypeError: a short row's missing field
            raise CorpusError(f"{path}:{reader.line_num}: malformed row ({err})") from err
        if actor in first:
            raise CorpusError(f"{path}:{reader.line_num}: actor {actor} listed twice (first at line {first[actor]})")
        first[actor] = reader.line_num
    return out


def load(root: Path, labels: str = "iemocap4") -> Corpus:
    """CREMA-D under ``root`` as a :class:`Corpus` (see the module docstring)."""
    root = Path(root)
    mapping, classes = label_set("cremad", labels, TO_IEMOCAP4, NATIVE_CLASSES)
    audio_dir = root / "AudioWAV"
    if not is_folder(audio_dir):
        raise CorpusError(f"{root}: no AudioWAV/ folder (expected the CREMA-D folder holding AudioWAV/)")
    video_dir = root / "VideoFlash"
    videos = set(list_folder(video_dir)) if is_folder(video_dir) else set()
    people = _demographics(root / "VideoDemographics.csv")

    skipped: collections.Counter = collections.Counter()
    utterances: list[Utterance] = []
    for name in list_folder(audio_dir):
        path = audio_dir / name
        if name.startswith(".") or path.suffix.lower() != ".wav":
            continue
        stem = path.stem
        m = _NAME.match(stem)
        if m is None:
            skipped[SKIP_MISNAMED] += 1
            continue
        actor, sentence, emotion, level = m.groups()
        level = KNOWN_MISNAMED.get(stem, level)
        problems = [f"{kind} {code!r} (valid {', '.join(table)})"
                    for kind, code, table in (("sentence", sentence, SENTENCES), ("emotion", emotion, EMOTIONS),
                                              ("level", level, LEVELS)) if code not in table]
        if problems:
            raise CorpusError(f"{path}: not a valid CREMA-D name: {'; '.join(problems)}")
        if stem in KNOWN_BAD:
            skipped[KNOWN_BAD[stem]] += 1
            continue
        native = EMOTIONS[emotion]
        if skip_unmapped(native, mapping, labels, skipped):
            continue
        info = probe_or_skip(path, skipped)
        if info is None:
            continue
        meta: dict[str, object] = {"native": native, "sentence": sentence, "level": LEVELS[level]}
        meta.update(people.get(actor, {}))
        utterances.append(Utterance(
            id=stem, label=mapping[native], speaker=actor, session=actor, path=path, text=None,
            duration=info.duration, video=video_dir / f"{stem}.flv" if f"{stem}.flv" in videos else None, meta=meta,
        ))
    return acted_corpus(
        "cremad", utterances, classes, root, skipped,
        empty=f"{audio_dir}: no CREMA-D utterances left with labels='{labels}'",
        sentences="one of 12 fixed sentences", which="meta['sentence'] says which.",
        labels_note={"native": "CREMA-D native classes (6).",
                     "iemocap4": "IEMOCAP-4 classes; disgusted and fearful skipped."}[labels],
    )
