"""The command line: ``python -m emolib <command>``.

==============  ==================================================================
command         does
==============  ==================================================================
``run``         execute the notebooks per fold through papermill (``make report``)
``figures``     re-execute only ``05_report``: tables and figures from result files
``teacher``     train (or reuse) one teacher on every fold of any corpus; mean UA, WA
``student``     distil one student variant on every fold of any corpus; mean UA, WA
``gap``         a distilled student vs plain fine-tuning (and oracle teachers), per fold
``predict``     classify audio files with trained students (audio alone); CSV
``runs``        what is trained under ``runs/``: folds, mean UA and WA, changes from the preset
``exercises``   course handouts from ``notebooks/exercises/``: without the solutions, and with them
``numerics``    whether this machine computes as the one that made the committed figures did
==============  ==================================================================

Each command is one ``add_<command>_parser`` function that registers its arguments
and a ``cmd_<command>`` handler returning the exit code. Handlers import what they
need, so that ``--help`` stays instant (nbformat alone takes about 1.7 s to import).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable

from .audio import AUDIO_SUFFIXES
from .config import PRESETS, TEACHER_KINDS, student_changes
from .folds import PROTOCOLS
from .inventory import TRAINED_STAGES


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    return name.strip(), value


def _literal(value: str) -> Any:
    """``-p`` values are Python literals (``3``, ``0.5``, ``[0.5, 2.0]``, ``True``); anything else is a string."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", choices=PRESETS, help="config preset (default: default)")
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="NAME=VALUE",
        type=_name_value,
        action="append",
        default=[],
        help="dotted config override, e.g. --set student.optim.lr=1e-4 (repeatable)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument(
        "-p",
        dest="extra",
        metavar="NAME=VALUE",
        type=_name_value,
        action="append",
        default=[],
        help="extra notebook parameter, passed to the notebooks that declare it (repeatable)",
    )


# -- run -----------------------------------------------------------------------------


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="execute the notebooks per fold through papermill",
        description="Execute the report's notebooks (notebooks/*.py) with papermill, once per fold, "
        "then 05_report once. Complete notebooks are skipped; a failure stops the run.",
    )
    _add_common(p)
    p.add_argument("--folds", type=int, nargs="+", metavar="K", help="folds to run (default: every fold of the corpus)")
    p.add_argument(
        "--notebooks", nargs="+", metavar="NAME", help="notebooks to run, e.g. 00_data (default: every report notebook that exists)"
    )
    p.add_argument(
        "--jobs", type=int, metavar="N", help="folds run in parallel processes (default: 1, or one per GPU of --gpus)"
    )
    p.add_argument(
        "--gpus",
        type=int,
        nargs="+",
        metavar="K",
        help="give each running notebook one of these GPUs (its kernel sees it alone, as cuda:0); numbered as "
        "torch numbers them here, like training.device=cuda:K",
    )
    p.add_argument("--force", action="store_true", help="re-execute notebooks even when their outputs are complete")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from . import driver

    return _drive(
        lambda: driver.run(
            args.preset,
            folds=args.folds,
            notebooks=args.notebooks,
            jobs=args.jobs,
            gpus=args.gpus,
            overrides=dict(args.overrides),
            extra={k: _literal(v) for k, v in args.extra},
            force=args.force,
        )
    )


# -- figures -------------------------------------------------------------------------


def add_figures_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figures",
        help="rebuild tables and figures from result files (05_report)",
        description="Re-execute notebooks/05_report.py, which reads result files only and never trains.",
    )
    _add_common(p)
    p.add_argument("--folds", type=int, nargs="+", metavar="K", help="folds to report (default: the notebook's own)")
    p.set_defaults(func=cmd_figures)


def cmd_figures(args: argparse.Namespace) -> int:
    from . import driver

    # Always re-executed: the result files it reads may have changed since it last ran.
    return _drive(
        lambda: driver.run(
            args.preset,
            notebooks=["05_report"],
            folds=args.folds,
            overrides=dict(args.overrides),
            extra={k: _literal(v) for k, v in args.extra},
            force=True,
        )
    )


# -- teacher and student ---------------------------------------------------------------


def _add_corpus(p: argparse.ArgumentParser) -> None:
    from .corpora import spec_help

    p.add_argument("--corpus", required=True, metavar="SPEC", help=spec_help())
    p.add_argument("--protocol", required=True, choices=PROTOCOLS,
                   help="leave-one-session-out or leave-one-speaker-out folds")
    p.add_argument("--folds", type=int, nargs="+", metavar="K", help="folds to train (default: every fold)")
    p.add_argument("--n-folds", type=int, metavar="K",
                   help="deal the held-out sessions/speakers into K folds (default: one fold per group)")
    p.add_argument("--validation-speakers", type=int, metavar="N",
                   help="training speakers held out for model selection (default: the preset's)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="training seeds: every fold once per seed, closing with the mean and spread over seeds "
                   "(default: the preset's training.seed)")
    _add_config(p)


