"""A folder or file a loader cannot read (permissions, an I/O error) is a CorpusError naming it,
never a session or an actor left out in silence, nor a raw OSError traceback from a command.

Every test runs twice, with the ``deny`` fixture:

* ``simulated``: ``os.scandir``, ``os.stat`` and ``Path.open`` refuse what a ``chmod 000`` would
  refuse (a denied folder cannot be listed; nothing below it can be stat'ed or opened; a denied
  file cannot be opened). This runs everywhere, also as root, where chmod stops nothing.
* ``chmod``: the real ``chmod``; skipped when this process can still list a ``chmod 000`` folder
  (root with CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH). To run it as root, drop them:
  ``setpriv --bounding-set=-dac_override,-dac_read_search python -m pytest tests/test_corpora_unreadable.py``,
  which the last test does for them when this process is root (CI's is).
"""
from __future__ import annotations

import errno
import os
import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emolib import __main__ as cli
from emolib.corpora import (SKIP_UNREADABLE_FOLDER, CorpusError, find_files, is_file, is_folder, list_folder, load_corpus,
                            walk_folder)
from fixtures import trees

DENIED = os.strerror(errno.EACCES)  # "Permission denied"


def _chmod_stops_this_process(tmp: Path) -> bool:
    probe = tmp / "chmod-probe"
    probe.mkdir()
    os.chmod(probe, 0)
    try:
        os.listdir(probe)
        return False
    except PermissionError:
        return True
    finally:
        os.chmod(probe, 0o755)
        probe.rmdir()


