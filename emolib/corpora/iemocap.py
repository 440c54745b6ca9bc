"""IEMOCAP (Busso et al. 2008) in its release layout: the paper's corpus (Sec. 4.1).

The paper's protocol: 4 classes with excited merged into happy (Sec. 4.1). On the release
that is 5,531 utterances (neutral 1,708, happy 1,636, angry 1,103, sad 1,084; the counts are
docs/NOTES.md's, from EmoBox, not the paper's), 5 sessions of 2 actors. The loader reads::

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt        labels (one summary line per turn)
    Session{1..5}/dialog/transcriptions/<dialog>.txt       transcripts
    Session{1..5}/sentences/wav/<dialog>/<utterance>.wav   audio, 16 kHz mono

Label files. Only the bracketed summary lines are parsed::

    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

i.e. start and end (seconds), utterance id, the majority label, and mean
valence / activation / dominance. The annotator lines (``C-E1: ...``,
``A-F2: ...``), ``%`` header lines and blank lines are not labels and are passed
over. A line that starts with ``[`` but is not a summary line raises
:class:`CorpusError` with the file and line number. Files in the
``Categorical/``, ``Attribute/`` and ``Self-evaluation/`` subfolders hold the
individual annotations and are not read.

Transcripts. Lines ``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.`` The
text is kept verbatim (IEMOCAP's tags such as ``[LAUGHTER]`` included; the
linguistic teacher reads them too, see :class:`emolib.teachers.TextDataset`). Lines with an utterance id of turns that
have no label (e.g. ``..._MXX1``, overlapping speech) are never looked up. Lines
that carry no utterance id at all (e.g. ``M: [BREATHING]``) are passed over and
counted in ``Corpus.skipped``. A line that starts with an utterance id (``SesNN``)
but does not follow the format raises with file and line. Files are read as UTF-8
and, when that fails, as latin-1 (every byte is valid latin-1).

Label sets (``labels=``):

* ``"iemocap4"`` (the paper): neutral, angry, sad, happy (= hap + exc).
* ``"iemocap6"``: neutral, angry, sad, happy, excited, frustrated, the six largest
  classes (a common extended protocol); excited is kept apart from happy.
* ``"native"``: every category of the release, by name (neutral, angry, sad,
  happy, excited, frustrated, surprised, fearful, disgusted, other).

In every set ``xxx`` (the annotators reached no majority) is not a class; it and
every label outside the chosen set are skipped with a count per label.

Speaker: the session plus the gender letter of the LAST group of the id:
``Ses01F_impro01_M000`` is spoken by ``Ses01M`` (the first letter says who
wears the motion-capture markers, not who speaks). Session: ``Ses01``.
Duration: end minus start on the label line.

A labelled utterance without its wav or its transcript line: ``on_missing="error"``
(default: a complete release has both, so a gap means a broken copy) raises naming
the file; ``on_missing="skip"`` skips it with a count. A wav with no samples is
skipped with a count. Audio headers are read to catch these; samples are not.
Names starting with ``.`` (macOS ``._*`` resource forks found in some copies) are
ignored. A folder or file that cannot be read (e.g. no permission) raises naming it, and so
does a session folder named otherwise than ``Session<N>`` (e.g. ``session4``): a session is
never left out in silence. A copy with other sessions than Session1..Session5 loads, with a
printed line naming the ones it has (and a note in ``Corpus.notes``).
"""
from __future__ import annotations

import collections
import math
import re
from pathlib import Path

from ..config import CLASSES
from . import (Corpus, CorpusError, Utterance, find_files, is_file, is_folder, list_folder, probe_or_skip, read_file,
               text_lines)

#: The release's category codes (EmoEvaluation summary lines) and their names.
NATIVE_NAMES = {
    "neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy", "exc": "excited",
    "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other",
}
NO_AGREEMENT = "xxx"  # the annotators' labels had no majority: not an emotion class

#: labels= option -> (native code -> class, class order). Codes absent from a map are skipped.
LABEL_SETS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "iemocap4": ({"neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy", "exc": "happy"}, CLASSES),
    "iemocap6": (
        {"neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy", "exc": "excited", "fru": "frustrated"},
        CLASSES + ("excited", "frustrated"),
    ),
    "native": (dict(NATIVE_NAMES), tuple(dict.fromkeys(("neutral", "angry", "sad", "happy", *NATIVE_NAMES.values())))),
}

