"""Berlin EmoDB loader on a fixture tree (wav/03a01Fa.wav naming)."""
import collections

import pytest

from emolib.corpora import SKIP_EMPTY, CorpusError, load_corpus
from emolib.corpora import emodb
from fixtures import trees


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return trees.build_emodb(tmp_path_factory.mktemp("emodb"))


def test_emodb_iemocap4_counts_and_skips(root, capsys):
    corpus = load_corpus(f"emodb:{root}")
    # 2 speakers x 2 texts x 7 emotions + 03a01Fb; boredom, disgust, fear dropped
    assert len(corpus) == 17
    assert collections.Counter(u.label for u in corpus) == {"angry": 4, "happy": 5, "sad": 4, "neutral": 4}
    assert corpus.skipped == {
        "emotion 'bored' has no class in labels='iemocap4'": 4,
        "emotion 'disgusted' has no class in labels='iemocap4'": 4,
        "emotion 'fearful' has no class in labels='iemocap4'": 4,
        emodb.SKIP_MISNAMED: 1,  # silence.wav
    }
    out = capsys.readouterr().out
    assert "[emodb] skipped 4 item(s): emotion 'bored' has no class in labels='iemocap4'" in out
    assert "[emodb] skipped 1 item(s): files in wav/ not named" in out


def test_native_classes(root):
    corpus = emodb.load(root, labels="native")
    assert corpus.classes == ("angry", "bored", "disgusted", "fearful", "happy", "sad", "neutral")
    assert len(corpus) == 29


def test_speakers_and_meta(root):
    corpus = emodb.load(root)
    assert sorted({u.speaker for u in corpus}) == ["03", "08"]
    u = corpus.by_id()["08b10Wa"]
    assert (u.label, u.speaker, u.session) == ("angry", "08", "08")
    assert u.meta == {"native": "angry", "text": "b10", "version": "a", "gender": "female", "age": 34}
    assert corpus.by_id()["03a01Fb"].meta["gender"] == "male"
    assert u.duration == pytest.approx(0.1) and u.text is None and not corpus.has_transcripts
    assert "ten fixed German sentences" in corpus.notes[0]


def test_unknown_speaker_or_emotion_is_an_error(tmp_path):
    trees.write(tmp_path / "wav" / "99a01Xa.wav", trees.wav_bytes())
    with pytest.raises(CorpusError, match=r"99a01Xa\.wav: not a valid EmoDB name: speaker '99' .*; emotion 'X'"):
        emodb.load(tmp_path)


def test_empty_audio_is_a_counted_skip(tmp_path, capsys):
    trees.write(tmp_path / "wav" / "03a01Wa.wav", trees.wav_bytes())
    trees.write(tmp_path / "wav" / "03a01Wb.wav", b"")
    corpus = emodb.load(tmp_path)
    assert corpus.ids == ["03a01Wa"] and corpus.skipped == {SKIP_EMPTY: 1}
    assert "[emodb] skipped 1 item(s): empty audio (0 samples)" in capsys.readouterr().out


def test_missing_wav_folder(tmp_path):
    with pytest.raises(CorpusError, match="no wav/ folder"):
        emodb.load(tmp_path)


def test_the_same_name_in_two_cases_names_both_files(tmp_path):
    for name in ("03a01Wa.wav", "03a01Wa.WAV", "08b10Ta.wav"):
        trees.write(tmp_path / "wav" / name, trees.wav_bytes())
    with pytest.raises(CorpusError) as err:
        emodb.load(tmp_path)
    wav = tmp_path / "wav"
    assert str(err.value) == f"emodb: duplicate utterance id '03a01Wa' ({wav / '03a01Wa.WAV'} and {wav / '03a01Wa.wav'})"
