"""What is on disk under ``runs/``: every trained run, how far it got, what it scored and how
its config differs from its preset (``python -m emolib runs``).

A run folder's name is a readable label and a config hash (``full-tl4-tp1-83accde45a``);
after a few ``--set`` experiments the hashes say nothing. This module reads each folder's
own files, never the corpus: ``config.json`` (the preset it started from and every setting),
``metrics.json`` (complete folds), ``history.csv`` and ``resume.pt`` (how far a partial fold
got, and whether it resumes). The changes are those of the hashed settings of the sections
the stage depends on (:data:`emolib.config.STAGE_SECTIONS`), the ones that made the hash.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from . import paths
from .config import STAGE_SECTIONS, Config, _hashed_dict, from_dict, get_config
from .runs import COMPLETE_MARKER, CORPUS_RECORD, ResultFileError, _run_key, fold_number, read_json

#: The stages that train models, in the paper's order; ``data`` (the probes) trains nothing.
TRAINED_STAGES = ("prosodic_teacher", "linguistic_teacher", "student")


@dataclass
class PartialFold:
    fold: int
    epochs: int | None  # rows of history.csv: epochs finished (None: no history.csv)
    resumes: bool  # resume.pt is there: training continues after those epochs
    unreadable: bool = False  # history.csv is there but cannot be read: the epochs are unknown


@dataclass
class RunSummary:
    stage: str
    name: str
    dir: Path
    preset: str | None = None
    corpus: str | None = None
    complete: dict[int, dict[str, Any]] = field(default_factory=dict)  # fold -> metrics.json
    partial: list[PartialFold] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)  # dotted name -> value, vs the preset
    unrecorded: list[str] = field(default_factory=list)  # hashed settings its config.json does not have
    stale: bool = False  # its config.json no longer hashes to its folder name: this version never reuses it
    problems: list[str] = field(default_factory=list)  # files that could not be read
    hub: dict[str, str] = field(default_factory=dict)  # model setting -> "hub id@commit" its corpus.json records

    def mean(self, key: str) -> float | None:
        """The mean of a metric over the complete folds (None: no fold has it)."""
        values = [m[key] for m in self.complete.values() if isinstance(m.get(key), (int, float))]
        return sum(values) / len(values) if values else None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_changes(stage: str, cfg: Config) -> dict[str, Any]:
    """A run's hashed settings of ``stage``'s sections that differ from its preset's (dotted
    names, sorted). Settings that do not enter the hash (threads, device) are left out: they
    do not change what was trained."""
    ours = _hashed_dict(cfg)
    base = _hashed_dict(get_config(cfg.preset))
    sections = STAGE_SECTIONS.get(stage, tuple(ours))
    now = _flatten({s: ours.get(s, {}) for s in sections})
    then = _flatten({s: base.get(s, {}) for s in sections})
    missing = object()
    return {k: now.get(k) for k in sorted(set(now) | set(then)) if now.get(k, missing) != then.get(k, missing)}


def unrecorded_settings(stage: str, saved: dict[str, Any]) -> list[str]:
    """Hashed settings of ``stage``'s sections that a saved ``config.json`` lacks: it was written
    before they existed, when the code behaved as it then did, not necessarily as their default
    says. Settings added as ``_added`` (hashed only when not their default) are left out: their
    default is what the older code did."""
    out: list[str] = []

    def walk(obj: Any, values: Any, prefix: str) -> None:
        for f in fields(obj):
            mode = f.metadata.get("hash", True)
            if mode is False or mode == "unless_default":
                continue
            value = getattr(obj, f.name)
            if not isinstance(values, dict) or f.name not in values:
                out.append(prefix + f.name)
            elif is_dataclass(value):
                walk(value, values[f.name], f"{prefix}{f.name}.")

    cfg = Config()
    for section in STAGE_SECTIONS.get(stage, ()):
        if section not in saved:
            out.append(section)
        else:
            walk(getattr(cfg, section), saved[section], f"{section}.")
    return out


def _epochs_done(fold_dir: Path) -> int | None:
    """Rows of ``history.csv`` (None: no such file); ``ResultFileError`` when it cannot be read."""
    history = fold_dir / "history.csv"
    if not history.is_file():
        return None
    try:
        with open(history, newline="", encoding="utf-8") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)
    except (OSError, UnicodeDecodeError, csv.Error) as err:  # a listing goes on: the epochs are just unknown
        raise ResultFileError(f"{history}: cannot be read ({getattr(err, 'strerror', None) or err})") from err


def _read_record(path: Path, summary: RunSummary) -> dict | None:
    """A JSON record of a run, or None (missing, or unreadable: then a problem of ``summary``).
    An ``OSError`` of its folder (not searchable) is left to the caller, which names the folder."""
    if not path.is_file():
        return None
    try:
        return read_json(path, dict)
    except FileNotFoundError:  # removed meanwhile
        return None
    except ResultFileError as err:
        summary.problems.append(str(err))
        return None


def _hub_weights(record: dict) -> dict[str, str]:
    """The hub models a run's ``corpus.json`` records (``pipeline.model_record``), as ``id@commit``."""
    models = record.get("models")
    if not isinstance(models, dict):
        return {}
    return {name: f"{m['hub']}@{m.get('revision') or '?'}" for name, m in sorted(models.items())
            if isinstance(m, dict) and isinstance(m.get("hub"), str)}


def _name(value: Any, path: Path, summary: RunSummary) -> str | None:
    """A record's ``corpus``: a name, else None (and a problem of ``summary`` when it is something else)."""
    if value is None or isinstance(value, str):
        return value
    summary.problems.append(f"{path}: its corpus is not a name ({value!r})")
    return None