_NUMBER = r"\d+(?:\.\d*)?"
_LABEL_LINE = re.compile(
    rf"^\[\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*\]\s+(?P<id>\S+)\s+(?P<code>\S+)\s+\[(?P<vad>[^\]]*)\]\s*$"
)
#: The lines of an EmoEvaluation file that carry no label: evaluators' categorical (C-) and
#: attribute (A-) ratings, % headers, blank lines. Anything else is an error, not a silent skip.
_OTHER_LABEL_FILE_LINE = re.compile(r"^\s*$|^\s*%|^[CA]-[A-Za-z]+\d*\s*:")
_UTTERANCE_ID = re.compile(r"^(?P<session>Ses\d\d)[FM]_.+_(?P<gender>[FM])\d+$")
_TRANSCRIPT_LINE = re.compile(rf"^(?P<id>\S+)\s+\[\s*{_NUMBER}\s*-\s*{_NUMBER}\s*\]:\s?(?P<text>.*)$")
_STARTS_WITH_ID = re.compile(r"^Ses\d\d")

SKIP_NO_ID = "transcript lines without an utterance id (e.g. 'M: [BREATHING]')"
SKIP_NO_AGREEMENT = "label 'xxx' (no majority among the annotators)"
SKIP_MISSING_WAV = "labelled utterances without a wav (on_missing='skip')"
SKIP_MISSING_TEXT = "labelled utterances without a transcript line (on_missing='skip')"


def _read_text(path: Path) -> str:
    data = read_file(path)
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is not part of the first line
    except UnicodeDecodeError:
        pass
    try:  # Windows' Latin-1: the same letters, and typographic quotes, dashes and "…" in 0x80-0x9f
        return data.decode("cp1252")
    except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
        return data.decode("latin-1")


def _read_transcripts(path: Path, skipped: collections.Counter) -> dict[str, str] | None:
    """utterance id -> text, or None when the dialog has no transcription file."""
    if not is_file(path):
        return None
    texts: dict[str, str] = {}
    for lineno, line in enumerate(text_lines(_read_text(path)), 1):
        line = line.strip()
        if not line:
            continue
        m = _TRANSCRIPT_LINE.match(line)
        if m is None:
            if _STARTS_WITH_ID.match(line):
                raise CorpusError(
                    f"{path}:{lineno}: malformed transcript line {line[:80]!r} "
                    "(expected 'Ses01F_impro01_F000 [006.2901-008.2357]: text')"
                )
            skipped[SKIP_NO_ID] += 1
            continue
        utt = m["id"]
        if utt in texts:
            raise CorpusError(f"{path}:{lineno}: second transcript line for {utt}")
        texts[utt] = m["text"].strip()
    return texts


def _parse_label_line(path: Path, lineno: int, line: str) -> tuple[str, str, float, float, list[float]]:
    m = _LABEL_LINE.match(line)
    where = f"{path}:{lineno}"
    expected = "expected '[START - END]<TAB>UTTERANCE_ID<TAB>LABEL<TAB>[V, A, D]'"
    if m is None:
        raise CorpusError(f"{where}: malformed label line {line[:80]!r} ({expected})")
    start, end = float(m["start"]), float(m["end"])
    if end < start:
        raise CorpusError(f"{where}: end time {end} is before start time {start}")
    try:
        vad = [float(v) for v in m["vad"].split(",")]
    except ValueError:
        vad = []
    if len(vad) != 3 or not all(math.isfinite(v) for v in vad):
        raise CorpusError(f"{where}: malformed valence/activation/dominance [{m['vad']}] ({expected})")
    code = m["code"]
    if code not in NATIVE_NAMES and code != NO_AGREEMENT:
        raise CorpusError(
            f"{where}: unknown IEMOCAP label {code!r}; the release uses {', '.join([*NATIVE_NAMES, NO_AGREEMENT])}"
        )
    return m["id"], code, start, end, vad


