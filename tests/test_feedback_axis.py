"""The feedback axis (docs/CREDIT-MATH.md section 8) on the exact model, against brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlens import credit, theory


class Enumerated:
    """Every quantity of the exact model by summing the joint q(y, f | x) over all full responses."""

    def __init__(self, model: theory.ExactModel):
        self.model = model
        self.seqs = list(itertools.product(range(model.vocab_size), repeat=model.length))

    def _index(self, seq) -> int:
        out = 0
        for token in seq:
            out = out * self.model.vocab_size + int(token)
        return out

    def seq_prob(self, x: int, seq) -> float:
        prob = 1.0
        for t in range(self.model.length):
            prob *= self.model.policy[t][x, self._index(seq[:t]), seq[t]]
        return prob

    def joint(self, x: int, f: int, prefix) -> float:
        """P(y_<=len(prefix) = prefix, f | x)."""
        prefix = list(prefix)
        return sum(
            self.seq_prob(x, s) * self.model.feedback[x, self._index(s), f]
            for s in self.seqs
            if list(s[: len(prefix)]) == prefix
        )

    def teacher(self, x: int, f: int, y) -> np.ndarray:
        return np.array([math.log(self.joint(x, f, y[: t + 1])) - math.log(self.joint(x, f, y[:t]))
                         for t in range(self.model.length)])

    def student(self, x: int, y) -> np.ndarray:
        return np.array([math.log(self.model.policy[t][x, self._index(y[:t]), y[t]]) for t in range(self.model.length)])

    def pmi(self, x: int, f: int, y) -> float:
        return math.log(self.model.feedback[x, self._index(y), f]) - math.log(self.joint(x, f, []))

    def seq_given_feedback(self, x: int, f: int, y) -> float:
        """log pi(y | x, f) = log q(y, f | x) - log p(f | x)."""
        return math.log(self.seq_prob(x, y) * self.model.feedback[x, self._index(y), f]) - math.log(self.joint(x, f, []))


@settings(max_examples=30, deadline=None)
@given(
    n_inputs=st.integers(1, 3),
    vocab=st.integers(2, 3),
    length=st.integers(1, 3),
    n_feedback=st.integers(2, 5),
    k=st.integers(1, 4),
    lam=st.floats(0, 1),
    seed=st.integers(0, 10_000),
    concentration=st.sampled_from([0.3, 1.0, 5.0]),
)
def test_feedback_identities_below_1e9(n_inputs, vocab, length, n_feedback, k, lam, seed, concentration):
    k = min(k, n_feedback - 1)
    model = theory.ExactModel.random(n_inputs, vocab, length, n_feedback, seed, concentration)
    batch = theory.sample_feedback_batch(model, batch_size=4, k=k, seed=seed)
    errors = theory.verify_feedback_identities(batch, lam=lam)
    assert errors.max() < 1e-9, errors
    assert (batch.contrast_feedback != batch.feedback.unsqueeze(1)).all()
    for row in batch.contrast_feedback.tolist():
        assert len(set(row)) == k


@pytest.mark.parametrize("n_feedback,k", [(3, 2), (5, 3), (4, 1)])
def test_feedback_split_and_forms_against_enumeration(n_feedback, k):
    """F_t, the split and every form's sequence objective, recomputed here by enumeration, not by the batch."""
    model = theory.ExactModel.random(n_inputs=2, vocab_size=3, length=3, n_feedback=n_feedback, seed=n_feedback)
    batch = theory.sample_feedback_batch(model, batch_size=4, k=k, seed=k)
    brute = Enumerated(model)
    lam = 0.43
    rewards = {form: credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, lam=lam, form=form)
               for form in credit.FORMS}
    parts = credit.decompose(batch.teacher_lp, batch.contrast_lp, batch.student_lp)
    for i in range(4):
        x, f = int(batch.inputs[i]), int(batch.feedback[i])
        fs, y = batch.contrast_feedback[i].tolist(), batch.responses[i].tolist()
        teacher, student = brute.teacher(x, f, y), brute.student(x, y)
        contrast = np.stack([brute.teacher(x, fj, y) for fj in fs])
        baseline = contrast.mean(axis=0)  # F_t, mean pooling
        np.testing.assert_allclose(parts.baseline[i].numpy(), baseline, rtol=0, atol=1e-12)
        np.testing.assert_allclose(parts.specific[i].numpy(), teacher - baseline, rtol=0, atol=1e-12)
        np.testing.assert_allclose(parts.shortcut[i].numpy(), baseline - student, rtol=0, atol=1e-12)
        pmi = brute.pmi(x, f, y)
        mean_contrast_pmi = np.mean([brute.pmi(x, fj, y) for fj in fs])
        # what this feedback explains + what any reprompt raises, summed over the response
        assert parts.specific[i].sum().item() == pytest.approx(pmi - mean_contrast_pmi, abs=1e-9)
        assert parts.shortcut[i].sum().item() == pytest.approx(mean_contrast_pmi, abs=1e-9)
        mixture = sum(
            math.log((math.exp(teacher[t]) + k * math.exp(baseline[t])) / (k + 1)) for t in range(model.length)
        )
        expected = {
            "teacher": pmi - lam * np.mean([brute.seq_given_feedback(x, fj, y) for fj in fs]),
            "shortcut": pmi - lam * mean_contrast_pmi,
            "contrastive": (1 - lam) * pmi + lam * (brute.seq_given_feedback(x, f, y) - mixture),
        }
        for form, value in expected.items():
            assert rewards[form][i].sum().item() == pytest.approx(value, abs=1e-9), form


