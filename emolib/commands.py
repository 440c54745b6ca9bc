"""The ``teacher`` and ``student`` commands: one stage of the paper on every fold of any corpus.

``python -m emolib teacher --kind prosodic --corpus my.csv --protocol speaker`` trains (or
reuses) the prosodic teacher of every fold, prints one line per fold and closes with the
mean over folds: the numbers of Table 2's teacher-alone rows (7 and 8) for that corpus.
``student`` does the same for a distilled student variant (rows 1-6), training the
teachers the variant needs first. Both go through :mod:`emolib.pipeline`, so a complete
run is reused and a killed one resumes, exactly as in the notebooks.

``--seeds 0 1 2`` repeats the stage once per training seed (``training.seed``: weight
initialisation, batch order and crops, of the teachers as of the student) and closes with
the mean over seeds of the per-seed means over folds, and its spread across seeds: on a
small corpus two variants often differ by less than one seed from the next.

A request that cannot run (an unknown variant or config name, a corpus the stage cannot
learn from, a fold that does not exist) raises :class:`RequestError` before anything
trains; the command line prints it as one ``error: ...`` line with exit code 2.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Sequence

import numpy as np

from .config import Config, get_config
from .metrics import format_mean_line


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
    try:
        return get_config(preset, {**overrides, **given})
    except (KeyError, ValueError) as err:
        raise RequestError(_message(err)) from err


def _load(cfg: Config, folds: Sequence[int] | None):
    """(data, fold numbers, what the loader printed). The loader's lines (documented skips)
    are held back so that a command's first line can be a note about the corpus."""
    from . import pipeline

    held = io.StringIO()
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


def _fold_line(run, reused: bool) -> str:
    m = run.metrics()
    how = "reused" if reused else f"best epoch {m['best_epoch']} of {m['epochs_run']}, {m['train_seconds']:.1f} s"
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
        reused = pipeline.teacher_run(kind, cfg, k).is_complete()
        runs.append(pipeline.train_teacher(kind, cfg, k, data, verbose=False))
        print(_fold_line(runs[-1], reused), flush=True)
    return _close(runs, data)


def student(cfg: Config, folds: Sequence[int] | None = None) -> dict:
    """Distil the variant ``cfg.distill.variant`` on each fold (default: all), training or
    reusing the teachers it needs; print a line per fold and the ``mean UA .. WA ..`` line.

    On a corpus without usable transcripts the linguistic teacher's terms are switched
    off (:func:`emolib.pipeline.effective_variant`) and the first line says so."""
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
    if note:
        print(note, flush=True)
    print(held, end="")
    name = pipeline.student_run(cfg, numbers[0], data.corpus.has_transcripts).dir.parent
    print(_header(f"student {cfg.distill.variant} ({' + '.join(variant.enabled())})", cfg, data, numbers, name),
          flush=True)
    todo = [k for k in numbers if not pipeline.student_run(cfg, k, data.corpus.has_transcripts).is_complete()]
    from .student import cached_inputs, uses_cached_inputs

    if todo and uses_cached_inputs(cfg):
        from .train import setup

        # Fill the backbone cache here, with progress (train_student reads it quietly), under
        # the config's thread count.
        setup(cfg.training)
        cached_inputs(cfg, data.corpus, progress=True)
    runs = []
    for k in numbers:
        reused = k not in todo
        runs.append(pipeline.train_student(cfg, k, data, verbose=False))
        print(_fold_line(runs[-1], reused), flush=True)
    return _close(runs, data)


def over_seeds(stage: Callable[[Config], dict], cfg: Config, seeds: Sequence[int] | None) -> dict:
    """``stage(cfg)`` (:func:`teacher` or :func:`student` with its other arguments bound) once
    per seed in ``seeds`` (None or one seed: once, with ``cfg``'s own seed), every seed's output
    in turn. With several seeds a last line gives the mean over seeds of each seed's mean over
    folds and the standard deviation across seeds; returns ``{"seeds": [...], "per_seed":
    [summary, ...], "ua_mean", "ua_std", "wa_mean", "wa_std"}``, else the stage's summary."""
    seeds = list(dict.fromkeys(seeds or []))  # the order given, each seed once
    if len(seeds) < 2:
        return stage(cfg.replace({"training.seed": seeds[0]}) if seeds else cfg)
    per_seed = []
    for seed in seeds:
        print(f"seed {seed}:", flush=True)
        per_seed.append(stage(cfg.replace({"training.seed": seed})))
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
