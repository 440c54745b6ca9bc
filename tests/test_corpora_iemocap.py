"""IEMOCAP loader against the real corpus's 5,531-utterance listing (EmoBox), and bad input."""
import collections

import numpy as np
import pytest
import soundfile

from emolib import audio

from emolib.audio import read_audio
from emolib.corpora import SKIP_EMPTY, CorpusError, load_corpus
from emolib.corpora import iemocap
from fixtures import trees

SKIPS_OF_THE_FULL_TREE = {
    # 302 extra turns (2 per dialog x 151 dialogs) cycling fru sur xxx oth fea dis fru: 302 = 43 x 7 + 1
    "label 'fru' (frustrated) is not in labels='iemocap4'": 87,
    "label 'sur' (surprised) is not in labels='iemocap4'": 43,
    "label 'oth' (other) is not in labels='iemocap4'": 43,
    "label 'fea' (fearful) is not in labels='iemocap4'": 43,
    "label 'dis' (disgusted) is not in labels='iemocap4'": 43,
    iemocap.SKIP_NO_AGREEMENT: 43,
    iemocap.SKIP_NO_ID: 151,  # one "M: [BREATHING]" line per transcript
}


@pytest.fixture(scope="module")
def reference():
    return trees.iemocap_reference()


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory, reference):
    return trees.build_iemocap(tmp_path_factory.mktemp("iemocap"), reference)


@pytest.fixture(scope="module")
def corpus(full_tree):
    return load_corpus(f"iemocap:{full_tree}")