@pytest.fixture(params=["simulated", "chmod"])
def deny(request, monkeypatch, tmp_path_factory):
    """``deny(path)``: make ``path`` (a folder or a file) unreadable, as ``chmod 000`` does;
    ``deny(folder, listable=True)``: as ``chmod 444`` does (its names can be listed, but nothing
    in it can be reached)."""
    if request.param == "chmod":
        if not _chmod_stops_this_process(tmp_path_factory.mktemp("probe")):
            pytest.skip("this process reads chmod-000 folders (root with CAP_DAC_OVERRIDE); run under "
                        "setpriv --bounding-set=-dac_override,-dac_read_search to test the real chmod")
        changed: list[tuple[Path, int]] = []

        def deny_chmod(path: Path, listable: bool = False) -> None:
            changed.append((path, path.stat().st_mode & 0o7777))
            os.chmod(path, 0o444 if listable else 0)

        yield deny_chmod
        for path, mode in reversed(changed):  # so that tmp_path can be removed
            os.chmod(path, mode)
        return

    closed: set[Path] = set()  # chmod 000: nothing in it, nor itself
    unsearchable: set[Path] = set()  # chmod 444: its names, nothing in it

    def refuse(path) -> PermissionError:
        return PermissionError(errno.EACCES, DENIED, os.fsdecode(os.fspath(path)))

    def below(path) -> bool:  # something on the way to path cannot be searched
        p = Path(os.fsdecode(os.fspath(path))).absolute()
        return any(d in p.parents for d in closed | unsearchable)

    def at(path) -> bool:
        return Path(os.fsdecode(os.fspath(path))).absolute() in closed

    real_scandir, real_stat, real_open = os.scandir, os.stat, pathlib.Path.open

    def scandir(path="."):
        if not isinstance(path, int) and (at(path) or below(path)):
            raise refuse(path)
        return real_scandir(path)

    def stat(path, *args, **kwargs):
        if not isinstance(path, int) and below(path):
            raise refuse(path)
        return real_stat(path, *args, **kwargs)

    def open_(self, *args, **kwargs):
        if at(self) or below(self):
            raise refuse(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(pathlib.Path, "open", open_)

    def deny_simulated(path: Path, listable: bool = False) -> None:
        (unsearchable if listable else closed).add(path.absolute())

    yield deny_simulated


def error(spec: str) -> str:
    with pytest.raises(CorpusError) as err:
        load_corpus(spec)
    return str(err.value)


# -- IEMOCAP -------------------------------------------------------------------------

DIALOG1, DIALOG2 = "Ses01F_impro01", "Ses02F_impro01"


@pytest.fixture
def iemocap(tmp_path):
    """Two sessions, one dialog each, a turn of each 4-class label per dialog: 8 utterances."""
    reference = [{"id": f"{dialog}_{turn}", "emo": emo, "length": 1.5}
                 for dialog in (DIALOG1, DIALOG2)
                 for turn, emo in (("F000", "neu"), ("M000", "ang"), ("F001", "exc"), ("M001", "sad"))]
    root = trees.build_iemocap(tmp_path / "IEMOCAP", reference)
    corpus = load_corpus(f"iemocap:{root}")
    assert (len(corpus), sorted({u.speaker for u in corpus})) == (8, ["Ses01F", "Ses01M", "Ses02F", "Ses02M"])
    return root


@pytest.mark.parametrize("folder", ["Session2", "Session2/dialog", "Session2/dialog/EmoEvaluation"])
def test_iemocap_a_label_folder_it_cannot_read_is_named_not_left_out(iemocap, deny, folder):
    # Path.glob passed over it: the corpus loaded with Session1's two speakers and said nothing
    deny(iemocap / folder)
    assert error(f"iemocap:{iemocap}") == f"{iemocap / folder}: cannot read this folder ({DENIED})"


@pytest.mark.parametrize("folder", ["Session2/sentences", f"Session2/sentences/wav/{DIALOG2}",
                                    "Session2/dialog/transcriptions"])
def test_iemocap_an_audio_or_transcript_folder_it_cannot_read_is_named(iemocap, deny, folder):
    deny(iemocap / folder)
    assert error(f"iemocap:{iemocap}") == f"{iemocap / folder}: cannot read this folder ({DENIED})"


def test_iemocap_a_folder_it_can_list_but_not_enter_is_named(iemocap, deny):
    deny(iemocap / "Session2" / "sentences" / "wav", listable=True)
    assert error(f"iemocap:{iemocap}") == f"{iemocap / 'Session2/sentences/wav'}: cannot read this folder ({DENIED})"


@pytest.mark.parametrize("kind", ["EmoEvaluation", "transcriptions"])
def test_iemocap_a_label_or_transcript_file_it_cannot_read_is_named(iemocap, deny, kind):
    path = iemocap / "Session2" / "dialog" / kind / f"{DIALOG2}.txt"
    deny(path)
    assert error(f"iemocap:{iemocap}") == f"{path}: cannot read this file ({DENIED})"


def test_iemocap_a_release_folder_it_cannot_read_is_named(iemocap, deny):
    deny(iemocap)
    assert error(f"iemocap:{iemocap}") == f"{iemocap}: cannot read this folder ({DENIED})"


# -- RAVDESS -------------------------------------------------------------------------


@pytest.fixture
def ravdess(tmp_path):
    return trees.build_ravdess(tmp_path / "RAVDESS")


def test_ravdess_an_actor_folder_it_cannot_read_is_named_not_left_out(ravdess, deny):
    # os.walk passed over it: 36 of the 72 utterances, Actor_01 only, and 6 videos counted as unmatched
    actor = ravdess / "Audio_Speech_Actors_01-24" / "Actor_02"
    deny(actor)
    assert error(f"ravdess:{ravdess}") == f"{actor}: cannot read this folder ({DENIED})"


@pytest.mark.parametrize("folder", ["", "Video_Speech_Actor_02/Actor_02", "Audio_Song_Actors_01-24"])
def test_ravdess_any_folder_it_cannot_read_is_named(ravdess, deny, folder):
    deny(ravdess / folder)
    assert error(f"ravdess:{ravdess}") == f"{ravdess / folder}: cannot read this folder ({DENIED})"


def test_ravdess_an_unreadable_folder_that_is_not_the_corpus_is_counted_not_fatal(ravdess, deny):
    # a corpus on a disk of its own has the file system's root-owned lost+found beside the actors
    whole = load_corpus(f"ravdess:{ravdess}")
    (ravdess / "lost+found").mkdir()
    deny(ravdess / "lost+found")
    corpus = load_corpus(f"ravdess:{ravdess}")
    assert [u.id for u in corpus.utterances] == [u.id for u in whole.utterances]
    assert corpus.skipped[SKIP_UNREADABLE_FOLDER] == 1 and SKIP_UNREADABLE_FOLDER not in whole.skipped


# -- CREMA-D -------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind", [("AudioWAV", "folder"), ("VideoFlash", "folder"),
                                        ("VideoDemographics.csv", "file")])
def test_cremad_a_folder_or_file_it_cannot_read_is_named(tmp_path, deny, name, kind):
    root = trees.build_cremad(tmp_path / "CREMA-D")
    deny(root / name)
    assert error(f"cremad:{root}") == f"{root / name}: cannot read this {kind} ({DENIED})"


