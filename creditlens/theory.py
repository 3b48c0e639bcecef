"""An exactly posterior-compatible model, enumerable in float64, to verify the credit identities.

The model has ``n_inputs`` inputs x, responses of fixed length T over a vocabulary of V tokens,
and ``n_feedback`` feedback values f. It is given by two tables:

- ``policy[t]``  ``[X, V**t, V]``  pi(y_t | x, y_<t) for every prefix of length t (row-major ids)
- ``feedback``   ``[X, V**T, F]``  p(f | x, y) for every full response

The teacher is the exact posterior pi(y_t | x, f, y_<t) obtained by Bayes' rule from the joint
q(y, f | x) = pi(y | x) p(f | x, y), so section 2 of the math page holds with no approximation.

``ExactModel.batch`` builds input-axis contrasts (x_j, f, y); :func:`feedback_batch` builds feedback-axis
contrasts (x, f_j, y) (section 8 of the math page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from creditlens import credit


@dataclass(frozen=True)
class ExactBatch:
    """Exact log-probs for a batch of (input, feedback, response) triples, float64 throughout."""

    inputs: Tensor  # [B] input index x_i
    feedback: Tensor  # [B] feedback index f_i
    responses: Tensor  # [B, T] token ids
    contrast_inputs: Tensor  # [B, K] input index x_j of each contrast context
    teacher_lp: Tensor  # [B, T]
    student_lp: Tensor  # [B, T]
    contrast_lp: Tensor  # [B, K, T]
    pmi: Tensor  # [B] log p(f | x, y) - log p(f | x)
    contrast_seq_lp: Tensor  # [B, K] log pi(y | x_j, f)
    student_seq_lp: Tensor  # [B] log pi(y | x), from the policy tables
    teacher_seq_lp: Tensor  # [B] log pi(y | x, f), by Bayes' rule on the whole sequence
    mixture_seq_lp: Tensor  # [B] log M(y), the contrastive form's token-level mixture (mean pooling)


@dataclass(frozen=True)
class IdentityErrors:
    """Largest absolute errors of the identities of docs/CREDIT-MATH.md section 5 over a batch."""

    sd_sum_vs_pmi: float  # |sum_t r_t - pMI|
    teacher_form: float  # |sum_t r^teacher - (pMI - lam mean_j log pi(y|x_j,f))|
    shortcut_form: float  # |sum_t r^shortcut - (pMI - lam (mean_j log pi(y|x_j,f) - log pi(y|x)))|
    contrastive_form: float  # |sum_t r^contrastive - ((1-lam) pMI + lam (log pi(y|x,f) - log M(y)))|
    teacher_split: float  # |specific + baseline - teacher_lp|
    sd_split: float  # |specific + shortcut - sd|

    def max(self) -> float:
        return max(vars(self).values())


def _float64(values: object) -> Tensor:
    return torch.tensor(np.asarray(values), dtype=torch.float64)


class ExactModel:
    """Posterior-compatible toy model with exact student, teacher and contrast log-probs."""

    def __init__(self, policy: Sequence[np.ndarray], feedback: np.ndarray):
        policy = [np.asarray(p, dtype=np.float64) for p in policy]
        feedback = np.asarray(feedback, dtype=np.float64)
        if not policy:
            raise ValueError("policy: needs one table per response position (T >= 1)")
        n_inputs, _, vocab = policy[0].shape
        for t, table in enumerate(policy):
            if table.shape != (n_inputs, vocab**t, vocab):
                raise ValueError(f"policy[{t}]: shape {table.shape}, expected {(n_inputs, vocab**t, vocab)}")
            if (table <= 0).any() or not np.allclose(table.sum(-1), 1.0, atol=1e-12):
                raise ValueError(
                    f"policy[{t}]: rows must be strictly positive distributions over {vocab} tokens"
                )
        length = len(policy)
        if feedback.ndim != 3 or feedback.shape[:2] != (n_inputs, vocab**length):
            raise ValueError(f"feedback: shape {feedback.shape}, expected ({n_inputs}, {vocab**length}, F)")
        if (feedback <= 0).any() or not np.allclose(feedback.sum(-1), 1.0, atol=1e-12):
            raise ValueError("feedback: rows p(. | x, y) must be strictly positive distributions")
        self.policy, self.feedback = policy, feedback
        self.n_inputs, self.vocab_size, self.length = n_inputs, vocab, length
        self.n_feedback = feedback.shape[2]
        self._joint_prefix = self._prefix_joints()

    @classmethod
    def random(
        cls,
        n_inputs: int = 4,
        vocab_size: int = 3,
        length: int = 3,
        n_feedback: int = 2,
        seed: int = 0,
        concentration: float = 1.0,
    ) -> ExactModel:
        """Draw every distribution of the tables from a symmetric Dirichlet."""
        rng = np.random.default_rng(seed)

        def dirichlet(shape: tuple[int, ...], k: int) -> np.ndarray:
            draw = rng.dirichlet(np.full(k, concentration), size=shape)
            draw = np.clip(draw, 1e-6, None)
            return draw / draw.sum(-1, keepdims=True)

        policy = [dirichlet((n_inputs, vocab_size**t), vocab_size) for t in range(length)]
        feedback = dirichlet((n_inputs, vocab_size**length), n_feedback)
        return cls(policy, feedback)

    def _prefix_joints(self) -> list[np.ndarray]:
        """``joint[t][x, prefix, f] = P(y_<=t-1 = prefix, f | x)`` for t = 0..T (prefix of length t)."""
        seq_prob = np.ones((self.n_inputs, 1))
        for table in self.policy:
            seq_prob = (seq_prob[:, :, None] * table).reshape(self.n_inputs, -1)
        full = seq_prob[:, :, None] * self.feedback
        joints = []
        for t in range(self.length + 1):
            shape = (self.n_inputs, self.vocab_size**t, self.vocab_size ** (self.length - t), self.n_feedback)
            joints.append(full.reshape(shape).sum(axis=2))
        return joints

    def _prefix_index(self, response: Sequence[int], t: int) -> int:
        index = 0
        for token in response[:t]:
            index = index * self.vocab_size + int(token)
        return index

    def _check_triple(self, x: int, f: int, response: Sequence[int]) -> None:
        if not 0 <= x < self.n_inputs:
            raise ValueError(f"input {x} out of range [0, {self.n_inputs})")
        if not 0 <= f < self.n_feedback:
            raise ValueError(f"feedback {f} out of range [0, {self.n_feedback})")
        if len(response) != self.length or any(not 0 <= int(y) < self.vocab_size for y in response):
            raise ValueError(f"response {list(response)} must be {self.length} ids in [0, {self.vocab_size})")

    def student_logprobs(self, x: int, response: Sequence[int]) -> np.ndarray:
        """``log pi(y_t | x, y_<t)`` for each t: ``[T]``."""
        self._check_triple(x, 0, response)
        return np.array(
            [
                np.log(self.policy[t][x, self._prefix_index(response, t), response[t]])
                for t in range(self.length)
            ]
        )

    def teacher_logprobs(self, x: int, f: int, response: Sequence[int]) -> np.ndarray:
        """Exact posterior ``log pi(y_t | x, f, y_<t)`` for each t: ``[T]``."""
        self._check_triple(x, f, response)
        out = []
        for t in range(self.length):
            before = self._joint_prefix[t][x, self._prefix_index(response, t), f]
            after = self._joint_prefix[t + 1][x, self._prefix_index(response, t + 1), f]
            out.append(np.log(after) - np.log(before))
        return np.array(out)

    def pmi(self, x: int, f: int, response: Sequence[int]) -> float:
        """``log p(f | x, y) - log p(f | x)``."""
        self._check_triple(x, f, response)
        likelihood = self.feedback[x, self._prefix_index(response, self.length), f]
        marginal = self._joint_prefix[0][x, 0, f]
        return float(np.log(likelihood) - np.log(marginal))

    def sequence_logprob(self, x: int, response: Sequence[int]) -> float:
        """``log pi(y | x)``: the probability of the whole sequence, a product over the policy tables."""
        self._check_triple(x, 0, response)
        prob = 1.0
        for t in range(self.length):
            prob *= self.policy[t][x, self._prefix_index(response, t), int(response[t])]
        return float(np.log(prob))

    def sequence_logprob_given_feedback(self, x: int, f: int, response: Sequence[int]) -> float:
        """``log pi(y | x, f) = log pi(y | x) + log p(f | x, y) - log p(f | x)``, from the tables."""
        return self.sequence_logprob(x, response) + self.pmi(x, f, response)

    def next_token_posterior(self, x: int, f: int, prefix: Sequence[int]) -> np.ndarray:
        """``pi(. | x, f, y_<t)`` over the vocabulary after ``prefix`` (length t < T): ``[V]``."""
        t = len(prefix)
        start = self._prefix_index(prefix, t) * self.vocab_size
        after = self._joint_prefix[t + 1][x, start : start + self.vocab_size, f]
        return after / self._joint_prefix[t][x, self._prefix_index(prefix, t), f]

    def mixture_logprob(self, x: int, contrast_inputs: Sequence[int], f: int, response: Sequence[int]) -> float:
        """``log M(y)`` of the contrastive form with mean pooling: M is the token-level policy whose next-token
        weight is ``(pi(v | x, f, y_<t) + K * prod_j pi(v | x_j, f, y_<t) ** (1/K)) / (K + 1)`` (section 5)."""
        k = len(contrast_inputs)
        total = 0.0
        for t in range(self.length):
            prefix, token = list(response[:t]), int(response[t])
            own = self.next_token_posterior(x, f, prefix)[token]
            geometric = np.exp(np.mean([np.log(self.next_token_posterior(xj, f, prefix)[token]) for xj in contrast_inputs]))
            total += np.log((own + k * geometric) / (k + 1))
        return float(total)

    def sample_response(self, x: int, rng: np.random.Generator) -> list[int]:
        """Draw y ~ pi(. | x) token by token."""
        response: list[int] = []
        for t in range(self.length):
            probs = self.policy[t][x, self._prefix_index(response, t)]
            response.append(int(rng.choice(self.vocab_size, p=probs)))
        return response

    def batch(
        self,
        inputs: Sequence[int],
        feedback: Sequence[int],
        responses: Sequence[Sequence[int]],
        contrast_inputs: Sequence[Sequence[int]],
    ) -> ExactBatch:
        """Exact log-probs for B triples and, per triple, K contrast inputs (same f, same y)."""
        if not len(inputs) == len(feedback) == len(responses) == len(contrast_inputs):
            raise ValueError("inputs, feedback, responses and contrast_inputs must all have length B")
        teacher, student, contrast, pmi, contrast_seq, student_seq, teacher_seq, mixture = ([] for _ in range(8))
        for x, f, y, xs in zip(inputs, feedback, responses, contrast_inputs, strict=True):
            teacher.append(self.teacher_logprobs(x, f, y))
            student.append(self.student_logprobs(x, y))
            contrast.append([self.teacher_logprobs(xj, f, y) for xj in xs])
            pmi.append(self.pmi(x, f, y))
            contrast_seq.append([self.sequence_logprob_given_feedback(xj, f, y) for xj in xs])
            student_seq.append(self.sequence_logprob(x, y))
            teacher_seq.append(self.sequence_logprob_given_feedback(x, f, y))
            mixture.append(self.mixture_logprob(x, xs, f, y))
        return ExactBatch(
            inputs=torch.tensor(list(inputs), dtype=torch.long),
            feedback=torch.tensor(list(feedback), dtype=torch.long),
            responses=torch.tensor([list(y) for y in responses], dtype=torch.long),
            contrast_inputs=torch.tensor([list(xs) for xs in contrast_inputs], dtype=torch.long),
            teacher_lp=_float64(teacher),
            student_lp=_float64(student),
            contrast_lp=_float64(contrast),
            pmi=_float64(pmi),
            contrast_seq_lp=_float64(contrast_seq),
            student_seq_lp=_float64(student_seq),
            teacher_seq_lp=_float64(teacher_seq),
            mixture_seq_lp=_float64(mixture),
        )

    def sample_batch(self, batch_size: int, k: int, seed: int = 0) -> ExactBatch:
        """Sample B inputs, feedback and on-policy responses, with K contrast inputs per example.

        Contrast inputs are chosen by :func:`creditlens.credit.draw_contrasts` with the input index as prompt
        id, so the batch needs at least ``k + 1`` distinct inputs for ``k`` contrasts each.
        """
        rng = np.random.default_rng(seed)
        if self.n_inputs < k + 1:
            raise ValueError(f"k={k} contrast inputs need a model with at least {k + 1} inputs")
        inputs = list(rng.permutation(self.n_inputs)[: min(batch_size, self.n_inputs)])
        inputs += [int(rng.integers(self.n_inputs)) for _ in range(batch_size - len(inputs))]
        feedback = [int(rng.integers(self.n_feedback)) for _ in inputs]
        responses = [self.sample_response(x, rng) for x in inputs]
        generator = torch.Generator().manual_seed(seed)
        contrast_inputs = credit.draw_contrasts(inputs, k, generator)
        if len(contrast_inputs[0]) < k:
            raise ValueError(f"k={k} contrast inputs need a batch with at least {k + 1} distinct inputs")
        return self.batch(inputs, feedback, responses, contrast_inputs)


def form_objectives(batch: ExactBatch, lam: float) -> dict[str, Tensor]:
    """The sequence-level objective of every reward form (mean pooling), from sequence quantities: ``[B]`` each.

    - teacher:     pMI - lam * mean_j log pi(y | x_j, f)
    - shortcut:    pMI - lam * (mean_j log pi(y | x_j, f) - log pi(y | x))
    - contrastive: (1 - lam) * pMI + lam * (log pi(y | x, f) - log M(y)),  M = :meth:`ExactModel.mixture_logprob`
    """
    mean_contrast = batch.contrast_seq_lp.mean(dim=1)
    return {
        "teacher": batch.pmi - lam * mean_contrast,
        "shortcut": batch.pmi - lam * (mean_contrast - batch.student_seq_lp),
        "contrastive": (1 - lam) * batch.pmi + lam * (batch.teacher_seq_lp - batch.mixture_seq_lp),
    }


def verify_identities(batch: ExactBatch, lam: float = 0.5) -> IdentityErrors:
    """Check the pMI identity and every form's sequence identity through :mod:`creditlens.credit`."""
    parts = credit.decompose(batch.teacher_lp, batch.contrast_lp, batch.student_lp)
    objectives = form_objectives(batch, lam)
    errors = {}
    for form in credit.FORMS:
        token_sum = credit.credit_rewards(
            batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=lam, form=form)).sum(1)
        sums = credit.sequence_sums(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=lam, form=form))
        errors[f"{form}_form"] = float(
            torch.maximum((token_sum - objectives[form]).abs(), (sums.credit - objectives[form]).abs()).max()
        )
    return IdentityErrors(
        sd_sum_vs_pmi=float(
            (credit.sd_rewards(batch.teacher_lp, batch.student_lp).sum(1) - batch.pmi).abs().max()
        ),
        teacher_split=float((parts.specific + parts.baseline - batch.teacher_lp).abs().max()),
        sd_split=float((parts.specific + parts.shortcut - parts.sd).abs().max()),
        **errors,
    )


