"""GRPO and SD trainers: TRL's ``GRPOTrainer`` and ``SDPOTrainer`` with environment feedback, phase
timing and per-token run logs (the CREDIT trainer derives from :class:`SDTrainer`)."""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer
from trl.experimental.sdpo import SDPOTrainer
from trl.trainer.utils import selective_log_softmax

from creditlens.training.feedback import FeedbackContextBuilder
from creditlens.training.runlog import RunContext, RunLogMixin


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution: ``[B, T, V] -> [B, T]`` (one row at a time, in float32)."""
    rows = []
    for row in logits.detach():
        log_probs = torch.log_softmax(row.float(), dim=-1)
        rows.append(-(log_probs.exp() * log_probs).sum(dim=-1))
    return torch.stack(rows)


class SDTrainer(RunLogMixin, SDPOTrainer):
    """TRL's SDPO with per-rollout environment feedback in the teacher's reprompt.

    The per-token table logs ``student_logprob``, ``teacher_logprob`` and, in ``sampled_token`` mode,
    the advantage ``r_t = log pi_T - log pi_S`` that multiplies ``grad log pi_S`` in the loss (NaN in
    the logit modes, whose loss is a divergence, not an advantage).
    """

    def __init__(self, *args: Any, run: RunContext, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher_context_builder = FeedbackContextBuilder(self, run.reward)
        self._init_runlog(run)

    def sample_rollouts(self, inputs):
        with self.timer("generation"):
            return super().sample_rollouts(inputs)

    def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
        if torch.is_grad_enabled():
            return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
        with self.timer("scoring"):
            return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)

    def _prepare_training_batch(self, inputs):
        batch = super()._prepare_training_batch(inputs)
        builder = self.teacher_context_builder
        contexts = [builder.context_text(i) for i in range(len(inputs))]
        batch["sample_index"] = self._remember_rollouts(inputs, contexts)
        return batch

    def _sampled_logprobs(self, logits) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher log-probs of the sampled tokens, ``[B, T]`` each."""
        ids = logits.completion_ids
        return selective_log_softmax(logits.student_logits, ids), selective_log_softmax(
            logits.teacher_logits, ids
        )

    def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
        loss = super()._compute_self_distillation_loss(model, inputs, distillation_logits)
        with torch.no_grad(), self.timer("logging"):
            student_lp, teacher_lp = self._sampled_logprobs(distillation_logits)
            advantage = teacher_lp - student_lp
            if self.args.distillation_mode != "sampled_token":
                advantage = torch.full_like(advantage, float("nan"))
            self._record_tokens(
                inputs,
                student_lp,
                teacher_lp,
                advantage,
                distillation_logits.loss_mask,
                token_entropy(distillation_logits.student_logits),
            )
        return loss


class GRPORunTrainer(RunLogMixin, GRPOTrainer):
    """TRL's GRPO on an environment's outcome reward.

    GRPO has no teacher: the table's ``teacher_logprob`` repeats ``student_logprob`` (so ``sd_reward``
    is 0 and the contrast columns are NaN) and ``advantage`` is the group-normalised outcome advantage
    broadcast over the response, exactly as the loss uses it.
    """

    def __init__(self, *args: Any, run: RunContext, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None
        self._init_runlog(run)

    def _generate(self, prompts):
        with self.timer("generation"):
            return super()._generate(prompts)

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
    ):
        if not torch.is_grad_enabled():
            with self.timer("scoring"):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
                )
        out = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if out[1] is not None:
            self._captured = (out[0].detach(), out[1].detach())
        return out

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["sample_index"] = self._remember_rollouts(inputs)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        student_lp, entropy = self._captured
        advantage = inputs["advantages"]
        if advantage.dim() == 1:
            advantage = advantage.unsqueeze(1)
        advantage = advantage.expand_as(student_lp)
        self._record_tokens(inputs, student_lp, student_lp, advantage, inputs["completion_mask"], entropy)
        return loss
