"""What the student costs on this CPU, and what it saves at inference (issue 5). A
script that prints figures, not a test; it asserts nothing about timing:

    python benchmarks/bench_student.py [--utterances 16] [--steps 200] [--threads 1 2] [--out student.json]

Every part is measured once per ``--threads`` value, each in a fresh (spawned) process
that sets ``torch.set_num_threads`` before any other torch work, so that one setting's
thread pool, allocator and caches cannot colour the other's (changing the count inside
one process, 2 -> 1 -> 2, was seen to make small operations 10x slower). The figures
are printed at the end. The parts:

1. Backbone forward per audio-second, the preset's backbone (on ``default`` the Whisper
   base encoder, positions cut to the clips), on ``--utterances`` utterances of the
   preset's corpus: computed (read, log-mel, encoder, pooling; batches of 8 as the cache
   fill runs them), ``backbones.pooled_states`` into a fresh temporary cache (also
   loading the model, hashing and writing), and the same call again, read from the cache.
2. One training step of the default student on cached pooled states (data loading,
   forward, Eq. 5, backward, clipping, AdamW): variant ``full`` (all four KD terms,
   teacher outputs in the batch as the cache gives them) vs ``no_teachers`` (plain
   cross-entropy). Medians over ``--steps`` interleaved steps, and their ratio.
3. Inference, one utterance at a time: (a) the student alone (log-mel, backbone,
   heads) vs (b) the multimodal pipeline it replaces: speech recognition with the same
   Whisper weights as the student's encoder (tiny.en on the ``tiny`` preset; log-mel and
   encoder over the 30 s window Whisper needs for decoding, then
   ``whisper_ct2.greedy_decode``), the linguistic teacher (MiniLM) on the transcript,
   openSMILE eGeMAPS LLDs, the prosodic teacher, and the speech model (costed as (a):
   the same backbone with heads). CPU seconds per audio-second per component, and the
   ratio (b)/(a). Reading the audio is common to both and counted in neither total
   (openSMILE's row reads the file again, as ``prosody.extract`` does).
4. Classifying files with the ensemble ``predict`` uses, one student per fold
   (``pipeline.classify``; untrained heads): the students on the frozen backbone sharing
   it (loaded once, one pass per file, each student's heads reading the pooled states)
   vs each student run whole (a backbone each, one pass per student and file). CPU and
   wall time per audio-second of the whole call, loading included, best of two
   interleaved rounds, and the ratio.
5. Peak resident memory (``ru_maxrss``) of each measuring process once the models are
   loaded, and at its end.

The teachers and heads here are untrained (random heads, packaged MiniLM weights):
cost does not depend on the weights' values. CPU seconds (``time.process_time``)
count every thread, including time threads spend spinning while they wait for each
other, so wall seconds are printed beside them. Speeds depend on what else runs on
the shared cores: the load average is printed, and comparisons are given as ratios.
With 2 threads on 2 cores that other processes also use, each parallel operation
waits for a thread that is not scheduled: 2-thread figures then vary from run to run
by 3-100x, while 1-thread figures stay within ~10 %.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emolib import backbones, pipeline, prosody, whisper_ct2  # noqa: E402
from emolib import student as st  # noqa: E402
from emolib.audio import SAMPLE_RATE, read_audio  # noqa: E402
from emolib.config import PRESETS, get_config  # noqa: E402
from emolib.losses import distillation_loss, get_variant  # noqa: E402
from emolib.runs import atomic_write_json  # noqa: E402
from emolib.train import make_optimizer  # noqa: E402

from measure import peak_mib, spread, table  # noqa: E402
from emolib.teachers import LinguisticTeacher, ProsodicResNet, load_text_encoder  # noqa: E402

BATCH = 8  # clips per backbone batch, pooled_states' default
VARIANTS = ("full", "no_teachers")


def load_average() -> float:
    return os.getloadavg()[0]


class Clock:
    """Accumulated CPU and wall seconds of the blocks run under it."""

    def __init__(self, cpu: float = 0.0, wall: float = 0.0):
        self.cpu, self.wall = cpu, wall

    def __enter__(self):
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu += time.process_time() - self._cpu
        self.wall += time.perf_counter() - self._wall


def per_audio_second(what: str, clock: Clock, audio: float, **extra) -> dict:
    return {"what": what, "cpu_ms_per_audio_s": 1000 * clock.cpu / audio,
            "wall_ms_per_audio_s": 1000 * clock.wall / audio, **extra}


COST_COLUMNS = [("threads", "threads", "d"), ("what", "", "s"), ("cpu_ms_per_audio_s", "CPU ms / audio-s", ".2f"),
                ("wall_ms_per_audio_s", "wall ms / audio-s", ".2f")]


# -- 1. backbone forward, computed vs cached ---------------------------------------------------


class BackboneCosts:
    """Part 1: the backbone's frozen forward, computed and through the pooled-states cache."""

    def __init__(self, cfg, utterances: list):
        s = self.s = cfg.student
        self.items = [(u.id, u.path) for u in utterances]
        self.audio = sum(min(u.duration, s.max_seconds) for u in utterances)
        self.backbone = backbones.load_backbone(s.backbone, freeze="all", max_seconds=s.max_seconds)
        ordered = sorted(utterances, key=lambda u: u.duration)  # as the cache fill batches them: little padding
        self.batches = [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]
        cut = " (positions cut to the clips)" if isinstance(self.backbone, backbones.WhisperBackbone) else ""
        self.title = (f"1. backbone forward, {s.backbone}{cut}, clips cut at {s.max_seconds:g} s, {s.pooling!r} "
                      f"pooling, {len(self.items)} utterances, {self.audio:.1f} s of audio, batches of {BATCH}:")

    @torch.inference_mode()
    def forward(self) -> None:
        s, pool = self.s, backbones.POOLINGS[self.s.pooling]
        for b in self.batches:
            out = self.backbone(**self.backbone.prepare([read_audio(u.path, SAMPLE_RATE, s.max_seconds) for u in b]))
            torch.stack([pool(h, out.frame_mask) for h in out.hidden_states], dim=1)

    def measure(self, n: int) -> tuple[list[dict], float]:
        """Rows for ``n`` threads (already set) and the computed / cached CPU ratio."""
        s = self.s
        self.forward()  # warm-up
        computed, first, cached = Clock(), Clock(), Clock()
        with computed:
            self.forward()
        old_cache = os.environ.get("EMOLIB_CACHE")
        with tempfile.TemporaryDirectory(prefix="bench-backbone-") as tmp:
            os.environ["EMOLIB_CACHE"] = tmp  # nothing cached yet (paths are read on each call)
            try:
                for clock in (first, cached):
                    with clock:
                        backbones.pooled_states(s.backbone, self.items, max_seconds=s.max_seconds, progress=False,
                                                pooling=s.pooling)
            finally:
                if old_cache is None:
                    del os.environ["EMOLIB_CACHE"]
                else:
                    os.environ["EMOLIB_CACHE"] = old_cache
        rows = [per_audio_second("computed: read, log-mel, encoder, pooling", computed, self.audio, threads=n),
                per_audio_second("pooled_states, empty cache (+ load, hash, write)", first, self.audio, threads=n),
                per_audio_second("pooled_states, read from the cache", cached, self.audio, threads=n)]
        return rows, computed.cpu / cached.cpu