@dataclass(frozen=True)
class FeedbackBatch:
    """Exact log-probs for (input, feedback, response) triples with K *feedback* contrasts (x, f_j, y), float64.

    The feedback axis of docs/CREDIT-MATH.md section 8: the same input and response, another feedback value.
    """

    inputs: Tensor  # [B] input index x_i
    feedback: Tensor  # [B] feedback index f_i
    responses: Tensor  # [B, T] token ids
    contrast_feedback: Tensor  # [B, K] feedback index f_j of each contrast context (f_j != f_i)
    teacher_lp: Tensor  # [B, T] log pi(y_t | x, f, y_<t)
    student_lp: Tensor  # [B, T] log pi(y_t | x, y_<t)
    contrast_lp: Tensor  # [B, K, T] log pi(y_t | x, f_j, y_<t)
    pmi: Tensor  # [B] pMI(y; f | x) = log p(f | x, y) - log p(f | x)
    contrast_pmi: Tensor  # [B, K] pMI(y; f_j | x)
    contrast_seq_lp: Tensor  # [B, K] log pi(y | x, f_j), by Bayes' rule on the whole sequence
    student_seq_lp: Tensor  # [B] log pi(y | x)
    teacher_seq_lp: Tensor  # [B] log pi(y | x, f)
    mixture_seq_lp: Tensor  # [B] log M_F(y): the contrastive form's token-level mixture over {f, f_j} (mean pooling)