def _config(args: argparse.Namespace, named: dict[str, Any] | None = None):
    """The preset, ``--set`` overrides and the options that name a config field (None: not given)."""
    from . import commands

    named = {"data.corpus": args.corpus, "data.protocol": args.protocol, "data.n_folds": args.n_folds,
             "data.validation_speakers": args.validation_speakers,
             "training.seed": args.seeds[0] if args.seeds else None, **(named or {})}
    return commands.command_config(args.preset, dict(args.overrides), named)


def add_teacher_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher",
        help="train one teacher on every fold of a corpus",
        description="Train (or reuse) the prosodic or linguistic teacher on every fold of a corpus; print test "
        "UA, WA and macro-F1 per fold and the mean over folds. Complete folds are reused, a killed one resumes.",
    )
    p.add_argument("--kind", required=True, choices=TEACHER_KINDS, help="which teacher")
    _add_corpus(p)
    p.set_defaults(func=cmd_teacher)


def cmd_teacher(args: argparse.Namespace) -> int:
    from . import commands

    return _train(lambda: commands.over_seeds(lambda cfg: commands.teacher(args.kind, cfg, args.folds),
                                              _config(args), args.seeds))


def add_student_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "student",
        help="distil one student variant on every fold of a corpus",
        description="Train (or reuse) the teachers a student variant needs, then the student, on every fold of a "
        "corpus; print test UA, WA and macro-F1 per fold and the mean over folds. Without transcripts the "
        "linguistic teacher's terms are switched off (the first line says so).",
    )
    p.add_argument("--variant", metavar="NAME",
                   help="a row of the paper's Table 2: full, no_logit_kd, ... (default: the preset's)")
    p.add_argument("--tau-linguistic", type=float, metavar="X", help="linguistic logit-KD temperature")
    p.add_argument("--tau-prosodic", type=float, metavar="Y", help="prosodic logit-KD temperature")
    _add_corpus(p)
    p.set_defaults(func=cmd_student)


def cmd_student(args: argparse.Namespace) -> int:
    from . import commands

    named = student_changes(args.variant, args.tau_linguistic, args.tau_prosodic)
    return _train(lambda: commands.over_seeds(lambda cfg: commands.student(cfg, args.folds),
                                              _config(args, named), args.seeds))


def add_gap_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gap",
        help="what distillation adds on a corpus: a student variant vs plain fine-tuning",
        description="Train (or reuse) the teachers, a distilled student variant, plain fine-tuning (no_teachers) "
        "and, on the built-in corpus, the variant taught by oracle teachers (the most any pair of teachers "
        "could add), on every fold; print each model's validation UA (where settings may be chosen) and test "
        "UA (reported only), their means and each student's paired difference from plain fine-tuning.",
    )
    p.add_argument("--variant", metavar="NAME", help="the distilled student (default: the preset's, full)")
    p.add_argument("--no-oracle", dest="oracle", action="store_false",
                   help="leave out the oracle-taught student (built-in corpus only)")
    _add_corpus(p)
    p.set_defaults(func=cmd_gap)


