"""The ``teacher``, ``student``, ``gap`` and ``predict`` commands: one stage of the paper on every
fold of any corpus, and the trained students on new audio.

``python -m emolib teacher --kind prosodic --corpus my.csv --protocol speaker`` trains (or
reuses) the prosodic teacher of every fold, prints one line per fold and closes with the
mean over folds: the numbers of Table 2's teacher-alone rows (7 and 8) for that corpus.
``student`` does the same for a distilled student variant (rows 1-6), training the
teachers the variant needs first. Both go through :mod:`emolib.pipeline`, so a complete
run is reused and a killed one resumes, exactly as in the notebooks.

``gap`` asks the paper's central question of a corpus and a config: how much does the
distilled student beat plain fine-tuning, and (on the built-in corpus) how much could any
pair of teachers add? It prints every model's validation UA, on which settings may be
chosen, apart from the test UA, which is only reported.

``predict`` classifies audio files (or folders of them) with trained students, from the
audio alone: what the method is for. It never trains.

``--seeds 0 1 2`` repeats the stage once per training seed (``training.seed``: weight
initialisation, batch order and crops, of the teachers as of the student) and closes with
the mean over seeds of the per-seed means over folds, and its spread across seeds: on a
small corpus two variants often differ by less than one seed from the next (``gap``: the
mean over seeds of each student's difference from plain fine-tuning).

A request that cannot run (an unknown variant or config name, a corpus the stage cannot
learn from, a fold that does not exist) raises :class:`RequestError` before anything
trains; the command line prints it as one ``error: ...`` line with exit code 2.
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .audio import AUDIO_SUFFIXES
from .config import Config, get_config
from .metrics import format_mean_line, format_p
from .runs import fold_number


class RequestError(ValueError):
    """A command that cannot run as asked; the message says why and lists valid values."""


def _message(err: Exception) -> str:
    # str(KeyError("text")) adds quotes around the text
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def command_config(preset: str, overrides: dict[str, Any], named: dict[str, Any]) -> Config:
    """The preset with the ``--set`` overrides and the named options (``{"data.corpus": spec}``,
    ``None`` = not given) applied. The same name given both ways is refused rather than
    silently resolved one way."""
    given = {name: value for name, value in named.items() if value is not None}
    clash = sorted(set(given) & set(overrides))
    if clash:
        raise RequestError(f"{', '.join(clash)} given both as an option and with --set; give it once")
    from .train import resolve_device

    try:
        cfg = get_config(preset, {**overrides, **given})
        resolve_device(cfg.training.device)  # a GPU this machine lacks: said before anything runs
        return cfg
    except (KeyError, ValueError) as err:
        raise RequestError(_message(err)) from err


class _HeldBack(io.StringIO):
    """Standard output held back while a corpus loads, but for a line saying that the command waits
    for another process's lock (:data:`emolib.runs.WAITING`): held back too, a command waiting for
    another one's corpus generation said nothing at all."""

    def __init__(self, through):
        super().__init__()
        self.through = through
        self.pending = ""  # a line not ended yet (print writes the text and its newline apart)

    def write(self, text: str) -> int:
        from .runs import WAITING

        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if WAITING in line:
                self.through.write(line + "\n")
                self.through.flush()
            else:
                super().write(line + "\n")
        return len(text)

    def getvalue(self) -> str:
        return super().getvalue() + self.pending


def _load(cfg: Config, folds: Sequence[int] | None):
    """(data, fold numbers, what the loader printed). The loader's lines (documented skips)
    are held back so that a command's first line can be a note about the corpus."""
    from . import pipeline

    held = _HeldBack(sys.stdout)
    try:
        with contextlib.redirect_stdout(held):
            data = pipeline.load_data(cfg)
        numbers = [f.index for f in data.folds] if not folds else sorted(set(folds))
        for k in numbers:
            data.fold(k)  # an unknown fold raises with the valid range
    except (ValueError, IndexError) as err:  # CorpusError, too few speakers for the folds, no such fold
        print(held.getvalue(), end="")  # e.g. the skips that left too few utterances
        raise RequestError(str(err)) from err
    return data, numbers, held.getvalue()