@dataclass(frozen=True)
class FeedbackAxisErrors:
    """Largest absolute errors of the feedback-axis identities of docs/CREDIT-MATH.md section 8 over a batch."""

    teacher_split: float  # |feedback_specific + feedback_baseline - teacher_lp|
    sd_split: float  # |feedback_specific + feedback_shortcut - sd|
    specific_sum: float  # |sum_t feedback_specific - (pMI(y;f|x) - mean_j pMI(y;f_j|x))|
    shortcut_sum: float  # |sum_t feedback_shortcut - mean_j pMI(y;f_j|x)|
    teacher_form: float  # |sum_t r^teacher - (pMI - lam mean_j log pi(y|x,f_j))|
    shortcut_form: float  # |sum_t r^shortcut - (pMI - lam mean_j pMI(y;f_j|x))|
    contrastive_form: float  # |sum_t r^contrastive - ((1-lam) pMI + lam (log pi(y|x,f) - log M_F(y)))|
    rlcsd_tokens: float  # |r^shortcut at lam=1 - (log pi_T(y_t|x,f) - mean_j log pi_T(y_t|x,f_j))| per token

    def max(self) -> float:
        return max(vars(self).values())


def feedback_mixture_logprob(
    model: ExactModel, x: int, f: int, contrast_feedback: Sequence[int], response: Sequence[int]
) -> float:
    """``log M_F(y)``: the token-level mixture of the contrastive form on the feedback axis (mean pooling),
    next-token weight ``(pi(v | x, f, y_<t) + K * prod_j pi(v | x, f_j, y_<t) ** (1/K)) / (K + 1)``."""
    k = len(contrast_feedback)
    total = 0.0
    for t in range(model.length):
        prefix, token = list(response[:t]), int(response[t])
        own = model.next_token_posterior(x, f, prefix)[token]
        logs = [np.log(model.next_token_posterior(x, fj, prefix)[token]) for fj in contrast_feedback]
        total += np.log((own + k * np.exp(np.mean(logs))) / (k + 1))
    return float(total)