# -- 2. one training step with all KD terms vs cross-entropy -------------------------------------


def step_functions(cfg, data) -> tuple[dict, tuple[int, int]]:
    """variant -> a function running one training step and returning its (CPU, wall, wall of the
    data loading alone) seconds."""
    s, d = cfg.student, cfg.distill
    corpus = data.corpus
    inputs = st.cached_inputs(cfg, corpus, progress=False)
    num_states, hidden = next(iter(inputs["pooled"].values())).shape
    n_classes = len(corpus.classes)
    dims = {"linguistic": pipeline.text_embedding_dim(cfg), "prosodic": cfg.prosodic_teacher.embedding_dim}
    # Teacher outputs as the cache holds them (float32 logits and embeddings per utterance); their
    # values do not change the cost, so seeded random ones stand in for a trained teacher's.
    rng = np.random.default_rng(0)
    cached = {}  # loss term -> (batch key, id -> array)
    for kind, dim in dims.items():
        cached[f"logit_{kind}"] = (f"teacher_logits_{kind}",
                                   {u: rng.standard_normal(n_classes, dtype=np.float32) for u in corpus.ids})
        cached[f"embedding_{kind}"] = (f"teacher_embedding_{kind}",
                                       {u: rng.standard_normal(dim, dtype=np.float32) for u in corpus.ids})
    train_ids = data.fold(1).train_ids
    labels = dict(zip(corpus.ids, corpus.labels()))
    collate = st.make_collate("pooled")

    def make(variant_name: str):
        variant = get_variant(variant_name)
        # the batch carries what the variant uses, as in pipeline.train_student
        teacher = {key: table for term, (key, table) in cached.items() if getattr(variant, term)}
        torch.manual_seed(0)
        model = st.EmoDistillStudent(num_states, hidden, n_classes, dims["linguistic"], dims["prosodic"], s).train()
        optimizer = make_optimizer(model, s.optim)  # the training loop's: no decay on biases and norms
        dataset = st.StudentDataset(train_ids, [labels[i] for i in train_ids], inputs, teacher, "pooled")
        loader = torch.utils.data.DataLoader(dataset, batch_size=s.optim.batch_size, shuffle=True, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(0), drop_last=True)
        batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch

        def step() -> tuple[float, float, float]:
            cpu, wall = time.process_time(), time.perf_counter()
            batch = next(batches)
            loading = time.perf_counter() - wall
            loss, _ = distillation_loss(model(batch), batch, variant, d.tau_linguistic, d.tau_prosodic, d.alpha,
                                        d.beta, d.gamma, s.optim.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.optim.grad_clip)
            optimizer.step()
            return time.process_time() - cpu, time.perf_counter() - wall, loading

        return step

    return {v: make(v) for v in VARIANTS}, (num_states, hidden)