def _header(stage: str, cfg: Config, data, numbers: list[int], results) -> str:
    return (f"{stage} on {data.corpus.name} ({len(data.corpus)} utterances), leave-one-{cfg.data.protocol}-out, "
            f"fold{'s' if len(numbers) > 1 else ''} {' '.join(map(str, numbers))} of {len(data.folds)}; "
            f"results in {results}")


def _fold_line(run) -> str:
    m = run.metrics("ua", "wa", "macro_f1", *(() if run.reused else ("best_epoch", "epochs_run", "train_seconds")))
    how = "reused" if run.reused else f"best epoch {m['best_epoch']} of {m['epochs_run']}, {m['train_seconds']:.1f} s"
    return (f"fold {run.fold}: UA {100 * m['ua']:.2f} WA {100 * m['wa']:.2f} "
            f"macro-F1 {100 * m['macro_f1']:.2f} ({how})")


def _close(runs: list, data) -> dict:
    from .pipeline import collect

    summary = collect(runs, list(data.corpus.classes))
    print(format_mean_line(summary), flush=True)
    return summary


def teacher(kind: str, cfg: Config, folds: Sequence[int] | None = None) -> dict:
    """Train (or reuse) teacher ``kind`` on each fold (default: all), print a line per fold
    with test UA, WA and macro-F1, then the ``mean UA .. WA ..`` line; return the summary
    over folds (:func:`emolib.metrics.summarize_folds`)."""
    from . import pipeline

    if kind not in pipeline.TEACHER_KINDS:
        raise RequestError(f"unknown teacher kind {kind!r}; kinds: {', '.join(pipeline.TEACHER_KINDS)}")
    data, numbers, held = _load(cfg, folds)
    try:
        pipeline.check_teacher_input(kind, data.corpus)
    except ValueError as err:
        raise RequestError(str(err)) from err
    print(held, end="")
    print(_header(f"{kind} teacher", cfg, data, numbers, pipeline.teacher_run(kind, cfg, numbers[0]).dir.parent),
          flush=True)
    runs = []
    for k in numbers:
        runs.append(pipeline.train_teacher(kind, cfg, k, data, verbose=False))
        print(_fold_line(runs[-1]), flush=True)
    return _close(runs, data)


def _student_data(cfg: Config, folds: Sequence[int] | None):
    """Check a student request and load its corpus: (data, fold numbers, the loader's held-back
    lines, the effective variant, the note on switched-off terms or None)."""
    from . import pipeline
    from .losses import get_variant

    try:
        get_variant(cfg.distill.variant)
    except KeyError as err:
        raise RequestError(_message(err)) from err
    data, numbers, held = _load(cfg, folds)
    if not data.corpus.has_audio:
        raise RequestError(f"the student needs audio, and corpus {data.corpus.name!r} is text-only "
                           "(a manifest without a 'path' column)")
    variant, note = pipeline.effective_variant(cfg, data.corpus)
    try:
        pipeline.check_student_settings(cfg, variant)
    except ValueError as err:
        raise RequestError(str(err)) from err
    return data, numbers, held, variant, note


def _fill_backbone_cache(cfg: Config, data) -> None:
    """Compute the frozen backbone's states once, here with progress and under the config's
    thread count, for students still to train (train_student reads them quietly). Before any
    teacher trains: a backbone that cannot be used is a :class:`RequestError`."""
    from .pretrained import ModelError
    from .student import cached_inputs, uses_cached_inputs

    try:
        if uses_cached_inputs(cfg):
            from .train import setup

            setup(cfg.training)
            cached_inputs(cfg, data.corpus, progress=True)
        else:  # fine-tuned whole: nothing to cache, but the backbone must load before any teacher trains
            from .backbones import load_backbone

            load_backbone(cfg.student.backbone, freeze=cfg.student.freeze, max_seconds=cfg.student.max_seconds)
    except ModelError as err:
        raise RequestError(f"student.backbone: {err}") from err