def feedback_batch(
    model: ExactModel,
    inputs: Sequence[int],
    feedback: Sequence[int],
    responses: Sequence[Sequence[int]],
    contrast_feedback: Sequence[Sequence[int]],
) -> FeedbackBatch:
    """Exact log-probs for B triples and, per triple, K contrast feedback values (same x, same y)."""
    if not len(inputs) == len(feedback) == len(responses) == len(contrast_feedback):
        raise ValueError("inputs, feedback, responses and contrast_feedback must all have length B")
    rows: dict[str, list] = {name: [] for name in (
        "teacher", "student", "contrast", "pmi", "contrast_pmi", "contrast_seq", "student_seq", "teacher_seq",
        "mixture")}
    for x, f, y, fs in zip(inputs, feedback, responses, contrast_feedback, strict=True):
        rows["teacher"].append(model.teacher_logprobs(x, f, y))
        rows["student"].append(model.student_logprobs(x, y))
        rows["contrast"].append([model.teacher_logprobs(x, fj, y) for fj in fs])
        rows["pmi"].append(model.pmi(x, f, y))
        rows["contrast_pmi"].append([model.pmi(x, fj, y) for fj in fs])
        rows["contrast_seq"].append([model.sequence_logprob_given_feedback(x, fj, y) for fj in fs])
        rows["student_seq"].append(model.sequence_logprob(x, y))
        rows["teacher_seq"].append(model.sequence_logprob_given_feedback(x, f, y))
        rows["mixture"].append(feedback_mixture_logprob(model, x, f, fs, y))
    return FeedbackBatch(
        inputs=torch.tensor(list(inputs), dtype=torch.long),
        feedback=torch.tensor(list(feedback), dtype=torch.long),
        responses=torch.tensor([list(y) for y in responses], dtype=torch.long),
        contrast_feedback=torch.tensor([list(fs) for fs in contrast_feedback], dtype=torch.long),
        teacher_lp=_float64(rows["teacher"]),
        student_lp=_float64(rows["student"]),
        contrast_lp=_float64(rows["contrast"]),
        pmi=_float64(rows["pmi"]),
        contrast_pmi=_float64(rows["contrast_pmi"]),
        contrast_seq_lp=_float64(rows["contrast_seq"]),
        student_seq_lp=_float64(rows["student_seq"]),
        teacher_seq_lp=_float64(rows["teacher_seq"]),
        mixture_seq_lp=_float64(rows["mixture"]),
    )