def training_steps(step: dict, n: int, steps: int) -> tuple[list[dict], dict[str, float]]:
    """Rows for ``n`` threads (already set) and the full / no_teachers ratio of the medians."""
    for v in VARIANTS:  # warm-up
        for _ in range(5):
            step[v]()
    times: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
    for i in range(steps):  # interleaved, order alternating, so drifting load hits both alike
        for v in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
            times[v].append(step[v]())
    rows, medians = [], {}
    for v in VARIANTS:
        cpu, wall, loading = (1000 * np.array(t) for t in zip(*times[v]))
        medians[v] = (float(np.median(cpu)), float(np.median(wall)))
        rows.append({"threads": n, "variant": v, "terms": "+".join(get_variant(v).enabled()),
                     "cpu_ms_median": medians[v][0], "wall_ms_median": medians[v][1],
                     "loading_ms_median": float(np.median(loading)),
                     "wall_ms_p10": float(np.percentile(wall, 10)), "wall_ms_p90": float(np.percentile(wall, 90))})
    return rows, {"cpu": medians["full"][0] / medians["no_teachers"][0],
                  "wall": medians["full"][1] / medians["no_teachers"][1]}


STEP_COLUMNS = [("threads", "threads", "d"), ("variant", "variant", "s"), ("cpu_ms_median", "CPU ms", ".3f"),
                ("wall_ms_median", "wall ms", ".3f"), ("loading_ms_median", "of which loading", ".3f"),
                ("wall_ms_p10", "wall p10", ".3f"), ("wall_ms_p90", "wall p90", ".3f"), ("terms", "loss terms", "s")]


# -- 3. inference: the student alone vs the multimodal pipeline ---------------------------------


def untrained_student(cfg, n_classes: int, backbone=None, seed: int = 0) -> st.EmoDistillStudent:
    """The default student with random heads, on ``backbone`` (else a frozen one is loaded)."""
    s = cfg.student
    backbone = backbone or backbones.load_backbone(s.backbone, freeze="all", max_seconds=s.max_seconds)
    torch.manual_seed(seed)
    return st.EmoDistillStudent(backbone.num_hidden_states, st.pooled_width(backbone, s.pooling), n_classes,
                                pipeline.text_embedding_dim(cfg), cfg.prosodic_teacher.embedding_dim, s,
                                backbone=backbone).eval()


