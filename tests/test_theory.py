"""The exact model against brute-force enumeration, and the identities of the math page."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlens import credit, theory


def _brute_force(model: theory.ExactModel, x: int, f: int, response: list[int]) -> dict:
    """Teacher log-probs and pMI by summing the joint over every full response (no prefix tables)."""
    seqs = list(itertools.product(range(model.vocab_size), repeat=model.length))

    def seq_prob(xx, seq):
        prob = 1.0
        for t in range(model.length):
            prefix = 0
            for token in seq[:t]:
                prefix = prefix * model.vocab_size + token
            prob *= model.policy[t][xx, prefix, seq[t]]
        return prob

    def index(seq):
        out = 0
        for token in seq:
            out = out * model.vocab_size + token
        return out

    def joint_prefix(xx, prefix):
        return sum(
            seq_prob(xx, s) * model.feedback[xx, index(s), f]
            for s in seqs
            if list(s[: len(prefix)]) == list(prefix)
        )

    teacher = [
        math.log(joint_prefix(x, response[: t + 1])) - math.log(joint_prefix(x, response[:t]))
        for t in range(model.length)
    ]
    marginal = joint_prefix(x, [])
    pmi = math.log(model.feedback[x, index(response), f]) - math.log(marginal)
    return {"teacher": teacher, "pmi": pmi, "student_seq": math.log(seq_prob(x, response))}


def test_exact_model_matches_brute_force():
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=3, n_feedback=3, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, f = int(rng.integers(3)), int(rng.integers(3))
        y = model.sample_response(x, rng)
        ref = _brute_force(model, x, f, y)
        np.testing.assert_allclose(model.teacher_logprobs(x, f, y), ref["teacher"], rtol=0, atol=1e-12)
        assert model.pmi(x, f, y) == pytest.approx(ref["pmi"], abs=1e-12)
        assert model.student_logprobs(x, y).sum() == pytest.approx(ref["student_seq"], abs=1e-12)


def test_teacher_is_a_distribution_and_differs_from_student():
    model = theory.ExactModel.random(n_inputs=2, vocab_size=4, length=2, seed=1)
    total = sum(math.exp(model.teacher_logprobs(0, 1, [0, y])[1]) for y in range(4))
    assert total == pytest.approx(1.0, abs=1e-12)
    assert not np.allclose(model.teacher_logprobs(0, 1, [0, 1]), model.student_logprobs(0, [0, 1]))


@settings(max_examples=40, deadline=None)
@given(
    n_inputs=st.integers(3, 5),
    vocab=st.integers(2, 4),
    length=st.integers(1, 4),
    n_feedback=st.integers(2, 3),
    k=st.integers(1, 2),
    lam=st.floats(0, 1),
    seed=st.integers(0, 10_000),
    concentration=st.sampled_from([0.3, 1.0, 5.0]),
)
def test_identities_below_1e9(n_inputs, vocab, length, n_feedback, k, lam, seed, concentration):
    model = theory.ExactModel.random(n_inputs, vocab, length, n_feedback, seed, concentration)
    batch = model.sample_batch(batch_size=n_inputs + 1, k=k, seed=seed)
    errors = theory.verify_identities(batch, lam=lam)
    assert errors.max() < 1e-9, errors
    # the contrast inputs never share the example's input
    assert (batch.contrast_inputs != batch.inputs.unsqueeze(1)).all()


def test_verify_identities_detects_a_broken_teacher():
    model = theory.ExactModel.random(n_inputs=4, vocab_size=3, length=3, seed=2)
    batch = model.sample_batch(5, 2, seed=0)
    broken = theory.ExactBatch(**{**batch.__dict__, "teacher_lp": batch.student_lp})
    assert theory.verify_identities(broken).sd_sum_vs_pmi > 1e-3


def test_sd_rewards_of_exact_model_telescope_per_token():
    """r_t = log p(f | x, y_<=t) - log p(f | x, y_<t): the filtering increment of section 2."""
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=4, seed=7)
    batch = model.sample_batch(3, 1, seed=1)
    rewards = credit.sd_rewards(batch.teacher_lp, batch.student_lp)
    for i in range(3):
        x, f = int(batch.inputs[i]), int(batch.feedback[i])
        y = batch.responses[i].tolist()
        joints = model._joint_prefix
        for t in range(model.length):
            p_before = joints[t][x, model._prefix_index(y, t), f] / math.exp(
                model.student_logprobs(x, y)[:t].sum()
            )
            p_after = joints[t + 1][x, model._prefix_index(y, t + 1), f] / math.exp(
                model.student_logprobs(x, y)[: t + 1].sum()
            )
            assert rewards[i, t].item() == pytest.approx(math.log(p_after) - math.log(p_before), abs=1e-10)


def test_invalid_tables_are_rejected():
    good = theory.ExactModel.random(n_inputs=2, vocab_size=2, length=2, seed=0)
    with pytest.raises(ValueError, match=r"policy\[1\]"):
        theory.ExactModel([good.policy[0], good.policy[1][:, :1]], good.feedback)
    with pytest.raises(ValueError, match="feedback"):
        theory.ExactModel(good.policy, good.feedback * 2)
    with pytest.raises(ValueError, match="response"):
        good.teacher_logprobs(0, 0, [0, 5])
    with pytest.raises(ValueError, match="k=3"):
        good.sample_batch(2, 3)


def test_every_form_sums_to_its_sequence_objective_written_out():
    """Section 5 per form, with the sequence quantities recomputed here by enumeration (not by the batch)."""
    model = theory.ExactModel.random(n_inputs=4, vocab_size=3, length=3, n_feedback=2, seed=11)
    batch = model.sample_batch(5, 2, seed=3)
    lam = 0.37
    for i in range(5):
        x, f = int(batch.inputs[i]), int(batch.feedback[i])
        xs = batch.contrast_inputs[i].tolist()
        y = batch.responses[i].tolist()
        brute = [_brute_force(model, xx, f, y) for xx in [x, *xs]]
        pmi = brute[0]["pmi"]
        seq_given_f = [b["student_seq"] + b["pmi"] for b in brute]  # log pi(y | x', f) by Bayes
        contrast_mean = sum(seq_given_f[1:]) / len(xs)
        mixture = 0.0
        for t in range(model.length):
            own = math.exp(brute[0]["teacher"][t])
            geometric = math.exp(sum(b["teacher"][t] for b in brute[1:]) / len(xs))
            mixture += math.log((own + len(xs) * geometric) / (len(xs) + 1))
        expected = {
            "teacher": pmi - lam * contrast_mean,
            "shortcut": pmi - lam * (contrast_mean - brute[0]["student_seq"]),
            "contrastive": (1 - lam) * pmi + lam * (seq_given_f[0] - mixture),
        }
        for form, value in expected.items():
            rewards = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=lam, form=form))
            assert rewards[i].sum().item() == pytest.approx(value, abs=1e-9), form


def test_contrastive_mixture_is_a_distribution_under_logmeanexp_pooling_and_bounded():
    """With logmeanexp pooling M(y) = prod_t mean_{x' in {x, x_j}} pi(y_t | x', f, y_<t) sums to 1 over y, and
    the lam = 1 contrastive sum lies in [log pi(y|x,f) - log M(y) <= T log(K+1)]."""
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=3, seed=5)
    x, xs, f = 0, [1, 2], 1
    total = 0.0
    for y in itertools.product(range(3), repeat=3):
        prob = 1.0
        for t in range(3):
            prob *= np.mean([model.next_token_posterior(xx, f, list(y[:t]))[y[t]] for xx in [x, *xs]])
        total += prob
        batch = model.batch([x], [f], [list(y)], [xs])
        nce = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=1.0, pool="logmeanexp", form="contrastive"))
        assert nce.sum().item() <= 3 * math.log(3) + 1e-12
        assert nce.sum().item() == pytest.approx(batch.teacher_seq_lp.item() - math.log(prob), abs=1e-9)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_verify_identities_detects_a_wrong_form():
    model = theory.ExactModel.random(n_inputs=4, vocab_size=3, length=3, seed=2)
    batch = model.sample_batch(5, 2, seed=0)
    broken = theory.ExactBatch(**{**batch.__dict__, "student_seq_lp": batch.student_seq_lp + 0.5})
    errors = theory.verify_identities(broken, lam=0.5)
    assert errors.shortcut_form > 0.2 and errors.teacher_form < 1e-9
