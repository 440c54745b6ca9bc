"""Berlin EmoDB (Burkhardt et al. 2005): a small German acted corpus (535 files, 16 kHz).

Layout: ``wav/<speaker><text><emotion><version>.wav``, e.g. ``03a01Fa.wav``:
speaker 03 08 09 10 11 12 13 14 15 16, text a01 a02 a04 a05 a07 b01 b02 b03
b09 b10 (ten German sentences), emotion letter W anger, L boredom, E disgust,
A fear, F happiness, T sadness, N neutral, version a, b, c, ...

* ``labels="native"``: angry, bored, disgusted, fearful, happy, sad, neutral
  (the corpus's letter order). ``labels="iemocap4"``: W -> angry, F -> happy,
  T -> sad, N -> neutral; boredom, disgust and fear have no IEMOCAP-4 class and
  are skipped with a count.
* Speaker = session = the two-digit speaker code; gender and age from the
  corpus documentation go to ``meta``.
* No transcripts (``has_transcripts=False``): ten fixed sentences chosen to be
  emotionally neutral carry no emotion signal (and are German); the linguistic
  teacher refuses this corpus. The text code is in ``meta["text"]``.

Files not named by the scheme are skipped with a count; a name that follows it
with an unknown speaker, text or emotion raises :class:`CorpusError`. Empty
audio is skipped with a count. Names starting with ``.`` are ignored. A folder or file
that cannot be read raises :class:`CorpusError` naming it.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

from . import (Corpus, CorpusError, Utterance, acted_corpus, is_folder, label_set, list_folder, probe_or_skip,
               skip_unmapped)

EMOTIONS = {"W": "angry", "L": "bored", "E": "disgusted", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
NATIVE_CLASSES = tuple(EMOTIONS.values())
TO_IEMOCAP4 = {"angry": "angry", "happy": "happy", "sad": "sad", "neutral": "neutral"}
#: speaker -> (gender, age), from the corpus documentation.
SPEAKERS = {
    "03": ("male", 31), "08": ("female", 34), "09": ("female", 21), "10": ("male", 32), "11": ("male", 26),
    "12": ("male", 30), "13": ("female", 32), "14": ("female", 35), "15": ("male", 25), "16": ("female", 31),
}
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")

_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")
SKIP_MISNAMED = "files in wav/ not named <speaker><text><emotion><version>.wav"


def load(root: Path, labels: str = "iemocap4") -> Corpus:
    """EmoDB under ``root`` as a :class:`Corpus` (see the module docstring)."""
    root = Path(root)
    mapping, classes = label_set("emodb", labels, TO_IEMOCAP4, NATIVE_CLASSES)
    wav_dir = root / "wav"
    if not is_folder(wav_dir):
        raise CorpusError(f"{root}: no wav/ folder (expected the EmoDB folder holding wav/)")

    skipped: collections.Counter = collections.Counter()
    utterances: list[Utterance] = []
    for name in list_folder(wav_dir):
        path = wav_dir / name
        if name.startswith(".") or path.suffix.lower() != ".wav":
            continue
        m = _NAME.match(path.stem)
        if m is None:
            skipped[SKIP_MISNAMED] += 1
            continue
        speaker, text, emotion, version = m.groups()
        problems = [f"{kind} {code!r} (valid {', '.join(table)})"
                    for kind, code, table in (("speaker", speaker, SPEAKERS), ("text", text, TEXTS),
                                              ("emotion", emotion, EMOTIONS)) if code not in table]
        if problems:
            raise CorpusError(f"{path}: not a valid EmoDB name: {'; '.join(problems)}")
        native = EMOTIONS[emotion]
        if skip_unmapped(native, mapping, labels, skipped):
            continue
        info = probe_or_skip(path, skipped)
        if info is None:
            continue
        gender, age = SPEAKERS[speaker]
        utterances.append(Utterance(
            id=path.stem, label=mapping[native], speaker=speaker, session=speaker, path=path, text=None,
            duration=info.duration,
            meta={"native": native, "text": text, "version": version, "gender": gender, "age": age},
        ))
    return acted_corpus(
        "emodb", utterances, classes, root, skipped,
        empty=f"{wav_dir}: no EmoDB utterances left with labels='{labels}'",
        sentences="one of ten fixed German sentences chosen to be emotionally neutral",
        which="meta['text'] says which.",
        labels_note={"native": "EmoDB native classes (7).",
                     "iemocap4": "IEMOCAP-4 classes; bored, disgusted and fearful skipped."}[labels],
    )
