"""Each loss term against hand-computed values, and each variant switching off exactly its terms."""
import math

import pytest
import torch

from emolib.losses import ABLATION_VARIANTS, TERMS, VARIANTS, distillation_loss, embedding_kd, get_variant, logit_kd


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z, tau):
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 4.0])
def test_logit_kd_matches_hand_computed_kl_times_tau_squared(tau):
    s = [[1.0, 0.0, -1.0, 0.5], [0.2, 0.1, 0.0, -0.3]]
    t = [[2.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    expected = sum(_kl(_softmax(ti, tau), _softmax(si, tau)) for si, ti in zip(s, t)) / 2 * tau**2
    got = logit_kd(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), tau)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_logit_kd_single_example_exact_value():
    # student uniform over 2 classes, teacher logits (ln 3, 0) at tau = 1 -> teacher (3/4, 1/4)
    # KL = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2) = 3/4 ln 1.5 - 1/4 ln 2
    got = logit_kd(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), 1.0)
    assert got.item() == pytest.approx(0.75 * math.log(1.5) - 0.25 * math.log(2.0), rel=1e-6)


def test_logit_kd_is_batchmean_not_elementwise_mean():
    s, t = torch.zeros(3, 4), torch.tensor([[3.0, 0, 0, 0]] * 3)
    one = logit_kd(s[:1], t[:1], 1.0)
    assert logit_kd(s, t, 1.0).item() == pytest.approx(one.item(), rel=1e-6)  # batch size does not scale it
    # student uniform (1/4 each), teacher p = softmax(3, 0, 0, 0): KL = sum_c p_c ln(4 p_c) = 0.8573...;
    # "mean" would have divided it by the 4 classes as well
    p = _softmax([3.0, 0.0, 0.0, 0.0], 1.0)
    assert one.item() == pytest.approx(sum(pi * math.log(4 * pi) for pi in p), rel=1e-6)
    assert one.item() == pytest.approx(0.8573, abs=1e-4)


def test_logit_kd_zero_when_equal_and_rejects_bad_tau():
    z = torch.randn(5, 4)
    assert logit_kd(z, z.clone(), 0.5).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        logit_kd(z, z, 0.0)


def test_embedding_kd_is_negative_cosine():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    # cosines 0 and 1 -> mean -0.5
    assert embedding_kd(s, t).item() == pytest.approx(-0.5, abs=1e-6)
    assert embedding_kd(s, -s).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        embedding_kd(torch.zeros(2, 3), torch.zeros(2, 4))


def _batch_and_outputs(requires_grad=True):
    g = torch.Generator().manual_seed(0)
    out = {"logits": torch.randn(4, 4, generator=g, requires_grad=requires_grad),
           "embedding_linguistic": torch.randn(4, 6, generator=g, requires_grad=requires_grad),
           "embedding_prosodic": torch.randn(4, 3, generator=g, requires_grad=requires_grad)}
    batch = {"labels": torch.tensor([0, 1, 2, 3]),
             "teacher_logits_linguistic": torch.randn(4, 4, generator=g),
             "teacher_logits_prosodic": torch.randn(4, 4, generator=g),
             "teacher_embedding_linguistic": torch.randn(4, 6, generator=g),
             "teacher_embedding_prosodic": torch.randn(4, 3, generator=g)}
    return out, batch


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_term_by_hand(smoothing):
    # logits (ln 3, 0) and (0, 0): p(label) = 3/4 and 1/2; CE = -(ln 3/4 + ln 1/2) / 2.
    # Label smoothing e mixes the one-hot target with uniform: -sum_c ((1-e) y_c + e/K) ln p_c.
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    p = [[0.75, 0.25], [0.5, 0.5]]
    expected = sum(-sum(((1 - smoothing) * (c == y) + smoothing / 2) * math.log(p[i][c]) for c in range(2))
                   for i, y in enumerate([0, 1])) / 2
    _, terms = distillation_loss({"logits": logits}, {"labels": labels}, get_variant("no_teachers"), 1.0, 1.0,
                                 label_smoothing=smoothing)
    assert terms["ce"].item() == pytest.approx(expected, rel=1e-6)
    if smoothing == 0.0:
        assert expected == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)


def test_total_is_eq5_with_named_coefficients():
    out, batch = _batch_and_outputs()
    total, terms = distillation_loss(out, batch, get_variant("full"), tau_linguistic=4.0, tau_prosodic=0.5,
                                     alpha=0.7, beta=2.0, gamma=0.3)
    expected = (0.7 * terms["ce"] + 2.0 * (terms["logit_linguistic"] + terms["logit_prosodic"])
                + 0.3 * (terms["embedding_linguistic"] + terms["embedding_prosodic"]))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["logit_linguistic"].item() == pytest.approx(
        logit_kd(out["logits"], batch["teacher_logits_linguistic"], 4.0).item(), rel=1e-6)
    assert terms["logit_prosodic"].item() == pytest.approx(
        logit_kd(out["logits"], batch["teacher_logits_prosodic"], 0.5).item(), rel=1e-6)
    for kind in ("linguistic", "prosodic"):  # each term is its own function's value (checked by hand above)
        assert terms[f"embedding_{kind}"].item() == pytest.approx(
            embedding_kd(out[f"embedding_{kind}"], batch[f"teacher_embedding_{kind}"]).item(), rel=1e-6)
    assert terms["ce"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(out["logits"], batch["labels"]).item(), rel=1e-6)