def sample_feedback_batch(model: ExactModel, batch_size: int, k: int, seed: int = 0) -> FeedbackBatch:
    """Sample B inputs, feedback values and on-policy responses, with K other feedback values per example
    (drawn without replacement among the values != f_i, so needs ``n_feedback >= k + 1``)."""
    if model.n_feedback < k + 1:
        raise ValueError(f"k={k} contrast feedback values need a model with at least {k + 1} feedback values")
    rng = np.random.default_rng(seed)
    inputs = [int(rng.integers(model.n_inputs)) for _ in range(batch_size)]
    feedback = [int(rng.integers(model.n_feedback)) for _ in inputs]
    responses = [model.sample_response(x, rng) for x in inputs]
    contrast = [
        [int(v) for v in rng.permutation([g for g in range(model.n_feedback) if g != f])[:k]] for f in feedback
    ]
    return feedback_batch(model, inputs, feedback, responses, contrast)


def feedback_form_objectives(batch: FeedbackBatch, lam: float) -> dict[str, Tensor]:
    """The sequence objective of every form on the feedback axis (mean pooling), from sequence quantities: ``[B]``.

    - teacher:     pMI(y;f|x) - lam * mean_j log pi(y | x, f_j)
    - shortcut:    pMI(y;f|x) - lam * mean_j pMI(y;f_j|x)   (lam = 1: the RLCSD sequence reward)
    - contrastive: (1 - lam) * pMI + lam * (log pi(y | x, f) - log M_F(y))
    """
    return {
        "teacher": batch.pmi - lam * batch.contrast_seq_lp.mean(dim=1),
        "shortcut": batch.pmi - lam * batch.contrast_pmi.mean(dim=1),
        "contrastive": (1 - lam) * batch.pmi + lam * (batch.teacher_seq_lp - batch.mixture_seq_lp),
    }


