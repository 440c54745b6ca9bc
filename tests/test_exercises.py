"""Course handouts (``emolib.exercises``): which cells each copy keeps, the errors for badly tagged
notebooks, and every real exercise notebook's stubs matching its solutions. Executing both copies
of each on the ``tiny`` preset is in ``test_pipeline_e2e.py``, beside the other notebook runs."""
from __future__ import annotations

import ast

import nbformat
import pytest

from emolib import __main__ as cli
from emolib import driver, exercises, paths


def _cell(kind: str, source: str, *tags: str) -> nbformat.NotebookNode:
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _notebook(*cells) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=list(cells))


def _sources(nb) -> list[str]:
    return [cell.source for cell in nb.cells]


def test_the_handout_loses_the_solutions_and_the_solutions_lose_the_stubs():
    nb = _notebook(_cell("markdown", "task"), _cell("code", "x = 1", "parameters"),
                   _cell("code", "def f(): raise NotImplementedError", "exercise"),
                   _cell("code", "def f(): return 2", "solution"), _cell("code", "assert f() == 2"),
                   _cell("markdown", "question"), _cell("markdown", "answer", "solution"))
    handout, solutions = exercises.split(nb)
    assert _sources(handout) == ["task", "x = 1", "def f(): raise NotImplementedError", "assert f() == 2", "question"]
    assert _sources(solutions) == ["task", "x = 1", "def f(): return 2", "assert f() == 2", "question", "answer"]
    assert handout.cells[1].metadata["tags"] == ["parameters"]  # papermill still finds the parameters cell
    assert len(nb.cells) == 7  # the source notebook is left as it was


@pytest.mark.parametrize("cells, message", [
    ([_cell("code", "x", "exercise", "solution")], "notebook: cell 1 is tagged both 'exercise' and 'solution'"),
    ([_cell("code", "x", "solution"), _cell("markdown", "stub", "exercise")],
     "notebook: cell 2 is a markdown cell tagged 'exercise'"),
    ([_cell("code", "x", "exercise"), _cell("code", "y")], "notebook: no cell is tagged 'solution'"),
])
def test_a_notebook_that_cannot_make_a_handout_is_an_error_naming_the_cell(cells, message):
    with pytest.raises(exercises.ExerciseError) as info:
        exercises.split(_notebook(*cells))
    assert str(info.value).startswith(message)