def test_the_paper_protocol_exactly(corpus, reference):
    assert len(corpus) == 5531
    assert collections.Counter(u.label for u in corpus) == {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
    sessions = collections.Counter(u.session for u in corpus)
    assert [sessions[f"Ses0{k}"] for k in range(1, 6)] == [1085, 1023, 1151, 1031, 1241]
    assert set(corpus.ids) == {r["id"] for r in reference}
    assert corpus.classes == ("neutral", "angry", "sad", "happy")
    assert corpus.has_transcripts and corpus.has_audio


def test_labels_match_the_reference(corpus, reference):
    to4 = {"neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy", "exc": "happy"}
    by_id = corpus.by_id()
    assert all(by_id[r["id"]].label == to4[r["emo"]] and by_id[r["id"]].meta["native"] == r["emo"] for r in reference)
    assert collections.Counter(u.meta["native"] for u in corpus) == {
        "neu": 1708, "exc": 1041, "hap": 595, "ang": 1103, "sad": 1084}


def test_speaker_is_the_session_and_the_last_gender_letter(corpus):
    assert sorted({u.speaker for u in corpus}) == [f"Ses0{k}{g}" for k in range(1, 6) for g in "FM"]
    for u in corpus:
        assert u.speaker == u.id[:5] + u.id.rsplit("_", 1)[1][0]
    u = corpus.by_id()["Ses01F_impro04_M000"]
    assert (u.speaker, u.session, u.meta["gender"]) == ("Ses01M", "Ses01", "male")


def test_durations_come_from_the_label_lines(corpus, reference):
    by_id = corpus.by_id()
    assert max(abs(by_id[r["id"]].duration - r["length"]) for r in reference) <= 1e-4
    assert round(sum(u.duration for u in corpus) / 3600, 2) == 6.99  # docs/NOTES.md: 6.99 h


def test_transcripts_are_attached(corpus):
    u = corpus.by_id()["Ses01F_impro01_F000"]
    assert u.text == "Line 0 of Ses01F_impro01."
    assert corpus.by_id()[f"{trees.LATIN1_DIALOG}_F000"].text == trees.LATIN1_TEXT  # latin-1 file
    assert all(u.text for u in corpus)


def test_paths_point_at_the_release_wavs(corpus, full_tree):
    u = corpus.by_id()["Ses03M_impro05b_M008"]
    assert u.path == full_tree / "Session3" / "sentences" / "wav" / "Ses03M_impro05b" / "Ses03M_impro05b_M008.wav"
    assert read_audio(u.path).shape == (800,)  # the fixture's 0.05 s clip


def test_other_labels_and_non_label_lines_are_counted_skips(corpus):
    assert corpus.skipped == SKIPS_OF_THE_FULL_TREE


def test_loading_reads_headers_only(full_tree, monkeypatch):
    # 5,833 wavs: loading checks each one's header (length, rate) and decodes none of them, so the
    # whole corpus loads in well under a second (about 0.4 s on the 2-core CI machine)
    def refuse(*args, **kwargs):
        raise AssertionError("audio samples decoded while loading the corpus")

    monkeypatch.setattr(soundfile, "read", refuse)
    monkeypatch.setattr(soundfile.SoundFile, "read", refuse)
    monkeypatch.setattr(audio, "read_audio", refuse)
    assert len(load_corpus(f"iemocap:{full_tree}")) == 5531


def test_iemocap6_keeps_excited_and_frustrated(full_tree):
    corpus = iemocap.load(full_tree, labels="iemocap6")
    assert corpus.classes == ("neutral", "angry", "sad", "happy", "excited", "frustrated")
    assert collections.Counter(u.label for u in corpus) == {
        "neutral": 1708, "angry": 1103, "sad": 1084, "happy": 595, "excited": 1041, "frustrated": 87}


def test_native_keeps_every_category_but_no_majority(full_tree):
    corpus = iemocap.load(full_tree, labels="native")
    assert len(corpus) == 5531 + 302 - 43
    assert corpus.classes == ("neutral", "angry", "sad", "happy", "excited", "frustrated", "surprised", "fearful",
                              "disgusted", "other")
    assert corpus.skipped == {iemocap.SKIP_NO_AGREEMENT: 43, iemocap.SKIP_NO_ID: 151}


def test_skips_are_printed(full_tree, capsys):
    iemocap.load(full_tree)
    out = capsys.readouterr().out
    assert "[iemocap] skipped 87 item(s): label 'fru' (frustrated) is not in labels='iemocap4'" in out
    assert "[iemocap] skipped 43 item(s): label 'xxx' (no majority among the annotators)" in out
    assert "[iemocap] skipped 151 item(s): transcript lines without an utterance id" in out
    assert "Sessions" not in out  # all five are there


def test_a_partial_copy_says_which_sessions_it_has(full_tree, tmp_path, capsys):
    import shutil

    partial = tmp_path / "IEMOCAP"
    for n in (1, 2, 3, 5):
        shutil.copytree(full_tree / f"Session{n}", partial / f"Session{n}")
    corpus = iemocap.load(partial)
    line = "Sessions 1, 2, 3, 5 only (no label files under Session4): not the paper's five folds."
    assert f"[iemocap] {line}" in capsys.readouterr().out.splitlines()
    assert corpus.notes[-1] == line and {u.session for u in corpus} == {"Ses01", "Ses02", "Ses03", "Ses05"}


# -- bad input, on a one-dialog tree -------------------------------------------------

DIALOG = "Ses01F_impro01"


@pytest.fixture
def small(tmp_path):
    return trees.build_iemocap_small(tmp_path / "IEMOCAP")


def _label_file(root):
    return root / "Session1" / "dialog" / "EmoEvaluation" / f"{DIALOG}.txt"


def _transcript_file(root):
    return root / "Session1" / "dialog" / "transcriptions" / f"{DIALOG}.txt"


def _edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_small_tree(small):
    corpus = iemocap.load(small)
    assert corpus.ids == ["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000", "Ses01F_impro01_M001"]
    assert [u.label for u in corpus] == ["neutral", "happy", "angry", "sad"]
    u = corpus.by_id()["Ses01F_impro01_F000"]
    assert u.duration == 1.9456 and u.meta["start"] == 2.0 and u.meta["end"] == 3.9456
    assert (u.meta["valence"], u.meta["activation"], u.meta["dominance"]) == (2.5, 3.0, 2.0)
    assert u.meta["mode"] == "improvised" and u.meta["dialog"] == DIALOG


def test_byte_order_marks_are_not_part_of_the_first_line(small):
    # files saved by some Windows editors start with a UTF-8 byte-order mark
    for path in (_label_file(small), _transcript_file(small)):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    corpus = iemocap.load(small)
    assert corpus.by_id()["Ses01F_impro01_F000"].text == "Line 0 of Ses01F_impro01."
    assert len(corpus) == 4


def test_malformed_label_line_names_file_and_line(small):
    # line 1: % header, line 2: blank, line 3: the first summary line
    _edit(_label_file(small), "\tneu\t[2.5000, 3.0000, 2.0000]", "\tneu")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:3: malformed label line"):
        iemocap.load(small)


def test_a_label_line_without_its_bracket_is_an_error_not_a_skip(small):
    _edit(_label_file(small), "[2.0000 - 3.9456]\t", "")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:3: unexpected line 'Ses01F_impro01_F000\\tneu.*"
                                          r"\(expected a label line"):
        iemocap.load(small)


def test_malformed_valence_activation_dominance(small):
    _edit(_label_file(small), "\tang\t[2.5000, 3.0000, 2.0000]", "\tang\t[2.5000, high, 2.0000]")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:10: malformed valence/activation/dominance"):
        iemocap.load(small)


def test_a_valence_that_is_not_a_number_is_an_error(small):
    _edit(_label_file(small), "\tang\t[2.5000, 3.0000, 2.0000]", "\tang\t[nan, 3.0000, 2.0000]")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:10: malformed valence/activation/dominance \[nan"):
        iemocap.load(small)


def test_unknown_label_code(small):
    _edit(_label_file(small), "\tneu\t", "\tjoy\t")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:3: unknown IEMOCAP label 'joy'; the release uses neu, ang"):
        iemocap.load(small)


def test_end_before_start(small):
    _edit(_label_file(small), "[2.0000 - 3.9456]", "[3.9456 - 2.0000]")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:3: end time 2.0 is before start time 3.9456"):
        iemocap.load(small)


def test_utterance_of_another_dialog(small):
    _edit(_label_file(small), "\tSes01F_impro01_F000\t", "\tSes01F_impro02_F000\t")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:3: utterance id 'Ses01F_impro02_F000' is not an id of dialog"):
        iemocap.load(small)


def test_utterance_labelled_twice(small):
    _edit(_label_file(small), "\tSes01F_impro01_M000\t", "\tSes01F_impro01_F000\t")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt:10: utterance Ses01F_impro01_F000 is labelled twice "
                                          rf"\(first at .*{DIALOG}\.txt:3\)"):
        iemocap.load(small)