def verify_feedback_identities(batch: FeedbackBatch, lam: float = 0.5) -> FeedbackAxisErrors:
    """Check the feedback-axis split, its sequence sums, every form's objective and the RLCSD token reward,
    all through :mod:`creditlens.credit` applied to the feedback contrasts."""
    parts = credit.decompose(batch.teacher_lp, batch.contrast_lp, batch.student_lp)
    objectives = feedback_form_objectives(batch, lam)
    errors = {}
    for form in credit.FORMS:
        token_sum = credit.credit_rewards(
            batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=lam, form=form)).sum(1)
        errors[f"{form}_form"] = float((token_sum - objectives[form]).abs().max())
    rlcsd = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=1.0, form="shortcut"))
    mean_contrast_pmi = batch.contrast_pmi.mean(dim=1)
    return FeedbackAxisErrors(
        teacher_split=float((parts.specific + parts.baseline - batch.teacher_lp).abs().max()),
        sd_split=float((parts.specific + parts.shortcut - parts.sd).abs().max()),
        specific_sum=float((parts.specific.sum(1) - (batch.pmi - mean_contrast_pmi)).abs().max()),
        shortcut_sum=float((parts.shortcut.sum(1) - mean_contrast_pmi).abs().max()),
        rlcsd_tokens=float((rlcsd - (batch.teacher_lp - batch.contrast_lp.mean(dim=1))).abs().max()),
        **errors,
    )
