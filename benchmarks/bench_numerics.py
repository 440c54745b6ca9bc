"""What portable numerics cost on this CPU: each kind of model's work in ``EMOLIB_NUMERICS=portable``
(every library capped at its AVX2 kernels, the default) against ``native`` (each library's own kernels
for this CPU). A script that prints figures, not a test; it asserts nothing about timing:

    python benchmarks/bench_numerics.py [--repeats 5] [--threads 1] [--rounds 2] [--out numerics.json]

Each mode runs in a fresh process (the libraries read their caps once, at their first operation),
``--rounds`` times alternately (native, portable, native, ...), and the best round of each counts. The
parts, on fixed random inputs of the ``default`` preset's sizes:

1. the prosodic teacher (2D ResNet): training steps on batches of 32 utterances of 4 s of LLDs;
2. the student on cached pooled states: training steps on batches of 32;
3. the linguistic teacher (packaged MiniLM): training steps on batches of 32 sentences;
4. the Whisper base encoder (the student's frozen backbone): states of 8 clips of 4 s, per audio-second
   (the report computes them once per corpus and caches them).

CPU milliseconds per step (per audio-second for Whisper), and the ratio portable / native: above 1,
portable is slower. On a CPU without AVX-512 both modes run the same kernels and the ratio is about 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import table  # noqa: E402  (the scripts' folder is on sys.path)

MEASURE = r"""
import json, sys, time
import emolib  # first: it applies EMOLIB_NUMERICS before torch computes anything
import numpy as np, torch
from emolib import machine
from emolib.config import get_config
from emolib.student import EmoDistillStudent
from emolib.teachers import LinguisticTeacher, ProsodicResNet, load_text_encoder

repeats, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
cfg = get_config("default")
g = torch.Generator().manual_seed(0)
labels = torch.randint(0, 4, (32,), generator=g)

def steps(model, batch, n):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    def one():
        loss = torch.nn.functional.cross_entropy(model(batch)["logits"], labels)
        opt.zero_grad(); loss.backward(); opt.step()
    one()  # warm-up: first-call allocations and kernel choice
    t = time.process_time()
    for _ in range(n):
        one()
    return 1000 * (time.process_time() - t) / n

out = {"numerics": machine.numerics_label(machine.numerics())}
lld = torch.randn(32, 400, 25, generator=g)
out["prosodic"] = steps(ProsodicResNet(25, 4, cfg.prosodic_teacher), {"lld": lld, "lld_mask": torch.ones(32, 400, dtype=torch.bool)}, repeats)
out["student"] = steps(EmoDistillStudent(7, 512, 4, 384, 128, cfg.student), {"pooled_states": torch.randn(32, 7, 512, generator=g)}, 20 * repeats)
tokenizer, encoder = load_text_encoder("minilm")
text = tokenizer(["i can not believe you would do this to me again today"] * 32, return_tensors="pt")
out["linguistic"] = steps(LinguisticTeacher(encoder, 4, cfg.linguistic_teacher), dict(text), repeats)
from emolib.backbones import load_backbone
backbone = load_backbone("whisper-base", freeze="all", max_seconds=12.0, device="cpu")
waves = [np.random.default_rng(i).standard_normal(64000).astype(np.float32) * 0.1 for i in range(8)]
with torch.inference_mode():
    backbone(**backbone.prepare(waves[:1]))
    t = time.process_time()
    for _ in range(max(1, repeats // 2)):
        backbone(**backbone.prepare(waves))
    out["whisper"] = 1000 * (time.process_time() - t) / (max(1, repeats // 2) * 8 * 4.0)
print(json.dumps(out))
"""

PARTS = [("prosodic", "prosodic teacher, training step (32 x 4 s of LLDs)", "ms / step"),
         ("student", "student on cached states, training step (32)", "ms / step"),
         ("linguistic", "linguistic teacher (MiniLM), training step (32)", "ms / step"),
         ("whisper", "Whisper base encoder, states (8 clips of 4 s)", "ms / audio-s")]


def measure(mode: str, repeats: int, threads: int) -> dict:
    from emolib.machine import PORTABLE_ENV

    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}  # each child applies its own mode
    env.update(EMOLIB_NUMERICS=mode, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", MEASURE, str(repeats), str(threads)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="training steps per part (x20 for the student)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the report trains with 1)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per mode; the best counts")
    parser.add_argument("--out", metavar="FILE", help="also write the figures to this JSON file")
    args = parser.parse_args()
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for mode in ("native", "portable"):
            found = measure(mode, args.repeats, args.threads)
            kept = best.setdefault(mode, found)
            for part, _, _ in PARTS:
                kept[part] = min(kept[part], found[part])
    print(f"native: {best['native']['numerics']}; portable: {best['portable']['numerics']}; "
          f"{args.threads} thread(s), best of {args.rounds} rounds")
    rows = [{"part": what, "unit": unit, "native": best["native"][part], "portable": best["portable"][part],
             "ratio": best["portable"][part] / best["native"][part]} for part, what, unit in PARTS]
    table(rows, [("part", "part", "s"), ("unit", "unit", "s"), ("native", "native", ".1f"),
                 ("portable", "portable", ".1f"), ("ratio", "portable / native", ".2f")])
    if args.out:
        from emolib.runs import atomic_write_json

        atomic_write_json(Path(args.out), {"threads": args.threads, "rounds": args.rounds, "rows": rows,
                                           "numerics": {m: best[m]["numerics"] for m in best}})


if __name__ == "__main__":
    main()