def student(cfg: Config, folds: Sequence[int] | None = None) -> dict:
    """Distil the variant ``cfg.distill.variant`` on each fold (default: all), training or
    reusing the teachers it needs; print a line per fold and the ``mean UA .. WA ..`` line.

    On a corpus without usable transcripts the linguistic teacher's terms are switched
    off (:func:`emolib.pipeline.effective_variant`) and the first line says so."""
    from . import pipeline

    data, numbers, held, variant, note = _student_data(cfg, folds)
    if note:
        print(note, flush=True)
    print(held, end="")
    name = pipeline.student_run(cfg, numbers[0], data.corpus.has_transcripts).dir.parent
    print(_header(f"student {cfg.distill.variant} ({' + '.join(variant.enabled())})", cfg, data, numbers, name),
          flush=True)
    todo = [k for k in numbers if not pipeline.student_run(cfg, k, data.corpus.has_transcripts).is_complete()]
    if todo:
        _fill_backbone_cache(cfg, data)
    runs = []
    for k in numbers:
        runs.append(pipeline.train_student(cfg, k, data, verbose=False))
        print(_fold_line(runs[-1]), flush=True)
    return _close(runs, data)


def _folder_files(folder: Path) -> tuple[list[Path], int]:
    """The audio files below ``folder`` (sorted) and how many other files (not hidden) were
    ignored. Hidden files and folders are left out without being entered; a folder that cannot
    be listed (no permission, removed meanwhile) is a :class:`RequestError` naming it, not a
    silent gap (``Path.rglob`` skips it)."""
    from .corpora import walk_links

    def refuse(err: OSError) -> None:
        name = err.filename if err.filename is not None else folder
        raise RequestError(f"{name}: cannot list this folder ({err.strerror or err})") from err

    found: list[Path] = []
    ignored = 0
    for top, dirs, names in walk_links(folder, refuse):  # linked folders too, each once
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            f = Path(top) / name
            if name.startswith(".") or not f.is_file():
                continue
            if f.suffix.lower() in AUDIO_SUFFIXES:
                found.append(f)
            else:
                ignored += 1
    return sorted(found), ignored


