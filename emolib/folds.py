"""Cross-validation folds: leave-one-session-out and leave-one-speaker-out.

The paper reports "5-fold leave-one-speaker-out" on IEMOCAP (the count is lost in the
extracted text; docs/NOTES.md gives 5); with 5 folds that is the usual
leave-one-session-out (each session holds 2 actors). Both are supported,
and for corpora with many speakers (CREMA-D's 91 actors) the held-out groups can be
dealt into ``n_folds`` folds.

Model selection never looks at the test fold: every fold holds out
``validation_speakers`` of its *training* speakers for early stopping and
checkpoint selection. Which ones is deterministic:

* the test speakers' session partners first (leave-one-speaker-out on IEMOCAP:
  the other actor of the test speaker's dialogues, so that no dialogue of the
  test session is trained on),
* then the speakers of the following groups, cyclically (leave-one-session-out:
  the next session's two actors).

Speaker-disjointness of train / validation / test is asserted when a fold is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .config import PROTOCOLS
from .corpora import Corpus


@dataclass(frozen=True)
class Fold:
    index: int  # 1-based, as in "fold 3"
    test_groups: tuple[str, ...]  # the held-out sessions (or speakers)
    train_speakers: tuple[str, ...]
    val_speakers: tuple[str, ...]
    test_speakers: tuple[str, ...]
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"fold {self.index}: test {','.join(self.test_groups)} ({len(self.test_ids)} utts, "
            f"speakers {','.join(self.test_speakers)}); val {','.join(self.val_speakers)} "
            f"({len(self.val_ids)}); train {len(self.train_speakers)} speakers ({len(self.train_ids)})"
        )


def _group_of(utt, protocol: str) -> str:
    return utt.session if protocol == "session" else utt.speaker


def make_folds(
    corpus: Corpus, protocol: str = "session", n_folds: int = 0, validation_speakers: int = 2
) -> list[Fold]:
    """The folds of ``corpus`` under ``protocol`` (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    groups = sorted({_group_of(u, protocol) for u in corpus})
    if len(groups) < 2:
        raise ValueError(f"{corpus.name}: {protocol} protocol needs at least 2 {protocol}s, found {groups}")
    if n_folds and n_folds > len(groups):
        raise ValueError(f"{corpus.name}: n_folds={n_folds} but only {len(groups)} {protocol}s")
    if protocol == "session":  # a session's speakers are held out whole: they must be only there
        sessions: dict[str, set[str]] = {}
        for u in corpus:
            sessions.setdefault(u.speaker, set()).add(u.session)
        mixed = sorted((speaker, sorted(found)) for speaker, found in sessions.items() if len(found) > 1)
        if mixed:
            speaker, found = mixed[0]
            more = f" (and {len(mixed) - 1} more speakers)" if len(mixed) > 1 else ""
            raise ValueError(f"{corpus.name}: speaker {speaker!r} records in sessions {found}{more}; "
                             "leave-one-session-out tests a session's speakers on all their turns, so each speaker "
                             "must belong to one session: use the speaker protocol, or one session per speaker")
    # Deal the sorted groups round-robin into folds: deterministic and balanced in count.
    k = n_folds or len(groups)
    fold_groups = [tuple(groups[i::k]) for i in range(k)]

    session_of = {}
    for u in corpus:
        session_of.setdefault(u.speaker, u.session)
    speakers_in_group: dict[str, list[str]] = {}
    for u in corpus:
        members = speakers_in_group.setdefault(_group_of(u, protocol), [])
        if u.speaker not in members:
            members.append(u.speaker)
    for members in speakers_in_group.values():
        members.sort()

    folds = []
    for index, test_groups in enumerate(fold_groups, start=1):
        test_speakers = sorted({s for g in test_groups for s in speakers_in_group[g]})
        remaining = [s for s in sorted(session_of) if s not in test_speakers]
        val = _choose_validation(test_groups, test_speakers, remaining, groups, speakers_in_group, session_of,
                                 validation_speakers)
        train = [s for s in remaining if s not in val]
        if not train:
            raise ValueError(f"{corpus.name}: fold {index} leaves no training speakers "
                             f"(validation_speakers={validation_speakers} is too many)")
        folds.append(_build(corpus, index, test_groups, train, val, test_speakers))
    return folds


def _choose_validation(test_groups, test_speakers, remaining, groups, speakers_in_group, session_of, n):
    if n <= 0:
        return []
    test_sessions = {session_of[s] for s in test_speakers}
    partners = [s for s in remaining if session_of[s] in test_sessions]
    start = max(groups.index(g) for g in test_groups)
    cyclic = [groups[(start + j) % len(groups)] for j in range(1, len(groups))]
    following = [s for g in cyclic for s in speakers_in_group[g] if s in remaining and s not in partners]
    ordered = partners + following
    return sorted(ordered[:n])


def _build(corpus, index, test_groups, train, val, test) -> Fold:
    train_s, val_s, test_s = set(train), set(val), set(test)
    if train_s & val_s or train_s & test_s or val_s & test_s:  # a bug in a split rule, never the corpus's fault
        raise ValueError(f"fold {index}: a speaker is in two of train {sorted(train_s)}, validation "
                         f"{sorted(val_s)} and test {sorted(test_s)}")
    pick = lambda speakers: tuple(u.id for u in corpus if u.speaker in speakers)  # noqa: E731
    return Fold(
        index=index, test_groups=tuple(test_groups), train_speakers=tuple(train), val_speakers=tuple(val),
        test_speakers=tuple(test), train_ids=pick(train_s), val_ids=pick(val_s), test_ids=pick(test_s),
    )


def get_fold(folds: Sequence[Fold], index: int) -> Fold:
    for f in folds:
        if f.index == index:
            return f
    raise IndexError(f"fold {index} does not exist; folds are 1..{len(folds)}")
