"""The CREDIT trainer: TRL's SDPO with a batch-contrastive teacher baseline.

For every sample i (prompt x, feedback f, response y) it runs K extra no-grad teacher forwards on
(x_j, f, y) where x_j is the prompt of another example of the batch with a different prompt id
(:func:`creditlens.credit.contrast_indices`) and f is the exact solution/feedback text of sample i's own
teacher reprompt. Then:

- ``sampled_token`` mode: the per-token advantage is ``credit.credit_rewards`` =
  ``log pi_T - lam * B_t - log pi_S``, used exactly where SDPO uses ``log pi_T - log pi_S``
  (loss ``-A_t.detach() * log pi_S``, same importance clipping and aggregation).
- ``topk_logits`` / ``full_logits`` modes: the teacher distribution is replaced by the CREDIT target
  ``credit.credit_target_logprobs`` = ``log_softmax(log pi_T - lam * pool_k log pi_T(.|x_k, f, y_<t))``
  over the vocabulary, then SDPO's divergence runs unchanged (top-K: gathered on the student's top-K
  and renormalised over them, or with a tail bucket holding the target's remaining mass).

``lam = 0`` gives SDPO's loss and gradients bit for bit (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object
from trl.experimental.sdpo import SDPOTrainer
from trl.experimental.sdpo.loss_utils import apply_importance_sampling_clipping
from trl.experimental.sdpo.sdpo_trainer import DistillationLogits
from trl.trainer.utils import selective_log_softmax

from creditlens import credit
from creditlens.training.trainers import SDTrainer, token_entropy


@dataclass
class CreditLogits(DistillationLogits):
    """SDPO's aligned logits plus the contrast teacher's log-probs.

    ``contrast_token_lp [B, K, T]`` (sampled tokens); ``contrast_logprobs [B, K, T, V]`` in logit modes.
    """

    contrast_token_lp: torch.Tensor | None = None
    contrast_logprobs: torch.Tensor | None = None


class CreditTrainer(SDTrainer):
    """SDPO with the CREDIT per-token reward ``r_t - lam * B_t`` (see the module docstring)."""

    def __init__(self, *args: Any, lam: float = 0.5, n_contrast: int = 1, pool: str = "mean", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam: must be in [0, 1], got {lam}")
        if pool not in credit.POOLS:
            raise ValueError(f"pool: must be one of {credit.POOLS}, got {pool!r}")
        self.lam, self.n_contrast, self.pool = float(lam), int(n_contrast), pool

    # ---- contrast contexts, built once per generation batch ---------------------------------------
    def _prepare_training_batch(self, inputs):
        batch = super()._prepare_training_batch(inputs)
        all_prompts = gather_object([x["prompt"] for x in inputs])
        all_ids = gather_object([str(x["prompt_id"]) for x in inputs])
        generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self.state.global_step)
        picks = credit.contrast_indices(all_ids, self.n_contrast, generator)
        offset = self.accelerator.process_index * len(inputs)
        builder = self.teacher_context_builder
        messages = [
            builder.contrast_prompt(row, all_prompts[int(j)])
            for row in range(len(inputs))
            for j in picks[offset + row].tolist()
        ]
        tokenized = builder._tokenize_teacher_messages(messages)
        shape = (len(inputs), self.n_contrast, -1)
        batch["contrast_prompt_ids"] = tokenized["prompt_ids"].view(shape)
        batch["contrast_prompt_mask"] = tokenized["prompt_mask"].view(shape)
        batch["contrast_index"] = picks[offset : offset + len(inputs)].to(self.accelerator.device)
        return batch

    # ---- K no-grad contrast teacher forwards -----------------------------------------------------
    def _compute_teacher_student_logits(self, model, teacher_model, inputs) -> CreditLogits:
        base = super()._compute_teacher_student_logits(model, teacher_model, inputs)
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        keep_full = self.args.distillation_mode != "sampled_token"
        token_lps, full_lps = [], []
        with torch.no_grad(), self._get_teacher_context_for_self_distillation(), self.timer("contrast"):
            for k in range(self.n_contrast):
                logits = SDPOTrainer._forward_logits(
                    self,
                    teacher_model,
                    torch.cat([inputs["contrast_prompt_ids"][:, k], completion_ids], dim=1),
                    torch.cat([inputs["contrast_prompt_mask"][:, k], completion_mask], dim=1),
                    completion_ids.size(1),
                )
                token_lps.append(selective_log_softmax(logits, completion_ids))
                if keep_full:
                    full_lps.append(torch.log_softmax(logits.float(), dim=-1).to(logits.dtype))
        return CreditLogits(
            **vars(base),
            contrast_token_lp=torch.stack(token_lps, dim=1),
            contrast_logprobs=torch.stack(full_lps, dim=1) if keep_full else None,
        )

    # ---- the loss ---------------------------------------------------------------------------------
    def _compute_self_distillation_loss(self, model, inputs, distillation_logits: CreditLogits):
        logits = distillation_logits
        with torch.no_grad():
            student_lp, teacher_lp = self._sampled_logprobs(logits)
            advantage = credit.credit_rewards(
                teacher_lp, logits.contrast_token_lp, student_lp, logits.loss_mask, self.lam, self.pool
            )
        if self.args.distillation_mode == "sampled_token":
            loss = self._sampled_token_loss(model, inputs, logits, advantage)
        else:
            target = credit.credit_target_logprobs(
                logits.teacher_logits, logits.contrast_logprobs, self.lam, self.pool
            )
            plain = DistillationLogits(
                completion_ids=logits.completion_ids,
                completion_mask=logits.completion_mask,
                loss_mask=logits.loss_mask,
                student_logits=logits.student_logits,
                teacher_logits=target,
            )
            loss = super(SDTrainer, self)._compute_self_distillation_loss(model, inputs, plain)
            advantage = torch.full_like(advantage, float("nan"))
        with torch.no_grad(), self.timer("logging"):
            self._record_tokens(
                inputs,
                student_lp,
                teacher_lp,
                advantage,
                logits.loss_mask,
                token_entropy(logits.student_logits),
                contrast_lp=logits.contrast_token_lp,
            )
        return loss

    def _sampled_token_loss(
        self, model, inputs, logits: CreditLogits, advantage: torch.Tensor
    ) -> torch.Tensor:
        """SDPO's sampled-token loss (TRL 1.16) with ``advantage [B, T]`` in place of ``log pi_T - log pi_S``."""
        mask = logits.loss_mask
        mode = "train" if model.training else "eval"
        if mask.sum() == 0:
            self._log_self_distillation_metric(mode, 0.0)
            return logits.student_logits.sum() * 0.0
        student_lp = selective_log_softmax(logits.student_logits, logits.completion_ids)
        per_token_loss = (-advantage).detach() * student_lp
        old_lp = inputs.get("old_per_token_logps")
        if self.args.distillation_is_clip is not None and old_lp is not None:
            per_token_loss = apply_importance_sampling_clipping(
                per_token_loss, student_lp, old_lp, self.args.distillation_is_clip
            )
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        mean_loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
        self._log_self_distillation_metric(mode, self.accelerator.gather(mean_loss).mean().item())
        return loss
