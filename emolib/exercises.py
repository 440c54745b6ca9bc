"""Course handouts from the exercise notebooks (``notebooks/exercises/``), the scikit-learn MOOC's way.

An exercise notebook is the solutions' source. A code cell tagged ``exercise`` holds what a
student starts from (a stub that raises ``NotImplementedError``), a cell tagged ``solution``
the answer (code, or a markdown cell answering a question); untagged cells are for both: the
task, and the checks that run after each answer. :func:`write_handouts`
(``python -m emolib exercises``, ``make exercises``) writes for every source ``<name>.py``:

* ``<name>.ipynb``, the handout: every ``solution`` cell removed;
* ``<name>_solutions.ipynb``, the lecturer's copy: every ``exercise`` cell removed.

Both are plain notebooks with a kernelspec and no jupytext pairing, so that a student can open
them in any Jupyter, and the test suite executes both on the ``tiny`` preset: the solutions
must pass every check, and the handout must stop at its first stub.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Iterator
from unittest import mock

import nbformat

from . import paths
from .driver import read_notebook
from .runs import atomic_path

EXERCISE = "exercise"
SOLUTION = "solution"


class ExerciseError(ValueError):
    """An exercise notebook whose tags cannot make a handout; the message names the file and the cell."""


@contextlib.contextmanager
def forbidden(*names: str) -> Iterator[None]:
    """Inside the block, calling any of these functions (dotted names, e.g. ``torch.softmax``)
    raises an AssertionError saying so: an exercise's check runs the student's code with the
    functions the exercise asks them to write themselves switched off."""
    def refuse(name: str):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} is not allowed in this exercise: write it yourself")
        return call

    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch(name, refuse(name)))
        yield


def kd_gradient_norm_reference(student_logits, teacher_logits, tau: float, tau_squared: bool = True) -> float:
    """The norm of the gradient of :func:`emolib.losses.logit_kd` with respect to the student's
    logits, with its factor tau^2 or without it: what exercise 3 of ``distillation`` checks a
    student's answer against. It lives here, not in the check cell, so that the handout does not
    print the answer under its stub."""
    from . import losses

    s = student_logits.detach().clone().requires_grad_(True)
    loss = losses.logit_kd(s, teacher_logits.detach(), tau)
    (loss if tau_squared else loss / tau**2).backward()
    return float(s.grad.norm())


def sources() -> list[Path]:
    """The exercise notebooks' sources, by name."""
    return sorted(paths.exercises_dir().glob("*.py"))


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def split(nb: nbformat.NotebookNode, name: str = "notebook") -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """``(handout, solutions)``: the notebook without its ``solution`` cells, and without its
    ``exercise`` cells. Cells are numbered from 1 in the errors, as Jupyter shows them."""
    for number, cell in enumerate(nb.cells, 1):
        tags = _tags(cell)
        if {EXERCISE, SOLUTION} <= tags:
            raise ExerciseError(f"{name}: cell {number} is tagged both {EXERCISE!r} and {SOLUTION!r}; "
                                "it would be in neither copy")
        if EXERCISE in tags and cell.cell_type != "code":
            raise ExerciseError(f"{name}: cell {number} is a {cell.cell_type} cell tagged {EXERCISE!r}; a stub to "
                                "fill in is a code cell (a question belongs in an untagged markdown cell)")
    if not any(SOLUTION in _tags(cell) for cell in nb.cells):
        raise ExerciseError(f"{name}: no cell is tagged {SOLUTION!r}, so the handout would give every answer away")

    def without(tag: str) -> nbformat.NotebookNode:
        out = copy.deepcopy(nb)
        out.cells = [cell for cell in out.cells if tag not in _tags(cell)]
        return out

    return without(SOLUTION), without(EXERCISE)


def write_handouts(out: str | Path | None = None) -> list[Path]:
    """Write every source's handout and solutions into ``out`` (default
    :func:`emolib.paths.handouts_dir`), each file atomically; returns the paths written."""
    out = Path(out) if out is not None else paths.handouts_dir()
    found = sources()
    if not found:
        raise ExerciseError(f"{paths.exercises_dir()}: no exercise notebooks (*.py) in this folder")
    copies = {}  # every source split before anything is written: a bad one leaves no partial set
    for source in found:
        handout, solutions = split(read_notebook(source.read_text(encoding="utf-8")), paths.printable(source))
        copies[out / f"{source.stem}.ipynb"] = handout
        copies[out / f"{source.stem}_solutions.ipynb"] = solutions
    for target, nb in copies.items():
        with atomic_path(target) as tmp:
            nbformat.write(nb, tmp)
    return list(copies)
