"""What the teachers cost on this CPU (issue 4: "descriptor extraction speed (x real
time, 1 and 2 processes), teacher training time per fold, peak memory"). A script
that prints figures, not a test; it asserts nothing about timing:

    python benchmarks/bench_teachers.py [--utterances 300] [--folds 1] [--threads 0] [--out teachers.json]

* eGeMAPSv02 LLD extraction (the prosodic teacher's input, ``prosody.features``) on
  ``--utterances`` utterances of the preset's corpus, spread evenly over it, into a
  fresh temporary ``EMOLIB_CACHE`` (nothing cached): with 1 and with 2 processes, as
  x real time (audio seconds / wall seconds) and CPU seconds per audio-second
  (parent + worker processes); then the same call again, every file a cache hit.
* Teacher training per fold (``pipeline.train_teacher`` into a temporary
  ``EMOLIB_RUNS``, so it really trains; the real feature cache is used, so only
  training is timed): epochs run, seconds per epoch, the training loop's seconds,
  the whole call's wall and CPU seconds (loading, training, outputs for every
  utterance), and the test UA / WA the run printed. ``--threads`` sets
  ``training.num_threads`` (0: torch's default, one per core).
* The prosodic teacher's inputs in memory: fitting the fold's normaliser, counting the
  repairs and reading every utterance's ready map once (an evaluation epoch), in each
  of ``pipeline``'s two ways (every ready map held, below ``EMOLIB_HOLD``, 2 GiB by default; each map
  read from the cache and normalised when asked for, above it) and the plain way it was
  done before (every raw map loaded into a dict, the training frames stacked for the
  statistics, every ready map kept too): the largest memory held at once
  (``tracemalloc``), the wall seconds of each, and the ratios to the plain way.
* Peak resident memory (``ru_maxrss``) of this process after each stage and of its
  largest child process (the extraction workers).

Speeds depend on what else runs on the 2 shared cores: the load average is printed
with the figures, and the 1-vs-2-process comparison is given as a ratio. Training
with 2 torch threads is the most sensitive: when other processes keep the cores busy,
each parallel operation waits for a thread that is not scheduled (seen here: the
same teacher run 4-10x slower at a load average of ~4 than at ~2).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from emolib import pipeline, prosody  # noqa: E402
from emolib.config import PRESETS, get_config  # noqa: E402
from emolib.runs import atomic_write_json  # noqa: E402

from measure import peak_mib, spread, table  # noqa: E402

TEACHERS = pipeline.TEACHER_KINDS


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (waited-for) children."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


@contextmanager
def env(name: str, value: str):
    """Point one ``EMOLIB_*`` root elsewhere for the duration (paths are read on each call)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def extraction(utterances: list, max_seconds: float, processes: tuple[int, ...]) -> list[dict]:
    """Uncached LLD extraction with each number of processes, then a fully cached call."""
    items = [(u.id, u.path) for u in utterances]
    # the audio the extractor sees: clips are cut to max_seconds (read_audio)
    audio = sum(min(u.duration, max_seconds) for u in utterances)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-egemaps-") as tmp:
        for n in processes:
            with env("EMOLIB_CACHE", str(Path(tmp) / f"cache-{n}proc")):
                wall, cpu = time.perf_counter(), cpu_seconds()
                prosody.features(items, "lld", max_seconds, processes=n, progress=False)
                wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
                rows.append({"what": f"extract, {n} process{'es' if n > 1 else ''}", "processes": n,
                             "wall_s": wall, "cpu_s": cpu, "x_real_time": audio / wall,
                             "cpu_ms_per_audio_s": 1000 * cpu / audio})
        with env("EMOLIB_CACHE", str(Path(tmp) / f"cache-{processes[-1]}proc")):
            wall, cpu = time.perf_counter(), cpu_seconds()
            prosody.features(items, "lld", max_seconds, processes=1, progress=False)  # every file a hit
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            rows.append({"what": "cache hit (hash file + load)", "processes": 1, "wall_s": wall, "cpu_s": cpu,
                         "x_real_time": audio / wall, "cpu_ms_per_audio_s": 1000 * cpu / audio})
    for row in rows:
        row.update(utterances=len(items), audio_s=audio, ms_per_utterance=1000 * row["wall_s"] / len(items))
    return rows


