"""``CreditTrainer``: TRL's ``SDPOTrainer`` with CREDIT's batch-contrastive teacher baseline, as a drop-in.

Swap ``SDPOTrainer, SDPOConfig`` for ``CreditTrainer, CreditConfig`` in a TRL script; nothing else changes
(same constructor, same dataset columns, same teacher-context builder, same modes). For every sample
i = (x, f, y) the trainer scores the response under K other prompts x_j with i's own teacher reprompt
(same solution text, same feedback text, same response tokens): K extra no-grad teacher forwards. The
contrast prompts follow :mod:`creditlens.training.contrasts`. Then, with ``lam``, ``pool`` and ``form``
of :class:`~creditlens.training.credit_config.CreditConfig`:

- ``sampled_token``: the advantage ``log pi_T - log pi_S`` of SDPO's loss becomes
  ``credit.credit_rewards(teacher_lp, contrast_lp, student_lp, ...)`` (``r_t - lam * B_t`` for ``teacher``).
- ``topk_logits``: the CREDIT target ``credit.credit_target_logprobs`` on the student's top-k support
  (contrast log-probs kept only there, ``[B, K, T, k]``), renormalised over it — exactly the full-vocabulary
  target restricted to the support — or, with ``distillation_add_tail``, over the support plus one tail
  bucket per distribution.
- ``full_logits``: the CREDIT target over the vocabulary; the K contrasts are pooled into one ``[B, T, V]``
  buffer as they are computed, never ``[B, K, T, V]``.

The K contrast contexts of the micro-batch go through the teacher in K forwards sorted by length, projected to the vocabulary
only at response positions and ``contrast_chunk_rows`` rows at a time (:mod:`creditlens.training.response_logits`),
so their transient logits stay a fraction of the student's and teacher's.

With ``contrast_axis="feedback"`` the K contexts keep sample i's prompt and solution and change its feedback
instead (x, f_j, y): the environment's wrong hint first, then other samples' feedback (docs/CREDIT-MATH.md
section 8); the same forms apply, and ``form="shortcut"``, ``lam=1`` is the RLCSD reward.

``lam = 0`` runs SDPO's own loss (bit-identical, tested). Contrasts follow the one rule of
``credit.draw_contrasts`` (never the sample's own prompt, no duplicates; fewer than K where fewer exist, K being
what the reward formula then uses); a sample with no contrast keeps SDPO's target. Per-token values are offered
to callbacks through the ``on_tokens_scored`` event (what creditlens' run logs listen to): the spec, the
decomposition and the rewards the step computed, as they are; without a listener nothing extra is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object
from trl.experimental.sdpo import SDPOConfig, SDPOTrainer
from trl.experimental.sdpo.loss_utils import (
    add_tail_bucket,
    apply_importance_sampling_clipping,
    compute_divergence,
)
from trl.experimental.sdpo.sdpo_trainer import DistillationLogits
from trl.trainer.utils import get_config_model_id, selective_log_softmax

from creditlens import credit
from creditlens.errors import ConfigError
from creditlens.training.contrasts import ContextRecorder, PromptBank, draw_feedback_contrasts, prompt_key
from creditlens.training.credit_config import CreditConfig, as_credit_config
from creditlens.training.response_logits import response_logits
from creditlens.training.timing import PhaseTimer

logger = get_logger(__name__)
EVAL_SEED_OFFSET = 500_000_003
CREDIT_METRICS = ("contrast_fraction", "baseline_mean", "generic_share", "contrasts_per_sample")
"""The ``credit/*`` scalars CreditTrainer logs beside SDPOTrainer's own (docs/training.md, "Metrics")."""


@dataclass
class CreditLogits(DistillationLogits):
    """SDPO's aligned logits plus the contrast teacher's log-probs.

    ``contrast_token_lp [B, K, T]`` (sampled tokens); ``has_contrast [B]``; in ``topk_logits`` mode
    ``support [B, T, k]`` (the student's top-k ids) and ``contrast_support_lp [B, K, T, k]``; in
    ``full_logits`` mode ``pooled_contrast_lp [B, T, V]`` (the K contrasts already pooled).
    """

    contrast_token_lp: torch.Tensor | None = None
    has_contrast: torch.Tensor | None = None
    support: torch.Tensor | None = None
    contrast_support_lp: torch.Tensor | None = None
    pooled_contrast_lp: torch.Tensor | None = None


class CreditTrainer(SDPOTrainer):
    """SDPO with the CREDIT per-token reward (see the module docstring); ``SDPOTrainer``'s constructor.

    ``args``: a :class:`CreditConfig`; None builds one with defaults (output dir ``<model>-CREDIT``); a plain
    ``SDPOConfig`` is upgraded to a ``CreditConfig`` keeping all its values, with the CREDIT fields at their
    defaults (``lam=0.5``). ``log_contrasts=True`` (attribute) computes contrasts for callbacks even at lam 0.
    """

    config_cls = CreditConfig
    _tag_names = ["trl", "sdpo", "credit"]
    _name = "CREDIT"

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: SDPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = CreditConfig(output_dir=f"{Path(str(name)).name or 'model'}-CREDIT")
        elif not isinstance(args, SDPOConfig):
            raise ConfigError(f"args: expected a CreditConfig (or an SDPOConfig), got {type(args).__name__}")
        args = as_credit_config(args)
        super().__init__(
            model,
            reward_funcs,
            args,
            train_dataset,
            eval_dataset,
            processing_class,
            reward_processing_classes,
            callbacks,
            optimizers,
            peft_config,
        )
        self.teacher_context_builder = ContextRecorder(self)
        self.contrast_bank = PromptBank(args.contrast_bank_size)
        self.log_contrasts = False
        self.timer = PhaseTimer(self.accelerator.device, enabled=False)
        self._eval_draws = 0

    # ---- contrast contexts, built once per generation batch -------------------------------------
    def _uses_contrasts(self) -> bool:
        return self.args.lam > 0 or self.log_contrasts

    def _prepare_training_batch(self, inputs):
        batch = super()._prepare_training_batch(inputs)
        if self._uses_contrasts():
            batch.update(self._contrast_contexts(inputs))
        return batch

    def _contrast_contexts(self, inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Tokenized contrast teacher prompts ``[B, K, L]`` (+ mask) and ``has_contrast [B]`` of local samples."""
        builder = self.teacher_context_builder
        if not isinstance(builder, ContextRecorder):
            raise TypeError(
                "teacher_context_builder: CreditTrainer needs a creditlens.training.contrasts.ContextRecorder "
                f"(it remembers each reprompt's solution and feedback), got {type(builder).__name__}"
            )
        mode = "train" if self.model.training else "eval"
        gathered = gather_object([(prompt_key(x), x["prompt"]) for x in inputs])
        keys = [key for key, _ in gathered]
        lookup = {**self.contrast_bank.prompts, **dict(gathered)}
        micro_step = self._step % self.args.gradient_accumulation_steps  # TRL restarts _step at 0 on resume
        seed = self.args.seed * 1_000_003 + self.state.global_step * 1_009 + micro_step
        seed += EVAL_SEED_OFFSET + self._eval_draws if mode == "eval" else 0
        if self.args.contrast_axis == "feedback":
            self._eval_draws += mode == "eval"
            return self._feedback_contrast_contexts(inputs, builder, mode, torch.Generator().manual_seed(seed))
        earlier = list(reversed(self.contrast_bank.prompts))
        picks = credit.draw_contrasts(keys, self.args.n_contrast, torch.Generator().manual_seed(seed), earlier)
        self._eval_draws += mode == "eval"
        if mode == "train":
            self.contrast_bank.add(keys, [prompt for _, prompt in gathered])
        covered = sum(bool(p) for p in picks) / max(len(picks), 1)
        self._metrics[mode]["credit/contrast_fraction"].append(covered)
        if covered < 1.0:
            logger.warning_once(
                "CREDIT: some samples have no other prompt to contrast with (a single distinct prompt so far, "
                "e.g. a one-row dataset); they keep the SDPO target until another prompt is seen. See "
                "docs/training.md, 'Contrast inputs'."
            )
        offset = self.accelerator.process_index * len(inputs)
        messages, has_contrast = [], []
        for row in range(len(inputs)):
            mine = picks[offset + row]
            has_contrast.append(bool(mine))
            messages += [builder.contrast_prompt(row, lookup[key]) for key in mine]
        return self._tokenized_contrasts(builder, messages, has_contrast, len(picks[0]) if picks else 0)

    def _tokenized_contrasts(
        self, builder: ContextRecorder, messages: list, has_contrast: list[bool], k: int
    ) -> dict[str, torch.Tensor]:
        """Tokenize B*K contrast teacher prompts into ``contrast_prompt_ids/mask [B, K, L]`` and ``has_contrast [B]``
        (K: the contrasts drawn; none, an empty dict, when K is 0)."""
        if k == 0:
            return {}
        tokenized = builder._tokenize_teacher_messages(messages)
        shape = (len(has_contrast), k, -1)
        return {
            "contrast_prompt_ids": tokenized["prompt_ids"].view(shape),
            "contrast_prompt_mask": tokenized["prompt_mask"].view(shape),
            "has_contrast": torch.tensor(has_contrast, device=self.accelerator.device),
        }

    def _feedback_contrast_contexts(
        self, inputs: list[dict[str, Any]], builder: ContextRecorder, mode: str, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The feedback axis: each local sample's own prompt and solution with K other feedback texts, tokenized
        ``[B, K, L]`` (+ mask), and ``has_contrast [B]`` (False for a sample whose reprompt holds no feedback)."""
        rows = range(len(inputs))
        gathered = gather_object([(builder.feedback_text(row), builder.wrong_feedback_text(row)) for row in rows])
        picks = draw_feedback_contrasts(
            [own for own, _ in gathered], [wrong for _, wrong in gathered], self.args.n_contrast, generator
        )
        self._metrics[mode]["credit/contrast_fraction"].append(sum(bool(p) for p in picks) / max(len(picks), 1))
        offset = self.accelerator.process_index * len(inputs)
        k = max((len(p) for p in picks), default=0)
        messages, has_contrast = [], []
        for row, example in zip(rows, inputs, strict=True):
            mine = picks[offset + row]
            has_contrast.append(bool(mine))
            texts = mine or [builder.feedback_text(row)] * k  # placeholders of a sample without contrast (masked)
            messages += [builder.feedback_contrast_prompt(row, example["prompt"], text) for text in texts]
        return self._tokenized_contrasts(builder, messages, has_contrast, k)

    # ---- K no-grad contrast teacher forwards -----------------------------------------------------
    def _compute_teacher_student_logits(self, model, teacher_model, inputs) -> DistillationLogits:
        base = super()._compute_teacher_student_logits(model, teacher_model, inputs)
        if "contrast_prompt_ids" not in inputs:
            return base
        with self.timer("contrast"):
            contrast = self._contrast_logprobs(teacher_model, inputs, base.student_logits, base.loss_mask)
        return CreditLogits(**vars(base), has_contrast=inputs["has_contrast"], **contrast)

    def _contrast_logprobs(
        self, teacher_model, inputs, student_logits: torch.Tensor, loss_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Contrast log-probs of the sampled tokens ``[B, K, T]`` and what the distillation mode needs.

        Only what the step reads is computed: the rows of samples with contrasts and a loss token (all samples
        with contrasts when a callback listens to ``on_tokens_scored``), at their response positions (the
        completion mask); everything else holds 0, which nothing reads. The K contexts of those rows go through
        the teacher in K calls sorted by length, each cut to its longest context, and are projected to the
        vocabulary ``contrast_chunk_rows`` rows at a time (:func:`~creditlens.training.response_logits.response_logits`).
        """
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        prompt_ids, prompt_mask = inputs["contrast_prompt_ids"], inputs["contrast_prompt_mask"]
        mode, (batch, k_total), t = self.args.distillation_mode, prompt_ids.shape[:2], completion_ids.size(1)
        needed = inputs["has_contrast"] & (loss_mask.bool().any(dim=1) | self._listening())
        rows = needed.nonzero().flatten()
        out: dict[str, torch.Tensor] = {"contrast_token_lp": student_logits.new_zeros((batch, k_total, t))}
        if mode == "topk_logits":
            out["support"] = student_logits.detach().topk(self.args.distillation_topk, dim=-1).indices
            out["contrast_support_lp"] = student_logits.new_zeros((batch, k_total, *out["support"].shape[1:]))
        elif mode == "full_logits":
            out["pooled_contrast_lp"] = student_logits.new_zeros((batch, t, student_logits.size(-1)))
        if len(rows) == 0:
            return out
        keep = completion_mask[rows].bool()  # [R, T]
        row_of, position = keep.nonzero(as_tuple=True)
        row_of, targets = rows[row_of], completion_ids[rows][keep]
        ids = torch.cat([prompt_ids[rows].transpose(0, 1).flatten(0, 1), completion_ids[rows].repeat(k_total, 1)], 1)
        mask = torch.cat([prompt_mask[rows].transpose(0, 1).flatten(0, 1), completion_mask[rows].repeat(k_total, 1)], 1)
        chunks = response_logits(self, teacher_model, ids, mask, keep, k_total, self.args.contrast_chunk_rows)
        with torch.no_grad(), self._get_teacher_context_for_self_distillation():
            for k, at, logits in chunks:
                where = (row_of[at], position[at])
                out["contrast_token_lp"][where[0], k, where[1]] = selective_log_softmax(logits, targets[at])
                if mode == "topk_logits":
                    support = out["support"][where]
                    out["contrast_support_lp"][where[0], k, where[1]] = selective_log_softmax(logits, support)
                elif mode == "full_logits":
                    log_probs = torch.log_softmax(logits, dim=-1)
                    del logits
                    pooled, flat = out["pooled_contrast_lp"].view(batch * t, -1), where[0] * t + where[1]
                    if k == 0:
                        pooled.index_copy_(0, flat, log_probs)
                    elif self.args.pool == "mean":
                        pooled.index_add_(0, flat, log_probs)
                    else:
                        pooled.index_copy_(0, flat, torch.logaddexp(pooled.index_select(0, flat), log_probs))
                    del log_probs
        if mode == "full_logits":
            pooled = out["pooled_contrast_lp"]
            out["pooled_contrast_lp"] = pooled.div_(k_total) if self.args.pool == "mean" else pooled.sub_(math.log(k_total))
        return out

    # ---- the loss ---------------------------------------------------------------------------------
    def _compute_self_distillation_loss(self, model, inputs, distillation_logits: DistillationLogits):
        logits, spec = distillation_logits, self.args.spec
        if isinstance(logits, CreditLogits):
            self._log_credit_metrics("train" if model.training else "eval", logits)
        if not isinstance(logits, CreditLogits) or spec.lam == 0 or logits.loss_mask.sum() == 0:
            if self.args.sd_loss == "rowwise" and self.args.distillation_mode == "topk_logits" and logits.loss_mask.any():
                self._offer_tokens(inputs, logits, advantage=float("nan"))
                return self._aggregate(model, inputs, logits, self._rowwise_topk_sd_loss(logits))
            loss = super()._compute_self_distillation_loss(model, inputs, logits)
            self._offer_tokens(inputs, logits, None if self.args.distillation_mode == "sampled_token" else float("nan"))
            return loss
        mode = self.args.distillation_mode
        if mode == "sampled_token":
            per_token_loss, advantage = self._sampled_token_loss(logits)
            self._offer_tokens(inputs, logits, advantage=advantage)
        elif mode == "topk_logits":
            per_token_loss = self._topk_loss(logits)
            self._offer_tokens(inputs, logits, advantage=float("nan"))
        else:
            self._offer_tokens(inputs, logits, advantage=float("nan"))
            return super()._compute_self_distillation_loss(model, inputs, self._full_target(logits))
        return self._aggregate(model, inputs, logits, per_token_loss)

    def _sampled_token_loss(self, logits: CreditLogits) -> tuple[torch.Tensor, torch.Tensor]:
        """SDPO's sampled-token loss ``-A_t.detach() * log pi_S`` with the CREDIT advantage ``A_t [B, T]``."""
        student_lp = selective_log_softmax(logits.student_logits, logits.completion_ids)
        with torch.no_grad():
            teacher_lp = selective_log_softmax(logits.teacher_logits, logits.completion_ids)
            advantage = credit.credit_rewards(
                teacher_lp, logits.contrast_token_lp, student_lp.detach(), logits.loss_mask, self.args.spec
            )
            advantage = torch.where(logits.has_contrast.unsqueeze(1), advantage, teacher_lp - student_lp.detach())
        return (-advantage).detach() * student_lp, advantage

    def _topk_loss(self, logits: CreditLogits) -> torch.Tensor:
        """Divergence ``[B, T]`` between the student and the CREDIT target on the student's top-k support."""
        spec = self.args.spec
        student = selective_log_softmax(logits.student_logits, logits.support)
        with torch.no_grad():
            teacher = selective_log_softmax(logits.teacher_logits, logits.support)
            contrast = logits.contrast_support_lp
            if self.args.distillation_add_tail:
                teacher, contrast = add_tail_bucket(teacher), add_tail_bucket(contrast)
            plain = teacher if self.args.distillation_add_tail else teacher - teacher.logsumexp(-1, keepdim=True)
        student = add_tail_bucket(student) if self.args.distillation_add_tail else student
        needs_student = credit.FORMS[spec.form].needs_student
        target = credit.credit_target_logprobs(
            teacher, contrast, spec, student_logprobs=student.detach() if needs_student else None
        )
        target = torch.where(logits.has_contrast[:, None, None], target, plain)
        if not self.args.distillation_add_tail:
            student = student - student.logsumexp(-1, keepdim=True)
        return compute_divergence(student, target, self.args.distillation_alpha)

    def _rowwise_topk_sd_loss(self, logits: DistillationLogits) -> torch.Tensor:
        """SDPO's top-k divergence ``[B, T]`` computed row by row (``sd_loss="rowwise"``): TRL's
        ``compute_topk_self_distillation_loss`` within 1e-6, without its ``[B, T, V]`` ``logsumexp`` temporaries."""
        support = logits.student_logits.detach().topk(self.args.distillation_topk, dim=-1).indices
        student = selective_log_softmax(logits.student_logits, support)
        with torch.no_grad():
            teacher = selective_log_softmax(logits.teacher_logits, support)
        if self.args.distillation_add_tail:
            student, teacher = add_tail_bucket(student), add_tail_bucket(teacher)
        else:
            student = student - student.logsumexp(-1, keepdim=True)
            teacher = teacher - teacher.logsumexp(-1, keepdim=True)
        return compute_divergence(student, teacher, self.args.distillation_alpha)

    def _full_target(self, logits: CreditLogits) -> DistillationLogits:
        """SDPO's inputs with the teacher logits replaced by the CREDIT target log-probs ``[B, T, V]``.

        The target is built ``contrast_chunk_rows`` rows at a time, and the teacher logits and pooled
        contrasts it replaces are released from ``logits`` afterwards, so the step holds one ``[B, T, V]``
        more than SDPO's at most.
        """
        spec = self.args.spec
        needs_student = credit.FORMS[spec.form].needs_student
        k = logits.contrast_token_lp.size(1)
        batch = logits.teacher_logits.size(0)
        rows = self.args.contrast_chunk_rows or batch
        target = torch.empty_like(logits.teacher_logits)
        with torch.no_grad():
            for start in range(0, batch, rows):
                chunk = slice(start, start + rows)
                teacher = torch.log_softmax(logits.teacher_logits[chunk], dim=-1)
                student = torch.log_softmax(logits.student_logits[chunk].detach(), dim=-1) if needs_student else None
                credit_target = credit.target_from_baseline(
                    teacher, logits.pooled_contrast_lp[chunk], k, spec, student_logprobs=student
                )
                target[chunk] = torch.where(logits.has_contrast[chunk, None, None], credit_target, teacher)
        logits.teacher_logits, logits.pooled_contrast_lp = None, None  # replaced by the target: free them
        return DistillationLogits(
            completion_ids=logits.completion_ids,
            completion_mask=logits.completion_mask,
            loss_mask=logits.loss_mask,
            student_logits=logits.student_logits,
            teacher_logits=target,
        )

    def _aggregate(self, model, inputs, logits: CreditLogits, per_token_loss: torch.Tensor) -> torch.Tensor:
        """SDPO's importance-weight clip and per-sequence mean of a ``[B, T]`` per-token loss (TRL 1.16)."""
        old_lp = inputs.get("old_per_token_logps")
        if self.args.distillation_is_clip is not None and old_lp is not None:
            student_lp = selective_log_softmax(logits.student_logits, logits.completion_ids)
            per_token_loss = apply_importance_sampling_clipping(
                per_token_loss, student_lp, old_lp, self.args.distillation_is_clip
            )
        mask = logits.loss_mask
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        mean_loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
        mode = "train" if model.training else "eval"
        self._log_self_distillation_metric(mode, self.accelerator.gather(mean_loss).mean().item())
        return loss

    # ---- metrics: SDPOTrainer's names at any lam, plus credit/* ---------------------------------------
    def _log_self_distillation_metric(self, mode: str, value: float) -> None:
        """The distillation loss under SDPOTrainer's names (``sdpo/...`` too), so a TRL dashboard keeps its curves."""
        self._metrics[mode]["self_distillation/distillation_loss"].append(value)
        self._metrics[mode][f"{SDPOTrainer._name.lower()}/distillation_loss"].append(value)

    @torch.no_grad()
    def _log_credit_metrics(self, mode: str, logits: CreditLogits) -> None:
        """``credit/baseline_mean`` (mean pooled contrast log-prob B_t), ``credit/generic_share`` (share of the
        positive SD credit ``r_t = log pi_T - log pi_S > 0`` that the contrasts also give, ``min(max(B_t - log pi_S,
        0), r_t)``) over loss tokens of samples with contrasts, and ``credit/contrasts_per_sample`` (K used by a
        sample with contrasts), summed over processes; a ratio without tokens is not logged."""
        ids, used = logits.completion_ids, logits.loss_mask.bool() & logits.has_contrast[:, None]
        student_lp = selective_log_softmax(logits.student_logits.detach(), ids)
        teacher_lp = selective_log_softmax(logits.teacher_logits, ids)
        baseline = credit.pool_contrast(logits.contrast_token_lp, self.args.spec)
        sd = teacher_lp - student_lp
        positive = used & (sd > 0)
        generic = torch.minimum((baseline - student_lp).clamp(min=0), sd)
        with_contrast = logits.has_contrast.sum()
        sums = torch.stack(
            [
                baseline[used].sum(),
                used.sum(),
                generic[positive].sum(),
                sd[positive].sum(),
                with_contrast * logits.contrast_token_lp.size(1),
                with_contrast,
            ]
        ).float()
        sums = self.accelerator.gather(sums).view(-1, len(sums)).sum(0).tolist()
        for name, (num, den) in zip(CREDIT_METRICS[1:], (sums[0:2], sums[2:4], sums[4:6]), strict=True):
            if den > 0:
                self._metrics[mode][f"credit/{name}"].append(num / den)

    # ---- per-token values for callbacks (creditlens' run logs) ---------------------------------------
    def _listening(self) -> bool:
        """Whether a callback defines ``on_tokens_scored``."""
        return any(hasattr(c, "on_tokens_scored") for c in self.callback_handler.callbacks)

    def _offer_tokens(self, inputs, logits: DistillationLogits, advantage: torch.Tensor | float | None) -> None:
        """Dispatch ``on_tokens_scored`` (training only, and only when a callback listens).

        Payload: ``inputs`` (the micro-batch), ``student_lp``/``teacher_lp``/``advantage``/``loss_mask``
        ``[B, T]``, ``student_logits [B, T, V]``, ``spec`` (the :class:`~creditlens.credit.CreditSpec` the step ran
        with), and with contrasts ``contrast_lp [B, K, T]``, ``has_contrast [B]``, ``decomposition``
        (:class:`~creditlens.credit.Decomposition`) and ``credit_reward [B, T]`` (the sampled-token CREDIT reward:
        the advantage itself in ``sampled_token`` mode), else None. ``advantage`` None means SDPO's
        ``teacher_lp - student_lp``; a float fills the tensor (NaN: none).
        """
        if not self._listening() or not self.model.training:
            return
        with torch.no_grad(), self.timer("logging"):
            ids = logits.completion_ids
            student_lp = selective_log_softmax(logits.student_logits.detach(), ids)
            teacher_lp = selective_log_softmax(logits.teacher_logits, ids)
            reward = advantage if isinstance(advantage, torch.Tensor) else None
            if advantage is None:
                advantage = teacher_lp - student_lp
            elif isinstance(advantage, float):
                advantage = torch.full_like(student_lp, advantage)
            spec, contrast_lp = self.args.spec, getattr(logits, "contrast_token_lp", None)
            parts = None
            if contrast_lp is not None:
                parts = credit.decompose(teacher_lp, contrast_lp, student_lp, logits.loss_mask, spec)
                if reward is None:
                    reward = credit.credit_rewards(teacher_lp, contrast_lp, student_lp, logits.loss_mask, spec)
            sd_reward = parts.sd if parts is not None else credit.sd_rewards(teacher_lp, student_lp, logits.loss_mask)
            self._dispatch_self_distillation_callback(
                "on_tokens_scored",
                inputs=inputs,
                student_lp=student_lp,
                teacher_lp=teacher_lp,
                advantage=advantage.detach(),
                loss_mask=logits.loss_mask,
                student_logits=logits.student_logits.detach(),
                spec=spec,
                sd_reward=sd_reward,
                contrast_lp=contrast_lp,
                has_contrast=getattr(logits, "has_contrast", None),
                decomposition=parts,
                credit_reward=reward,
            )
