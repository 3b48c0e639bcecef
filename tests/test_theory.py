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