class Models:
    """Every model of both inference paths, loaded once; untrained where the training is ours."""

    def __init__(self, cfg, n_classes: int):
        self.student = untrained_student(cfg, n_classes)
        # speech recognition: the student's packaged Whisper weights, encoder and decoder, 30 s windows
        # (the tiny preset's student is a random HuBERT: then the smallest packaged Whisper, tiny.en)
        self.asr_name = backbones.PACKAGED_WHISPER.get(cfg.student.backbone, "tiny.en")
        self.whisper = whisper_ct2.load_whisper(self.asr_name)
        self.mel_30s = whisper_ct2.feature_extractor(self.whisper.config.num_mel_bins)
        self.whisper_tokenizer = whisper_ct2.load_tokenizer(whisper_ct2.packaged_model(self.asr_name)[0])
        self.prompt = whisper_ct2.english_prompt(self.whisper, self.whisper_tokenizer)
        self.text_tokenizer, encoder = load_text_encoder(cfg.linguistic_teacher.model)
        self.max_tokens = cfg.linguistic_teacher.max_tokens
        self.linguistic = LinguisticTeacher(encoder, n_classes, cfg.linguistic_teacher).eval()
        self.prosodic = ProsodicResNet(len(prosody.LLD_NAMES), n_classes, cfg.prosodic_teacher).eval()
        # untrained statistics, like the untrained weights: applying them costs the same
        self.normaliser = prosody.Normaliser(np.zeros(len(prosody.LLD_NAMES), np.float32),
                                             np.ones(len(prosody.LLD_NAMES), np.float32))


COMPONENTS = (
    ("read", "reading the audio (common; in neither total)"),
    ("student_mel", "(a) student: log-mel of the clip"),
    ("student_net", "(a) student: backbone + heads"),
    ("asr", "(b) recognition: log-mel 30 s + encoder 30 s + greedy decoding"),
    ("asr_encoder", "    of which the encoder over the 30 s window (timed alone)"),
    ("linguistic", "(b) linguistic teacher: tokenise + MiniLM"),
    ("opensmile", "(b) openSMILE eGeMAPS LLDs (prosody.extract: reads the file)"),
    ("prosodic", "(b) prosodic teacher: normalise + ResNet"),
    ("speech", "(b) speech model (= (a): same backbone + heads)"),
)
STUDENT = ("student_mel", "student_net")
PIPELINE = ("asr", "linguistic", "opensmile", "prosodic", "speech")


def summed(clocks: dict[str, Clock], keys: tuple[str, ...]) -> Clock:
    return Clock(sum(clocks[k].cpu for k in keys), sum(clocks[k].wall for k in keys))


