"""EmoDistill's training objective (Sec. 3, Eqs. 1-5) and the ablation variants of Table 2.

    L = alpha * CE(y, s)
      + beta  * [ KD(s, t_L; tau_L) + KD(s, t_P; tau_P) ]        logit-level KD, Eqs. 1-2
      + gamma * [ -cos(e_L^s, e_L^t) - cos(e_P^s, e_P^t) ]        embedding-level KD, Eqs. 3-4

``KD`` is the KL divergence between the temperature-softened teacher and student
distributions, ``KL(softmax(t/tau) || softmax(s/tau))``, averaged over the batch
(``reduction="batchmean"``: the default ``"mean"`` would also divide by the number
of classes, a known silent bug) and multiplied by ``tau**2`` so that its gradient
keeps the same scale as the temperature changes (Hinton, Vinyals & Dean 2015,
Sec. 2). The gradient with respect to the student's logits is ``tau * (q - p)`` (``q``, ``p``
the student's and teacher's softened distributions): for tau well above 1, ``q - p`` shrinks
like ``1 / tau`` and the factor holds the term on the cross-entropy's scale; below 1 the factor
weakens the term instead (tau = 0.5: a quarter of the KL, half of ``q - p``), so a temperature
sweep's low points also have a weaker KD term (the paper cites Hinton et al. for its logit KD, but whether its Eq. 1 has the
tau^2 factor was lost in extraction: it is our reading). Each teacher has its own
temperature. The KL's target is the teacher's distribution and the cosine is negated, as
the paper's words say ("minimize the KL-Divergence between the predicted logit
distributions of teacher and student", "minimize the negative cosine similarity").

A variant switches terms off; a switched-off term is not computed at all, so it is
exactly zero and contributes no gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

TERMS = ("ce", "logit_linguistic", "logit_prosodic", "embedding_linguistic", "embedding_prosodic")


@dataclass(frozen=True)
class Variant:
    """Which loss terms a student trains with."""

    ce: bool = True
    logit_linguistic: bool = True
    logit_prosodic: bool = True
    embedding_linguistic: bool = True
    embedding_prosodic: bool = True

    def enabled(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name))

    @property
    def needs_linguistic_teacher(self) -> bool:
        return self.logit_linguistic or self.embedding_linguistic

    @property
    def needs_prosodic_teacher(self) -> bool:
        return self.logit_prosodic or self.embedding_prosodic


#: The student rows of Table 2 (rows 1-6), in the paper's order, plus the two
#: single-teacher logit-KD settings of the temperature sweep (Fig. 2). Rows 7 and 8
#: (a teacher alone) are the teachers' own results.
VARIANTS: dict[str, Variant] = {
    "full": Variant(),
    "no_logit_kd": Variant(logit_linguistic=False, logit_prosodic=False),
    "no_embedding_kd": Variant(embedding_linguistic=False, embedding_prosodic=False),
    "no_prosodic_teacher": Variant(logit_prosodic=False, embedding_prosodic=False),
    "no_linguistic_teacher": Variant(logit_linguistic=False, embedding_linguistic=False),
    "no_teachers": Variant(logit_linguistic=False, logit_prosodic=False, embedding_linguistic=False,
                           embedding_prosodic=False),  # plain fine-tuning of the speech model
    # Fig. 2 left: sweep tau_P with the linguistic logit-KD term removed.
    "no_linguistic_logit_kd": Variant(logit_linguistic=False),
    # Fig. 2 right: sweep tau_L with the prosodic logit-KD term removed.
    "no_prosodic_logit_kd": Variant(logit_prosodic=False),
}

ABLATION_VARIANTS = ("full", "no_logit_kd", "no_embedding_kd", "no_prosodic_teacher", "no_linguistic_teacher",
                     "no_teachers")


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def logit_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(t / tau) || softmax(s / tau)), averaged over the batch (Hinton et al. 2015)."""
    if tau <= 0:
        raise ValueError(f"temperature must be positive, got {tau}")
    log_p_student = F.log_softmax(student_logits / tau, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / tau, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * tau**2


def embedding_kd(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity (Eqs. 3-4), averaged over the batch; in [-1, 1]."""
    if student_embedding.shape != teacher_embedding.shape:
        raise ValueError(f"embedding shapes differ: student {tuple(student_embedding.shape)} "
                         f"vs teacher {tuple(teacher_embedding.shape)}")
    return -F.cosine_similarity(student_embedding, teacher_embedding, dim=-1, eps=1e-8).mean()


def distillation_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], variant: Variant,
    tau_linguistic: float, tau_prosodic: float, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 5. ``outputs`` holds the student's ``logits``, ``embedding_linguistic`` and
    ``embedding_prosodic``; ``batch`` holds ``labels`` and the cached teacher outputs
    ``teacher_logits_linguistic``, ``teacher_embedding_linguistic``, ... that the
    variant needs. Returns the total and every term (switched-off terms are zero
    constants, for logging)."""
    logits = outputs["logits"]
    zero = logits.new_zeros(())
    terms = {name: zero for name in TERMS}
    if variant.ce:  # unweighted, as the paper gives no class weights (IEMOCAP's 4 classes: 1,708 to 1,084 turns)
        terms["ce"] = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=label_smoothing)
    if variant.logit_linguistic:
        terms["logit_linguistic"] = logit_kd(logits.float(), batch["teacher_logits_linguistic"].float(), tau_linguistic)
    if variant.logit_prosodic:
        terms["logit_prosodic"] = logit_kd(logits.float(), batch["teacher_logits_prosodic"].float(), tau_prosodic)
    if variant.embedding_linguistic:
        terms["embedding_linguistic"] = embedding_kd(outputs["embedding_linguistic"].float(),
                                                     batch["teacher_embedding_linguistic"].float())
    if variant.embedding_prosodic:
        terms["embedding_prosodic"] = embedding_kd(outputs["embedding_prosodic"].float(),
                                                   batch["teacher_embedding_prosodic"].float())
    total = (alpha * terms["ce"]
             + beta * (terms["logit_linguistic"] + terms["logit_prosodic"])
             + gamma * (terms["embedding_linguistic"] + terms["embedding_prosodic"]))
    return total, terms
