"""The command line: ``python -m emolib <command>``.

==============  ==================================================================
command         does
==============  ==================================================================
``run``         execute the notebooks per fold through papermill (``make report``)
``figures``     re-execute only ``05_report``: tables and figures from result files
==============  ==================================================================

Each command is one ``add_<command>_parser`` function that registers its arguments
and a ``cmd_<command>`` handler returning the exit code. Handlers import what they
need, so that ``--help`` stays instant (nbformat alone takes about 1.7 s to import).
"""
from __future__ import annotations

import argparse
import ast
import sys
from typing import Any, Callable

from .config import PRESETS


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


def _add_common(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="folds run in parallel processes (default: 1)")
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


# -- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emolib",
        description="EmoDistill (Shome & Etemad, ICASSP 2024) as a reproducible notebook report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_parser(sub)
    add_figures_parser(sub)
    return parser


def _drive(call: Callable[[], Any]) -> int:
    """Run the driver; its errors become a message and an exit code, not a traceback."""
    from . import driver

    try:
        call()
    except driver.DriverError as e:  # a bad request: nothing was executed
        print(f"error: {e}", file=sys.stderr)
        return 2
    except driver.NotebookFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: complete notebooks are kept and skipped on the next run", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