def _defined_names(source: str) -> set[str]:
    """The names a cell defines at its top level (functions and assignments)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


#: Every exercise notebook of notebooks/exercises/ by name: (its stubs, its questions). A new one is added here.
REAL = {"distillation": (7, 5), "evaluation": (5, 4)}


def _real(name: str) -> nbformat.NotebookNode:
    return driver.read_notebook((paths.exercises_dir() / f"{name}.py").read_text(encoding="utf-8"))


def test_the_list_of_real_exercise_notebooks_is_complete():
    assert [source.stem for source in exercises.sources()] == sorted(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_stub_of_the_real_exercises_is_answered_by_the_next_solution_with_the_same_names(name):
    nb = _real(name)
    n_stubs, n_questions = REAL[name]
    tags = [set(cell.metadata.get("tags", [])) for cell in nb.cells]
    stubs = [k for k, t in enumerate(tags) if exercises.EXERCISE in t]
    assert len(stubs) == n_stubs
    for number, k in enumerate(stubs, 1):
        stub = nb.cells[k].source
        # each stub says which exercise it is: the handout's run stops at the first with this message
        assert f'raise NotImplementedError("exercise {number}: ' in stub, k
        # only functions, raising when called: the source itself (stubs and solutions) runs top to bottom, as a
        # lecturer runs it in JupyterLab, each solution redefining its stub
        assert all(isinstance(node, ast.FunctionDef) for node in ast.parse(stub).body), k
        answer = nb.cells[k + 1]  # the solution follows its stub at once: the two read as one exercise
        assert exercises.SOLUTION in tags[k + 1] and answer.cell_type == "code", k
        assert "NotImplementedError" not in answer.source
        assert _defined_names(answer.source) == _defined_names(stub) != set(), k
        # then the untagged check, which says the exercise is right
        check = nb.cells[k + 2]
        assert not tags[k + 2] and check.cell_type == "code" and f'print("exercise {number}: right' in check.source, k
    # every question has its answer: a markdown cell tagged solution right after an untagged question
    questions = [k for k, cell in enumerate(nb.cells)
                 if cell.cell_type == "markdown" and "**Question.**" in cell.source]
    assert len(questions) == n_questions
    assert all(not tags[k] and nb.cells[k].source.startswith("**Question.**") for k in questions)
    assert all(exercises.SOLUTION in tags[k + 1] and nb.cells[k + 1].cell_type == "markdown"
               and nb.cells[k + 1].source.startswith("*Answer.*") for k in questions)
    assert driver.declared_parameters(nb) == ("fold", "overrides", "preset")


def test_the_command_writes_both_copies_of_every_exercise_notebook(tmp_path, capsys):
    assert cli.main(["exercises", "--out", str(tmp_path / "handouts")]) == 0
    written = capsys.readouterr().out.split()
    names = [f"{name}{suffix}.ipynb" for name in sorted(REAL) for suffix in ("", "_solutions")]
    assert written == [str(tmp_path / "handouts" / name) for name in names]
    assert sorted(p.name for p in (tmp_path / "handouts").iterdir()) == sorted(names)  # no temporaries left
    for name in sorted(REAL):
        handout, solutions = (nbformat.read(tmp_path / "handouts" / f"{name}{suffix}.ipynb", as_version=4)
                              for suffix in ("", "_solutions"))
        for nb in (handout, solutions):
            nbformat.validate(nb)
            assert "jupytext" not in nb.metadata and nb.metadata["kernelspec"]["name"] == driver.KERNEL
        assert not any(exercises.SOLUTION in c.metadata.get("tags", []) for c in handout.cells)
        assert not any(exercises.EXERCISE in c.metadata.get("tags", []) for c in solutions.cells)
        # the handout loses the solutions, the answers, the note for the lecturer (and any check that gives an
        # answer away), every other cell in its place; the solutions lose the stubs
        source = _real(name)
        tags = [set(c.metadata.get("tags", [])) for c in source.cells]
        assert [c.source for c in handout.cells] == [c.source for c, t in zip(source.cells, tags)
                                                     if exercises.SOLUTION not in t], name
        assert [c.source for c in solutions.cells] == [c.source for c, t in zip(source.cells, tags)
                                                       if exercises.EXERCISE not in t], name
        assert sum(exercises.EXERCISE in t for t in tags) == REAL[name][0]
        assert "For the lecturer" not in "".join(c.source for c in handout.cells), name
        assert "For the lecturer" in "".join(c.source for c in solutions.cells), name


def test_the_default_folder_is_under_the_runs_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    assert cli.main(["exercises"]) == 0
    assert capsys.readouterr().out.split()[0] == str(tmp_path / "runs" / "exercises" / "distillation.ipynb")
    assert paths.handouts_dir() == tmp_path / "runs" / "exercises"


def test_a_badly_tagged_source_is_one_error_line_naming_the_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks" / "exercises"
    folder.mkdir(parents=True)
    (folder / "broken.py").write_text("# %% [markdown]\n# a task\n\n# %% tags=[\"exercise\"]\nx = None\n")
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path))
    assert cli.main(["exercises", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {folder / 'broken.py'}: no cell is tagged 'solution', so the handout would give every "
                   "answer away\n")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_no_exercise_notebooks_is_an_error_naming_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path))
    assert cli.main(["exercises", "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'notebooks' / 'exercises'}: no exercise notebooks (*.py) "
                                       "in this folder\n")


def test_an_out_folder_that_cannot_be_made_is_one_error_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["exercises", "--out", str(blocker / "handouts")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {blocker}") and "cannot write the handouts there" in err and err.count("\n") == 1


def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["exercises", "--out", ""]) == 2
    assert capsys.readouterr().err == "error: --out '': not a folder name\n" and list(tmp_path.iterdir()) == []


def test_forbidden_switches_the_named_functions_off_inside_the_block_only():
    import torch

    x = torch.tensor([1.0, 2.0])
    with exercises.forbidden("torch.softmax", "torch.Tensor.softmax"):
        with pytest.raises(AssertionError, match="^torch.softmax is not allowed in this exercise: write it yourself$"):
            torch.softmax(x, 0)
        with pytest.raises(AssertionError, match="^torch.Tensor.softmax is not allowed"):
            x.softmax(0)
        assert torch.exp(x).shape == (2,)  # everything else still works
    assert torch.allclose(torch.softmax(x, 0), x.softmax(0))  # and the functions are back afterwards


def _part_a_until(answers: dict[str, str], number: int) -> None:
    """Run the distillation notebook's cells in order, in this process, as a student's kernel
    would, each solution that defines a name in ``answers`` replaced by that source, and stop
    after exercise ``number``'s check. Part A needs no corpus: a second or two."""
    ns: dict = {"display": lambda *args, **kwargs: None}
    for cell in _real("distillation").cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type != "code" or exercises.EXERCISE in tags:
            continue
        source = cell.source
        if exercises.SOLUTION in tags:
            source = next((answers[name] for name in _defined_names(source) if name in answers), source)
        exec(compile(source, "<cell>", "exec"), ns)
        if f'print("exercise {number}: right' in cell.source:
            return
    raise AssertionError(f"no check cell for exercise {number}")


