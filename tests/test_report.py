"""The report notebook (``notebooks/05_report.py``) on a fixture of result files: no training.

Every run the report reads (the data probes, both teachers, the six ablation students and
the sweep students at each temperature of the ``tiny`` grids) is written for three folds
with the :class:`emolib.runs.Run` API, its ``predictions.csv`` drawn from a seeded
generator. The notebook is executed through the run driver (papermill), and its tables are
checked line by line against scores computed here, independently, from those predictions.
"""
from __future__ import annotations

import dataclasses

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from emolib import driver, machine, pipeline, report
from emolib.config import CLASSES, get_config
from emolib.corpora.synth import bayes_ceilings
from emolib.metrics import classification_metrics, format_p, paired_bootstrap

FOLDS = (1, 2, 3)
CORPUS = "synth"  # the tiny preset's corpus: the report then also shows the card's Bayes ceilings
#: test utterances per class (neutral, angry, sad, happy) in each fold: unbalanced, so that UA and WA differ,
#: and different per fold, so that the pooled scores differ from the means over folds
PER_CLASS = {1: (8, 6, 5, 5), 2: (4, 7, 6, 3), 3: (6, 4, 8, 9)}

#: Table 2 of the paper (docs/NOTES.md): row, variant as the report names it, WA, UA, and where our number comes from.
PAPER_TABLE2 = [
    (1, "full EmoDistill", 75.16, 76.12, "student:full"),
    (2, "w/o logit-level KD", 73.94, 74.02, "student:no_logit_kd"),
    (3, "w/o embedding-level KD", 73.88, 74.01, "student:no_embedding_kd"),
    (4, "w/o prosodic teacher", 74.09, 72.82, "student:no_prosodic_teacher"),
    (5, "w/o linguistic teacher", 66.01, 67.27, "student:no_linguistic_teacher"),
    (6, "w/o both teachers (plain fine-tuning)", 69.92, 70.17, "student:no_teachers"),
    (7, "prosodic teacher alone", 49.42, 50.08, "teacher:prosodic"),
    (8, "linguistic teacher alone", 71.09, 71.83, "teacher:linguistic"),
]

#: Table 1 of the paper (docs/NOTES.md): reference, backbone, WA, UA (None: not reported).
PAPER_TABLE1 = [
    ("[10]", "CNN+LSTM", 61.2, 56.01), ("[11]", "BiLSTM+XLNet", 71.40, 68.60), ("[12]", "MFCNN+BERT", None, 72.60),
    ("[14]", "RNN+BERT", 73.23, 74.33), ("[23]", "FCNN", 70.23, 70.76), ("[24]", "TFCNN+DenseCap+ELM", 70.34, 70.78),
    ("[25]", "LSTM+Attention", 70.50, 72.50), ("[26]", "RNN-T", 71.72, 72.56), ("[27]", "CNN-GRU+SeqCap", 72.73, 59.71),
    ("[28]", "Wav2Vec2+CNN+LSTM", 71.64, 72.70), ("[22]", "TIM-Net", 72.50, 71.65),
    ("paper", "HuBERT-base", 75.16, 76.12), ("paper", "HuBERT-large", 77.49, 78.91),
]

FIGURE_FILES = sorted(f"{stem}.{ext}" for stem, exts in [
    ("table2_ablations", ("md", "tex", "json")), ("table1_comparison", ("md", "tex", "json")),
    ("teachers_vs_baselines", ("md", "tex", "json")), ("fig2_temperature", ("pdf", "png", "json")),
    ("fig2_temperature_values", ("md", "tex", "json")),
    ("channels", ("md", "tex", "json"))] for ext in exts)


# -- the fixture ---------------------------------------------------------------------------------------


