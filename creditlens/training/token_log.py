"""Per-token records of the micro-batches a process trains on, and the step's token table built from them.

A record keeps, for every row of one micro-batch, the rollout it came from (prompt, outcome, teacher
context: copied when the record is made, so a step spanning two generation batches labels every token
with its own rollout) and the per-token values the loss used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from creditlens import schema
from creditlens.credit import CreditSpec


@dataclass
class Rollout:
    """What the table needs to know about one rollout besides its tokens."""

    prompt: str
    prompt_id: str
    outcome_reward: float
    passed: bool
    feedback: str


@dataclass
class TokenRecord:
    """One micro-batch: ``rollouts`` (B), ``completion_ids``/``student_lp``/``teacher_lp``/``advantage``/
    ``mask`` ``[B, T]``, ``contrast_lp [B, K, T]`` or None, ``lengths [B]``, sums over counted tokens, and what
    the trainer computed as it computed it: ``spec`` (None: no CREDIT settings, GRPO) and ``credit_columns``
    (table column -> ``[B, T]``, ``schema.build_token_table``'s ``credit_columns``)."""

    rollouts: list[Rollout]
    completion_ids: torch.Tensor
    lengths: torch.Tensor
    student_lp: torch.Tensor
    teacher_lp: torch.Tensor
    contrast_lp: torch.Tensor | None
    advantage: torch.Tensor
    mask: torch.Tensor
    entropy_sum: float
    kl_sum: float
    n_tokens: int
    spec: CreditSpec | None = None
    credit_columns: dict[str, torch.Tensor] | None = None


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution: ``[B, T, V] -> [B, T]`` (one row at a time, in float32)."""
    rows = []
    for row in logits.detach():
        log_probs = torch.log_softmax(row.float(), dim=-1)
        rows.append(-(log_probs.exp() * log_probs).sum(dim=-1))
    return torch.stack(rows)


def response_lengths(completion_mask: torch.Tensor) -> torch.Tensor:
    """Counted tokens per response ``[B]`` of a right-padded ``completion_mask [B, T]``."""
    return completion_mask.sum(dim=1).long()


def make_record(
    rollouts: list[Rollout],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    student_lp: torch.Tensor,
    teacher_lp: torch.Tensor,
    advantage: torch.Tensor,
    loss_mask: torch.Tensor,
    entropy: torch.Tensor,
    kl: torch.Tensor,
    contrast_lp: torch.Tensor | None = None,
    spec: CreditSpec | None = None,
    credit_columns: dict[str, torch.Tensor] | None = None,
) -> TokenRecord:
    """A :class:`TokenRecord` on the CPU; ``mask`` = loss mask and completion mask (all ``[B, T]``)."""
    counted = completion_mask.bool()
    return TokenRecord(
        rollouts=rollouts,
        completion_ids=completion_ids.detach().cpu(),
        lengths=response_lengths(completion_mask).cpu(),
        student_lp=student_lp.detach().float().cpu(),
        teacher_lp=teacher_lp.detach().float().cpu(),
        contrast_lp=None if contrast_lp is None else contrast_lp.detach().float().cpu(),
        advantage=advantage.detach().float().cpu(),
        mask=(loss_mask.detach().bool() & counted).cpu(),
        entropy_sum=float((entropy.detach().float() * counted).sum()),
        kl_sum=float((kl.detach().float() * counted).sum()),
        n_tokens=int(counted.sum()),
        spec=spec,
        credit_columns={name: value.detach().float().cpu() for name, value in (credit_columns or {}).items()},
    )


def records_table(
    records: list[TokenRecord],
    tokenizer: Any,
    step: int,
    first_sample: int,
    columns: dict[str, Any],
    token_labels: Callable[[Any, list[str]], list[str]] | None = None,
) -> pd.DataFrame | None:
    """The token table of ``records``: rows numbered ``first_sample, first_sample + 1, ...`` in order.

    ``columns`` are constant example columns (run, algo). Each record's spec labels its rows and its credit
    columns are written as the trainer computed them; a feedback-axis spec writes the contrasts into the
    feedback-axis columns (``schema.FEEDBACK_COLUMNS``). ``token_labels`` (an environment's ``token_labels(problem, tokens)``, e.g. the shortcut testbed's) fills the
    ground-truth ``label`` column of every response token.
    """
    frames, sample = [], first_sample
    for record in records:
        ids, lengths = record.completion_ids, record.lengths.tolist()
        samples = list(range(sample, sample + len(lengths)))
        sample += len(lengths)
        tokens = [
            tokenizer.batch_decode([[t] for t in row[:n].tolist()]) for row, n in zip(ids, lengths, strict=True)
        ]
        tokens = [t + [""] * (ids.shape[1] - len(t)) for t in tokens]
        responses = [
            tokenizer.decode(row[:n].tolist(), skip_special_tokens=True) for row, n in zip(ids, lengths, strict=True)
        ]
        info = record.rollouts
        feedback_axis = record.spec is not None and record.spec.axis == "feedback"
        extra = {"advantage": record.advantage}
        if token_labels is not None:
            labels = np.full(ids.shape, "", dtype=object)
            for row, (row_tokens, n) in enumerate(zip(tokens, lengths, strict=True)):
                labels[row, :n] = token_labels(None, row_tokens[:n])
            extra["label"] = labels
        frames.append(
            schema.build_token_table(
                example_ids=[f"step{step}-sample{s}" for s in samples],
                prompt_ids=[r.prompt_id for r in info],
                token_ids=ids,
                tokens=tokens,
                teacher_lp=record.teacher_lp.double(),
                student_lp=record.student_lp.double(),
                contrast_lp=None if record.contrast_lp is None or feedback_axis else record.contrast_lp.double(),
                feedback_contrast_lp=record.contrast_lp.double() if record.contrast_lp is not None and feedback_axis
                else None,
                mask=record.mask,
                lengths=lengths,
                spec=record.spec,
                credit_columns=record.credit_columns,
                example_columns={
                    **{name: [value] * len(samples) for name, value in columns.items()},
                    "step": [step] * len(samples),
                    "sample": samples,
                    "outcome_reward": [r.outcome_reward for r in info],
                    "prompt": [r.prompt for r in info],
                    "feedback": [r.feedback for r in info],
                    "response": responses,
                },
                token_columns=extra,
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else None
