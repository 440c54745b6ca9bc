"""The environment: pyproject.toml and environment.yml agree, the torch pin holds, and
torchaudio / torchvision are absent (installed, they break ``from transformers import
HubertModel`` against this CPU torch; see the README)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torchaudio", "torchvision")


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _requirements() -> dict[str, Requirement]:
    project = _pyproject()["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _conda() -> tuple[list[str], list[str]]:
    """(conda packages, pip lines) of environment.yml."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [line for d in env["dependencies"] if isinstance(d, dict) for line in d["pip"]]
    return conda, pip


def _torch_pin() -> Version:
    spec = str(_requirements()["torch"].specifier)
    assert re.fullmatch(r"==\d+\.\d+\.\d+", spec), f"torch must be pinned exactly in pyproject.toml, found {spec!r}"
    return Version(spec[2:])


def test_environment_yml_defers_to_pyproject():
    conda, pip = _conda()
    python = next(d for d in conda if d.startswith("python="))
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python.split("=", 1)[1])
    # conda provides only Python and pip; every other package comes from pip
    assert sorted(re.split(r"[=<>]", d)[0] for d in conda) == ["pip", "python"]
    assert '-e ".[test]"' in pip  # the package with the test extra, as the Makefile installs it: `make test` works
    pyproject = _requirements()
    named = [Requirement(line) for line in pip if not line.startswith("-")]
    assert [r.name for r in named] == ["torch"]
    for req in named:  # the same name, the same specifier
        assert req.name.lower() in pyproject, f"environment.yml names {req.name}, pyproject.toml does not"
        assert req.specifier == pyproject[req.name.lower()].specifier, req.name


def test_torch_is_pinned_and_installed_at_the_pin():
    installed = Version(importlib.metadata.version("torch"))
    assert installed.public == str(_torch_pin())  # 2.13.0+cpu is the CPU build of the 2.13.0 pin


def test_installed_versions_satisfy_pyproject():
    for name, req in _requirements().items():
        version = importlib.metadata.version(name)
        assert req.specifier.contains(Version(version).public, prereleases=True), f"{name} {version} is not {req.specifier}"


@pytest.mark.parametrize("name", FORBIDDEN)
def test_torchaudio_and_torchvision_are_absent(name):
    assert importlib.util.find_spec(name) is None, (
        f"{name} is importable: it breaks `from transformers import HubertModel` with this torch; "
        f"`pip uninstall {name}`"
    )
    assert name not in _requirements()
    assert not any(name in line for line in _conda()[1])


def _constraints(path: Path = ROOT / "constraints.txt") -> dict[str, Version]:
    """A constraints file as {canonical name: version}; every line that is not a comment is ``name==version``."""
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{path.name}:{n}: not an exact pin: {line!r}"
        assert not req.marker and not req.url and not req.extras, f"{path.name}:{n}: {line!r}"
        pins[canonicalize_name(req.name)] = Version(spec[0].version)
    return pins


def test_constraints_pin_every_dependency_within_its_range():
    pins = _constraints()
    for name, req in _requirements().items():
        if name == "torch":  # pinned in pyproject.toml; its build tag (+cpu) depends on where pip finds it
            assert name not in pins
            continue
        key = canonicalize_name(name)
        assert key in pins, f"constraints.txt does not pin {name}: make lock"
        assert req.specifier.contains(pins[key], prereleases=True), f"{name}=={pins[key]} is not {req.specifier}"
    assert not set(FORBIDDEN) & set(pins)


def test_environment_yml_installs_the_constraints():
    assert "-c constraints.txt" in _conda()[1]


@pytest.mark.skipif(not os.environ.get("EMOLIB_CONSTRAINTS"), reason="installed without constraints.txt "
                    "(make test sets EMOLIB_CONSTRAINTS to the file make venv installed with)")
def test_installed_versions_are_the_constraints():
    """``make venv`` installs exactly the pinned versions of the file it was given (``make test``
    says which: constraints.txt unless ``CONSTRAINTS=`` named another)."""
    path = Path(os.environ["EMOLIB_CONSTRAINTS"])
    wrong = {}
    for name, pin in _constraints(path if path.is_absolute() else ROOT / path).items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency of another platform (or of a package that does not need it here)
        if installed != pin:
            wrong[name] = f"{installed} (pinned {pin})"
    assert not wrong, f"installed at other versions than {path}: {wrong}"


def test_citation_file_names_this_version_and_the_readmes_paper():
    # GitHub's "Cite this repository" reads CITATION.cff: its version and its paper must not drift from
    # pyproject.toml and the README's BibTeX
    import emolib

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == _pyproject()["project"]["license"]["text"]
    assert cff["version"] == _pyproject()["project"]["version"] == emolib.__version__
    paper = cff["preferred-citation"]
    readme = (ROOT / "README.md").read_text()
    bibtex = dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?$", readme.split("@inproceedings", 1)[1].split("```")[0], re.M))
    assert paper["title"] == bibtex["title"] and str(paper["year"]) == bibtex["year"]
    assert " and ".join(f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]) == bibtex["author"]
    assert paper["identifiers"][0]["value"] == f"arXiv:{bibtex['eprint']}"
    assert paper["collection-title"] == bibtex["booktitle"]
