"""A manifest: any other corpus, as a CSV, JSON Lines or JSON file with one record per utterance.

=============  ========  =================================================================
column         required  meaning
=============  ========  =================================================================
``label``      yes       the emotion class
``speaker``    yes       who speaks (folds hold speakers out)
``session``    no        recording session; defaults to the speaker
``path``       no        the audio file; a relative path resolves against the manifest's folder
``text``       no        the transcript (an empty cell is an empty transcript)
``id``         no        defaults to the audio file's stem, or the line number without ``path``
=============  ========  =================================================================

Every other column goes to ``Utterance.meta`` as it is. Without a ``path`` column
the corpus is text-only (``has_audio=False``: only a linguistic teacher can use
it); without ``text`` it is audio-only (``has_transcripts=False``). ``label``,
``speaker``, ``path`` and ``text`` each exist for every record or for none (a JSONL
record missing one that others have raises); a record without ``session`` or ``id``
gets its default, and one without another record's extra key simply has no such
``meta`` entry.

``labels="iemocap4"`` requires every label to be one of neutral, angry, sad,
happy; ``labels="native"`` takes the manifest's own labels (classes = their
sorted unique values).

Formats: ``.csv`` (UTF-8, header row), ``.jsonl`` (one JSON object per line,
blank lines allowed), ``.json`` (one array of objects; messages and default ids
then use the record's 1-based position instead of a line number). Errors name
the manifest and line: a malformed JSON line, a CSV quote never closed, a missing
required column or value, an unknown label (with the valid ones), two native labels
or two speakers that differ only in case, an audio file that does not exist or cannot be read (or a folder on its way
that cannot be searched),
duplicate ids, one audio file under two ids (it would leak across folds). Audio files with no samples are skipped with a
printed count. Only headers are read (durations).
"""
from __future__ import annotations

import collections
import csv
import json
import unicodedata
from pathlib import Path
from typing import Any, Iterator

from ..config import CLASSES
from . import Corpus, CorpusError, Utterance, csv_lines, is_file, is_folder, probe_or_skip, read_file, text_lines

REQUIRED = ("label", "speaker")
KNOWN = ("label", "speaker", "session", "path", "text", "id")
LABEL_SETS = ("iemocap4", "native")


def _read(path: Path) -> tuple[list[str], Iterator[tuple[str, int, dict[str, Any]]]]:
    """(columns, iterator of (where, number, record)): ``where`` names the file and line
    (or record) for messages, ``number`` is that line or record number."""
    suffix = path.suffix.lower()
    try:
        text = read_file(path).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err})") from err

    if suffix == ".csv":
        # strict: a quote that is never closed is an error, not a field that swallows the rest of the file
        reader = csv.DictReader(csv_lines(text), strict=True)

        def malformed(line: int, err: csv.Error) -> CorpusError:
            return CorpusError(f"{path}:{line}: malformed CSV from this line on ({err}; a quote opened and "
                               "never closed?)")

        try:
            columns = [c.strip() for c in reader.fieldnames or ()]
        except csv.Error as err:
            raise malformed(1, err) from err
        if len(set(columns)) != len(columns):
            raise CorpusError(f"{path}:1: repeated column names in the header {columns}")

        def parsed() -> Iterator[dict[str | None, Any]]:
            while True:
                start = reader.line_num + 1
                try:
                    yield next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise malformed(start, err) from err

        def rows() -> Iterator[tuple[str, int, dict[str, Any]]]:
            for row in parsed():
                extra = row.pop(None, None) or []  # DictReader keeps surplus fields under None
                found = sum(v is not None for v in row.values()) + len(extra)
                if found != len(columns):
                    raise CorpusError(f"{path}:{reader.line_num}: {found} fields, the header has {len(columns)}")
                yield f"{path}:{reader.line_num}", reader.line_num, {k.strip(): v for k, v in row.items()}

        return columns, rows()

    if suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text_lines(text), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from err
            records.append((f"{path}:{lineno}", lineno, record))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from err
        if not isinstance(data, list):
            raise CorpusError(f"{path}: a .json manifest must hold one array of objects")
        records = [(f"{path} record {i}", i, record) for i, record in enumerate(data, 1)]
    else:
        raise CorpusError(f"{path}: a manifest must be .csv, .jsonl or .json")
    for where, _, record in records:
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
    columns = list(dict.fromkeys(k for _, _, record in records for k in record))
    return columns, iter(records)


def _value(where: str, record: dict[str, Any], column: str) -> Any:
    if column not in record:
        raise CorpusError(f"{where}: no {column!r} (other records have one)")
    value = record[column]
    if isinstance(value, (list, dict)):  # JSON: ["angry"] would otherwise become the text "['angry']"
        raise CorpusError(f"{where}: {column!r} is a JSON {type(value).__name__}, not a single value: {value!r}")
    return value


def _optional(where: str, record: dict[str, Any], column: str) -> Any:
    """An optional column's value (``session``, ``id``), None where the record has none."""
    return _value(where, record, column) if column in record else None


def _nonempty(where: str, record: dict[str, Any], column: str) -> str:
    value = _value(where, record, column)
    if value is None or str(value).strip() == "":
        raise CorpusError(f"{where}: empty {column!r}")
    return str(value).strip()