def test_malformed_transcript_line_names_file_and_line(small):
    # line 1: F000, line 2: the MXX0 turn, line 3: "M: [BREATHING]", line 4: M000
    _edit(_transcript_file(small), "Ses01F_impro01_M000 [", "Ses01F_impro01_M000 (")
    with pytest.raises(CorpusError, match=rf"transcriptions/{DIALOG}\.txt:4: malformed transcript line"):
        iemocap.load(small)


def test_missing_wav_is_an_error_or_a_counted_skip(small, capsys):
    wav = small / "Session1" / "sentences" / "wav" / DIALOG / "Ses01F_impro01_M001.wav"
    wav.unlink()
    with pytest.raises(CorpusError, match=rf"Ses01F_impro01_M001\.wav: missing wav for the utterance labelled at "
                                          rf".*{DIALOG}\.txt:24"):
        iemocap.load(small)
    corpus = iemocap.load(small, on_missing="skip")
    assert len(corpus) == 3 and corpus.skipped[iemocap.SKIP_MISSING_WAV] == 1
    assert f"[iemocap] skipped 1 item(s): {iemocap.SKIP_MISSING_WAV}" in capsys.readouterr().out


def test_missing_transcript_is_an_error_or_a_counted_skip(small, capsys):
    _edit(_transcript_file(small), "Ses01F_impro01_F001 [", "Ses01F_impro01_FXX9 [")
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt: no transcript line for Ses01F_impro01_F001"):
        iemocap.load(small)
    corpus = iemocap.load(small, on_missing="skip")
    assert len(corpus) == 3 and corpus.skipped[iemocap.SKIP_MISSING_TEXT] == 1
    assert f"[iemocap] skipped 1 item(s): {iemocap.SKIP_MISSING_TEXT}" in capsys.readouterr().out
    _transcript_file(small).unlink()
    with pytest.raises(CorpusError, match=rf"{DIALOG}\.txt: no such transcription file"):
        iemocap.load(small)


def test_empty_wav_is_a_counted_skip(small, capsys):
    (small / "Session1" / "sentences" / "wav" / DIALOG / "Ses01F_impro01_M000.wav").write_bytes(b"")
    corpus = iemocap.load(small)
    assert "Ses01F_impro01_M000" not in corpus.ids and corpus.skipped[SKIP_EMPTY] == 1
    assert "[iemocap] skipped 1 item(s): empty audio (0 samples)" in capsys.readouterr().out


def test_unreadable_wav_names_the_file(small):
    (small / "Session1" / "sentences" / "wav" / DIALOG / "Ses01F_impro01_M000.wav").write_bytes(b"garbage" * 20)
    with pytest.raises(CorpusError, match=r"Ses01F_impro01_M000\.wav: unreadable audio file"):
        iemocap.load(small)


def test_a_session_folder_named_otherwise_is_an_error_not_left_out(small):
    # e.g. a copy that lower-cased its names: the release's Session<N> pattern would pass it over in silence
    (small / "Session1").rename(small / "session1")
    with pytest.raises(CorpusError, match=r"IEMOCAP/session1: a session folder must be named Session<N>, as in the "
                                          r"release \(Session1\.\.Session5\); under this name it would be left out"):
        iemocap.load(small)
    (small / "session1").rename(small / "Session1")
    (small / "session6.txt").write_text("a file, not a folder: not a session")
    assert len(iemocap.load(small)) == 4


def test_bad_options_and_roots(small, tmp_path):
    with pytest.raises(CorpusError, match="unknown labels='iemocap5'; choose one of iemocap4, iemocap6, native"):
        iemocap.load(small, labels="iemocap5")
    with pytest.raises(CorpusError, match="on_missing must be 'error' or 'skip'"):
        iemocap.load(small, on_missing="ignore")
    with pytest.raises(CorpusError, match="no such directory"):
        iemocap.load(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match="no label files"):
        iemocap.load(tmp_path)


def test_silent_audio_is_found_when_read_not_when_listed(small):
    wav = small / "Session1" / "sentences" / "wav" / DIALOG / "Ses01F_impro01_F000.wav"
    trees.write(wav, trees.wav_bytes(0.05, amplitude=0.0))
    corpus = iemocap.load(small)  # loading reads headers only
    with pytest.raises(ValueError, match=r"Ses01F_impro01_F000\.wav: silent audio"):
        read_audio(corpus.by_id()["Ses01F_impro01_F000"].path)
    assert np.all(read_audio(corpus.by_id()["Ses01F_impro01_F000"].path, allow_silent=True) == 0)
