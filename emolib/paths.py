"""Every path the project uses comes from here (cookiecutter-data-science style).

Defaults live inside the checkout; on a shared GPU server each root can be moved
with an environment variable, e.g. ``EMOLIB_CACHE=/scratch/emolib-cache``:

=================  =====================  ===========================================
variable           default                holds
=================  =====================  ===========================================
``EMOLIB_ROOT``    the checkout           notebooks, figures (the project itself)
``EMOLIB_DATA``    ``<root>/data``        generated corpora (the built-in ``synth``)
``EMOLIB_CACHE``   ``<root>/cache``       eGeMAPS descriptors, backbone states
``EMOLIB_RUNS``    ``<root>/runs``        result files and executed notebooks
``EMOLIB_FIGURES`` ``<root>/figures``     the report's tables and figures (unset, other
                                          configs than the default: ``<runs>/figures/...``;
                                          set, every config's report)
=================  =====================  ===========================================

Functions, not constants, so that a test (or a user) can redirect a root by
setting the variable at any time.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    return Path(os.environ.get("EMOLIB_ROOT", _PACKAGE_DIR.parent)).resolve()


def _root(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value).resolve() if value else project_root() / default


def data_dir() -> Path:
    """Generated corpora (the built-in ``synth`` corpus lives here)."""
    return _root("EMOLIB_DATA", "data")


def cache_dir() -> Path:
    """Feature caches keyed by audio content and settings."""
    return _root("EMOLIB_CACHE", "cache")


def runs_dir() -> Path:
    """One folder per run: ``<stage>/<name>/fold<k>/`` with its result files."""
    return _root("EMOLIB_RUNS", "runs")


def config_folder(cfg) -> str:
    """``<preset>-<config hash>``: the folder name of one config's executed notebooks, per-fold
    figures and (for another config than the default) report."""
    return f"{cfg.preset}-{cfg.hash()}"


def executed_notebooks_dir(cfg=None) -> Path:
    """Notebooks executed by papermill (never paired with the sources); ``cfg``: that config's."""
    root = runs_dir() / "notebooks"
    return root if cfg is None else root / config_folder(cfg)


def fold_figures_dir(cfg) -> Path:
    """Each fold's own plots of a config (learning curves, confusions, Fig. 2, ablations)."""
    return runs_dir() / "fold-figures" / config_folder(cfg)


def locks_dir() -> Path:
    """The lock files of runs and reports, beside the runs and never among their folders."""
    return runs_dir() / ".locks"


def figures_dir(cfg=None) -> Path:
    """The report's tables and figures: ``<root>/figures`` (committed) for the default config,
    ``<runs>/figures/<preset>-<config hash>/`` for any other (``cfg``: a config; another preset,
    or a ``--set`` that can change a result), so that such a run never overwrites the committed
    figures. ``EMOLIB_FIGURES``, when set, is used whatever the config."""
    if os.environ.get("EMOLIB_FIGURES"):
        return _root("EMOLIB_FIGURES", "figures")
    if cfg is not None:
        from .config import get_config

        if cfg.hash() != get_config("default").hash():
            return runs_dir() / "figures" / config_folder(cfg)
    return project_root() / "figures"


def notebooks_dir() -> Path:
    """The jupytext ``.py`` notebook sources."""
    return project_root() / "notebooks"


def exercises_dir() -> Path:
    """The exercise notebooks' sources (solutions included; :mod:`emolib.exercises`)."""
    return notebooks_dir() / "exercises"


def handouts_dir() -> Path:
    """Where ``python -m emolib exercises`` writes the handouts and the solutions."""
    return runs_dir() / "exercises"


def model_source(name: str) -> str:
    """What transformers' ``from_pretrained`` should read for a model setting: a local
    directory (``~`` expanded), or the name itself as a hub id. A name written as a path
    (absolute, or starting with ``~`` or ``.``) that is not a directory is an error naming it,
    not a confusing "Repo id must be in the form ..." from the hub client."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    if local.is_absolute() or name.startswith(("~", ".")):
        from .pretrained import ModelNotFoundError

        raise ModelNotFoundError(f"{name}: no such model directory (a local model is a folder written by "
                                "save_pretrained; anything else is read as a hub id)")
    return name


def printable(path: str | os.PathLike) -> str:
    """A path as text that can be written anywhere: the bytes of a file name that are not
    UTF-8 (Python keeps them as surrogates) shown as ``\\xe9``."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