def load(path: Path, labels: str = "iemocap4") -> Corpus:
    """The manifest at ``path`` as a :class:`Corpus` (see the module docstring)."""
    path = Path(path)
    if labels not in LABEL_SETS:
        raise CorpusError(f"manifest: unknown labels={labels!r}; choose {' or '.join(LABEL_SETS)}")
    if not is_file(path):
        raise CorpusError(f"{path}: no such manifest file")
    columns, records = _read(path)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise CorpusError(f"{path}: missing required column(s) {missing}; columns found: {columns}")
    has_audio, has_text = "path" in columns, "text" in columns
    if not (has_audio or has_text):
        raise CorpusError(f"{path}: needs a 'path' column (audio) or a 'text' column (transcripts), or both")

    skipped: collections.Counter = collections.Counter()
    first_seen: dict[str, str] = {}
    first_label: dict[str, tuple[str, str]] = {}  # casefolded label -> (label as written, where first)
    first_speaker: dict[str, tuple[str, str]] = {}  # casefolded speaker -> (speaker as written, where first)
    audio_seen: dict[Path, tuple[str, str]] = {}  # audio file -> (its utterance id, where)
    utterances: list[Utterance] = []
    for where, number, record in records:
        # NFC: "José" typed on one machine and taken from a macOS folder name (NFD) on another is one name,
        # not two speakers, one of them tested on what the other was trained on
        label = unicodedata.normalize("NFC", _nonempty(where, record, "label"))
        if labels == "iemocap4" and label not in CLASSES:
            raise CorpusError(
                f"{where}: unknown label {label!r}; valid labels for labels='iemocap4': {', '.join(CLASSES)} "
                "(labels='native' keeps the manifest's own labels)"
            )
        written, first = first_label.setdefault(label.casefold(), (label, where))
        if written != label:  # two spellings of one class would train as two classes
            raise CorpusError(f"{where}: label {label!r} differs from {written!r} ({first}) only in case; "
                              "write each class one way")
        speaker = unicodedata.normalize("NFC", _nonempty(where, record, "speaker"))
        written, first = first_speaker.setdefault(speaker.casefold(), (speaker, where))
        if written != speaker:  # one person under two spellings would be held out in one fold, trained on in another
            raise CorpusError(f"{where}: speaker {speaker!r} differs from {written!r} ({first}) only in case; "
                              "write each speaker one way")
        session = _optional(where, record, "session")
        session = speaker if session is None or str(session).strip() == "" else unicodedata.normalize(
            "NFC", str(session).strip())
        audio, duration = None, None
        if has_audio:
            written_path = _nonempty(where, record, "path")
            try:
                audio = Path(written_path).expanduser()
            except RuntimeError as err:  # ~user of a user this machine does not have
                raise CorpusError(f"{where}: path {written_path!r}: {err}") from None
            if not audio.is_absolute():
                audio = path.parent / audio
            try:
                if not is_file(audio):  # a second look only for the error's sake
                    raise CorpusError(f"audio file {audio} " + ("is a folder" if is_folder(audio) else "does not exist"))
            except CorpusError as err:
                raise CorpusError(f"{where}: {err}") from err
            info = probe_or_skip(audio, skipped, where)
            if info is None:
                continue
            duration = info.duration
        text = None
        if has_text:
            value = _value(where, record, "text")
            text = "" if value is None else str(value)
        given = _optional(where, record, "id")
        if given is not None and str(given).strip() != "":
            uid, default = str(given).strip(), ""
        elif audio is not None:  # e.g. speaker1/001.wav and speaker2/001.wav
            uid, default = audio.stem, " (without an 'id' the id is the audio file's name without its extension: " \
                "give the manifest an 'id' column)"
        else:
            uid, default = str(number), " (without an 'id' the id is the line number)"
        if uid in first_seen:
            raise CorpusError(f"{where}: duplicate id {uid!r} (first at {first_seen[uid]}){default}")
        first_seen[uid] = where
        if audio is not None:
            other, other_where = audio_seen.setdefault(audio.resolve(), (uid, where))
            if other != uid:  # the same recording in two folds would leak from training into testing
                raise CorpusError(f"{where}: audio file {audio} is already utterance {other!r} ({other_where})")
        utterances.append(Utterance(
            id=uid, label=label, speaker=speaker, session=session, path=audio, text=text, duration=duration,
            meta={k: v for k, v in record.items() if k not in KNOWN},
        ))
    if not utterances:
        raise CorpusError(f"{path}: no utterances")
    classes = CLASSES if labels == "iemocap4" else tuple(sorted({u.label for u in utterances}))
    kind = "audio and transcripts" if has_audio and has_text else ("text only" if has_text else "audio only")
    corpus = Corpus(
        name=path.stem, utterances=utterances, classes=classes, has_transcripts=has_text, has_audio=has_audio,
        root=path.parent, notes=[f"Manifest {path.name}: {kind}; labels={labels}."], skipped=dict(skipped),
        why_no_transcripts="" if has_text else f"the manifest {path.name} has no 'text' column.",
    )
    corpus.report_skips()
    return corpus