def test_rlcsd_reward_is_the_shortcut_form_at_lam_1_with_a_wrong_hint():
    """log pi_T(y_t | x, f) - log pi_T(y_t | x, f_wrong): the student term cancels, the sum is the log-odds
    of f over f_wrong that y adds: [log p(f|x,y) - log p(f_wrong|x,y)] - [log p(f|x) - log p(f_wrong|x)]."""
    model = theory.ExactModel.random(n_inputs=2, vocab_size=3, length=3, n_feedback=4, seed=9)
    brute = Enumerated(model)
    rng = np.random.default_rng(0)
    for x, f, wrong in [(0, 1, 3), (1, 0, 2), (1, 3, 1)]:
        y = model.sample_response(x, rng)
        batch = theory.feedback_batch(model, [x], [f], [y], [[wrong]])
        rlcsd = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, lam=1.0, form="shortcut")
        np.testing.assert_allclose(rlcsd[0].numpy(), brute.teacher(x, f, y) - brute.teacher(x, wrong, y),
                                   rtol=0, atol=1e-12)
        other_student = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp - 0.7,
                                              lam=1.0, form="shortcut")
        np.testing.assert_allclose(other_student.numpy(), rlcsd.numpy(), rtol=0, atol=1e-12)
        index = brute._index(y)
        log_odds_given_y = math.log(model.feedback[x, index, f]) - math.log(model.feedback[x, index, wrong])
        log_odds_prior = math.log(brute.joint(x, f, [])) - math.log(brute.joint(x, wrong, []))
        assert rlcsd.sum().item() == pytest.approx(log_odds_given_y - log_odds_prior, abs=1e-9)


def test_both_axes_split_the_same_sd_reward():
    """One response, two decompositions: input axis (x_j, f, y) and feedback axis (x, f_j, y)."""
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=3, n_feedback=3, seed=4)
    rng = np.random.default_rng(1)
    x, f, y = 0, 2, model.sample_response(0, rng)
    by_input = model.batch([x], [f], [y], [[1, 2]])
    by_feedback = theory.feedback_batch(model, [x], [f], [y], [[0, 1]])
    torch_input = credit.decompose(by_input.teacher_lp, by_input.contrast_lp, by_input.student_lp)
    torch_feedback = credit.decompose(by_feedback.teacher_lp, by_feedback.contrast_lp, by_feedback.student_lp)
    np.testing.assert_allclose(torch_input.sd.numpy(), torch_feedback.sd.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose((torch_feedback.specific + torch_feedback.shortcut).numpy(), torch_input.sd.numpy(),
                               rtol=0, atol=1e-12)
    assert not np.allclose(torch_input.specific.numpy(), torch_feedback.specific.numpy())


def test_verify_feedback_identities_detects_a_wrong_objective_and_bad_k():
    model = theory.ExactModel.random(n_inputs=2, vocab_size=3, length=3, n_feedback=3, seed=2)
    batch = theory.sample_feedback_batch(model, 4, 2, seed=0)
    broken = theory.FeedbackBatch(**{**batch.__dict__, "contrast_pmi": batch.contrast_pmi + 0.5})
    errors = theory.verify_feedback_identities(broken, lam=0.5)
    assert errors.shortcut_form > 0.2 and errors.shortcut_sum > 0.4 and errors.teacher_form < 1e-9
    with pytest.raises(ValueError, match="k=3"):
        theory.sample_feedback_batch(model, 4, 3)