def audio_files(inputs: Sequence[str | Path], ignored: dict[Path, int] | None = None) -> list[Path]:
    """Files as given, folders expanded to the audio files below them (sorted), leaving out
    hidden files and folders (``.git``, macOS's ``._clip.wav``). A folder that cannot be listed
    is a :class:`RequestError` naming it. ``ignored``, when given, receives for each folder that
    held other (not hidden) files how many there were."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found, others = _folder_files(item)
            if not found:
                raise RequestError(f"{item}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
            files += found
            if ignored is not None and others:
                ignored[item] = ignored.get(item, 0) + others
        elif item.is_file():
            files.append(item)
        else:
            raise RequestError(f"{item}: no such file or folder")
    return files


def _names(paths: Sequence[Any], printable: Callable[[Any], str], most: int = 3) -> str:
    return ", ".join(map(printable, paths[:most])) + (", ..." if len(paths) > most else "")


def _check_out(out: str | Path) -> None:
    """Refuse an ``--out`` that cannot be written (its folder missing and not creatable, a file
    in its path, no permission) before anything is computed: a temporary file is made and
    removed beside it."""
    import os
    import tempfile

    target = Path(out)
    if not str(out) or target.is_dir():
        raise RequestError(f"--out {str(out)!r}: not a file name")
    folder = target.parent
    above = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise RequestError(f"--out {str(out)!r}: {above} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".check")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise RequestError(f"--out {str(out)!r}: cannot write in {folder} ({err.strerror or err})") from err


def _students_window(dirs: Sequence[Path], overrides: dict[str, Any] | None) -> float | None:
    """The longest stretch of audio any of the students reads (``student.max_seconds`` of each
    run's config): the checks decode no more of a file (an hour-long recording is not read
    whole). None (all of it) when a config cannot be read: classifying then names the problem."""
    from .config import read_config
    from .runs import ResultFileError

    windows = []
    for d in dirs:
        try:
            windows.append(read_config(Path(d) / "config.json").replace(overrides or {}).student.max_seconds)
        except (OSError, ResultFileError, ValueError, KeyError, TypeError):
            return None
    return max(windows) if windows and all(windows) else None


def _sort_audio(files: Sequence[Path], max_seconds: float | None = None
                ) -> tuple[list[Path], list[Path], dict[Path, str], list[Path], list[Path]]:
    """Decode every file once, as the students will read it (its first ``max_seconds``; full
    checks: NaN samples, a cut file, damage past the header): (kept, short, unreadable file ->
    reason, silent among kept, judged on the part the students hear, longer than ``max_seconds``
    among kept: classified on their first ``max_seconds``)."""
    from .audio import AudioError, audio_info, is_silent, read_audio
    from .corpora import MIN_SECONDS

    kept: list[Path] = []
    short: list[Path] = []
    bad: dict[Path, str] = {}
    silent: list[Path] = []
    cut: list[Path] = []
    for f in files:
        try:
            info = audio_info(f)
            if info.duration < MIN_SECONDS:
                short.append(f)
                continue
            # at the file's own rate: no resampling, only the checks
            wave = read_audio(f, sample_rate=info.sample_rate, max_seconds=max_seconds, allow_silent=True)
        except AudioError as err:
            bad[f] = str(err)
            continue
        kept.append(f)
        if is_silent(wave):
            silent.append(f)
        if max_seconds is not None and info.duration > max_seconds:
            cut.append(f)
    return kept, short, bad, silent, cut


def predict(cfg: Config, inputs: Sequence[str | Path], folds: Sequence[int] | None = None,
            out: str | Path | None = None, run_dirs: Sequence[str | Path] | None = None,
            overrides: dict[str, Any] | None = None):
    """Classify audio files with the trained students of ``cfg`` (variant ``cfg.distill.variant``)
    from the audio alone, averaging the probabilities of the folds' students (default: every
    trained fold; :func:`emolib.pipeline.classify`). Writes CSV (``path``, ``pred``,
    ``p_<class>``) to ``out``, atomically, or to standard output, with what was used on a line
    before it (on standard error then, so that the output stays CSV). Never trains, and never
    reads the corpus: the classes and the students come from the run folders.

    Every file is decoded before any model loads. Files that cannot be classified are skipped
    and counted, with their names: shorter than :data:`emolib.corpora.MIN_SECONDS`, or
    unreadable (:class:`emolib.audio.AudioError`: damaged, cut, NaN samples; each with its
    reason); the others are classified. Silent clips (:func:`emolib.audio.is_silent`) are
    classified but counted and named: their prediction is a guess. Files longer than the
    students' ``student.max_seconds`` are classified on their start only, and counted and named. Files in a folder that are
    not audio are counted as ignored. When no file is left, or ``out`` cannot be written,
    :class:`RequestError` before any model loads.

    ``run_dirs``: student run folders (``.../student/<name>`` or one of its ``fold<k>``, e.g.
    copied from another machine) to use instead of ``cfg``'s; each has its own config, to
    which ``overrides`` apply (e.g. ``training.device``)."""
    from . import pipeline
    from .audio import SILENCE_PEAK, AudioError
    from .corpora import SKIP_SHORT
    from .losses import get_variant
    from .paths import printable
    from .runs import ResultFileError, atomic_write_text, read_json

    if out is not None:
        _check_out(out)
    if run_dirs:
        dirs = _student_dirs(run_dirs, folds)
    else:
        try:
            get_variant(cfg.distill.variant)
        except KeyError as err:
            raise RequestError(_message(err)) from err
        numbers = sorted(set(folds)) if folds else pipeline.trained_folds(cfg)
        runs = {k: pipeline.trained_student(cfg, k) for k in numbers}
        missing = [k for k, run in runs.items() if not run.is_complete()]
        if not numbers or missing:
            where = pipeline.student_run(cfg, 1).dir.parent
            which = f" for fold{'s' if len(missing) > 1 else ''} {' '.join(map(str, missing))}" if missing else ""
            raise RequestError(
                f"no trained student {cfg.distill.variant}{which} of this config in {where}: train it first "
                "(python -m emolib student with the same options, or make report)")
        dirs = [runs[k].dir for k in numbers]
    ignored: dict[Path, int] = {}  # folder -> files in it that are not audio
    files = audio_files(inputs, ignored)
    if out is not None and Path(out).resolve() in {f.resolve() for f in files}:  # the CSV would replace a recording
        raise RequestError(f"--out {str(out)!r} is one of the audio files to classify; name a new file for the CSV")
    # an unreadable file is named before any model loads, and skipped: the others are still classified
    window = _students_window(dirs, overrides)
    files, short, bad, silent, cut = _sort_audio(files, window)
    if not files:
        if bad and not short and len(bad) == 1:
            raise RequestError(next(iter(bad.values())))
        if not bad:
            raise RequestError(f"every file is {SKIP_SHORT}")
        reasons = "; ".join(list(bad.values())[:3]) + ("; ..." if len(bad) > 3 else "")
        raise RequestError(f"no file can be classified: {len(bad)} unreadable ({reasons})"
                           + (f", {len(short)} {SKIP_SHORT}" if short else ""))
    try:  # a damaged run is named before any model loads, and students of other classes are not mixed
        shapes = {d: pipeline.student_dir_shape(d)[0] for d in dirs}
    except ResultFileError as err:
        raise RequestError(str(err)) from err
    if len({tuple(c) for c in shapes.values()}) > 1:
        raise RequestError("the students have different classes: " + "; ".join(
            f"{d}: {' '.join(c)}" for d, c in shapes.items()))
    info = sys.stdout if out is not None else sys.stderr
    averaged = " (probabilities averaged)" if len(dirs) > 1 else ""
    if len({Path(d).parent for d in dirs}) == 1:  # one run's folds
        try:
            first = read_json(Path(dirs[0]) / "metrics.json", dict)
        except (ResultFileError, OSError) as err:
            raise RequestError(str(err)) from err
        used = (f"student {first.get('variant', cfg.distill.variant)} ({' + '.join(map(str, first.get('terms', [])))}) "
                f"of {first.get('corpus', '?')}, fold{'s' if len(dirs) > 1 else ''} "
                f"{' '.join(str(_fold_of(d)) for d in dirs)}")
    else:  # --run folders of several runs
        used = f"{len(dirs)} students: {', '.join(printable(Path(d).parent.name + '/' + Path(d).name) for d in dirs)}"
    print(f"{used}{averaged}, on {len(files)} file(s)", file=info, flush=True)
    if ignored:
        print(f"ignored {sum(ignored.values())} file(s) that are not audio ({', '.join(AUDIO_SUFFIXES)}) in "
              f"{_names(list(ignored), printable)}", file=info, flush=True)
    if bad:
        print(f"skipped {len(bad)} unreadable file(s): {'; '.join(list(bad.values())[:3])}"
              f"{'; ...' if len(bad) > 3 else ''}", file=info, flush=True)
    if short:
        print(f"skipped {len(short)} file(s): {SKIP_SHORT}: {_names(short, printable)}", file=info, flush=True)
    if silent:
        print(f"{len(silent)} file(s) silent (peak below {SILENCE_PEAK:g} of full scale), their prediction is a "
              f"guess: {_names(silent, printable)}", file=info, flush=True)
    if cut:  # the students never hear the rest (student.max_seconds): a long recording is judged on its start
        print(f"{len(cut)} file(s) longer than {window:g} s (student.max_seconds), classified on their first "
              f"{window:g} s only: {_names(cut, printable)}", file=info, flush=True)
    try:
        with contextlib.redirect_stdout(info):  # progress lines never mix with the CSV
            frame = pipeline.classify_dirs(dirs, files, overrides) if run_dirs else \
                pipeline.classify(cfg, numbers, files)
    except (AudioError, ResultFileError) as err:  # a file changed since it was checked, a damaged run
        raise RequestError(str(err)) from err
    text = frame.to_csv(index=False)
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            atomic_write_text(out, text)
        except OSError as err:  # checked before, but the disk may have filled or the folder gone since
            raise RequestError(f"--out {str(out)!r}: cannot write there ({err.strerror or err})") from err
        print(f"predictions written to {out}", flush=True)
    return frame


def _fold_of(directory: str | Path) -> int | str:
    """A student fold folder's fold: from its name (``fold<k>``), or, for a folder copied under
    another name, from its ``metrics.json``."""
    from .runs import read_json

    k = fold_number(directory)
    if k is None:
        try:
            k = read_json(Path(directory) / "metrics.json", dict).get("fold")
        except Exception:  # a damaged file is named where it is read for the classes
            k = None
    return k if k is not None else "?"


def _student_dirs(run_dirs: Sequence[str | Path], folds: Sequence[int] | None) -> list[Path]:
    """The fold folders named by ``--run``: a fold folder, or a run's complete fold folders
    (those of ``folds`` only, when given)."""
    from .pipeline import complete_fold_dirs

    found: list[Path] = []
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise RequestError(f"--run {d}: no such folder")
        if (d / "config.json").is_file():
            found.append(d)
            continue
        chosen = [f for f in complete_fold_dirs(d) if not folds or fold_number(f) in folds]
        if not chosen:
            which = f" for fold{'s' if len(set(folds)) > 1 else ''} {' '.join(map(str, sorted(set(folds))))}" \
                if folds else ""
            raise RequestError(f"--run {d}: no complete student{which} here (give a folder "
                               ".../student/<name> or one of its fold<k> folders)")
        found += chosen
    return found


#: What :func:`gap` compares every row with: the paper's plain fine-tuning (Table 2, row 6).
PLAIN = "no_teachers"


def gap(cfg: Config, folds: Sequence[int] | None = None, oracle: bool = True) -> dict:
    """What distillation adds on a corpus, read on the speakers where settings may be chosen.

    On each fold (default: all) train or reuse the teachers of the variant
    ``cfg.distill.variant``, the variant itself, plain fine-tuning (``no_teachers``) and, on
    the built-in corpus (unless ``oracle`` is False), the variant taught by oracle teachers:
    what a perfect teacher of each channel would say (``distill.teacher_targets=oracle``),
    the most any pair of teachers could add to this student. Print a line per fold with
    every model's validation UA (the training speakers held out for model selection) and
    test UA, then two blocks, validation and test, each with the means over folds and each
    student's paired difference from plain fine-tuning. Settings are chosen on the
    validation block; the test block is the result, for reporting.

    The test block also gives each gap's 95 % interval from a paired bootstrap over the test
    utterances (:func:`emolib.report.paired_bootstrap_frames`), and p, the share of draws in
    which the distilled student was not ahead: how far the test sets' sampling alone could
    move the gap (a new training seed moves it too: ``--seeds``).

    Returns ``{"folds", "rows", "validation": {row: [UA per fold]}, "test": {...},
    "gaps": {"validation": {row: paired_difference}, "test": {...}}, "test_intervals":
    {row: paired_bootstrap}}`` (fractions)."""
    from . import paths, pipeline
    from .metrics import paired_difference
    from .report import paired_bootstrap_frames

    if cfg.distill.variant == PLAIN:
        raise RequestError(f"gap compares a distilled variant with plain fine-tuning ({PLAIN}); "
                           f"choose another --variant")
    if cfg.data.validation_speakers < 1:
        raise RequestError("gap reads the validation speakers' UA, and data.validation_speakers is 0")
    data, numbers, held, variant, note = _student_data(cfg, folds)
    if note:
        print(note, flush=True)
    print(held, end="")
    targets = cfg.distill.teacher_targets
    label = cfg.distill.variant if targets == "in_sample" else f"{cfg.distill.variant} ({targets})"
    # plain fine-tuning weighs its one term by alpha = 1 whatever the variant's alpha: with a single
    # term alpha only rescales the loss, and at alpha = 0 (teachers instead of labels) it would learn nothing
    students = {label: cfg, PLAIN: cfg.replace({"distill.variant": PLAIN, "distill.alpha": 1.0})}
    if oracle and targets != "oracle":
        if pipeline.oracle_available(cfg, data.corpus):
            students[f"{cfg.distill.variant} (oracle)"] = cfg.replace({"distill.teacher_targets": "oracle"})
        else:
            print(f"no oracle row: only the built-in corpus records which channel carries each label, "
                  f"and this is {data.corpus.name!r}", flush=True)
    kinds = [k for k in pipeline.TEACHER_KINDS if getattr(variant, f"needs_{k}_teacher")]
    rows = [*kinds, *students]
    print(_header(f"gap: {', '.join(rows)}", cfg, data, numbers, paths.runs_dir()), flush=True)
    has_text = data.corpus.has_transcripts
    if any(not pipeline.student_run(c, k, has_text).is_complete() for c in students.values() for k in numbers):
        _fill_backbone_cache(cfg, data)  # every row reads the same backbone states
    scores: dict[str, dict[str, list[float]]] = {"validation": {r: [] for r in rows}, "test": {r: [] for r in rows}}
    predictions: dict[str, list] = {name: [] for name in students}  # test predictions, for the bootstrap
    for k in numbers:
        runs = {kind: pipeline.train_teacher(kind, cfg, k, data, verbose=False) for kind in kinds}
        runs.update({name: pipeline.train_student(c, k, data, verbose=False) for name, c in students.items()})
        for name, run in runs.items():
            m = run.metrics("best_val_ua", "ua")
            scores["validation"][name].append(m["best_val_ua"])
            scores["test"][name].append(m["ua"])
            if name in predictions:
                predictions[name].append(run.predictions())
        print(f"fold {k}: " + " | ".join(f"{block} UA " + ", ".join(f"{name} {100 * v[-1]:.2f}" for name, v in
                                                                      scores[block].items())
                                          for block in ("validation", "test")), flush=True)
    gaps = {block: {name: paired_difference(scores[block][name], scores[block][PLAIN])
                    for name in students if name != PLAIN} for block in scores}
    # the test block also says how far its test utterances alone could move each gap
    intervals = {name: paired_bootstrap_frames(predictions[name], predictions[PLAIN], (name, PLAIN))
                 for name in students if name != PLAIN}
    n = len(numbers)
    for block, what in (("validation", "the training speakers held out for model selection: decide on these"),
                        ("test", "the held-out test speakers: report these, choose nothing on them")):
        print(f"{block} UA, mean over {n} fold{'s' if n != 1 else ''} ({what}):", flush=True)
        print("  " + ", ".join(f"{name} {100 * np.mean(v):.2f}" for name, v in scores[block].items()), flush=True)
        for name, d in gaps[block].items():
            spread = "" if np.isnan(d["std"]) else f" ± {100 * d['std']:.2f}"
            boot = intervals[name] if block == "test" else None
            interval = "" if boot is None else (
                f"; {100 * boot['confidence']:.0f} % interval [{100 * boot['low']:+.2f}, {100 * boot['high']:+.2f}] "
                f"over the test utterances, {format_p(boot['p_not_higher'], boot['n_resamples'])}")
            print(f"  {name} - {PLAIN}: {100 * d['mean']:+.2f}{spread} (higher in {d['a_higher']} of {d['n']} "
                  f"fold{'s' if d['n'] != 1 else ''}){interval}", flush=True)
    return {"folds": numbers, "rows": rows, **scores, "gaps": gaps, "test_intervals": intervals}


def over_seeds(stage: Callable[[Config], dict], cfg: Config, seeds: Sequence[int] | None,
               close: Callable[[list[int], list[dict]], dict] | None = None) -> dict:
    """``stage(cfg)`` (:func:`teacher`, :func:`student` or :func:`gap` with its other arguments
    bound) once per seed in ``seeds`` (None or one seed: once, with ``cfg``'s own seed), every
    seed's output in turn, then ``close(seeds, per_seed_results)`` (default
    :func:`mean_over_seeds`) prints and returns what the seeds say together; with one seed,
    the stage's own result is returned."""
    seeds = list(dict.fromkeys(seeds or []))  # the order given, each seed once
    if len(seeds) < 2:
        return stage(cfg.replace({"training.seed": seeds[0]}) if seeds else cfg)
    per_seed = []
    for seed in seeds:
        print(f"seed {seed}:", flush=True)
        per_seed.append(stage(cfg.replace({"training.seed": seed})))
    return (close or mean_over_seeds)(seeds, per_seed)


