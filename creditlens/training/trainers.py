"""The trainers ``creditlens train`` builds: TRL's GRPO and SDPO/CREDIT wired to a creditlens environment.

- :class:`GRPOEnvTrainer` (``--algo grpo``): ``trl.GRPOTrainer``.
- :class:`SDPOEnvTrainer` (``--algo sd`` with ``lam = 0``, ``--algo credit`` with the config's ``lam``):
  :class:`~creditlens.training.credit_trainer.CreditTrainer`, whose ``lam = 0`` is TRL's ``SDPOTrainer``
  bit for bit, with the environment's per-rollout feedback in the teacher reprompt.

Both time their phases and announce, per generation batch, the rollouts they made (``on_rollouts_scored``)
and, per micro-batch, the per-token values their loss used (``on_tokens_scored``): the events the run log
(:mod:`creditlens.training.runlog`) listens to. Without a listener they train like their TRL bases.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from trl import GRPOTrainer

from creditlens.training.credit_trainer import CreditTrainer
from creditlens.training.feedback import EnvReward, FeedbackContextBuilder, prompt_text
from creditlens.training.timing import PhaseTimer
from creditlens.training.token_log import Rollout


def notify(trainer: Any, event: str, **payload: Any) -> None:
    """Call ``event(**payload)`` on every callback of ``trainer`` that defines it."""
    for callback in trainer.callback_handler.callbacks:
        handler = getattr(callback, event, None)
        if handler is not None:
            handler(**payload)


def listening(trainer: Any, event: str) -> bool:
    """Whether any callback of ``trainer`` handles ``event``."""
    return any(hasattr(callback, event) for callback in trainer.callback_handler.callbacks)


def env_reward(trainer: Any) -> EnvReward:
    """The :class:`EnvReward` among the trainer's reward functions."""
    for reward in trainer.reward_funcs:
        if isinstance(reward, EnvReward):
            return reward
    raise ValueError("reward_funcs: the environment trainers need a creditlens.training.feedback.EnvReward")


def check_signal(trainer: Any, rewards: torch.Tensor) -> torch.Tensor:
    """Set ``trainer.no_signal`` when every rollout of a generation batch got the same total reward
    (``rewards [B, F]``, gathered over processes): GRPO's advantages are then 0 and SD's successful-sibling
    teacher has nothing to copy. Warns once per run; the run log records it per step as ``no_signal``."""
    total = rewards.nansum(dim=1)
    trainer.no_signal = bool(total.numel()) and bool((total == total[0]).all())
    if trainer.no_signal and not getattr(trainer, "warned_no_signal", False):
        trainer.warned_no_signal = True
        warnings.warn(f"creditlens: no learning signal: all {total.numel()} rollouts of a generation batch got "
                      f"reward {float(total[0]):g}, so GRPO's group advantages are 0 and no outcome tells rollouts "
                      "apart; choose an environment, model or config where some rollouts pass and some fail "
                      "(metrics.jsonl logs no_signal = 1 for such steps)", RuntimeWarning, stacklevel=2)
    return rewards


def announce_rollouts(trainer: Any, inputs: list[dict], contexts: list[str]) -> torch.Tensor:
    """Number this process's rollouts of a generation batch uniquely in the run; returns the ids ``[B]``.

    Ids are ``batch_counter * global_batch + process_offset + row``; ``on_rollouts_scored`` gets id -> Rollout.
    """
    accelerator = trainer.accelerator
    local = len(inputs)
    first = (trainer.generation_batches * accelerator.num_processes + accelerator.process_index) * local
    trainer.generation_batches += 1
    outcomes = env_reward(trainer).last
    rollouts = {
        first + i: Rollout(
            prompt=prompt_text(example["prompt"]),
            prompt_id=str(example["prompt_id"]),
            outcome_reward=float(outcome.reward),
            passed=bool(outcome.passed),
            feedback=context,
        )
        for i, (example, outcome, context) in enumerate(zip(inputs, outcomes, contexts, strict=True))
    }
    notify(trainer, "on_rollouts_scored", rollouts=rollouts)
    return torch.arange(first, first + local, device=accelerator.device)


class SDPOEnvTrainer(CreditTrainer):
    """SD (``lam = 0``) or CREDIT on an environment: its feedback goes into the teacher's reprompt."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher_context_builder = FeedbackContextBuilder(self, env_reward(self))
        self.generation_batches = 0

    def sample_rollouts(self, inputs):
        with self.timer("generation"):
            return super().sample_rollouts(inputs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.timer("scoring"):
            return check_signal(self, super()._calculate_rewards(inputs, prompts, completions, completion_ids_list))

    def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
        if torch.is_grad_enabled():
            return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
        with self.timer("scoring"):
            return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)

    def _prepare_training_batch(self, inputs):
        batch = super()._prepare_training_batch(inputs)
        if self.model.training:
            builder = self.teacher_context_builder
            batch["rollout_id"] = announce_rollouts(
                self, inputs, [builder.context_text(i) for i in range(len(inputs))]
            )
        return batch


class GRPOEnvTrainer(GRPOTrainer):
    """TRL's GRPO on an environment's outcome reward.

    GRPO has no teacher: its ``on_tokens_scored`` gives ``teacher_lp = student_lp`` (so ``sd_reward`` is 0
    and the contrast columns are NaN) and the group-normalised advantage broadcast over the response,
    exactly as the loss uses it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.timer = PhaseTimer(self.accelerator.device, enabled=False)
        self.generation_batches = 0
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None

    def _generate(self, prompts):
        with self.timer("generation"):
            return super()._generate(prompts)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.timer("scoring"):
            return check_signal(self, super()._calculate_rewards(inputs, prompts, completions, completion_ids_list))

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
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
        if self.model.training:
            output["rollout_id"] = announce_rollouts(self, inputs, [o.feedback for o in env_reward(self).last])
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.model.training and self._captured is not None and listening(self, "on_tokens_scored"):
            with self.timer("logging"):
                student_lp, entropy = self._captured
                advantage = inputs["advantages"]
                advantage = (advantage.unsqueeze(1) if advantage.dim() == 1 else advantage).expand_as(student_lp)
                notify(
                    self,
                    "on_tokens_scored",
                    inputs=inputs,
                    student_lp=student_lp,
                    teacher_lp=student_lp,
                    advantage=advantage,
                    loss_mask=inputs["completion_mask"],
                    entropy=entropy,
                )
        return loss