def _stacked_fit(arrays: list, voiced_only):
    """The normaliser as it was fitted before it streamed: every training frame stacked in float64."""
    import numpy as np

    stacked = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays], axis=0).astype(np.float64)
    stacked[~np.isfinite(stacked)] = np.nan
    stacked[:, voiced_only] = np.where(stacked[:, voiced_only] == 0, np.nan, stacked[:, voiced_only])
    mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
    std[~np.isfinite(std) | (std < 1e-8)] = 1.0
    mean[~np.isfinite(mean)] = 0.0
    return prosody.Normaliser(mean.astype(np.float32), std.astype(np.float32), voiced_only)


def lld_inputs(corpus, fold, max_seconds: float) -> list[dict]:
    """Normaliser, repair counts and one read of every ready map: read on demand vs all held."""
    import tracemalloc

    items = [(u.id, u.path) for u in corpus]
    feats = prosody.features(items, "lld", max_seconds, progress=False)  # extracted by now: all hits
    ids, train = list(corpus.ids), list(fold.train_ids)

    def ours(hold: bool):
        norm = prosody.Normaliser.fit(prosody.Selection(feats, train), voiced_only=prosody.VOICED_ONLY)
        ready, counts = prosody.prepare_lld(feats, norm, hold=hold)
        return sum(ready[i].shape[0] for i in ids)

    def held():  # the code before this benchmark's change, kept here as the baseline
        raw = {i: feats[i] for i in ids}
        norm = _stacked_fit([raw[i] for i in train], prosody.VOICED_ONLY)
        ready = {i: prosody.prepare_one(x, norm)[0] for i, x in raw.items()}
        return sum(ready[i].shape[0] for i in ids)

    rows = []
    for what, fn in (("ready maps held (small corpora)", lambda: ours(True)),
                     ("read and normalised on demand (large ones)", lambda: ours(False)),
                     ("raw and ready maps held (before)", held)):
        tracemalloc.start()
        frames = fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        wall = time.perf_counter()
        fn()
        rows.append({"what": what, "peak_mib": peak / 2**20, "wall_s": time.perf_counter() - wall, "frames": frames})
    raw_mib = sum(feats[i].nbytes for i in ids) / 2**20
    for row in rows:
        row.update(utterances=len(ids), descriptors_mib=raw_mib)
    return rows