def mean_over_seeds(seeds: list[int], per_seed: list[dict]) -> dict:
    """The last line of a ``teacher`` or ``student`` command over several seeds: the mean over
    seeds of each seed's mean over folds and the standard deviation across seeds; returns
    ``{"seeds": [...], "per_seed": [summary, ...], "ua_mean", "ua_std", "wa_mean", "wa_std"}``."""
    out: dict[str, Any] = {"seeds": seeds, "per_seed": per_seed}
    for key in ("ua", "wa"):
        means = np.array([s[f"{key}_mean"] for s in per_seed])
        out[f"{key}_mean"], out[f"{key}_std"] = float(means.mean()), float(means.std(ddof=1))
    folds = per_seed[0]["folds"]
    each = " ".join(f"{100 * s['ua_mean']:.2f}" for s in per_seed)
    print(f"mean UA {100 * out['ua_mean']:.2f} WA {100 * out['wa_mean']:.2f} over {len(seeds)} seeds "
          f"({' '.join(map(str, seeds))}; std across seeds UA {100 * out['ua_std']:.2f} WA {100 * out['wa_std']:.2f}; "
          f"UA per seed {each}; {folds} fold{'s' if folds != 1 else ''} each)", flush=True)
    return out


def gap_over_seeds(seeds: list[int], per_seed: list[dict]) -> dict:
    """The closing lines of a ``gap`` command over several seeds: per block and student, the
    mean over seeds of its mean difference from plain fine-tuning, the standard deviation
    across seeds and each seed's value; returns ``{"seeds", "per_seed", "gaps": {block: {row:
    {"mean", "std", "per_seed"}}}}`` (fractions)."""
    out: dict[str, Any] = {"seeds": seeds, "per_seed": per_seed, "gaps": {}}
    print(f"over {len(seeds)} seeds ({' '.join(map(str, seeds))}), each the mean over its folds:", flush=True)
    for block in ("validation", "test"):
        out["gaps"][block] = {}
        for name in per_seed[0]["gaps"][block]:
            values = np.array([s["gaps"][block][name]["mean"] for s in per_seed])
            out["gaps"][block][name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                                        "per_seed": values.tolist()}
            print(f"  {block} {name} - {PLAIN}: {100 * values.mean():+.2f} (std across seeds "
                  f"{100 * values.std(ddof=1):.2f}; per seed {' '.join(f'{100 * v:+.2f}' for v in values)})",
                  flush=True)
    return out