WRONG_ANSWERS = [  # (exercise, the wrong answer, what its check says)
    (1, "def soften(logits, tau):\n    return F.log_softmax(logits / tau, dim=-1).exp()\n",
     "log_softmax is not allowed"),  # the trick the exercise is about, done by the library
    (1, "def soften(logits, tau):\n    e = (logits / tau).exp()\n    return e / e.sum(-1, keepdim=True)\n",
     "not finite"),  # no shift: exp(1000) overflows
    (2, "def logit_kd(s, t, tau):\n    return tau**2 * F.kl_div(F.log_softmax(t / tau, -1), F.log_softmax(s / tau, -1),"
        " reduction='batchmean', log_target=True)\n", ""),  # KL the wrong way round
    (2, "def logit_kd(s, t, tau):\n    return F.kl_div(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1),"
        " reduction='batchmean', log_target=True)\n", ""),  # no tau^2
    (3, "def kd_gradient_norm(tau, tau_squared=True):\n    return reference.kd_gradient_norm_reference("
        "student_logits, teacher_logits, tau, tau_squared)\n", "kd_gradient_norm_reference is not allowed"),
    (3, "def kd_gradient_norm(tau, tau_squared=True):\n    s = student_logits.detach().clone().requires_grad_(True)\n"
        "    (losses.logit_kd(s, teacher_logits, tau) / (1.0 if tau_squared else tau**2)).backward()\n"
        "    return float(s.grad.norm())\n", "logit_kd is not allowed"),  # the library's, not the student's own
    (4, "def embedding_kd(s, t):\n    return (F.normalize(s, dim=-1) * F.normalize(t, dim=-1)).sum(-1).mean()\n",
     ""),  # +cos: the sign that pushes the heads away
]  # exercise 6's check reads the fold's teachers (Part B): the tiny notebook run covers it


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # the notebook's own demonstration of that bug
@pytest.mark.parametrize("number, answer, message", WRONG_ANSWERS,
                         ids=[f"exercise{n}-{k}" for k, (n, _, _) in enumerate(WRONG_ANSWERS)])
def test_a_wrong_answer_fails_its_check(number, answer, message):
    with pytest.raises(AssertionError, match=message or None):
        _part_a_until({answer.split("(")[0].removeprefix("def "): answer}, number)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_the_solutions_pass_part_a_in_process():
    _part_a_until({}, 5)  # with the notebook's own answers
