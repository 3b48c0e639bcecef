"""Compatibility gap of a real LM (section 2 of CREDIT-MATH.md).

Under posterior compatibility the SD rewards telescope: ``sum_t r_t = log p(f | x, y) - log p(f | x)``.
On a real LM the two sides differ by the gap

    gap = sum_t r_t - [ log p(f | x, y) - log p(f | x) ]

- ``log p(f | x, y)``: log-likelihood of the feedback tokens after the student context and the
  response (chat models: f as the next user message; see ``ContextBuilder.feedback_turn``);
- ``log p(f | x)``: log-mean-exp of ``log p(f | x, y'_m)`` over M responses ``y'_m`` sampled from
  the student context (ancestral sampling at temperature 1, at most ``max_new_tokens`` tokens).
  Its standard error is the delta-method one, ``sd(w) / (sqrt(M) * mean(w))`` with
  ``w_m = p(f | x, y'_m)``; the estimator is biased low by Jensen's inequality for small M.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp
from tqdm.auto import tqdm
from transformers import GenerationConfig

from creditlens import schema
from creditlens.credit import CreditSpec
from creditlens.examples import Example
from creditlens.scoring import Scorer


@dataclass
class GapConfig:
    """Monte-Carlo options of the ``log p(f | x)`` estimate."""

    samples: int = 8  # M responses sampled per prompt (M >= 2 for a standard error)
    max_new_tokens: int = 64  # cap on each sampled response
    temperature: float = 1.0  # 1.0 samples pi itself; other values estimate a different quantity
    seed: int = 0  # seeds the sampling (torch RNG, restored afterwards)


def feedback_logprob(scorer: Scorer, example: Example, response: list[int]) -> tuple[list[int], int]:
    """The sequence ``(ids, n)`` whose last ``n`` tokens are f, scored after (x, ``response``)."""
    bridge, feedback = scorer.contexts.feedback_turn(example, response)
    return scorer.contexts.student(example) + response + bridge + feedback, len(feedback)


@torch.no_grad()
def sample_responses(scorer: Scorer, example: Example, config: GapConfig) -> list[list[int]]:
    """M responses ``y' ~ pi(. | x)`` as token ids, each cut after its first end-of-sequence token."""
    context = torch.tensor([scorer.contexts.student(example)] * config.samples)
    device = next(scorer.model.parameters()).device
    eos = scorer.tokenizer.eos_token_id
    generation = GenerationConfig(
        do_sample=True,
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=config.max_new_tokens,
        eos_token_id=eos,
        pad_token_id=scorer.pad_id,
    )
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(config.seed)
        out = scorer.model.generate(
            input_ids=context.to(device),
            attention_mask=torch.ones_like(context).to(device),
            generation_config=generation,
        )
    responses = []
    for row in out[:, context.shape[1] :].tolist():
        responses.append(row[: row.index(eos) + 1] if eos in row else row)
    return responses


def log_mean_exp(values: np.ndarray) -> tuple[float, float]:
    """``log mean exp(values)`` of ``[M]`` values (``scipy.special.logsumexp``) and its delta-method standard
    error ``sd(w) / (sqrt(M) mean(w))`` of the weights ``w = exp(values - max)``."""
    m = len(values)
    estimate = float(logsumexp(values) - math.log(m))
    w = np.exp(values - values.max())
    se = float(w.std(ddof=1) / (math.sqrt(m) * w.mean())) if m > 1 else float("nan")
    return estimate, se


def compatibility_gap(
    scorer: Scorer,
    examples: Sequence[Example | dict],
    table: pd.DataFrame | None = None,
    config: GapConfig | None = None,
) -> pd.DataFrame:
    """One row per example: ``sd_sum``, ``log_pf_xy``, ``log_pf_x`` (+ ``log_pf_x_se``), ``pmi``, ``gap``.

    ``table``: a per-token table of these examples (its ``sd_sum`` is used); None scores them with K=0.
    """
    config = config or GapConfig()
    if config.samples < 1:
        raise ValueError(f"samples: must be >= 1, got {config.samples}")
    examples = scorer.examples(examples)
    table = scorer.score(examples, spec=CreditSpec(n_contrast=0)) if table is None else table
    sd = schema.example_summary(table).set_index("example_id")["sd_sum"]
    missing = [e.example_id for e in examples if e.example_id not in sd.index]
    if missing:
        raise ValueError(f"table: no rows for example ids {missing[:5]}; score these examples first")
    rows = []
    for example in tqdm(examples, desc="gap", unit="example", leave=False, disable=not scorer.config.progress):
        response = scorer.contexts.response_ids(example)
        samples = sample_responses(scorer, example, config)
        lp = scorer.logprobs([feedback_logprob(scorer, example, y) for y in [response, *samples]])
        log_pf_xy = float(lp[0].double().sum())
        log_pf_x, se = log_mean_exp(np.array([float(x.double().sum()) for x in lp[1:]]))
        sd_sum = float(sd[example.example_id])
        rows.append(
            dict(
                example_id=example.example_id,
                sd_sum=sd_sum,
                log_pf_xy=log_pf_xy,
                log_pf_x=log_pf_x,
                log_pf_x_se=se,
                pmi=log_pf_xy - log_pf_x,
                gap=sd_sum - (log_pf_xy - log_pf_x),
                n_samples=config.samples,
            )
        )
    return pd.DataFrame(rows)


def summary_with_gap(table: pd.DataFrame, gap: pd.DataFrame) -> pd.DataFrame:
    """``schema.example_summary(table)`` with the gap columns added (NaN for examples without a gap)."""
    extra = gap.drop(columns=["sd_sum"], errors="ignore")
    return schema.example_summary(table).merge(extra, on="example_id", how="left")