def cmd_gap(args: argparse.Namespace) -> int:
    from . import commands

    return _train(lambda: commands.over_seeds(lambda cfg: commands.gap(cfg, args.folds, args.oracle),
                                              _config(args, {"distill.variant": args.variant}), args.seeds,
                                              close=commands.gap_over_seeds))


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify audio files with trained students (audio alone); CSV",
        description="Classify audio files with the trained students of a config, from the audio alone (no "
        "transcript, no openSMILE, no teacher), averaging the probabilities of every fold's student. Prints CSV "
        "(path, pred, p_<class>) or writes it with --out. Never trains: train first with `student` or "
        "`make report`, with the same options. Reads only the run folders, not the corpus.",
    )
    p.add_argument("inputs", nargs="+", metavar="AUDIO",
                   help=f"audio files, or folders searched for them ({', '.join(AUDIO_SUFFIXES)})")
    p.add_argument("--variant", metavar="NAME", help="the student variant (default: the preset's, full)")
    p.add_argument("--corpus", metavar="SPEC", help="the corpus the students were trained on (default: the preset's)")
    p.add_argument("--protocol", choices=PROTOCOLS, help="its folds (default: the preset's)")
    p.add_argument("--folds", type=int, nargs="+", metavar="K", help="the folds' students to use (default: every fold)")
    p.add_argument("--out", metavar="FILE", help="write the CSV here (default: standard output)")
    p.add_argument("--run", action="append", metavar="DIR", dest="run_dirs",
                   help="use the students saved in this run folder (runs/student/<name>, or one of its fold<k>; "
                   "e.g. copied from another machine) with their own configs instead of the options' (--set still "
                   "applies, e.g. training.device=cpu); repeatable")
    _add_config(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from . import commands

    named = {"data.corpus": args.corpus, "data.protocol": args.protocol, "distill.variant": args.variant}
    return _train(lambda: commands.predict(commands.command_config(args.preset, dict(args.overrides), named),
                                           args.inputs, args.folds, args.out, args.run_dirs, dict(args.overrides)),
                  interrupted="no predictions written (--out is written only when complete)")


# -- runs ----------------------------------------------------------------------------


def add_runs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="what is trained under runs/: folds, mean UA and WA, changes from the preset",
        description="List the trained runs under runs/ (or EMOLIB_RUNS) from their own files: complete and "
        "partial folds, mean validation and test UA and test WA over the complete folds, and the settings in "
        "which each differs from its preset. Trains nothing, reads no corpus.",
    )
    p.add_argument("--stage", nargs="+", choices=TRAINED_STAGES,
                   help="only these stages (default: all three)")
    p.add_argument("--stale", action="store_true",
                   help="print only the folders of runs an older emolib wrote, which this version never reuses "
                   "(one per line, e.g. for review before deleting)")
    p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from . import inventory, paths

    summaries = inventory.list_runs(args.stage or TRAINED_STAGES)
    if args.stale:
        for s in summaries:
            if s.stale:
                print(paths.printable(s.dir))
    else:
        print(inventory.format_runs(summaries))
    return 0


# -- exercises -----------------------------------------------------------------------


def add_exercises_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "exercises",
        help="course handouts from notebooks/exercises/: without the solutions, and with them",
        description="Write two notebooks for every exercise notebook in notebooks/exercises/: <name>.ipynb, the "
        "students' handout (cells tagged 'solution' removed), and <name>_solutions.ipynb (cells tagged "
        "'exercise', the stubs, removed). Trains nothing.",
    )
    p.add_argument("--out", metavar="DIR", help="where to write them (default: runs/exercises, under EMOLIB_RUNS)")
    p.set_defaults(func=cmd_exercises)


def cmd_exercises(args: argparse.Namespace) -> int:
    from . import exercises, paths

    if args.out is not None and not args.out.strip():  # "" would write them into the current folder
        print(f"error: --out {args.out!r}: not a folder name", file=sys.stderr)
        return 2
    try:
        written = exercises.write_handouts(args.out)
    except exercises.ExerciseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an --out that cannot be made or written to
        where = paths.printable(e.filename) if e.filename else (args.out or paths.handouts_dir())
        print(f"error: {where}: cannot write the handouts there ({e.strerror or e})", file=sys.stderr)
        return 1
    for path in written:
        print(paths.printable(path))
    return 0


def add_numerics_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "numerics",
        help="whether this machine computes as the one that made the committed figures did",
        description="Train a few steps of each kind of model on fixed inputs, with one thread, and compare "
        "digests of the weights with those recorded (emolib.fingerprint): the same digests mean that make "
        "report rebuilds the committed figures to the bit here. Exit code 0 when all match, 1 otherwise. "
        "Takes about 10 s.",
    )
    p.set_defaults(func=cmd_numerics)


def cmd_numerics(args: argparse.Namespace) -> int:
    import torch

    from . import fingerprint, machine

    torch.set_num_threads(1)  # before any other torch work: small steps run fastest on one thread
    record = machine.numerics()
    print(f"numerics: {machine.numerics_label(record)}, torch {record['torch']}, 1 thread")
    found = fingerprint.fingerprint()
    width = max(map(len, fingerprint.WHAT.values()))
    for part, digest in found.items():
        same = digest == fingerprint.RECORDED[part]
        print(f"  {fingerprint.WHAT[part]:<{width}}  {digest}  {'as recorded' if same else 'differs from ' + fingerprint.RECORDED[part]}")
    if found == fingerprint.RECORDED:
        print("this machine computes as the one that made the committed figures: make report rebuilds them to the bit")
        return 0
    why = ("EMOLIB_NUMERICS=native, or a variable of emolib.machine.PORTABLE_ENV set otherwise: unset it"
           if record["mode"] != "portable" else
           "portable mode, and yet other floats: another torch build, or a CPU whose AVX2 kernels differ")
    if not machine.has_avx2():
        why = "this CPU has no AVX2 (or is not x86-64), so portable mode cannot apply"
    elif record["mode"] == "portable" and machine.cpu_vendor() == "AuthenticAMD":
        why = "an AMD CPU: MKL's vector math (exp) takes other paths there than on Intel's"
    print(f"this machine computes otherwise ({why}): make report's figures will move by float rounding, about as "
          "much as a new training seed moves them (README, 'Results on the built-in corpus')")
    return 1


