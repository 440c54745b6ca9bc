"""Folds: leave-one-session-out and leave-one-speaker-out with validation from training speakers."""
import pytest

from emolib.corpora import Corpus, Utterance
from emolib.folds import make_folds


def _corpus(sessions=5, per_speaker=3):
    utts = []
    for s in range(1, sessions + 1):
        for g in "FM":
            for i in range(per_speaker):
                utts.append(Utterance(id=f"S{s}{g}_{i}", label="neutral", speaker=f"S{s}{g}", session=f"S{s}"))
    return Corpus("toy", utts)


def test_leave_one_session_out_validates_on_next_session():
    folds = make_folds(_corpus(), "session", validation_speakers=2)
    assert len(folds) == 5
    f1 = folds[0]
    assert f1.test_groups == ("S1",) and f1.test_speakers == ("S1F", "S1M")
    assert f1.val_speakers == ("S2F", "S2M")
    assert set(f1.train_speakers) == {"S3F", "S3M", "S4F", "S4M", "S5F", "S5M"}
    assert folds[4].val_speakers == ("S1F", "S1M")  # cyclic
    for f in folds:
        assert not set(f.train_ids) & set(f.test_ids) and not set(f.val_ids) & set(f.test_ids)
        assert len(f.train_ids) + len(f.val_ids) + len(f.test_ids) == 30
    # every utterance is tested exactly once
    assert sorted(i for f in folds for i in f.test_ids) == sorted(u.id for u in _corpus())


def test_leave_one_speaker_out_validates_on_session_partner_first():
    folds = make_folds(_corpus(), "speaker", validation_speakers=1)
    assert len(folds) == 10
    f = folds[0]
    assert f.test_speakers == ("S1F",) and f.val_speakers == ("S1M",)
    f3 = make_folds(_corpus(), "speaker", validation_speakers=3)[0]
    assert f3.val_speakers == ("S1M", "S2F", "S2M")


def test_n_folds_deals_groups_and_is_deterministic():
    a = make_folds(_corpus(), "speaker", n_folds=5, validation_speakers=2)
    b = make_folds(_corpus(), "speaker", n_folds=5, validation_speakers=2)
    assert a == b and len(a) == 5
    # the 10 sorted speakers are dealt round-robin: fold 1 gets the 1st and 6th
    assert a[0].test_groups == ("S1F", "S3M") and a[4].test_groups == ("S3F", "S5M")
    assert sum(len(f.test_ids) for f in a) == 30


def test_errors_are_clear():
    with pytest.raises(ValueError, match="protocol"):
        make_folds(_corpus(), "utterance")
    with pytest.raises(ValueError, match="no training speakers"):
        make_folds(_corpus(sessions=2), "session", validation_speakers=2)
    with pytest.raises(ValueError, match="n_folds"):
        make_folds(_corpus(), "session", n_folds=6)


def test_a_speaker_in_two_sessions_cannot_be_held_out_by_session():
    # S1F also records in session S2: holding out S1 would test S1F's S2 turns too, and twice over folds
    corpus = _corpus(sessions=3)
    utts = corpus.utterances + [Utterance(id="S1F_extra", label="sad", speaker="S1F", session="S2")]
    with pytest.raises(ValueError, match=r"^toy: speaker 'S1F' records in sessions \['S1', 'S2'\]; "
                                         r"leave-one-session-out .* use the speaker protocol"):
        make_folds(Corpus("toy", utts), "session")
    # by speaker, each speaker is held out once, whatever their sessions
    folds = make_folds(Corpus("toy", utts), "speaker", validation_speakers=1)
    tested = [i for f in folds for i in f.test_ids]
    assert sorted(tested) == sorted(u.id for u in utts)  # every turn tested exactly once