def load(root: Path, labels: str = "iemocap4", on_missing: str = "error") -> Corpus:
    """The IEMOCAP release under ``root`` as a :class:`Corpus` (see the module docstring)."""
    root = Path(root)
    if labels not in LABEL_SETS:
        raise CorpusError(f"iemocap: unknown labels={labels!r}; choose one of {', '.join(LABEL_SETS)}")
    if on_missing not in ("error", "skip"):
        raise CorpusError(f"iemocap: on_missing must be 'error' or 'skip', got {on_missing!r}")
    if not is_folder(root):
        raise CorpusError(f"{root}: no such directory (expected the IEMOCAP release folder holding Session1..Session5)")
    for name in list_folder(root):  # e.g. a copy that lower-cased its names: the pattern below would pass it over
        if re.fullmatch(r"session\d+", name, re.IGNORECASE) and not re.fullmatch(r"Session\d+", name) \
                and is_folder(root / name):
            raise CorpusError(f"{root / name}: a session folder must be named Session<N>, as in the release "
                              "(Session1..Session5); under this name it would be left out")
    label_files = find_files(root, "Session*/dialog/EmoEvaluation/*.txt")  # a folder it cannot read raises
    if not label_files:
        raise CorpusError(f"{root}: no label files Session*/dialog/EmoEvaluation/*.txt (is this the IEMOCAP release?)")
    mapping, classes = LABEL_SETS[labels]

    skipped: collections.Counter = collections.Counter()
    seen: dict[str, str] = {}  # utterance id -> file:line of its label line
    utterances: list[Utterance] = []
    for label_file in label_files:
        session_dir = label_file.parents[2]
        folder = re.fullmatch(r"Session(\d+)", session_dir.name)
        if folder is None:
            raise CorpusError(f"{session_dir}: expected a session folder named Session1..Session5")
        dialog = label_file.stem
        wav_dir = session_dir / "sentences" / "wav" / dialog
        wav_names = set(list_folder(wav_dir)) if is_folder(wav_dir) else set()
        transcript_file = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
        transcripts = _read_transcripts(transcript_file, skipped)

        for lineno, line in enumerate(text_lines(_read_text(label_file)), 1):
            if not line.lstrip().startswith("["):
                if _OTHER_LABEL_FILE_LINE.match(line):
                    continue  # annotator lines (C-E1:, A-F2:), % headers, blank lines
                raise CorpusError(
                    f"{label_file}:{lineno}: unexpected line {line.strip()[:80]!r} (expected a label line "
                    "'[START - END]<TAB>UTTERANCE_ID<TAB>LABEL<TAB>[V, A, D]', an evaluator's line 'C-E1:' or "
                    "'A-E1:', a '%' header or a blank line)")
            utt, code, start, end, vad = _parse_label_line(label_file, lineno, line.strip())
            where = f"{label_file}:{lineno}"
            m = _UTTERANCE_ID.match(utt)
            if m is None or utt.rsplit("_", 1)[0] != dialog:
                raise CorpusError(f"{where}: utterance id {utt!r} is not an id of dialog {dialog} (e.g. {dialog}_F000)")
            if int(m["session"][3:]) != int(folder[1]):
                raise CorpusError(f"{where}: utterance {utt} of session {m['session']} is in folder {session_dir.name}")
            if utt in seen:
                raise CorpusError(f"{where}: utterance {utt} is labelled twice (first at {seen[utt]})")
            seen[utt] = where

            if code == NO_AGREEMENT:
                skipped[SKIP_NO_AGREEMENT] += 1
                continue
            if code not in mapping:
                skipped[f"label '{code}' ({NATIVE_NAMES[code]}) is not in labels='{labels}'"] += 1
                continue

            wav = wav_dir / f"{utt}.wav"
            if wav.name not in wav_names:
                if on_missing == "error":
                    raise CorpusError(f"{wav}: missing wav for the utterance labelled at {where}")
                skipped[SKIP_MISSING_WAV] += 1
                continue
            text = None if transcripts is None else transcripts.get(utt)
            if text is None:
                if on_missing == "error":
                    problem = "no such transcription file" if transcripts is None else f"no transcript line for {utt}"
                    raise CorpusError(f"{transcript_file}: {problem} (utterance labelled at {where})")
                skipped[SKIP_MISSING_TEXT] += 1
                continue
            if probe_or_skip(wav, skipped, where) is None:
                continue

            session = m["session"]
            gender = m["gender"]
            utterances.append(Utterance(
                id=utt, label=mapping[code], speaker=f"{session}{gender}", session=session, path=wav,
                text=text, duration=round(end - start, 4),
                meta={
                    "native": code, "gender": "female" if gender == "F" else "male", "dialog": dialog,
                    "mode": "improvised" if "_impro" in dialog else "scripted",
                    "start": start, "end": end, "valence": vad[0], "activation": vad[1], "dominance": vad[2],
                },
            ))

    if not utterances:
        raise CorpusError(f"{root}: no utterances with labels in labels='{labels}'")
    utterances.sort(key=lambda u: u.id)
    note = {
        "iemocap4": "IEMOCAP 4-class protocol of the paper: excited is merged into happy.",
        "iemocap6": "IEMOCAP 6 classes: neutral, angry, sad, happy, excited, frustrated (excited kept apart).",
        "native": "IEMOCAP native categories (all but 'xxx', no majority).",
    }[labels]
    notes = [note]
    sessions = sorted({int(f.parents[2].name[len("Session"):]) for f in label_files})
    if sessions != [1, 2, 3, 4, 5]:  # a partial copy: fewer (or other) folds than the paper's five
        absent = [f"Session{n}" for n in range(1, 6) if n not in sessions]
        notes.append(f"Sessions {', '.join(map(str, sessions))} only"
                     + (f" (no label files under {', '.join(absent)})" if absent else "")
                     + ": not the paper's five folds.")
        print(f"[iemocap] {notes[-1]}")
    corpus = Corpus(
        name="iemocap", utterances=utterances, classes=classes, has_transcripts=True, has_audio=True,
        root=root, notes=notes, skipped=dict(skipped),
    )
    corpus.report_skips()
    return corpus