def train_one(kind: str, cfg, fold: int, data) -> dict:
    """Train one teacher on one fold from scratch; its timings and test metrics."""
    wall, cpu = time.perf_counter(), time.process_time()
    run = pipeline.train_teacher(kind, cfg, fold, data, verbose=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    m = run.metrics()
    epoch_seconds = run.history()["seconds"]
    optim = (cfg.prosodic_teacher if kind == "prosodic" else cfg.linguistic_teacher).optim
    return {"teacher": kind, "fold": fold, "epochs_run": m["epochs_run"], "max_epochs": optim.epochs,
            "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
            "s_per_epoch": float(epoch_seconds.mean()), "fit_s": m["train_seconds"], "wall_s": wall,
            "cpu_s": cpu, "test_ua": 100 * m["ua"], "test_wa": 100 * m["wa"], "n_parameters": m["n_parameters"],
            "n_trainable": m["n_trainable"], "peak_rss_mib_after": peak_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=PRESETS[:2],
                        help="the corpus and teacher settings (the built-in corpus; 'paper' needs IEMOCAP)")
    parser.add_argument("--utterances", type=int, default=300,
                        help="utterances for the extraction timings (0 = the whole corpus; 300 keeps the "
                             "default run under ~5 minutes)")
    parser.add_argument("--folds", type=int, nargs="+", default=[1], help="folds to train each teacher on")
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=TEACHERS)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for training (training.num_threads; 0 = torch's default, the cores)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    # one log line per teacher, not 40 epoch lines (a field outside the run hash)
    cfg = get_config(args.preset, {"training.progress": "none", "training.num_threads": args.threads})
    data = pipeline.load_data(cfg)
    corpus = data.corpus
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} training thread(s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}; preset {args.preset}: corpus {corpus.name}, "
          f"{len(corpus)} utterances, {sum(u.duration for u in corpus) / 60:.1f} min of audio")
    result: dict = {"preset": args.preset, "torch": torch.__version__, "threads": threads,
                    "cores": os.cpu_count(), "load_average_start": os.getloadavg()[0]}

    chosen = spread(corpus.utterances, args.utterances)
    print(f"\neGeMAPSv02 LLDs, {len(chosen)} utterances "
          f"({sum(min(u.duration, cfg.data.max_seconds) for u in chosen):.0f} s of audio), fresh cache:")
    rows = extraction(chosen, cfg.data.max_seconds, (1, 2))
    table(rows, [("what", "", "s"), ("wall_s", "wall s", ".2f"), ("x_real_time", "x real time", ".1f"),
                 ("cpu_ms_per_audio_s", "CPU ms / audio-s", ".1f"), ("ms_per_utterance", "wall ms / utt.", ".2f")])
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"  2 processes vs 1: {speedup:.2f}x faster (wall)")
    result.update(extraction=rows, extraction_speedup_2_vs_1=speedup, peak_rss_mib_after_extraction=peak_mib())

    rows = lld_inputs(corpus, data.fold(args.folds[0]), cfg.data.max_seconds)
    print(f"\nthe prosodic teacher's inputs, fold {args.folds[0]}: normaliser, repair counts, every ready map "
          f"read once ({rows[0]['utterances']} utterances, {rows[0]['descriptors_mib']:.1f} MiB of raw LLDs):")
    for row in rows:
        row.update(memory_vs_before=row["peak_mib"] / rows[2]["peak_mib"], time_vs_before=row["wall_s"] / rows[2]["wall_s"])
    table(rows, [("what", "", "s"), ("peak_mib", "held at once MiB", ".2f"), ("memory_vs_before", "x before", ".3f"),
                 ("wall_s", "wall s", ".2f"), ("time_vs_before", "x before", ".2f")])
    result.update(lld_inputs=rows)

    print(f"\nteacher training ({args.preset} preset, {threads} thread(s)), temporary "
          f"runs folder; load average {os.getloadavg()[0]:.2f}:")
    trained = []
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as runs:
        with env("EMOLIB_RUNS", runs):
            for kind in args.teachers:
                for fold in args.folds:
                    trained.append(train_one(kind, cfg, fold, data))
    table(trained, [("teacher", "teacher", "s"), ("fold", "fold", "d"), ("epochs_run", "epochs", "d"),
                    ("best_epoch", "best", "d"), ("s_per_epoch", "s / epoch", ".2f"), ("fit_s", "loop s", ".1f"),
                    ("wall_s", "wall s", ".1f"), ("cpu_s", "CPU s", ".1f"), ("test_ua", "test UA", ".2f"),
                    ("test_wa", "test WA", ".2f"), ("n_trainable", "trainable", ",d"), ("peak_rss_mib_after", "peak RSS MiB", ".0f")])
    print("  loop s: the training loop (epochs incl. validation); wall s / CPU s (all threads): the whole "
          "train_teacher call (model loading, training, outputs for every utterance, result files)")
    result["teachers"] = trained

    memory = {"self_peak_rss_mib": peak_mib(), "children_peak_rss_mib": peak_mib(resource.RUSAGE_CHILDREN)}
    print(f"\npeak resident memory: this process {memory['self_peak_rss_mib']:.0f} MiB, largest child "
          f"(extraction worker) {memory['children_peak_rss_mib']:.0f} MiB; load average at the end "
          f"{os.getloadavg()[0]:.2f}")
    result.update(memory=memory, load_average_end=os.getloadavg()[0])
    if args.out:
        atomic_write_json(args.out, result)
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