def summarise_run(stage: str, run_dir: Path) -> RunSummary:
    """One ``runs/<stage>/<name>`` folder, from its fold folders' files. A file or folder that
    cannot be read is one of its ``problems``; the listing goes on."""
    summary = RunSummary(stage=stage, name=run_dir.name, dir=run_dir)
    try:
        folds = sorted((n, d) for d in run_dir.iterdir() if d.is_dir() and (n := fold_number(d)) is not None)
    except OSError as err:
        summary.problems.append(f"{run_dir}: cannot list this folder ({err.strerror or err})")
        return summary
    saved = record = None
    for number, fold_dir in folds:
        try:
            marker = fold_dir / COMPLETE_MARKER
            metrics = _read_record(marker, summary)
            if isinstance(metrics, dict):
                summary.complete[number] = metrics
                summary.corpus = summary.corpus or _name(metrics.get("corpus"), marker, summary)
            else:
                try:
                    epochs, unreadable = _epochs_done(fold_dir), False
                except ResultFileError as err:
                    summary.problems.append(str(err))
                    epochs, unreadable = None, True
                summary.partial.append(PartialFold(number, epochs, (fold_dir / "resume.pt").is_file(), unreadable))
            if record is None:  # one fold's corpus.json says it for all: the hub commits, and the corpus
                record = _read_record(fold_dir / CORPUS_RECORD, summary)  # of a run whose folds are all partial
                if record is not None:
                    summary.hub = _hub_weights(record)
                    summary.corpus = summary.corpus or _name(record.get("corpus"), fold_dir / CORPUS_RECORD, summary)
            if saved is None:
                saved, saved_path = _read_record(fold_dir / "config.json", summary), fold_dir / "config.json"
        except OSError as err:  # a fold folder that cannot be searched: its files cannot even be looked for
            summary.problems.append(f"{fold_dir}: cannot be read ({err.strerror or err})")
    if saved is not None:
        try:
            cfg = from_dict(saved, saved_path)
            summary.preset, summary.changes = cfg.preset, config_changes(stage, cfg)
            summary.unrecorded = unrecorded_settings(stage, saved)
            # the key Run gives this config now (runs._run_key, as a partial run's resume check uses it)
            summary.stale = _run_key(stage, cfg, None) != run_dir.name.rsplit("-", 1)[-1]
        except ResultFileError as err:  # from_dict: names the file and the setting
            summary.problems.append(str(err))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            summary.problems.append(f"{run_dir}/fold*/config.json: not a config this version reads ({err})")
    return summary


#: The name a stage folder that cannot be listed gets in the listing (its problem says why).
UNLISTED = "(not listed)"


def list_runs(stages: tuple[str, ...] | list[str] = TRAINED_STAGES) -> list[RunSummary]:
    """Every run folder of these stages under ``paths.runs_dir()`` (``EMOLIB_RUNS``), by stage then
    name. A stage folder that cannot be listed is one entry, :data:`UNLISTED`, with its problem;
    the listing goes on with the other stages."""
    root = paths.runs_dir()
    out = []
    for stage in stages:
        if stage not in STAGE_SECTIONS:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(TRAINED_STAGES)}")
        folder = root / stage
        try:
            if not folder.is_dir():
                continue
            found = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        except OSError as err:
            out.append(RunSummary(stage=stage, name=UNLISTED, dir=folder,
                                  problems=[f"{paths.printable(folder)}: cannot list this folder ({err.strerror or err})"]))
            continue
        out += [summarise_run(stage, d) for d in found]
    return out


def _folds_text(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3,5``."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(parts)


def _percent(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.2f}"


def format_runs(summaries: list[RunSummary]) -> str:
    """A block per stage: a line per run (folds, mean validation and test UA, test WA over the
    complete folds), then its partial folds and its changes from the preset."""
    if not summaries:
        return f"no runs under {paths.printable(paths.runs_dir())}"
    lines: list[str] = []
    width = max(len(s.name) for s in summaries)
    for stage in dict.fromkeys(s.stage for s in summaries):
        group = [s for s in summaries if s.stage == stage]
        lines.append(f"{stage} ({len(group)} run{'s' * (len(group) != 1)}; UA and WA in %, means over the complete folds)")
        lines.append(f"  {'run':<{width}}  {'preset':<7}  {'corpus':<8}  {'folds':<9}  val UA  test UA  test WA")
        for s in group:
            folds = _folds_text(sorted(s.complete)) or "none"
            lines.append(f"  {s.name:<{width}}  {s.preset or '?':<7}  {(s.corpus or '?')[:8]:<8}  {folds:<9}  "
                         f"{_percent(s.mean('best_val_ua'))}  {_percent(s.mean('ua'))}    {_percent(s.mean('wa'))}")
            for p in s.partial:
                if p.unreadable:
                    state = "history.csv unreadable" + (", resumes where it stopped" if p.resumes else "")
                elif p.resumes:
                    state = "resumes where it stopped" if p.epochs is None else f"resumes after epoch {p.epochs}"
                else:
                    state = "no epoch finished" if not p.epochs else f"{p.epochs} epochs logged, no resume state"
                lines.append(f"      fold {p.fold} partial: {state}")
            if s.changes:
                lines.append("      " + "  ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                                                 for k, v in s.changes.items()))
            if s.hub:
                lines.append("      from the hub: " + "  ".join(f"{k}={v}" for k, v in s.hub.items()))
            if s.stale:
                unknown = f"; not recorded: {', '.join(s.unrecorded)}" if s.unrecorded else ""
                lines.append(f"      stale: an older emolib's run, never reused by this version{unknown}")
            for problem in s.problems:
                lines.append(f"      unreadable: {problem}")
    return "\n".join(lines)
