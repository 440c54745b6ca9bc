"""RAVDESS loader on a fixture tree in the release's layout (48 kHz, speech, song, videos)."""
import collections

import pytest

from emolib.audio import read_audio
from emolib.corpora import SKIP_EMPTY, CorpusError, load_corpus
from emolib.corpora import ravdess
from fixtures import trees


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return trees.build_ravdess(tmp_path_factory.mktemp("ravdess"))


def test_iemocap4_with_calm_as_neutral(root, capsys):
    corpus = load_corpus(f"ravdess:{root}")
    # per actor: neutral 4 + calm 8, happy 8, sad 8, angry 8 (60 speech files each)
    assert len(corpus) == 72
    assert collections.Counter(u.label for u in corpus) == {"neutral": 24, "happy": 16, "sad": 16, "angry": 16}
    assert corpus.classes == ("neutral", "angry", "sad", "happy")
    assert corpus.skipped == {
        "emotion 'fearful' has no class in labels='iemocap4'": 16,
        "emotion 'disgusted' has no class in labels='iemocap4'": 16,
        "emotion 'surprised' has no class in labels='iemocap4'": 16,
        ravdess.SKIP_SONG: 44,
        ravdess.SKIP_MISNAMED: 1,  # take2.wav (the ._ resource fork and README.txt are not media)
        ravdess.SKIP_VIDEO_ONLY: 1,  # Actor_03's .mp4
    }
    out = capsys.readouterr().out
    assert "[ravdess] skipped 44 item(s): song clips (vocal channel 02; include_song=False)" in out
    assert "[ravdess] skipped 16 item(s): emotion 'fearful' has no class in labels='iemocap4'" in out


def test_speakers_sessions_and_meta(root):
    corpus = ravdess.load(root)
    assert sorted({u.speaker for u in corpus}) == ["Actor_01", "Actor_02"]
    assert all(u.session == u.speaker for u in corpus)
    u = corpus.by_id()["03-01-02-02-01-02-01"]
    assert (u.label, u.meta["native"], u.meta["gender"], u.meta["intensity"], u.meta["statement"],
            u.meta["repetition"], u.meta["vocal_channel"]) == ("neutral", "calm", "male", "strong", 1, 2, "speech")
    assert corpus.by_id()["03-01-05-01-02-01-02"].meta["gender"] == "female"
    assert u.duration == pytest.approx(0.1)
    assert u.path == root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-02-02-01-02-01.wav"


def test_no_transcripts(root):
    corpus = ravdess.load(root)
    assert not corpus.has_transcripts and all(u.text is None for u in corpus)
    assert "linguistic teacher refuses this corpus" in corpus.notes[0]


def test_videos_are_attached(root):
    corpus = ravdess.load(root)
    u = corpus.by_id()["03-01-03-01-01-01-01"]
    assert u.video == root / "Video_Speech_Actor_01" / "Actor_01" / "01-01-03-01-01-01-01.mp4"
    assert u.meta["video_modality"] == "audio-visual"
    v = corpus.by_id()["03-01-01-01-01-01-02"]
    assert v.video.name == "02-01-01-01-01-01-02.mp4" and v.meta["video_modality"] == "video-only"
    assert collections.Counter(u.meta["video_modality"] for u in corpus) == {"audio-visual": 36, "video-only": 5, None: 31}


def test_48k_stereo_is_read_as_16k_mono(root):
    u = ravdess.load(root).by_id()["03-01-05-01-02-01-02"]  # Actor_02: stereo 48 kHz, 0.1 s
    assert read_audio(u.path).shape == (1600,)


def test_native_with_song(root):
    corpus = ravdess.load(root, labels="native", include_song=True)
    assert corpus.classes == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
    assert len(corpus) == 120 + 44
    assert collections.Counter(u.meta["vocal_channel"] for u in corpus) == {"speech": 120, "song": 44}
    assert collections.Counter(u.label for u in corpus)["disgusted"] == 16  # song has no disgust


def test_calm_can_be_skipped_instead(root):
    corpus = ravdess.load(root, calm_as_neutral=False)
    assert collections.Counter(u.label for u in corpus)["neutral"] == 8
    assert corpus.skipped["emotion 'calm' has no class in labels='iemocap4'"] == 16


def test_impossible_code_is_an_error(tmp_path):
    trees.write(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav", trees.wav_bytes())
    with pytest.raises(CorpusError, match=r"03-01-09-01-01-01-01\.wav: not a valid RAVDESS name: emotion 09"):
        ravdess.load(tmp_path)


def test_audio_file_of_video_modality_is_an_error(tmp_path):
    trees.write(tmp_path / "Actor_01" / "01-01-01-01-01-01-01.wav", trees.wav_bytes())
    with pytest.raises(CorpusError, match=r"modality 01 in a \.wav file \(expected 03\)"):
        ravdess.load(tmp_path)


def test_same_recording_twice_is_an_error(tmp_path):
    for folder in ("Actor_01", "copy/Actor_01"):
        trees.write(tmp_path / folder / "03-01-01-01-01-01-01.wav", trees.wav_bytes())
    with pytest.raises(CorpusError, match="the same recording is also at"):
        ravdess.load(tmp_path)


def test_empty_audio_is_a_counted_skip(tmp_path, capsys):
    trees.write(tmp_path / "Actor_01" / "03-01-01-01-01-01-01.wav", trees.wav_bytes())
    trees.write(tmp_path / "Actor_01" / "03-01-01-01-01-02-01.wav", trees.wav_bytes(0.0))
    corpus = ravdess.load(tmp_path)
    assert corpus.ids == ["03-01-01-01-01-01-01"] and corpus.skipped == {SKIP_EMPTY: 1}
    assert "[ravdess] skipped 1 item(s): empty audio (0 samples)" in capsys.readouterr().out


def test_nothing_to_load(tmp_path):
    with pytest.raises(CorpusError, match="no RAVDESS audio files"):
        ravdess.load(tmp_path)
    with pytest.raises(CorpusError, match="unknown labels='iemocap6'; choose iemocap4 or native"):
        ravdess.load(tmp_path, labels="iemocap6")


def test_a_linked_actor_folder_is_read_and_a_link_loop_is_entered_once(root, tmp_path):
    # an actor's folder linked from another disk was passed over without a word: its speaker was left out
    import shutil

    copy = tmp_path / "ravdess"
    shutil.copytree(root, copy, symlinks=True)
    speech = copy / "Audio_Speech_Actors_01-24"
    moved = tmp_path / "elsewhere" / "Actor_01"
    moved.parent.mkdir()
    shutil.move(speech / "Actor_01", moved)
    (speech / "Actor_01").symlink_to(moved, target_is_directory=True)
    (speech / "Actor_01" / "loop").symlink_to(speech, target_is_directory=True)  # a link to a folder above it
    corpus, reference = ravdess.load(copy), ravdess.load(root)
    assert sorted({u.speaker for u in corpus}) == ["Actor_01", "Actor_02"]
    assert corpus.ids == reference.ids  # every recording once, neither lost nor listed twice through the loop
