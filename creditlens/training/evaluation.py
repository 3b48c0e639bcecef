"""Held-out evaluation during training: greedy decoding on the environment's eval split.

An environment with ``eval_part(problem) -> str`` (the shortcut testbed: ``"val"``/``"test"``) also gets a
score per part in each ``eval.jsonl`` record (``score_val``, ``n_val``, ``score_test``, ``n_test``), which the
confirmatory study reads (:mod:`creditlens.heldout`): a checkpoint chosen on one part, scored on the other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from trl.models import unwrap_model_for_generation

from creditlens import runs
from creditlens.envs.base import Environment, Problem
from creditlens.training.feedback import completion_text, model_prompt


def evaluate_env(
    trainer: Any,
    env: Environment,
    problems: list[Problem],
    run_dir: Path,
    step: int,
    batch_size: int,
    max_new_tokens: int,
) -> None:
    """Greedy responses to ``problems`` (sharded over processes), verified; main appends ``eval.jsonl``
    (``score``: pass rate over all of them, plus a score per part when ``env`` has ``eval_part``)."""
    accelerator = trainer.accelerator
    mine = problems[accelerator.process_index :: accelerator.num_processes]
    tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    part_of = getattr(env, "eval_part", None)
    results: list[tuple[float, bool, str]] = []
    was_training = trainer.model.training
    trainer.model.eval()
    eos = getattr(trainer, "eos_token_ids", tokenizer.eos_token_id)
    with unwrap_model_for_generation(trainer.model_wrapped, accelerator) as model, torch.no_grad():
        for start in range(0, len(mine), max(1, batch_size)):
            chunk = mine[start : start + max(1, batch_size)]
            prompts = [model_prompt(p, tokenizer) for p in chunk]
            if isinstance(prompts[0], list):
                texts = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=False)
            else:
                texts = prompts
            encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(accelerator.device)
            out = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
            )
            decoded = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            for problem, text in zip(chunk, decoded, strict=True):
                outcome = env.verify(problem, completion_text(text))
                results.append((float(outcome.reward), bool(outcome.passed), part_of(problem) if part_of else ""))
    if was_training:
        trainer.model.train()
    everything = gather_object(results)
    if accelerator.is_main_process and everything:
        record = {
            "step": step,
            "score": mean([float(p) for _, p, _ in everything]),
            "mean_reward": mean([r for r, _, _ in everything]),
            "n": len(everything),
        }
        for part in sorted({part for _, _, part in everything if part}):
            passed = [float(p) for _, p, where in everything if where == part]
            record[f"score_{part}"], record[f"n_{part}"] = mean(passed), len(passed)
        runs.append_jsonl(run_dir / runs.EVAL, record)


def mean(values: list[float]) -> float:
    """The mean, NaN for no values."""
    return float(sum(values) / len(values)) if values else math.nan