@torch.inference_mode()
def infer_one(m: Models, path: Path, max_seconds: float, clocks: dict[str, Clock]) -> list[int]:
    """Both inference paths on one utterance, each component under its clock; the transcript ids."""
    with clocks["read"]:
        wave = read_audio(path, SAMPLE_RATE, max_seconds)
    with clocks["student_mel"]:
        prepared = m.student.backbone.prepare([wave])
    with clocks["student_net"]:
        m.student({f"backbone.{k}": v for k, v in prepared.items()})
    with clocks["asr"]:
        features = m.mel_30s(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        ids = whisper_ct2.greedy_decode(m.whisper, features, m.prompt)
    with clocks["asr_encoder"]:
        m.whisper.model.encoder(features)
    with clocks["linguistic"]:
        enc = m.text_tokenizer([m.whisper_tokenizer.decode(ids)], truncation=True, max_length=m.max_tokens,
                               return_tensors="pt")
        m.linguistic({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    with clocks["opensmile"]:
        lld = prosody.extract(path, "lld", max_seconds)
    with clocks["prosodic"]:
        ready, _ = prosody.prepare_lld({"u": lld}, m.normaliser)
        x = torch.from_numpy(ready["u"])[None]
        m.prosodic({"lld": x, "lld_mask": torch.ones(x.shape[:2], dtype=torch.bool)})
    return ids


def inference(m: Models, utterances: list, max_seconds: float, n: int) -> tuple[list[dict], dict, list]:
    """Rows for ``n`` threads (already set), the (b)/(a) ratios and the transcripts (token ids)."""
    audio = sum(min(u.duration, max_seconds) for u in utterances)
    infer_one(m, utterances[0].path, max_seconds, {k: Clock() for k, _ in COMPONENTS})  # warm-up
    clocks = {k: Clock() for k, _ in COMPONENTS}
    transcripts = [infer_one(m, u.path, max_seconds, clocks) for u in utterances]
    clocks["speech"] = summed(clocks, STUDENT)  # the same computation as (a), run once
    totals = {"a": summed(clocks, STUDENT), "b": summed(clocks, PIPELINE)}
    rows = [per_audio_second(label, clocks[k], audio, component=k, threads=n) for k, label in COMPONENTS]
    rows += [per_audio_second("(a) student alone, total", totals["a"], audio, component="total_a", threads=n),
             per_audio_second("(b) multimodal pipeline, total", totals["b"], audio, component="total_b", threads=n)]
    ratio = {"cpu": totals["b"].cpu / totals["a"].cpu, "wall": totals["b"].wall / totals["a"].wall}
    return rows, ratio, transcripts


# -- 4. the ensemble of the folds' students: a shared frozen backbone vs each student whole ----


def ensemble(cfg, data, utterances: list, n: int) -> tuple[list[dict], dict]:
    """Rows for ``n`` threads (already set) and the ratio (each whole) / (shared)."""
    folds, classes = len(data.folds), data.corpus.classes
    cfg = cfg.replace({"student.freeze": "all", "training.num_threads": n})
    students = [(cfg, lambda backbone, k=k: (untrained_student(cfg, len(classes), backbone, seed=k), classes))
                for k in range(folds)]
    files = [u.path for u in utterances]
    audio = sum(min(u.duration, cfg.student.max_seconds) for u in utterances)
    best: dict[bool, Clock] = {}
    for share in (True, False, True, False):
        clock = Clock()
        with clock:
            pipeline._classify(students, files, BATCH, share_backbone=share)
        if share not in best or clock.cpu < best[share].cpu:
            best[share] = clock
    labels = {True: f"{folds} students, frozen backbone shared (loaded once, one pass per file)",
              False: f"{folds} students, each run whole (a backbone and a pass each)"}
    rows = [per_audio_second(labels[share], best[share], audio, threads=n, shared=share) for share in (True, False)]
    return rows, {"cpu": best[False].cpu / best[True].cpu, "wall": best[False].wall / best[True].wall,
                  "students": folds}


def measure(preset: str, utterances: int, steps: int, n: int) -> dict:
    """Every part with ``n`` torch threads, in the calling (fresh) process."""
    torch.set_num_threads(n)
    load = [load_average()]
    cfg = get_config(preset)
    data = pipeline.load_data(cfg)
    chosen = spread(data.corpus.utterances, utterances)
    peaks = {}
    backbone = BackboneCosts(cfg, chosen)
    step, shape = step_functions(cfg, data)
    peaks["backbone and students loaded"] = peak_mib()
    models = Models(cfg, len(data.corpus.classes))
    peaks["every model of both inference paths loaded too"] = peak_mib()
    out: dict = {"threads": n, "corpus": f"{data.corpus.name}, {len(data.corpus)} utterances",
                 "backbone_title": backbone.title, "pooled_shape": shape, "utterances": len(chosen),
                 "audio_s": sum(min(u.duration, cfg.student.max_seconds) for u in chosen)}
    out["backbone_rows"], out["backbone_ratio"] = backbone.measure(n)
    out["step_rows"], out["step_ratio"] = training_steps(step, n, steps)
    out["inference_rows"], out["inference_ratio"], transcripts = inference(models, chosen, cfg.student.max_seconds, n)
    out["ensemble_rows"], out["ensemble_ratio"] = ensemble(cfg, data, chosen, n)
    peaks["at the end"] = peak_mib()
    tokens = [len(t) for t in transcripts]
    out.update(peak_rss_mib=peaks, load_average=load + [load_average()], mean_transcript_tokens=statistics.mean(tokens),
               max_transcript_tokens=max(tokens), asr_model=models.asr_name,
               example={"id": chosen[0].id, "text": chosen[0].text,
                        "recognised": models.whisper_tokenizer.decode(transcripts[0]).strip()})
    return out


def cost_table(results: list[dict], part: str, ratio: str) -> None:
    """A part's rows for every thread count, then its ratio per thread count."""
    table([r for res in results for r in res[f"{part}_rows"]], COST_COLUMNS)
    for res in results:
        r = res[f"{part}_ratio"]
        print(f"  {ratio} with {res['threads']} thread(s): {r['cpu']:.1f}x the CPU time, {r['wall']:.1f}x the "
              "wall time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=PRESETS[:2],
                        help="the corpus and model settings (the built-in corpus; 'paper' needs IEMOCAP)")
    parser.add_argument("--utterances", type=int, default=16, help="utterances for parts 1 and 3")
    parser.add_argument("--steps", type=int, default=200, help="training steps timed per variant (part 2)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    threads = sorted(set(args.threads))

    print(f"torch {torch.__version__}, {os.cpu_count()} cores; preset {args.preset}; one fresh process per thread "
          f"count {threads}", flush=True)
    # the corpus is generated here if it is missing (with worker processes of its own, which a
    # pool's daemonic worker may not start); the measuring processes then only read it
    pipeline.load_data(get_config(args.preset))
    results = []
    for n in threads:
        print(f"measuring with {n} thread(s), load average {load_average():.2f} ...", flush=True)
        with mp.get_context("spawn").Pool(1) as pool:  # a new interpreter for each thread count
            results.append(pool.apply(measure, (args.preset, args.utterances, args.steps, n)))
    first = results[0]

    print(f"\ncorpus {first['corpus']}")
    print(first["backbone_title"])
    table([r for res in results for r in res["backbone_rows"]], COST_COLUMNS)
    print("  computed / cached (CPU): " + ", ".join(f"{res['backbone_ratio']:.0f}x with {res['threads']} thread(s)"
                                                   for res in results))

    (num_states, width), batch = first["pooled_shape"], get_config(args.preset).student.optim.batch_size
    print(f"\n2. one training step of the {args.preset} student on cached pooled states ({num_states} x {width}), "
          f"batch {batch}, median of {args.steps} interleaved steps per variant:")
    table([r for res in results for r in res["step_rows"]], STEP_COLUMNS)
    print("  full / no_teachers (medians): " + "; ".join(
        f"{res['step_ratio']['wall']:.3f} wall, {res['step_ratio']['cpu']:.3f} CPU with {res['threads']} thread(s)"
        for res in results))
    print("  loading: Dataset items + collate (teacher outputs ride in the batch: seeded random stand-ins of the "
          "cached shapes); no teacher runs")

    print(f"\n3. inference, one utterance at a time, {first['utterances']} utterances, {first['audio_s']:.1f} s of "
          "audio; teachers and heads untrained (cost does not depend on the weights):")
    cost_table(results, "inference", "(b) / (a)")
    ex = first["example"]
    print(f"  transcripts (Whisper {first['asr_model']}): {first['mean_transcript_tokens']:.1f} tokens on average (max "
          f"{first['max_transcript_tokens']}); e.g. {ex['id']}: {ex['text']!r} -> {ex['recognised']!r}")

    print(f"\n4. classifying the same files with an ensemble of {first['ensemble_ratio']['students']} students, one "
          "per fold, as predict does (the whole call, loading included; best of 2 rounds):")
    cost_table(results, "ensemble", "each whole / shared")

    print("\n5. peak resident memory of each measuring process:")
    for res in results:
        print(f"  {res['threads']} thread(s): " + ", ".join(f"{v:.0f} MiB {k}" for k, v in res["peak_rss_mib"].items()))
    print("load average (1 min) at the start -> end of each process: " + "; ".join(
        f"{res['threads']} thread(s): {res['load_average'][0]:.2f} -> {res['load_average'][1]:.2f}" for res in results))
    if args.out:
        atomic_write_json(args.out, {"preset": args.preset, "torch": torch.__version__, "cores": os.cpu_count(),
                                     "steps": args.steps, "batch_size": batch, "per_threads": results})
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
