"""The run log: an optional ``TrainerCallback`` that ``creditlens train`` attaches (layout: :mod:`creditlens.runs`).

It listens to the trainers' ``on_rollouts_scored`` / ``on_tokens_scored`` events (:mod:`.trainers`), keeps
a :class:`~creditlens.training.token_log.TokenRecord` per micro-batch, and at the end of every optimizer
step gathers the records of all processes on the main one, which alone writes that step's token table
(rows numbered 0.. by process, then micro-batch, then row) and one line of ``metrics.jsonl``. It also runs
the held-out evaluations (:mod:`.evaluation`) and draws the progress bar. Without it the trainers train
exactly the same.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl.trainer.utils import selective_log_softmax

from creditlens import runs, schema
from creditlens.credit import CreditSpec, Decomposition
from creditlens.envs.base import Environment, Problem
from creditlens.training.checkpoints import CheckpointCallback
from creditlens.training.config import RunConfig
from creditlens.training.evaluation import evaluate_env, mean
from creditlens.training.token_log import Rollout, TokenRecord, make_record, records_table, token_entropy


@dataclass
class RunContext:
    """What the run log needs to write a run directory."""

    run_dir: Path
    name: str
    algo: str
    env: Environment
    eval_problems: list[Problem]
    config: RunConfig


class RunLog(TrainerCallback):
    """Per-token tables, metrics and evals of one run (see the module docstring)."""

    def __init__(self, trainer: Any, run: RunContext):
        self.trainer = trainer
        self.run = run
        self.rollouts: dict[int, Rollout] = {}
        self.records: list[TokenRecord] = []
        self.step_metrics: dict[str, Any] | None = None
        self._step_start = 0.0
        self._bar: tqdm | None = None
        trainer.timer.enabled = True
        self.start_model = None
        if run.config.log_kl:
            model = trainer.accelerator.unwrap_model(trainer.model)
            self.start_model = copy.deepcopy(model).eval().requires_grad_(False)

    # ---- events of the trainers -----------------------------------------------------------------
    def on_rollouts_scored(self, rollouts: dict[int, Rollout], **_: Any) -> None:
        """A new generation batch: its rollouts by id (earlier ones are all consumed by now)."""
        self.rollouts = rollouts

    def on_tokens_scored(
        self,
        inputs: dict[str, Any],
        student_lp: torch.Tensor,
        teacher_lp: torch.Tensor,
        advantage: torch.Tensor,
        loss_mask: torch.Tensor,
        student_logits: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
        contrast_lp: torch.Tensor | None = None,
        has_contrast: torch.Tensor | None = None,
        spec: CreditSpec | None = None,
        sd_reward: torch.Tensor | None = None,
        decomposition: Decomposition | None = None,
        credit_reward: torch.Tensor | None = None,
        **_: Any,
    ) -> None:
        """Keep one micro-batch's values as the trainer computed them (``[B, T]``; ``contrast_lp [B, K, T]``);
        samples without contrast get NaN contrasts and split columns."""
        with torch.no_grad(), self.trainer.timer("logging"):
            if entropy is None:
                entropy = token_entropy(student_logits)
            columns = {} if sd_reward is None else {"sd_reward": sd_reward}
            if decomposition is not None:
                names = schema.CONTRAST_COLUMNS if spec.axis == "input" else schema.FEEDBACK_COLUMNS
                parts = (decomposition.baseline, decomposition.specific, decomposition.shortcut, credit_reward)
                columns.update(zip(names, parts, strict=True))
            if contrast_lp is not None and has_contrast is not None:
                contrast_lp = torch.where(has_contrast[:, None, None], contrast_lp, float("nan"))
                for name in set(columns) - {"sd_reward"}:
                    columns[name] = torch.where(has_contrast[:, None], columns[name], float("nan"))
            self.records.append(
                make_record(
                    rollouts=[self.rollouts[i] for i in inputs["rollout_id"].tolist()],
                    completion_ids=inputs["completion_ids"],
                    completion_mask=inputs["completion_mask"],
                    student_lp=student_lp,
                    teacher_lp=teacher_lp,
                    advantage=advantage,
                    loss_mask=loss_mask,
                    entropy=entropy,
                    kl=self._kl_to_start(inputs, student_lp),
                    contrast_lp=contrast_lp,
                    spec=spec,
                    credit_columns=columns,
                )
            )

    def _kl_to_start(self, inputs: dict[str, Any], student_lp: torch.Tensor) -> torch.Tensor:
        """Per-token KL estimate ``exp(d) - d - 1``, ``d = log p_start - log p_S`` (``[B, T]``; 0 without log_kl)."""
        if self.start_model is None:
            return torch.zeros_like(student_lp)
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        logits = self.start_model(input_ids=ids, attention_mask=attention, use_cache=False).logits
        logits = logits[:, :-1, :][:, -completion_ids.size(1) :, :] / self.trainer.temperature
        delta = selective_log_softmax(logits, completion_ids) - student_lp
        return torch.exp(delta) - delta - 1.0

    # ---- one optimizer step ---------------------------------------------------------------------
    def _flush_step(self, step: int, step_seconds: float) -> None:
        """Gather this step's records on the main process; write its token table; stash its metrics."""
        trainer = self.trainer
        phases = trainer.timer.pop()
        with trainer.timer("logging"):
            write_tokens = step % self.run.config.log_tokens_every == 0
            counts = gather_object([sum(len(r.rollouts) for r in self.records)])
            first = sum(counts[: trainer.accelerator.process_index])
            table = None
            if write_tokens:
                tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
                columns = {"run": self.run.name, "algo": self.run.algo}
                table = records_table(
                    self.records, tokenizer, step, first, columns, getattr(self.run.env, "token_labels", None),
                )
            local = {
                "table": table,
                "outcomes": [(r.outcome_reward, r.passed) for rec in self.records for r in rec.rollouts],
                "lengths": [n for rec in self.records for n in rec.lengths.tolist()],
                "sums": [sum(getattr(r, k) for r in self.records) for k in ("entropy_sum", "kl_sum", "n_tokens")],
            }
            gathered = gather_object([local])
            self.records = []
            if trainer.accelerator.is_main_process:
                tables = [g["table"] for g in gathered if g["table"] is not None]
                if tables:
                    table = pd.concat(tables, ignore_index=True).sort_values(["sample", "position"])
                    runs.write_step_tokens(self.run.run_dir, step, table.reset_index(drop=True))
                outcomes = [o for g in gathered for o in g["outcomes"]]
                entropy, kl, n_tokens = (sum(g["sums"][k] for g in gathered) for k in range(3))
                self.step_metrics = {
                    "step": step,
                    "reward": mean([o[0] for o in outcomes]),
                    "pass_rate": mean([float(o[1]) for o in outcomes]),
                    "response_length": mean([n for g in gathered for n in g["lengths"]]),
                    "entropy": entropy / n_tokens if n_tokens else math.nan,
                    "kl": kl / n_tokens if n_tokens and self.start_model is not None else math.nan,
                    "no_signal": float(getattr(trainer, "no_signal", False)),  # every reward identical
                }
        phases["logging"] += trainer.timer.pop()["logging"]
        if self.step_metrics is not None:
            inner = phases["generation"] + phases["scoring"] + phases["contrast"] + phases["logging"]
            self.step_metrics.update({f"time_{k}": v for k, v in phases.items()})
            self.step_metrics["time_backward"] = max(step_seconds - inner, 0.0)
            self.step_metrics["time_step"] = step_seconds

    def _write_metrics(self, trl_logs: dict[str, float]) -> None:
        if self.step_metrics is None or not self.trainer.accelerator.is_main_process:
            return
        record = dict(self.step_metrics)
        for key in ("loss", "grad_norm", "learning_rate"):
            if key in trl_logs:
                record[key] = float(trl_logs[key])
        runs.append_jsonl(self.run.run_dir / runs.METRICS, record)
        self.step_metrics = None

    def _evaluate(self, step: int) -> None:
        config, args = self.run.config, self.trainer.args
        evaluate_env(
            self.trainer,
            self.run.env,
            self.run.eval_problems,
            self.run.run_dir,
            step,
            config.eval_batch_size or config.num_prompts * args.num_generations,
            args.max_completion_length,
        )

    # ---- TrainerCallback ------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"train {self.run.name}")
        done = {r.get("step") for r in runs.read_jsonl(self.run.run_dir / runs.EVAL)}
        if state.global_step == 0 and 0 not in done:
            self._evaluate(0)
        self.trainer.accelerator.wait_for_everyone()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = self.trainer.timer.now()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        self._flush_step(step, self.trainer.timer.now() - self._step_start)
        every = self.run.config.eval_every
        if (every and step % every == 0) or step == state.max_steps:
            self._evaluate(step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            if self._bar is not None and self.step_metrics is not None:
                reward = self.step_metrics["reward"]
                self._bar.set_postfix(loss=f"{logs['loss']:.3g}", reward=f"{reward:.2f}")
                self._bar.update(1)
            self._write_metrics(logs)

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.close()


def attach_run_log(trainer: Any, run: RunContext, resume_from: Path | None = None) -> RunLog:
    """Give ``trainer`` the run log and the checkpoint bookkeeping (TRL's own printing removed)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    log = RunLog(trainer, run)
    trainer.add_callback(log)
    trainer.add_callback(CheckpointCallback(trainer, resume_from))
    return log