def _ua(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean per-class recall over the classes present, in %."""
    return 100 * float(np.mean([np.mean(preds[labels == c] == c) for c in CLASSES if (labels == c).any()]))


def _wa(labels: np.ndarray, preds: np.ndarray) -> float:
    return 100 * float(np.mean(labels == preds))


@dataclass
class Scores:
    """Mean and sample standard deviation over folds, and the pooled score, in %."""

    ua_mean: float
    ua_std: float
    wa_mean: float
    wa_std: float
    ua_pooled: float
    wa_pooled: float

    @classmethod
    def of(cls, folds: list[tuple[np.ndarray, np.ndarray]]) -> "Scores":
        ua = np.array([_ua(t, p) for t, p in folds])
        wa = np.array([_wa(t, p) for t, p in folds])
        labels, preds = np.concatenate([t for t, _ in folds]), np.concatenate([p for _, p in folds])
        return cls(ua.mean(), ua.std(ddof=1), wa.mean(), wa.std(ddof=1), _ua(labels, preds), _wa(labels, preds))


@dataclass
class Fixture:
    cfg: object
    runs: dict  # source ("student:full", "sweep:prosodic:0.5", ...) -> [Run per fold]
    truth: dict  # source -> [(labels, preds) per fold]
    probes: list  # per fold: {probe: (labels, preds)}
    channels: list  # per fold: (lexical_cue, vocal_cue) boolean arrays, in the order of the fold's utterances


def _indices(values) -> list[int]:
    return [CLASSES.index(v) for v in values]


def write_results(cfg, seed: int = 0) -> Fixture:
    """Well-formed result files for every run the report reads, as the pipeline writes them."""
    rng = np.random.default_rng(seed)
    sources = {f"teacher:{kind}": lambda k, kind=kind: pipeline.teacher_run(kind, cfg, k)
               for kind in pipeline.TEACHER_KINDS}
    for _, _, _, _, source in PAPER_TABLE2[:6]:
        variant = source.split(":")[1]
        sources[source] = lambda k, v=variant: pipeline.student_run(cfg.replace({"distill.variant": v}), k)
    sources["oracle:full"] = lambda k: pipeline.student_run(
        cfg.replace({"distill.variant": "full", "distill.teacher_targets": "oracle"}), k)
    for teacher, variant, key in report.SWEEPS:
        for tau in getattr(cfg.sweep, f"taus_{teacher}"):
            sources[f"sweep:{teacher}:{tau:g}"] = lambda k, v=variant, key=key, tau=tau: pipeline.student_run(
                cfg.replace({"distill.variant": v, f"distill.{key}": tau}), k)
    # every run a distinct accuracy, so that reading the wrong run changes a number
    accuracy = dict(zip(sources, rng.permutation(np.linspace(0.3, 0.9, len(sources)))))
    runs: dict = {s: [] for s in sources}
    truth: dict = {s: [] for s in sources}
    probes, channels = [], []
    for k in FOLDS:
        labels = rng.permutation(np.repeat(CLASSES, PER_CLASS[k]))
        ids = [f"S{k}{'FM'[i % 2]}_{i:03d}" for i in range(len(labels))]

        def draw(p: float) -> np.ndarray:
            return np.where(rng.random(len(labels)) < p, labels, rng.choice(CLASSES, len(labels)))

        data = pipeline.data_run(cfg, k).start()
        lexical, vocal = rng.random(len(labels)) < 0.6, rng.random(len(labels)) < 0.5
        channels.append((lexical, vocal))
        data.write_csv("channels.csv", pd.DataFrame({"id": ids, "lexical_cue": lexical, "vocal_cue": vocal}))
        fold_probes = {name: (labels, draw(p)) for name, p in (("text", 0.6), ("voice", 0.4), ("both", 0.7))}
        probes.append(fold_probes)
        frame = pd.DataFrame({"id": ids, "label": labels, **{f"pred_{n}": p for n, (_, p) in fold_probes.items()}})
        data.finish({"stage": "data", "fold": k, "corpus": CORPUS, "classes": list(CLASSES), "n_folds": len(FOLDS),
                     "has_transcripts": True, "n_train": 64, "n_test": len(ids), "test_speakers": [f"S{k}F", f"S{k}M"],
                     "probes": {n: classification_metrics(_indices(t), _indices(p), CLASSES)
                                for n, (t, p) in fold_probes.items()}}, frame)
        for source, make in sources.items():
            preds = draw(accuracy[source])
            run = make(k).start()
            metrics = classification_metrics(_indices(labels), _indices(preds), CLASSES)
            metrics.update({"stage": run.stage, "fold": k, "corpus": CORPUS})
            run.finish(metrics, pd.DataFrame({"id": ids, "label": labels, "pred": preds}))
            runs[source].append(run)
            truth[source].append((labels, preds))
    return Fixture(cfg, runs, truth, probes, channels)


def _header(markdown: str) -> list[str]:
    """The header cells of the one table in a Markdown file."""
    return next(line for line in markdown.splitlines() if line.startswith("| "))[2:-2].split(" | ")


def _rows(markdown: str) -> list[list[str]]:
    """The body rows of the one table in a Markdown file, split into cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [line[2:-2].split(" | ") for line in lines[1:]]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The fixture's result files, and ``05_report`` executed on them by the run driver."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("RUNS", "CACHE", "DATA", "FIGURES"):
            mp.setenv(f"EMOLIB_{var}", str(root / var.lower()))  # the kernel inherits them
        fixture = write_results(get_config("tiny"))
        summary = driver.run("tiny", notebooks=["05_report"], folds=list(FOLDS))
        yield fixture, summary, root / "figures"


# -- the notebook's artefacts ------------------------------------------------------------------------------


def test_the_report_notebook_writes_every_artefact(executed):
    fixture, summary, figures = executed
    assert [(o.task.notebook, o.status) for o in summary.outcomes] == [("05_report", "done")]
    assert summary.outcomes[0].task.parameters == {"preset": "tiny", "overrides": {}, "folds": [1, 2, 3]}
    assert sorted(p.name for p in figures.iterdir()) == FIGURE_FILES
    assert (figures / "fig2_temperature.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_table2_has_the_papers_rows_and_our_scores(executed):
    fixture, _, figures = executed
    expected = []
    full_ua = np.array([_ua(t, p) for t, p in fixture.truth["student:full"]])
    for row, variant, wa, ua, source in PAPER_TABLE2:
        s = Scores.of(fixture.truth[source])
        # the paired column: this row's UA minus the full student's, fold by fold
        diff = np.array([_ua(t, p) for t, p in fixture.truth[source]]) - full_ua
        paired = "-" if row == 1 else (f"{diff.mean():+.2f} ± {diff.std(ddof=1):.2f} "
                                       f"({sum(d < 0 for d in diff)} of {len(FOLDS)})")
        # and its bootstrap interval over the test utterances, with p = share of draws where full is not ahead
        interval = "-"
        if row != 1:
            triples = [(t, p, f) for (t, p), (_, f) in zip(fixture.truth[source], fixture.truth["student:full"])]
            row_minus_full = paired_bootstrap(triples, n_resamples=report.BOOTSTRAP_RESAMPLES)
            full_minus_row = paired_bootstrap([(t, f, p) for t, p, f in triples], n_resamples=report.BOOTSTRAP_RESAMPLES)
            assert row_minus_full["diff"] == pytest.approx(diff.mean() / 100, abs=1e-12)
            p = full_minus_row["p_not_higher"]
            interval = (f"[{100 * row_minus_full['low']:+.2f}, {100 * row_minus_full['high']:+.2f}] "
                        f"({format_p(p, report.BOOTSTRAP_RESAMPLES)})")
        expected.append([str(row), variant, f"{wa:.2f}", f"{ua:.2f}", f"{s.wa_mean:.2f} ± {s.wa_std:.2f}",
                         f"{s.ua_mean:.2f} ± {s.ua_std:.2f}", f"{np.round(s.wa_pooled, 2):.2f}",
                         f"{np.round(s.ua_pooled, 2):.2f}", paired, interval])
    md = (figures / "table2_ablations.md").read_text()
    assert "| row | variant | paper WA | paper UA | our WA (mean ± std) | our UA (mean ± std) | our WA pooled | " \
           "our UA pooled | our UA minus full, per fold (mean ± std; full higher in) | 95 % interval of that mean " \
           "(paired bootstrap over test utterances; p full not higher) |" in md
    assert "a paired bootstrap over the test utterances" in md
    assert _rows(md) == expected
    caption = md.splitlines()[0]
    assert caption.startswith("**Table 2 (ablations). Paper: IEMOCAP, HuBERT-base student. Ours: corpus 'synth', ")
    assert "student backbone tiny-random (freeze=all)" in caption and "over 3 folds" in caption

    tex = (figures / "table2_ablations.tex").read_text()
    assert r"\begin{tabular}{llllllllll}" in tex and r"\label{tab:ablations}" in tex
    for cells in expected:
        latex = [c.replace(" ± ", r" $\pm$ ").replace("[", "{[}").replace("]", "{]}") for c in cells]
        assert " & ".join(latex) + r" \\" in tex, cells

    js = json.loads((figures / "table2_ablations.json").read_text())
    assert [[r["row"], r["variant"], r["paper WA"], r["paper UA"]] for r in js["rows"]] == [
        [row, variant, wa, ua] for row, variant, wa, ua, _ in PAPER_TABLE2]
    assert [r["our UA pooled"] for r in js["rows"]] == [
        round(Scores.of(fixture.truth[s]).ua_pooled, 2) for *_, s in PAPER_TABLE2]


def test_table1_quotes_the_paper_and_names_our_corpus(executed):
    fixture, _, figures = executed
    md = (figures / "table1_comparison.md").read_text()
    rows = _rows(md)
    assert len(rows) == 13 + 4
    header = ["source", "ref", "method", "backbone", "inference input", "corpus", "WA", "UA"]
    assert f"| {' | '.join(header)} |" in md
    paper = [dict(zip(header, r)) for r in rows[:13]]
    assert [(r["ref"], r["backbone"], r["WA"], r["UA"]) for r in paper] == [
        (ref, bb, "-" if wa is None else f"{wa:.2f}", f"{ua:.2f}") for ref, bb, wa, ua in PAPER_TABLE1]
    assert {r["corpus"] for r in paper} == {"IEMOCAP"} and {r["source"] for r in paper} == {"paper Table 1"}

    ours = [dict(zip(header, r)) for r in rows[13:]]
    assert [r["method"] for r in ours] == ["EmoDistill student (ours)", "plain fine-tuning, no teachers (ours)",
                                         "linguistic teacher (ours)", "prosodic teacher (ours)"]
    assert {(r["source"], r["ref"], r["corpus"]) for r in ours} == {("this re-implementation", "ours", CORPUS)}
    assert [r["backbone"] for r in ours[:2]] == ["tiny-random (freeze=all)"] * 2
    for r, source in zip(ours, ("student:full", "student:no_teachers", "teacher:linguistic", "teacher:prosodic")):
        s = Scores.of(fixture.truth[source])
        assert (r["WA"], r["UA"]) == (f"{round(s.wa_mean, 2):.2f}", f"{round(s.ua_mean, 2):.2f}"), source
    assert report.TABLE1_NOTE in md
    tex = (figures / "table1_comparison.tex").read_text()
    assert r"paper Table 1 & [12] & " not in tex and r"paper Table 1 & {[}12{]} & " in tex
    assert r"MFCNN+BERT & multimodal & IEMOCAP & -- & 72.60 \\" in tex
    # the reference without a WA is null in the json, which strict parsers read (NaN is not JSON)
    text = (figures / "table1_comparison.json").read_text()
    rows = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in table1_comparison.json"))["rows"]
    assert [r["WA"] for r in rows if r["ref"] == "[12]"] == [None]
    # no table without a spread says what std is; every one with one does
    assert report.STD_NOTE not in md
    for stem in ("table2_ablations", "teachers_vs_baselines", "channels", "fig2_temperature_values"):
        assert report.STD_NOTE in (figures / f"{stem}.md").read_text(), stem


def test_teachers_against_the_probes_of_their_channel(executed):
    fixture, _, figures = executed
    ceilings = bayes_ceilings(fixture.cfg.data.synth.p_lexical_cue, fixture.cfg.data.synth.p_vocal_cue)
    # one channel alone: the cue's probability plus a lucky guess when it is absent, p + (1 - p) / 4
    assert [round(100 * ceilings[c]["UA"], 2) for c in ("text", "voice")] == [71.5, 66.25]

    def stat(folds):
        ua = np.array([_ua(t, p) for t, p in folds])
        return f"{ua.mean():.2f} ± {ua.std(ddof=1):.2f}"

    def probe(name):
        return stat([fold[name] for fold in fixture.probes])

    rows = _rows((figures / "teachers_vs_baselines.md").read_text())
    assert [[r[0], r[1], r[2], r[4]] for r in rows] == [
        ["voice", "logistic regression probe", probe("voice"), "66.25"],
        ["voice", "prosodic teacher (2D ResNet on eGeMAPS LLDs)", stat(fixture.truth["teacher:prosodic"]), "66.25"],
        ["text", "logistic regression probe", probe("text"), "71.50"],
        ["text", "linguistic teacher (fine-tuned on transcripts)", stat(fixture.truth["teacher:linguistic"]), "71.50"],
        ["both", "logistic regression probe", probe("both"), f"{100 * ceilings['both']['UA']:.2f}"],
    ]
    # beside it, the same closed forms at the cue shares the fixture's test turns hold: text p + (1 - p) / 4,
    # voice (1 + 3 p) / 4, both p_l + (1 - p_l) * voice
    p_l = np.concatenate([lx for lx, _ in fixture.channels]).mean()
    p_v = np.concatenate([vc for _, vc in fixture.channels]).mean()
    voice = (1 + 3 * p_v) / 4
    by_hand = {"text": p_l + (1 - p_l) / 4, "voice": voice, "both": p_l + (1 - p_l) * voice}
    header = _header((figures / "teachers_vs_baselines.md").read_text())
    assert header[-1] == report.REALISED_CEILING
    assert [r[5] for r in rows] == [f"{100 * by_hand[r[0]]:.2f}" for r in rows]
    assert report.CEILING_NOTE in (figures / "teachers_vs_baselines.md").read_text()


def test_every_model_scored_on_each_channel_cell(executed):
    """channels.md: accuracy where both cues, the words only, the voice only or neither carry the label,
    pooled over folds, recomputed here from the fixture's predictions and channel flags."""
    fixture, _, figures = executed
    lexical = np.concatenate([lx for lx, _ in fixture.channels])
    vocal = np.concatenate([vc for _, vc in fixture.channels])
    cells = [(True, True), (True, False), (False, True), (False, False)]

    def row(name, folds):
        labels, preds = np.concatenate([t for t, _ in folds]), np.concatenate([p for _, p in folds])
        ok = labels == preds
        fold_ua = np.array([_ua(t, p) for t, p in folds])
        return [name] + [f"{100 * ok[(lexical == lx) & (vocal == vc)].mean():.2f}" for lx, vc in cells] + [
            f"{100 * ok.mean():.2f}", f"{fold_ua.mean():.2f} ± {fold_ua.std(ddof=1):.2f}"]

    md = (figures / "channels.md").read_text()
    shares = [f"{100 * ((lexical == lx) & (vocal == vc)).mean():.0f}" for lx, vc in cells]
    assert (f"| model | both cues (n = {shares[0]} %) | words only (n = {shares[1]} %) | voice only (n = {shares[2]} %) "
            f"| neither (n = {shares[3]} %) | all | UA (mean ± std over folds) |") in md
    expected = [row(f"{p} probe (logistic regression)", [fold[p] for fold in fixture.probes])
                for p in ("text", "voice", "both")]
    for name, source in [("linguistic teacher", "teacher:linguistic"), ("prosodic teacher", "teacher:prosodic"),
                         ("student, plain fine-tuning (no teachers)", "student:no_teachers"),
                         ("student, w/o prosodic teacher", "student:no_prosodic_teacher"),
                         ("student, w/o linguistic teacher", "student:no_linguistic_teacher"),
                         ("student, full EmoDistill", "student:full"), (report.ORACLE_ROW, "oracle:full")]:
        expected.append(row(name, fixture.truth[source]))
    assert _rows(md) == expected
    assert report.CHANNELS_NOTE in md and report.ORACLE_NOTE in md
    assert json.loads((figures / "channels.json").read_text())["corpus"] == CORPUS


def test_runs_that_computed_in_different_ways_are_said_and_stamped(results_env, capsys):
    fixture = results_env
    here = machine.numerics_label(machine.numerics())
    assert report.discover(fixture.cfg).numerics == (here,)
    assert "computed in" not in capsys.readouterr().out
    marker = pipeline.teacher_run("prosodic", fixture.cfg, 2).path("metrics.json")
    saved = marker.read_text()
    other = {"mode": "native", "isa": "AVX512", "cpu": "Some Other CPU", "machine": "x86_64", "torch": "2.13.0"}
    marker.write_text(json.dumps({**json.loads(saved), "numerics": other}))
    try:  # one fold's teacher trained on another kind of CPU, in native mode
        assert report.discover(fixture.cfg).numerics == tuple(sorted({here, "native AVX512 on Some Other CPU"}))
        out = capsys.readouterr().out
        assert "computed in 2 ways" in out and "Some Other CPU" in out and "EMOLIB_NUMERICS" in out
        # a run resumed here after epochs trained in native numerics elsewhere: both ways count
        marker.write_text(json.dumps({**json.loads(saved), "numerics_earlier": [other]}))
        assert report.discover(fixture.cfg).numerics == tuple(sorted({here, "native AVX512 on Some Other CPU"}))
        marker.write_text(json.dumps({k: v for k, v in json.loads(saved).items() if k != "numerics"}))
        assert "unrecorded" in report.discover(fixture.cfg).numerics  # a run made before runs recorded it
    finally:
        marker.write_text(saved)


def test_the_channel_table_needs_the_channel_flags_of_every_fold(results_env):
    fixture = results_env
    study = report.discover(fixture.cfg)
    assert list(report.channel_breakdown(fixture.cfg, study)["model"])[-2:] == ["student, full EmoDistill",
                                                                               report.ORACLE_ROW]
    # a corpus that records its channels but is not the built-in one: no oracle can exist, no oracle row
    other = dataclasses.replace(study, corpus="my-manifest")
    assert list(report.channel_breakdown(fixture.cfg, other)["model"])[-1] == "student, full EmoDistill"
    flags = pipeline.data_run(fixture.cfg, 2).path("channels.csv")
    hidden = flags.with_name("channels.csv.hidden")
    flags.rename(hidden)
    try:  # a corpus that does not record its channels (every real one): no table, no error
        assert report.channel_breakdown(fixture.cfg, study) is None
    finally:
        hidden.rename(flags)


@pytest.mark.parametrize("damage, problem", [
    (lambda text: text[:[i for i, c in enumerate(text) if c == ord("\n")][10] + 1],
     "holds 10 rows but the fold has 20 test utterances"),  # cut at a line end: shares of half the fold
    (lambda text: text[:text.rindex(b"\n", 0, -1) + 12], "row 21 is cut short"),  # cut inside the last row
    (lambda text: text[:-1], r"its last line \(row 21\) has no line end"),
    (lambda text: text.replace(b"lexical_cue", b"lexical"), "no column lexical_cue"),
    (lambda text: text.replace(b"True", b"yes", 1), "row [0-9]+ is cut short or not True/False flags"),
])
def test_a_damaged_channels_file_is_named(tmp_path, monkeypatch, damage, problem):
    """channels.csv was read unchecked: cut at a line end, the channel table gave each cell's
    share and accuracy on part of the test utterances; cut in a row, every cell NaN ("n = 0 %")."""
    from emolib.runs import ResultFileError

    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    cfg = get_config("tiny")
    write_results(cfg)
    study = report.discover(cfg)
    flags = pipeline.data_run(cfg, 2).path("channels.csv")
    assert len(pd.read_csv(flags)) == sum(PER_CLASS[2]) == 20
    flags.write_bytes(damage(flags.read_bytes()))
    for table in (report.channel_breakdown, report.teachers_vs_baselines):
        with pytest.raises(ResultFileError, match=rf"^{flags}: {problem}.*[dD]elete {flags.parent} to compute it "
                                                  r"again$"):
            table(cfg, study)


def test_every_artefact_carries_its_provenance(executed):
    fixture, _, figures = executed
    expected = {"commit": report.git_commit(), "preset": "tiny", "corpus": CORPUS,
                "config_hash": get_config("tiny").hash(), "folds": 3,
                "numerics": [machine.numerics_label(machine.numerics())]}  # every run made by this process's kind
    for stem in ("table2_ablations", "table1_comparison", "teachers_vs_baselines", "fig2_temperature",
                 "fig2_temperature_values", "channels"):
        prov = json.loads((figures / f"{stem}.json").read_text())
        assert {k: prov[k] for k in expected} == expected, stem
    stamp = (f"commit {expected['commit']}, preset tiny, corpus synth, config {expected['config_hash']}, "
             f"numerics {expected['numerics'][0]}")
    assert f"- Generated from result files by emolib ({stamp})." in (figures / "table2_ablations.md").read_text()
    fig2 = json.loads((figures / "fig2_temperature.json").read_text())
    assert fig2["grid_prosodic"] == [0.5, 2.0] and fig2["grid_linguistic"] == [0.5, 2.0]
    assert fig2["note"] == report.PAPER_FIG2_NOTE


def test_the_figure_s_values_are_written_beside_it(executed):
    """fig2_temperature_values.md: mean ± std over folds of every temperature's runs, in the grid's order."""
    fixture, _, figures = executed
    expected = []
    for teacher in ("prosodic", "linguistic"):
        for tau in (0.5, 2.0):
            folds = fixture.truth[f"sweep:{teacher}:{tau:g}"]
            ua, wa = np.array([_ua(*f) for f in folds]), np.array([_wa(*f) for f in folds])
            expected.append([teacher, f"{tau:g}", f"{ua.mean():.2f} ± {ua.std(ddof=1):.2f}",
                             f"{wa.mean():.2f} ± {wa.std(ddof=1):.2f}", "3"])
    md = (figures / "fig2_temperature_values.md").read_text()
    assert "| teacher swept | temperature | UA (mean ± std) | WA (mean ± std) | folds |" in md
    assert _rows(md) == expected
    assert md.startswith("**Figure 2's values: the student's accuracy against each teacher's temperature")
    assert json.loads((figures / "fig2_temperature_values.json").read_text())["rows"][0]["teacher swept"] == "prosodic"


def test_the_figure_embeds_truetype_fonts_and_its_provenance(executed):
    _, _, figures = executed
    pdf = (figures / "fig2_temperature.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert b"/Type3" not in pdf and b"/FontType 3" not in pdf  # no Type 3 (bitmap-like) fonts
    assert b"/FontFile2" in pdf and b"/CIDFontType2" in pdf  # Type 42: embedded TrueType
    keywords = re.search(rb"/Keywords \((.*?)(?<!\\)\)", pdf).group(1).decode()
    assert "preset=tiny" in keywords and "corpus=synth" in keywords
    assert f"config_hash={get_config('tiny').hash()}" in keywords
    assert b"/Creator (emolib)" in pdf


# -- the report's functions on the same files (in process) ---------------------------------------------------


@pytest.fixture
def results_env(executed, monkeypatch):
    fixture, _, figures = executed
    monkeypatch.setenv("EMOLIB_RUNS", str(figures.parent / "runs"))
    return fixture


def test_the_sweep_reads_each_temperatures_runs(results_env):
    fixture = results_env
    sweep = report.temperature_sweep(fixture.cfg, report.Study('synth', CLASSES, FOLDS, True))
    assert len(sweep) == 2 * 2 * 3
    for row in sweep.itertuples(index=False):
        labels, preds = fixture.truth[f"sweep:{row.teacher}:{row.tau:g}"][row.fold - 1]
        assert (row.ua, row.wa) == (pytest.approx(_ua(labels, preds)), pytest.approx(_wa(labels, preds)))
    fig = report.plot_fig2(sweep, fixture.cfg)
    for ax, teacher in zip(fig.axes, ("prosodic", "linguistic")):
        ua_line = ax.get_lines()[0]
        assert list(ua_line.get_xdata()) == [0.5, 2.0]
        expected = [np.mean([_ua(*f) for f in fixture.truth[f"sweep:{teacher}:{tau:g}"]]) for tau in (0.5, 2.0)]
        np.testing.assert_allclose(ua_line.get_ydata(), expected)


def test_a_grid_passed_to_the_notebooks_reaches_the_figure(results_env):
    # `emolib run -p taus_prosodic=[2.0]` gives 03 and 05 the same grid: the figure reads that one
    fixture = results_env
    cfg = report.with_sweep_grids(fixture.cfg, [2], None)
    assert cfg.sweep.taus_prosodic == (2.0,) and cfg.sweep.taus_linguistic == fixture.cfg.sweep.taus_linguistic
    assert report.with_sweep_grids(fixture.cfg) is fixture.cfg
    sweep = report.temperature_sweep(cfg, report.Study('synth', CLASSES, FOLDS, True))
    assert sorted(set(zip(sweep["teacher"], sweep["tau"]))) == [("linguistic", 0.5), ("linguistic", 2.0),
                                                                ("prosodic", 2.0)]
    declared = {nb.name: nb.parameters for nb in driver.select_notebooks(["03_temperature_sweep", "05_report"])}
    for name in ("taus_prosodic", "taus_linguistic"):
        assert all(name in params for params in declared.values()), name


def test_a_missing_run_names_its_folder(results_env):
    fixture = results_env
    run = fixture.runs["student:no_embedding_kd"][1]
    saved = run.path("metrics.json").read_bytes()
    run.path("metrics.json").unlink()  # a partial run: killed before it finished
    try:
        with pytest.raises(report.MissingResults) as err:
            report.table2(fixture.cfg, report.Study('synth', CLASSES, FOLDS, True))
        assert str(err.value).startswith(f"student no_embedding_kd: 1 run(s) missing, e.g. {run.dir}. ")
    finally:
        run.path("metrics.json").write_bytes(saved)
    assert len(report.table2(fixture.cfg, report.Study('synth', CLASSES, FOLDS, True))) == 8


def test_no_results_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    cfg = get_config("tiny")
    with pytest.raises(report.MissingResults, match=re.escape(str(pipeline.data_run(cfg, 1).dir))):
        report.discover(cfg)
    with pytest.raises(report.MissingResults, match=re.escape(str(pipeline.student_run(cfg, 1).dir))):
        report.table2(cfg, report.Study('synth', CLASSES, FOLDS, True))  # its first row: the full student


# -- table writers ------------------------------------------------------------------------------------------


def test_markdown_table_formats_and_escapes_cells():
    frame = pd.DataFrame({"method": ["a_b & c", "x|y", "plain"], "WA": [61.2, np.nan, 70.5], "n": [1, 2, 3]})
    assert report.markdown_table(frame, "Cap", ["note one"]) == (
        "**Cap**\n"
        "\n"
        "| method | WA | n |\n"
        "|---|---|---|\n"
        "| a_b & c | 61.20 | 1 |\n"
        "| x\\|y | - | 2 |\n"
        "| plain | 70.50 | 3 |\n"
        "\n"
        "- note one\n"
    )
    assert _rows(report.markdown_table(frame, "Cap")) == [["a_b & c", "61.20", "1"], ["x\\|y", "-", "2"],
                                                          ["plain", "70.50", "3"]]


def test_latex_table_escapes_special_characters():
    frame = pd.DataFrame({"method [ref]": ["a_b & c", "50% #1 [x]", "C:\\dir"], "UA": ["1.00 ± 0.50", None, "-"],
                          "WA": [61.2, np.nan, 70.5]})
    assert report.latex_table(frame, "Cap 5% & more", "tab:x", ["note ± one"]) == "\n".join([
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\caption{Cap 5\% \& more}",
        r"\label{tab:x}",
        r"\begin{tabular}{lll}",
        r"\toprule",
        r"method {[}ref{]} & UA & WA \\",
        r"\midrule",
        r"a\_b \& c & 1.00 $\pm$ 0.50 & 61.20 \\",
        r"50\% \#1 {[}x{]} & -- & -- \\",
        r"C:\textbackslash{}dir & - & 70.50 \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\par\footnotesize note $\pm$ one",
        r"\end{table}",
    ]) + "\n"


def test_latex_escapes_braces_dollars_tilde_and_caret_in_one_pass():
    frame = pd.DataFrame({"backbone": ["~/models/{x}_$1^2"]})
    body = report.latex_table(frame, "c", "t").splitlines()[9]
    assert body == r"\textasciitilde{}/models/\{x\}\_\$1\textasciicircum{}2 \\"
    # the bootstrap column's "p ≤ 0.0001": no bare unicode reaches pdflatex
    assert report.latex_table(pd.DataFrame({"p": ["(p ≤ 0.0001)"]}), "c", "t").splitlines()[9] == r"(p $\leq$ 0.0001) \\"
    every_tex = "".join((report.paths.project_root() / "figures" / f).read_text()
                        for f in ("table2_ablations.tex", "table1_comparison.tex", "channels.tex",
                                  "teachers_vs_baselines.tex", "fig2_temperature_values.tex"))
    assert every_tex.isascii()  # the committed tables, as make report wrote them


def test_discover_reads_a_fold_subset(results_env):
    cfg = results_env.cfg
    every = report.discover(cfg)
    assert every.folds == FOLDS and every.classes == CLASSES and every.has_transcripts
    assert report.discover(cfg, [2, 3]).folds == (2, 3)


def test_report_on_a_corpus_without_transcripts(tmp_path, monkeypatch):
    """RAVDESS-like results: no linguistic teacher, students with the linguistic terms off."""
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    cfg = get_config("tiny")
    rng = np.random.default_rng(1)
    labels = np.repeat(CLASSES, 3)
    for k in (1, 2):
        pipeline.data_run(cfg, k).start().finish(
            {"stage": "data", "corpus": "ravdess", "classes": list(CLASSES), "n_folds": 2, "has_transcripts": False,
             "probes": {"voice": classification_metrics(_indices(labels), _indices(labels), CLASSES)}},
            pd.DataFrame({"id": range(len(labels)), "label": labels}))
        runs = [pipeline.teacher_run("prosodic", cfg, k)]
        for v in report.ABLATION_VARIANTS:
            runs.append(pipeline.student_run(cfg.replace({"distill.variant": v}), k, has_transcripts=False))
        for tau in cfg.sweep.taus_prosodic:
            runs.append(pipeline.student_run(cfg.replace({"distill.variant": "no_linguistic_logit_kd",
                                                          "distill.tau_prosodic": tau}), k, has_transcripts=False))
        for run in runs:
            preds = np.where(rng.random(len(labels)) < 0.5, labels, "neutral")
            run.start().finish(classification_metrics(_indices(labels), _indices(preds), CLASSES),
                               pd.DataFrame({"id": range(len(labels)), "label": labels, "pred": preds}))
    study = report.discover(cfg)
    assert study.corpus == "ravdess" and not study.has_transcripts
    t2 = report.table2(cfg, study)
    assert np.isnan(t2.loc[7, "UA mean"]) and not t2.loc[:6, "UA mean"].isna().any()
    shown = report.display_table2(t2).loc[7]  # printed "-" as its other empty cells are, not "nan"
    assert (shown["our UA (mean ± std)"], shown["our WA (mean ± std)"]) == ("-", "-")
    assert "linguistic teacher (ours)" not in set(report.table1(cfg, study)["method"])
    sweep = report.temperature_sweep(cfg, study)
    assert set(sweep["teacher"]) == {"prosodic"}
    fig = report.plot_fig2(sweep, cfg)
    assert len(fig.axes) == 1
    # balanced test folds: WA equals UA, drawn once and labelled so
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "UA (= WA, balanced classes), mean over folds" and not any(t.startswith("WA") for t in legend)
    assert list(report.teachers_vs_baselines(cfg, study)["channel"]) == ["voice", "voice"]
    assert report.channel_breakdown(cfg, study) is None  # RAVDESS does not record which channel carries a label

    # the notebook on these results: every table but the channel one, whose stale copy from another corpus goes
    figures = tmp_path / "figures"
    monkeypatch.setenv("EMOLIB_FIGURES", str(figures))
    figures.mkdir()
    (figures / "channels.md").write_text("a table from an earlier report on the built-in corpus\n")
    summary = driver.run("tiny", notebooks=["05_report"], folds=[1, 2])
    assert [o.status for o in summary.outcomes] == ["done"]
    assert sorted(p.name for p in figures.iterdir()) == [f for f in FIGURE_FILES if not f.startswith("channels.")]


def test_the_sweep_table_keeps_the_grid_order_and_gives_one_fold_without_a_spread():
    sweep = pd.DataFrame({"teacher": ["prosodic", "prosodic", "linguistic"], "tau": [1.0, 1.0, 2.0],
                          "fold": [1, 2, 1], "ua": [70.0, 72.0, 60.0], "wa": [71.0, 74.0, 61.0]})
    table = report.sweep_table(sweep)
    assert table.values.tolist() == [["prosodic", "1", "71.00 ± 1.41", "72.50 ± 2.12", 2],
                                     ["linguistic", "2", "60.00", "61.00", 1]]


def test_the_bootstrap_matches_utterances_by_id_and_refuses_other_test_sets():
    rng = np.random.default_rng(3)
    labels = rng.choice(CLASSES, 40)
    ids = [f"u{i:02d}" for i in range(40)]

    def summary(name, preds, order=None):
        frame = pd.DataFrame({"id": ids, "label": labels, "pred": preds})
        return report.Summary(name, [], {}, [frame if order is None else frame.iloc[order].reset_index(drop=True)])

    a_preds = np.where(rng.random(40) < 0.8, labels, "neutral")
    b_preds = np.where(rng.random(40) < 0.5, labels, "sad")
    a, b = summary("a", a_preds), summary("b", b_preds)
    expected = paired_bootstrap([(labels, a_preds, b_preds)], n_resamples=report.BOOTSTRAP_RESAMPLES)
    assert report.paired_bootstrap_of(a, b) == expected
    # the other model's rows in another order: matched by id, the same numbers
    assert report.paired_bootstrap_of(a, summary("b", b_preds, rng.permutation(40))) == expected
    other = report.Summary("c", [], {}, [pd.DataFrame({"id": [f"v{i:02d}" for i in range(40)], "label": labels,
                                                        "pred": b_preds})])
    with pytest.raises(ValueError, match="a and c: fold 1's predictions are not of the same test utterances"):
        report.paired_bootstrap_of(a, other)
    relabelled = report.Summary("d", [], {}, [pd.DataFrame({"id": ids, "label": np.roll(labels, 1), "pred": b_preds})])
    first = ids[int(np.flatnonzero(np.roll(labels, 1) != labels)[0])]
    with pytest.raises(ValueError, match=f"a and d: fold 1's predictions give the same utterances different labels "
                                         f"\\(e.g. '{first}'\\)"):
        report.paired_bootstrap_of(a, relabelled)
    # an utterance twice in either table (and another missing) is refused, whichever side it is on
    twice = summary("e", b_preds)
    twice.predictions[0].loc[1, "id"] = ids[0]
    for left, right in ((a, twice), (twice, a)):
        with pytest.raises(ValueError, match=f"e: fold 1's predictions list an utterance more than once "
                                             f"\\(e.g. '{ids[0]}'\\)"):
            report.paired_bootstrap_of(left, right)


def test_an_extracted_git_archive_stamps_the_commit_it_was_made_from(tmp_path, monkeypatch):
    """GitHub's "Download ZIP" (git archive) has no .git folder: the figures said "commit unknown".
    export-subst writes the commit into emolib/ARCHIVE_COMMIT, and git_commit reads it there."""
    import io
    import subprocess
    import tarfile
    from pathlib import Path

    root = Path(report.__file__).parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert report.archived_commit() is None  # in the checkout: the placeholder
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD", "emolib/ARCHIVE_COMMIT"], cwd=root,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        written = tar.extractfile("emolib/ARCHIVE_COMMIT").read()
    (tmp_path / "emolib").mkdir()
    (tmp_path / "emolib" / "ARCHIVE_COMMIT").write_bytes(written)
    assert written.decode().strip() == head.stdout.strip()
    # the package as extracted from the archive, in a folder that is no checkout
    monkeypatch.setattr(report, "__file__", str(tmp_path / "emolib" / "report.py"))
    monkeypatch.setenv("EMOLIB_ROOT", str(tmp_path))
    assert report.git_commit() == f"{head.stdout.strip()[:12]}+archive"
    (tmp_path / "emolib" / "ARCHIVE_COMMIT").unlink()  # installed as a wheel: nothing to read
    assert report.git_commit() == "unknown"


def test_a_git_repository_around_the_project_stamps_only_if_it_tracks_the_code(tmp_path, monkeypatch):
    """An archive extracted into a folder that another repository covers (a home folder kept in
    git) is stamped with the archive's commit, not that repository's; a copy of the project that
    the surrounding repository tracks (a monorepo) is stamped with the surrounding commit."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "dotfiles").write_text("unrelated\n")
    git("add", "dotfiles")
    git("commit", "-q", "-m", "home")
    project = tmp_path / "emodistill"
    (project / "emolib").mkdir(parents=True)
    (project / "emolib" / "__init__.py").write_text("")
    (project / "emolib" / "ARCHIVE_COMMIT").write_text("0123456789abcdef0123456789abcdef01234567\n")
    monkeypatch.setattr(report, "__file__", str(project / "emolib" / "report.py"))
    monkeypatch.setenv("EMOLIB_ROOT", str(project))
    assert report.git_commit() == "0123456789ab+archive"  # untracked by the home repository
    (project / "emolib" / "ARCHIVE_COMMIT").unlink()
    assert report.git_commit() == "unknown"
    git("add", "emodistill")
    git("commit", "-q", "-m", "vendored")
    assert report.git_commit() == git("rev-parse", "--short=12", "HEAD")
    (project / "emolib" / "__init__.py").write_text("# edited\n")
    assert report.git_commit() == git("rev-parse", "--short=12", "HEAD") + "+dirty"


def test_a_report_that_replaces_another_configs_says_so(tmp_path):
    # EMOLIB_FIGURES takes every config's report: replacing another one's tables is said, not silent
    prov = {"preset": "tiny", "config_hash": "bf0f6bf9c3", "corpus": "synth"}
    assert report.replaced_report(tmp_path, prov) is None  # nothing there yet
    (tmp_path / "table2_ablations.json").write_text("{not json")
    assert report.replaced_report(tmp_path, prov) is None  # a damaged one is rewritten whole anyway
    (tmp_path / "table2_ablations.json").write_text(json.dumps({**prov, "rows": []}))
    assert report.replaced_report(tmp_path, prov) is None  # the same config's report: an update
    (tmp_path / "table2_ablations.json").write_text(json.dumps(
        {"preset": "paper", "config_hash": "0123456789", "corpus": "iemocap", "rows": []}))
    assert report.replaced_report(tmp_path, prov) == (
        f"note: {tmp_path} holds the report of preset paper, config 0123456789, corpus iemocap; this report "
        "(preset tiny, config bf0f6bf9c3, corpus synth) replaces it")
