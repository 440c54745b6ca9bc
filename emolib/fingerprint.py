"""Does this machine compute emolib's floats as the committed figures' machine did?
(``python -m emolib numerics``)

Each library that computes on a CPU picks its kernels for the CPU it runs on, and kernels add in
different orders, so the same training on two kinds of CPU ends in different weights and, after a
few epochs, different scores (``emolib.machine.PORTABLE_ENV``). In emolib's portable mode (the
default) every x86-64 CPU with AVX2 runs the same kernels. This module trains a few steps of each
kind of model emolib trains, on fixed random inputs, and digests the weights (the Whisper encoder:
its states on a fixed clip). Digests equal to :data:`RECORDED` mean this machine computes what the
machine that made the committed figures computed, so ``make report`` rebuilds them to the bit, with
any number of cores; different digests mean its figures move by float rounding, about as
much as a new training seed moves them (README, "Results on the built-in corpus").

:data:`RECORDED` was recorded in portable mode on an Intel Xeon with AVX-512 and AMX
(:data:`RECORDED_ON`). Under QEMU emulating an Intel Haswell (AVX2 only) the operations they rest
on gave the same bits (matrix products and their gradients, exp, GELU, softmax, layer norm; the
student's training steps). Under QEMU emulating an AMD EPYC Rome the matrix products agreed but
``exp`` and the gradients through it did not (torch hands ``exp`` to MKL's vector math, which takes
other paths on AMD CPUs), so every digest differed: on AMD CPUs the figures move by float rounding
(README, "The same figures on every machine").
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

#: Digests recorded once in portable mode (see the module docstring).
RECORDED = {
    "prosodic": "f3550a426a2e",
    "student": "849f05e398fb",
    "linguistic": "d9e71a8229db",
    "whisper": "0f2439dc2c28",
}
#: The CPU (``machine.cpu_model``) they were recorded on.
RECORDED_ON = "Intel(R) Xeon(R) Processor"
#: What each digest covers, for the printed table.
WHAT = {
    "prosodic": "prosodic teacher (2D ResNet, default preset), 10 training steps",
    "student": "student heads (default preset), 30 training steps",
    "linguistic": "linguistic teacher (packaged MiniLM), 2 training steps",
    "whisper": "Whisper base encoder, every layer's states on a 2 s clip",
}


def _digest(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _train(model: torch.nn.Module, batch: dict, labels: torch.Tensor, steps: int) -> str:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(batch)["logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _digest(model.parameters())


def fingerprint(parts=tuple(RECORDED)) -> dict[str, str]:
    """``{part: digest}`` for ``parts`` of :data:`RECORDED`, computed in this process (in portable mode the
    digests do not depend on its thread count; in native mode they may)."""
    from .config import get_config

    cfg = get_config("default")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (8,), generator=g)
    lld = torch.randn(8, 300, 25, generator=g)
    mask = torch.ones(8, 300, dtype=torch.bool)
    mask[4:, 200:] = False  # padded utterances too
    states = torch.randn(8, 7, 512, generator=g)
    out: dict[str, str] = {}
    if "prosodic" in parts:
        from .teachers import ProsodicResNet

        torch.manual_seed(0)
        out["prosodic"] = _train(ProsodicResNet(25, 4, cfg.prosodic_teacher), {"lld": lld, "lld_mask": mask},
                                 labels, 10)
    if "student" in parts:
        from .student import EmoDistillStudent

        torch.manual_seed(0)
        out["student"] = _train(EmoDistillStudent(7, 512, 4, 384, 128, cfg.student), {"pooled_states": states},
                                labels, 30)
    if "linguistic" in parts:
        from .teachers import LinguisticTeacher, load_text_encoder

        tokenizer, encoder = load_text_encoder("minilm")
        torch.manual_seed(0)
        text = tokenizer(["i am so angry about this", "what a lovely day", "it is fine", "leave me alone"] * 2,
                         padding=True, return_tensors="pt")
        out["linguistic"] = _train(LinguisticTeacher(encoder, 4, cfg.linguistic_teacher),
                                   {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]},
                                   labels, 2)
    if "whisper" in parts:
        from .backbones import load_backbone

        backbone = load_backbone("whisper-base", freeze="all", max_seconds=12.0, device="cpu")
        t = np.arange(32000) / 16000
        wave = (np.sin(2 * np.pi * 180 * t) + 0.05 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
        with torch.inference_mode():
            out["whisper"] = _digest(backbone(**backbone.prepare([wave])).hidden_states)
    return out
