"""Manifest loader (CSV, JSONL, JSON): any other corpus, audio and/or text."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from emolib.corpora import SKIP_EMPTY, SKIP_SHORT, CorpusError, load_corpus
from emolib.corpora import manifest
from fixtures import trees


def test_csv_manifest(tmp_path):
    path = trees.build_manifest_csv(tmp_path)
    corpus = load_corpus(str(path))
    assert corpus.name == "corpus" and corpus.has_audio and corpus.has_transcripts
    assert corpus.ids == ["a", "b", "c", "d", "e-absolute", "f"]
    assert [u.label for u in corpus] == ["neutral", "angry", "sad", "happy", "happy", "neutral"]
    assert [u.session for u in corpus] == ["spk1", "spk1", "spk2", "spk2", "day2", "day2"]  # defaults to the speaker
    assert corpus.utterances[0].path == tmp_path / "clips" / "a.wav"  # relative to the manifest's folder
    assert corpus.utterances[4].path == tmp_path / "clips" / "e.wav"  # absolute
    assert corpus.utterances[3].text == 'What a lovely day, "truly".'
    assert corpus.utterances[5].text == ""  # an empty cell is an empty transcript
    assert corpus.utterances[0].meta == {"gender": "f"}
    assert corpus.utterances[0].duration == pytest.approx(0.2)
    assert corpus.classes == ("neutral", "angry", "sad", "happy") and corpus.skipped == {}
    assert load_corpus(f"manifest:{path}").ids == corpus.ids  # the explicit spec


def test_text_only_jsonl_with_native_labels(tmp_path):
    path = trees.build_manifest_jsonl(tmp_path)
    corpus = load_corpus(str(path), labels="native")
    assert not corpus.has_audio and corpus.has_transcripts
    assert corpus.classes == ("anger", "calm", "joy")
    assert corpus.ids == ["1", "2", "3", "5", "custom-id"]  # line numbers (line 4 is blank)
    assert [u.speaker for u in corpus] == ["s1", "s1", "s2", "7", "s2"]
    assert [u.session for u in corpus] == ["s1", "s1", "A", "7", "A"]
    assert all(u.path is None and u.duration is None for u in corpus)
    assert corpus.by_id()["custom-id"].text == "Stop it."


def test_audio_only_json_array(tmp_path):
    trees.write(tmp_path / "x.wav", trees.wav_bytes(0.1))
    trees.write(tmp_path / "y.wav", trees.wav_bytes(0.1))
    records = [{"path": "x.wav", "label": "sad", "speaker": "p"}, {"path": "y.wav", "label": "happy", "speaker": "q"}]
    path = trees.write(tmp_path / "list.json", json.dumps(records))
    corpus = manifest.load(path)
    assert corpus.ids == ["x", "y"] and corpus.has_audio and not corpus.has_transcripts
    assert all(u.text is None for u in corpus)


def test_unknown_label_names_line_and_valid_labels(tmp_path):
    path = trees.write(tmp_path / "m.csv", "label,speaker,text\nneutral,a,Hi.\nexcited,a,Wow!\n")
    with pytest.raises(CorpusError, match=r"m\.csv:3: unknown label 'excited'; valid labels for labels='iemocap4': "
                                          r"neutral, angry, sad, happy"):
        manifest.load(path)
    assert manifest.load(path, labels="native").classes == ("excited", "neutral")


def test_missing_required_column(tmp_path):
    path = trees.write(tmp_path / "m.csv", "path,label,text\na.wav,sad,Hi.\n")
    with pytest.raises(CorpusError, match=r"m\.csv: missing required column\(s\) \['speaker'\]"):
        manifest.load(path)


def test_missing_value(tmp_path):
    path = trees.write(tmp_path / "m.csv", "label,speaker,text\nsad,,Hi.\n")
    with pytest.raises(CorpusError, match=r"m\.csv:2: empty 'speaker'"):
        manifest.load(path)


def test_malformed_json_line(tmp_path):
    path = trees.write(tmp_path / "m.jsonl", '{"label": "sad", "speaker": "a", "text": "x"}\n{"label": "sad",\n')
    with pytest.raises(CorpusError, match=r"m\.jsonl:2: malformed JSON"):
        manifest.load(path)


def test_json_line_that_is_not_an_object(tmp_path):
    path = trees.write(tmp_path / "m.jsonl", '["sad", "a"]\n')
    with pytest.raises(CorpusError, match=r"m\.jsonl:1: expected a JSON object, got list"):
        manifest.load(path)


def test_jsonl_record_missing_a_column_others_have(tmp_path):
    lines = [{"label": "sad", "speaker": "a", "text": "x"}, {"label": "sad", "speaker": "b"}]
    path = trees.write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in lines))
    with pytest.raises(CorpusError, match=r"m\.jsonl:2: no 'text' \(other records have one\)"):
        manifest.load(path)


def test_a_json_value_that_is_a_list_or_an_object_is_an_error(tmp_path):
    lines = [{"label": "sad", "speaker": "a", "text": "x"}, {"label": ["angry"], "speaker": "b", "text": "y"}]
    path = trees.write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in lines))
    with pytest.raises(CorpusError, match=r"m\.jsonl:2: 'label' is a JSON list, not a single value: \['angry'\]"):
        manifest.load(path, labels="native")
    lines[1] = {"label": "angry", "speaker": {"name": "b"}, "text": "y"}
    trees.write(path, "\n".join(json.dumps(r) for r in lines))
    with pytest.raises(CorpusError, match=r"m\.jsonl:2: 'speaker' is a JSON dict, not a single value"):
        manifest.load(path)


def test_malformed_csv_row(tmp_path):
    path = trees.write(tmp_path / "m.csv", "label,speaker,text\nsad,a,Hi.\nsad,a,Hi,again\n")
    with pytest.raises(CorpusError, match=r"m\.csv:3: 4 fields, the header has 3"):
        manifest.load(path)


def test_a_quote_never_closed_is_an_error_not_a_field_that_swallows_the_rest(tmp_path):
    path = trees.write(tmp_path / "m.csv", 'label,speaker,text\nsad,a,"Hi.\nsad,b,Hi again\nangry,c,No.\n')
    with pytest.raises(CorpusError, match=r"m\.csv:2: malformed CSV from this line on \(unexpected end of data; "
                                          r"a quote opened and never closed\?\)"):
        manifest.load(path)
    # a quoted field may hold commas, doubled quotes and line breaks
    path = trees.write(tmp_path / "ok.csv", 'label,speaker,text\nsad,a,"Hi, ""you""\nthere"\nangry,c,No.\n')
    assert [u.text for u in manifest.load(path)] == ['Hi, "you"\nthere', "No."]


def test_native_labels_that_differ_only_in_case_are_an_error(tmp_path):
    path = trees.write(tmp_path / "m.csv", "label,speaker,text\nAngry,a,Hi.\ncalm,b,Oh.\nangry,c,No.\n")
    with pytest.raises(CorpusError, match=r"m\.csv:4: label 'angry' differs from 'Angry' \(.*m\.csv:2\) only in "
                                          r"case; write each class one way"):
        manifest.load(path, labels="native")


def test_speakers_that_differ_only_in_case_are_an_error(tmp_path):
    # one person under two spellings (two merged manifests) would be tested on in one fold and trained on in another
    path = trees.write(tmp_path / "m.csv", "label,speaker,text\nsad,M01,Hi.\nangry,F02,Oh.\nhappy,m01,No.\n")
    with pytest.raises(CorpusError, match=r"m\.csv:4: speaker 'm01' differs from 'M01' \(.*m\.csv:2\) only in "
                                          r"case; write each speaker one way"):
        manifest.load(path)
    trees.write(path, "label,speaker,text\nsad,M01,Hi.\nangry,F02,Oh.\nhappy,M01,No.\n")
    assert [u.speaker for u in manifest.load(path)] == ["M01", "F02", "M01"]


def test_one_audio_file_under_two_ids_is_an_error(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.full(16000, 0.1, np.float32), 16000)
    path = trees.write(tmp_path / "m.csv", "id,label,speaker,path\nx,sad,s1,a.wav\ny,angry,s2,./a.wav\n")
    with pytest.raises(CorpusError, match=r"m\.csv:3: audio file .*a\.wav is already utterance 'x' \(.*m\.csv:2\)"):
        manifest.load(path)


def test_missing_audio_file_names_line_and_path(tmp_path):
    path = trees.write(tmp_path / "m.csv", "path,label,speaker\nclips/nothere.wav,sad,a\n")
    with pytest.raises(CorpusError, match=rf"m\.csv:2: audio file {tmp_path}/clips/nothere\.wav does not exist"):
        manifest.load(path)
    (tmp_path / "clips" / "nothere.wav").mkdir(parents=True)  # a folder where a file should be
    with pytest.raises(CorpusError, match=rf"m\.csv:2: audio file {tmp_path}/clips/nothere\.wav is a folder$"):
        manifest.load(path)


def test_unreadable_audio_names_line_and_file(tmp_path):
    trees.write(tmp_path / "bad.wav", b"nonsense" * 10)
    path = trees.write(tmp_path / "m.csv", "path,label,speaker\nbad.wav,sad,a\n")
    with pytest.raises(CorpusError, match=r"m\.csv:2: .*bad\.wav: unreadable audio file"):
        manifest.load(path)


def test_empty_audio_is_a_counted_skip(tmp_path, capsys):
    trees.write(tmp_path / "ok.wav", trees.wav_bytes())
    trees.write(tmp_path / "empty.wav", trees.wav_bytes(0.0))
    path = trees.write(tmp_path / "m.csv", "path,label,speaker\nok.wav,sad,a\nempty.wav,sad,a\n")
    corpus = manifest.load(path)
    assert corpus.ids == ["ok"] and corpus.skipped == {SKIP_EMPTY: 1}
    assert "[m] skipped 1 item(s): empty audio (0 samples)" in capsys.readouterr().out


def test_audio_shorter_than_any_speech_model_accepts_is_a_counted_skip(tmp_path, capsys):
    # 399 samples is one short of the wav2vec 2.0 / HuBERT front end's 400; 400 is kept
    trees.write(tmp_path / "ok.wav", trees.wav_bytes(400 / 16000))
    trees.write(tmp_path / "short.wav", trees.wav_bytes(399 / 16000))
    path = trees.write(tmp_path / "m.csv", "path,label,speaker\nok.wav,sad,a\nshort.wav,sad,a\n")
    corpus = manifest.load(path)
    assert corpus.ids == ["ok"] and corpus.skipped == {SKIP_SHORT: 1}
    assert f"[m] skipped 1 item(s): {SKIP_SHORT}" in capsys.readouterr().out


def test_duplicate_ids(tmp_path):
    trees.write(tmp_path / "a" / "x.wav", trees.wav_bytes())
    trees.write(tmp_path / "b" / "x.wav", trees.wav_bytes())
    path = trees.write(tmp_path / "m.csv", "path,label,speaker\na/x.wav,sad,p\nb/x.wav,sad,q\n")
    # ids the user never wrote (the files' stems, as in per-speaker folders of 001.wav, 002.wav, ...):
    # the message says where the id came from and what to do
    with pytest.raises(CorpusError) as err:
        manifest.load(path)
    assert str(err.value) == (f"{path}:3: duplicate id 'x' (first at {path}:2) (without an 'id' the id is the audio "
                              "file's name without its extension: give the manifest an 'id' column)")
    assert manifest.load(trees.write(tmp_path / "ids.csv", "id,path,label,speaker\n1,a/x.wav,sad,p\n2,b/x.wav,sad,q\n"
                                     )).ids == ["1", "2"]
    # ids the user wrote: the plain message
    path = trees.write(tmp_path / "given.csv", "id,path,label,speaker\ny,a/x.wav,sad,p\ny,b/x.wav,sad,q\n")
    with pytest.raises(CorpusError) as err:
        manifest.load(path)
    assert str(err.value) == f"{path}:3: duplicate id 'y' (first at {path}:2)"


def test_neither_audio_nor_text(tmp_path):
    path = trees.write(tmp_path / "m.csv", "label,speaker\nsad,a\n")
    with pytest.raises(CorpusError, match="needs a 'path' column .* or a 'text' column"):
        manifest.load(path)


def test_bad_files_and_options(tmp_path):
    with pytest.raises(CorpusError, match="no such manifest file"):
        manifest.load(tmp_path / "none.csv")
    path = trees.write(tmp_path / "m.tsv", "label\tspeaker\n")
    with pytest.raises(CorpusError, match=r"must be \.csv, \.jsonl or \.json"):
        manifest.load(path)
    with pytest.raises(CorpusError, match="unknown labels='iemocap6'; choose iemocap4 or native"):
        manifest.load(path, labels="iemocap6")
    empty = trees.write(tmp_path / "e.csv", "label,speaker,text\n")
    with pytest.raises(CorpusError, match=r"e\.csv: no utterances"):
        manifest.load(empty)


def test_the_fingerprint_follows_the_contents_not_the_name(tmp_path):
    path = tmp_path / "m.csv"
    rows = ["label,speaker,text", "neutral,a,Hi.", "angry,a,Stop it.", "sad,b,Oh no."]
    path.write_text("\n".join(rows) + "\n")
    first = manifest.load(path).fingerprint()
    path.write_text("\n".join([rows[0], rows[1], rows[2], rows[3]]) + "\n")
    assert manifest.load(path).fingerprint() == first  # rewritten as it was: same
    changed = {
        "a label": [rows[0], rows[1], "happy,a,Stop it.", rows[3]],
        "a transcript": [rows[0], rows[1], "angry,a,Stop it now.", rows[3]],
        "a speaker": [rows[0], rows[1], "angry,c,Stop it.", rows[3]],
        "a new row": [*rows, "happy,b,Great."],
        "a row less": rows[:3],
    }
    for what, lines in changed.items():
        path.write_text("\n".join(lines) + "\n")
        assert manifest.load(path).fingerprint() != first, what


def test_the_fingerprint_sees_an_audio_file_replaced_by_another_length(tmp_path):
    path = trees.build_manifest_csv(tmp_path)
    first = load_corpus(str(path)).fingerprint()
    trees.write(tmp_path / "clips" / "a.wav", trees.wav_bytes(0.3))
    assert load_corpus(str(path)).fingerprint() != first


def test_the_audio_digest_sees_a_file_rewritten_with_as_many_bytes(tmp_path):
    """A clip loudness-normalised or denoised in place keeps its name and size, so the fingerprint; the
    audio digest (a run's corpus.json, the driver's sidecars) changes, also when the copy sets the old
    modification time back (cp -p)."""
    path = trees.build_manifest_csv(tmp_path)
    clip = tmp_path / "clips" / "a.wav"
    before = load_corpus(str(path))
    fingerprint, digest = before.fingerprint(), before.audio_digest()
    old = clip.read_bytes()
    louder = old[:44] + bytes(b ^ 1 for b in old[44:])  # the same header and size, other samples
    assert louder != old and len(louder) == len(old)
    times = clip.stat().st_atime_ns, clip.stat().st_mtime_ns
    clip.write_bytes(louder)
    os.utime(clip, ns=times)
    after = load_corpus(str(path))
    assert after.fingerprint() == fingerprint
    assert after.audio_digest() != digest
    clip.write_bytes(old)
    assert load_corpus(str(path)).audio_digest() == digest
    # a text-only corpus has no audio to digest
    assert manifest.load(trees.build_manifest_jsonl(tmp_path / "text"), labels="native").audio_digest() is None


@pytest.mark.parametrize("spec", ["iemocap", "iemocap:", "foo:bar", "corpus.txt", "ravdess"])
def test_an_unknown_corpus_spec_is_an_error_listing_the_known_ones(spec):
    with pytest.raises(CorpusError) as err:
        load_corpus(spec)
    assert str(err.value) == (f"unknown corpus spec {spec!r}: use synth, iemocap:PATH, ravdess:PATH, cremad:PATH, "
                              "emodb:PATH, or the path of a .csv/.jsonl/.json manifest")


def test_a_corpus_refuses_labels_outside_its_classes_and_duplicate_ids():
    from emolib.corpora import Corpus, Utterance

    def utt(i, label="sad"):
        return Utterance(id=i, label=label, speaker="s1", session="1")

    with pytest.raises(CorpusError, match=r"^mine: labels \['bored', 'calm'\] are not in the class set "
                                          r"\['neutral', 'angry', 'sad', 'happy'\]$"):
        Corpus("mine", [utt("a", "calm"), utt("b", "bored"), utt("c")])
    with pytest.raises(CorpusError, match=r"^mine: duplicate utterance id 'a' \(2 utterances\)$"):
        Corpus("mine", [utt("a"), utt("b"), utt("a")])
    with pytest.raises(CorpusError, match=r"^mine: 2 duplicate utterance ids, e\.g\. 'b' \(3 utterances\)$"):
        Corpus("mine", [utt("b"), utt("a"), utt("b"), utt("a"), utt("b")])
    assert len(Corpus("mine", [utt("a"), utt("b")])) == 2


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\x0c"])
def test_a_transcript_holding_a_unicode_line_separator_is_one_line(tmp_path, separator):
    # text pasted from a web page or a word processor: pandas.to_csv and json.dumps(ensure_ascii=False) leave
    # U+2028 (and NEL, form feed) unquoted, csv and pandas read it back as one row; str.splitlines made two
    trees.write(tmp_path / "a.wav", trees.wav_bytes(0.1))
    trees.write(tmp_path / "b.wav", trees.wav_bytes(0.1))
    text = f"I said{separator}no never"
    csv_path = trees.write(tmp_path / "m.csv", f"path,label,speaker,text\na.wav,angry,s1,{text}\nb.wav,sad,s2,fine\n")
    jsonl_path = trees.write(tmp_path / "m.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"path": "a.wav", "label": "angry", "speaker": "s1", "text": text},
        {"path": "b.wav", "label": "sad", "speaker": "s2", "text": "fine"}]) + "\n")
    for path in (csv_path, jsonl_path):
        corpus = manifest.load(path)
        assert [u.text for u in corpus] == [text, "fine"], path


def test_a_speaker_written_in_two_unicode_forms_is_one_speaker(tmp_path):
    # "José" typed (NFC) and taken from a macOS folder name (NFD) looked like two speakers: one held out while the
    # other, the same person, was trained on
    nfc, nfd = "Jos\u00e9", "Jose\u0301"
    path = trees.write(tmp_path / "m.csv", f"label,speaker,text\nsad,{nfc},Hi.\nangry,Ana,Oh.\nhappy,{nfd},No.\n")
    corpus = manifest.load(path)
    assert [u.speaker for u in corpus] == [nfc, "Ana", nfc] and len({u.session for u in corpus}) == 2


def test_a_home_folder_of_an_unknown_user_is_an_error_naming_the_line(tmp_path):
    path = trees.write(tmp_path / "m.csv", "path,label,speaker\n~nosuchuser-emolib/a.wav,sad,s1\n")
    with pytest.raises(CorpusError, match=r"m\.csv:2: path '~nosuchuser-emolib/a\.wav': "):
        manifest.load(path)
