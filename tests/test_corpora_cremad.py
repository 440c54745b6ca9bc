"""CREMA-D loader on a fixture tree (AudioWAV/, VideoFlash/, VideoDemographics.csv)."""
import collections

import pytest

from emolib.corpora import SKIP_EMPTY, CorpusError, load_corpus
from emolib.corpora import cremad
from fixtures import trees


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return trees.build_cremad(tmp_path_factory.mktemp("cremad"))


def test_cremad_iemocap4_counts_and_skips(root, capsys):
    corpus = load_corpus(f"cremad:{root}")
    # 3 actors x 90 files (15 per emotion) + 1040_ITH_SAD_X; DIS and FEA dropped;
    # 1076_MTI_SAD_XX (known bad) and the 0-byte 1002_DFA_NEU_XX skipped
    assert len(corpus) == 179
    assert collections.Counter(u.label for u in corpus) == {"angry": 45, "happy": 45, "sad": 45, "neutral": 44}
    assert corpus.skipped == {
        "emotion 'disgusted' has no class in labels='iemocap4'": 45,
        "emotion 'fearful' has no class in labels='iemocap4'": 45,
        "known bad file 1076_MTI_SAD_XX (no audio)": 1,
        SKIP_EMPTY: 1,
    }
    out = capsys.readouterr().out
    assert "[cremad] skipped 1 item(s): known bad file 1076_MTI_SAD_XX (no audio)" in out
    assert "[cremad] skipped 1 item(s): empty audio (0 samples)" in out
    assert "[cremad] skipped 45 item(s): emotion 'fearful' has no class in labels='iemocap4'" in out


def test_native_classes(root):
    corpus = cremad.load(root, labels="native")
    assert corpus.classes == ("angry", "disgusted", "fearful", "happy", "neutral", "sad")
    assert len(corpus) == 270 + 1 - 2
    assert corpus.skipped == {"known bad file 1076_MTI_SAD_XX (no audio)": 1, SKIP_EMPTY: 1}


def test_speakers_meta_and_videos(root):
    corpus = cremad.load(root)
    assert sorted({u.speaker for u in corpus}) == ["1001", "1002", "1040", "1076"]
    assert all(u.session == u.speaker for u in corpus)
    u = corpus.by_id()["1001_IEO_HAP_HI"]
    assert u.meta == {"native": "happy", "sentence": "IEO", "level": "high", "gender": "male", "age": 51}
    assert u.video == root / "VideoFlash" / "1001_IEO_HAP_HI.flv"
    assert sum(u.video is not None for u in corpus) == 60  # actor 1001's kept clips
    assert u.duration == pytest.approx(0.1) and u.text is None
    assert not corpus.has_transcripts and "12 fixed sentences" in corpus.notes[0]


def test_misnamed_file_of_older_copies_is_level_xx(root):
    u = cremad.load(root).by_id()["1040_ITH_SAD_X"]
    assert (u.label, u.meta["level"], u.meta["gender"]) == ("sad", "unspecified", "male")


def test_known_bad_file_is_skipped_whatever_its_size(tmp_path):
    trees.write(tmp_path / "AudioWAV" / "1076_MTI_SAD_XX.wav", trees.wav_bytes(1.0))
    trees.write(tmp_path / "AudioWAV" / "1076_MTI_NEU_XX.wav", trees.wav_bytes(1.0))
    corpus = cremad.load(tmp_path)
    assert corpus.ids == ["1076_MTI_NEU_XX"] and corpus.skipped == {"known bad file 1076_MTI_SAD_XX (no audio)": 1}


def test_git_lfs_pointers_are_named(tmp_path):
    trees.write(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav", "version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(CorpusError, match=r"1001_DFA_ANG_XX\.wav: a git-lfs pointer file, not audio"):
        cremad.load(tmp_path)


def test_unknown_codes_are_errors(tmp_path):
    trees.write(tmp_path / "AudioWAV" / "1001_DFA_JOY_ZZ.wav", trees.wav_bytes())
    with pytest.raises(CorpusError, match=r"1001_DFA_JOY_ZZ\.wav: not a valid CREMA-D name: emotion 'JOY' .*; level 'ZZ'"):
        cremad.load(tmp_path)


def test_misnamed_files_are_counted(tmp_path):
    trees.write(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav", trees.wav_bytes())
    trees.write(tmp_path / "AudioWAV" / "notes.wav", trees.wav_bytes())
    trees.write(tmp_path / "AudioWAV" / "readme.txt", "not audio")
    corpus = cremad.load(tmp_path)
    assert len(corpus) == 1 and corpus.skipped == {cremad.SKIP_MISNAMED: 1}


def test_missing_audio_folder(tmp_path):
    with pytest.raises(CorpusError, match="no AudioWAV/ folder"):
        cremad.load(tmp_path)


def test_an_actor_listed_twice_in_the_demographics_is_an_error(tmp_path):
    root = trees.build_cremad(tmp_path)
    table = root / "VideoDemographics.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, lines[1].replace("51", "30")]) + "\n")
    with pytest.raises(CorpusError, match=rf"VideoDemographics\.csv:{len(lines) + 1}: actor 1001 listed twice "
                                          r"\(first at line 2\)"):
        cremad.load(root)


@pytest.mark.parametrize("content, message", [
    (b"ActorID,Age,Sex\n1001,51,Male\n1002,21,F\xe9male\n", r"VideoDemographics\.csv: not UTF-8 text"),
    (b"Sex,ActorID,Age\nMale,1001,51\nFemale,1002\n", r"VideoDemographics\.csv:3: malformed row"),
])
def test_a_demographics_table_that_cannot_be_read_is_named(tmp_path, content, message):
    root = trees.build_cremad(tmp_path)
    (root / "VideoDemographics.csv").write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        cremad.load(root)


def test_the_same_name_in_two_cases_names_both_files(tmp_path):
    for name in ("1001_DFA_ANG_XX.wav", "1001_DFA_ANG_XX.WAV", "1001_IEO_SAD_HI.Wav", "1001_IEO_SAD_HI.wav"):
        trees.write(tmp_path / "AudioWAV" / name, trees.wav_bytes())
    with pytest.raises(CorpusError) as err:
        cremad.load(tmp_path)
    audio = tmp_path / "AudioWAV"
    assert str(err.value) == (f"cremad: 2 duplicate utterance ids, e.g. '1001_DFA_ANG_XX' "
                              f"({audio / '1001_DFA_ANG_XX.WAV'} and {audio / '1001_DFA_ANG_XX.wav'})")