RESUMES = "complete folds are kept, and the next run resumes the killed one"


def _train(call: Callable[[], Any], interrupted: str = RESUMES) -> int:
    """Run a training command; a request that cannot run, or a file met on the way that cannot be
    used (each message names the file and what to do), becomes one ``error:`` line."""
    from .audio import AudioError
    from .commands import RequestError
    from .corpora import CorpusError
    from .machine import WorkerDied
    from .pretrained import ModelError
    from .runs import DiskFullError, ResultFileError, StaleRunError
    from .train import TrainingDiverged

    try:
        call()
    except RequestError as e:  # nothing was trained
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (AudioError, CorpusError, DiskFullError, ModelError, ResultFileError, StaleRunError,
            TrainingDiverged, WorkerDied) as e:  # complete folds are kept
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: {interrupted}", file=sys.stderr)
        return 130
    except OSError as e:
        return _unwritable(e)
    return 0


def _unwritable(e: OSError) -> int:
    """A folder the command must write and cannot (read-only, another user's): one ``error:`` line
    naming it, exit code 1. Any other error is raised again. A shared read-only cache or corpus works
    as long as it already holds everything a command needs; the first write it would take ended in a
    traceback."""
    import errno

    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) and e.filename:  # a folder not made
        print(f"error: {e.filename}: {e.strerror} (no room, or no more files allowed, on its device). Every "
              "file written before is kept: free some space, or move the root with EMOLIB_RUNS / EMOLIB_CACHE / "
              "EMOLIB_DATA, and run the command again, which resumes", file=sys.stderr)
        return 1
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR) or not e.filename:
        raise e
    print(f"error: {e.filename}: {e.strerror}. emolib writes the corpus, the feature caches and the runs under "
          "EMOLIB_DATA, EMOLIB_CACHE and EMOLIB_RUNS (by default inside the checkout): if one of them holds "
          "this path, point it at a folder you can write, or make the folder writable; complete results are kept",
          file=sys.stderr)
    return 1


# -- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emolib",
        description="EmoDistill (Shome & Etemad, ICASSP 2024) as a reproducible notebook report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_parser(sub)
    add_figures_parser(sub)
    add_teacher_parser(sub)
    add_student_parser(sub)
    add_gap_parser(sub)
    add_predict_parser(sub)
    add_runs_parser(sub)
    add_exercises_parser(sub)
    add_numerics_parser(sub)
    return parser


def _drive(call: Callable[[], Any]) -> int:
    """Run the driver; its errors become a message and an exit code, not a traceback."""
    from . import driver
    from .runs import DiskFullError

    try:
        call()
    except driver.DriverError as e:  # a bad request: nothing was executed
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (driver.NotebookFailed, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        return _unwritable(e)
    except KeyboardInterrupt:
        print("\ninterrupted: complete notebooks are kept and skipped on the next run", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .envvars import check

    try:
        check()  # a value emolib cannot use fails now, not an hour into an extraction
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with _sigterm_as_ctrl_c():
            return args.func(args)
    except BrokenPipeError:
        # the reader went away (`python -m emolib runs | head`): as other Unix tools, stop quietly.
        # Python would otherwise report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    """A forked child (a pool worker of eGeMAPS or corpus generation, or a DataLoader's) must not inherit
    the handler above: a pool stops its workers with SIGTERM (``multiprocessing.Pool`` always, the
    ``concurrent.futures`` one of :func:`emolib.machine.forked_map` once broken), and a Python-level handler runs only when
    the child's main thread gets back to the interpreter, which a worker waiting on a lock held across
    the fork never does, so the pool's close waited for ever (and otherwise every worker printed a
    KeyboardInterrupt traceback). The default action ends the child at once, as without the handler."""
    try:
        if signal.getsignal(signal.SIGTERM) is _terminate_as_interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: nothing inherited a handler there
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """`kill PID` takes the Ctrl-C path: unfinished writes removed, run locks released, the driver's
    workers and their kernels stopped, complete results kept (exit code 130). The handler before
    is put back afterwards (main() is also called inside other programs, e.g. the tests)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