# -- EmoDB ---------------------------------------------------------------------------


def test_emodb_a_wav_folder_it_cannot_read_is_named(tmp_path, deny):
    root = trees.build_emodb(tmp_path / "EmoDB")
    deny(root / "wav")
    assert error(f"emodb:{root}") == f"{root / 'wav'}: cannot read this folder ({DENIED})"


def test_emodb_a_corpus_folder_it_cannot_enter_is_named(tmp_path, deny):
    root = trees.build_emodb(tmp_path / "EmoDB")
    deny(root)
    assert error(f"emodb:{root}") == f"{root}: cannot read this folder ({DENIED})"


# -- manifests -----------------------------------------------------------------------


def test_a_manifest_it_cannot_read_is_named(tmp_path, deny):
    manifest = trees.build_manifest_csv(tmp_path)
    deny(manifest)
    assert error(str(manifest)) == f"{manifest}: cannot read this file ({DENIED})"


def test_a_manifests_audio_folder_it_cannot_read_is_named_with_the_line(tmp_path, deny):
    manifest = trees.build_manifest_csv(tmp_path)
    deny(tmp_path / "clips")
    assert error(str(manifest)) == f"{manifest}:2: {tmp_path / 'clips'}: cannot read this folder ({DENIED})"


# -- the helpers and the commands ----------------------------------------------------


def test_the_helpers_read_what_can_be_read_like_pathlib_and_os_walk(tmp_path):
    root = trees.build_iemocap_small(tmp_path / "IEMOCAP")
    (root / "Session1" / "dialog" / "EmoEvaluation" / ".hidden.txt").write_text("")
    (root / "Session1" / "dialog" / "EmoEvaluation" / "upper.TXT").write_text("")
    (root / "Session1" / "dialog" / "EmoEvaluation" / "folder.txt").mkdir()
    pattern = "Session*/dialog/EmoEvaluation/*.txt"
    assert find_files(root, pattern) == [root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"]
    assert find_files(root, pattern) == sorted(p for p in root.glob(pattern) if p.is_file() and p.name[0] != ".")
    assert list_folder(root) == ["Session1"]
    assert [(Path(d), sorted(n), sorted(f)) for d, n, f in walk_folder(root / "Session1" / "dialog")] == [
        (Path(d), sorted(n), sorted(f)) for d, n, f in os.walk(root / "Session1" / "dialog")]
    assert (is_folder(root), is_file(root), is_folder(root / "nothing"), is_file(root / "nothing" / "x")) == (
        True, False, False, False)
    assert is_file(root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt")
    with pytest.raises(CorpusError, match=r"^.*/Session1/dialog/EmoEvaluation/Ses01F_impro01\.txt: cannot read "
                                          r"this folder \(.*\)$"):
        list_folder(root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt")  # not a folder


def test_a_command_on_a_corpus_folder_it_cannot_read_is_one_error_line(tmp_path, deny, monkeypatch, capsys):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("EMOLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    root = trees.build_emodb(tmp_path / "EmoDB")
    deny(root / "wav")
    code = cli.main(["teacher", "--kind", "prosodic", "--corpus", f"emodb:{root}", "--protocol", "speaker"])
    out, err = capsys.readouterr()
    assert (code, out, err.splitlines()) == (2, "", [f"error: {root / 'wav'}: cannot read this folder ({DENIED})"])


def test_as_root_the_real_permission_variants_run_in_a_child_without_the_dac_capabilities(tmp_path):
    """Root reads chmod-000 folders, so above every ``chmod`` variant skips: they run again in a child
    that setpriv started without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, where chmod stops root too."""
    if _chmod_stops_this_process(tmp_path):
        pytest.skip("chmod stops this process: the chmod variants ran above")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv (util-linux) to start a child without root's DAC capabilities")
    child = subprocess.run(
        [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "pytest", "-q",
         "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "child"), "-k", "chmod", "-rs", __file__],
        cwd=Path(__file__).parent, capture_output=True, text=True, timeout=600)
    out = child.stdout + child.stderr
    assert child.returncode == 0, out
    # only "passed" and "deselected" (the simulated variants, the tests without deny, this one): no chmod
    # variant skipped (chmod stopped the child), failed or errored
    summary = re.search(r"^(\d+) passed, \d+ deselected in ", out, re.M)
    assert summary and int(summary.group(1)) > 0, out