def test_total_of_one_hand_computed_example():
    # one utterance, 2 classes, the student's logits (0, 0): p = (1/2, 1/2), label 0 -> CE = ln 2.
    # Linguistic teacher (ln 3, 0) at tau 1 and prosodic teacher (2 ln 3, 0) at tau 2 both soften
    # to q = (3/4, 1/4): KL(q || p) = K = 3/4 ln 1.5 + 1/4 ln 0.5, times tau^2 = 1 and 4.
    # Embeddings: student (1, 0) vs linguistic (1, 1) -> -cos = -1/sqrt 2; vs prosodic (2, 0) -> -1.
    k = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    out = {"logits": torch.zeros(1, 2), "embedding_linguistic": torch.tensor([[1.0, 0.0]]),
           "embedding_prosodic": torch.tensor([[1.0, 0.0]])}
    batch = {"labels": torch.tensor([0]), "teacher_logits_linguistic": torch.tensor([[math.log(3.0), 0.0]]),
             "teacher_logits_prosodic": torch.tensor([[2 * math.log(3.0), 0.0]]),
             "teacher_embedding_linguistic": torch.tensor([[1.0, 1.0]]),
             "teacher_embedding_prosodic": torch.tensor([[2.0, 0.0]])}
    total, terms = distillation_loss(out, batch, get_variant("full"), tau_linguistic=1.0, tau_prosodic=2.0,
                                     alpha=0.7, beta=2.0, gamma=0.3)
    expected = {"ce": math.log(2.0), "logit_linguistic": k, "logit_prosodic": 4 * k,
                "embedding_linguistic": -1 / math.sqrt(2.0), "embedding_prosodic": -1.0}
    assert {name: value.item() for name, value in terms.items()} == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(0.7 * math.log(2.0) + 2.0 * 5 * k + 0.3 * (-1 / math.sqrt(2.0) - 1.0),
                                         rel=1e-6)


#: The terms each variant trains with, written out from the paper's Table 2 and Fig. 2 (not read
#: from the variants themselves, so that a wrong definition fails here).
EXPECTED_TERMS = {
    "full": {"ce", "logit_linguistic", "logit_prosodic", "embedding_linguistic", "embedding_prosodic"},
    "no_logit_kd": {"ce", "embedding_linguistic", "embedding_prosodic"},
    "no_embedding_kd": {"ce", "logit_linguistic", "logit_prosodic"},
    "no_prosodic_teacher": {"ce", "logit_linguistic", "embedding_linguistic"},
    "no_linguistic_teacher": {"ce", "logit_prosodic", "embedding_prosodic"},
    "no_teachers": {"ce"},
    "no_linguistic_logit_kd": {"ce", "logit_prosodic", "embedding_linguistic", "embedding_prosodic"},
    "no_prosodic_logit_kd": {"ce", "logit_linguistic", "embedding_linguistic", "embedding_prosodic"},
}


def test_every_variant_is_pinned():
    assert set(VARIANTS) == set(EXPECTED_TERMS)


@pytest.mark.parametrize("name", list(EXPECTED_TERMS))
def test_each_variant_switches_off_exactly_its_terms(name):
    variant = get_variant(name)
    assert set(variant.enabled()) == EXPECTED_TERMS[name]
    assert variant.needs_linguistic_teacher == any("linguistic" in t for t in EXPECTED_TERMS[name])
    assert variant.needs_prosodic_teacher == any("prosodic" in t for t in EXPECTED_TERMS[name])
    out, batch = _batch_and_outputs()
    # a teacher the variant does not need is absent from the batch: the loss must not touch it
    if not variant.needs_linguistic_teacher:
        del batch["teacher_logits_linguistic"], batch["teacher_embedding_linguistic"]
    if not variant.needs_prosodic_teacher:
        del batch["teacher_logits_prosodic"], batch["teacher_embedding_prosodic"]
    total, terms = distillation_loss(out, batch, variant, 2.0, 1.0)
    for term in TERMS:
        if term in EXPECTED_TERMS[name]:
            assert terms[term].item() != 0.0, term
        else:
            assert terms[term].item() == 0.0 and not terms[term].requires_grad, term
    total.backward()
    # a head whose every term is off receives no gradient at all
    if not (variant.embedding_linguistic):
        assert out["embedding_linguistic"].grad is None
    if not (variant.embedding_prosodic):
        assert out["embedding_prosodic"].grad is None


def test_table2_rows_are_named_and_ordered():
    assert ABLATION_VARIANTS == ("full", "no_logit_kd", "no_embedding_kd", "no_prosodic_teacher",
                                 "no_linguistic_teacher", "no_teachers")
    assert get_variant("no_teachers").enabled() == ("ce",)
    assert set(get_variant("no_linguistic_logit_kd").enabled()) == set(TERMS) - {"logit_linguistic"}
    with pytest.raises(KeyError, match="variants"):
        get_variant("nope")
