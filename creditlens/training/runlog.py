"""Per-step run logs shared by the GRPO, SD and CREDIT trainers (layout: :mod:`creditlens.runs`).

Each process records, for every micro-batch it trains on, the response tokens with the log-probs and
the advantage the loss actually used. At the end of an optimizer step the records are gathered on the
main process, which alone writes ``tokens/step_XXXXXX.parquet`` and one line of ``metrics.jsonl``.
Checkpoints get the EMA teacher's weights and a completion marker written last, so ``--resume`` only
restarts from a checkpoint that was fully saved.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import selective_log_softmax

from creditlens import runs, schema
from creditlens.envs.base import Environment, Problem
from creditlens.training.config import TrainConfig
from creditlens.training.feedback import EnvReward, completion_text, model_prompt, prompt_text
from creditlens.training.timing import PhaseTimer

COMPLETE_MARKER = "creditlens_complete"
TEACHER_STATE = "teacher_model.pt"


@dataclass
class RunContext:
    """What a trainer needs to write its run directory."""

    run_dir: Path
    name: str
    algo: str
    env: Environment
    reward: EnvReward
    eval_problems: list[Problem]
    config: TrainConfig


def _first_eos_lengths(completion_mask: torch.Tensor) -> torch.Tensor:
    """Response lengths ``[B]`` of right-padded completions (``completion_mask [B, T]``)."""
    return completion_mask.sum(dim=1).long()


class RunLogMixin:
    """Mixed into a TRL trainer (before it in the bases) to log per-token tables, metrics and evals."""

    run: RunContext

    def _init_runlog(self, run: RunContext) -> None:
        self.run = run
        self.timer = PhaseTimer(self.accelerator.device)
        self._records: list[dict[str, Any]] = []
        self._rollouts: dict[int, dict[str, Any]] = {}
        self._train_step_time = 0.0
        self._step_metrics: dict[str, Any] | None = None
        self.start_model = None
        if run.config.log_kl:
            self.start_model = (
                copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval().requires_grad_(False)
            )
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        self.add_callback(RunLogCallback(self))

    # ---- rollouts and token records -------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """The environment's verdicts (TRL's reward functions), timed as the scoring phase."""
        with self.timer("scoring"):
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _remember_rollouts(self, inputs: list[dict], contexts: list[str] | None = None) -> torch.Tensor:
        """Store prompt, outcome and feedback of this process's rollouts; returns their global indices."""
        offset = self.accelerator.process_index * len(inputs)
        self._rollouts = {}
        for i, (example, outcome) in enumerate(zip(inputs, self.run.reward.last, strict=True)):
            self._rollouts[offset + i] = {
                "prompt": prompt_text(example["prompt"]),
                "prompt_id": str(example["prompt_id"]),
                "outcome_reward": float(outcome.reward),
                "passed": bool(outcome.passed),
                "feedback": contexts[i] if contexts is not None else outcome.feedback,
            }
        return torch.arange(offset, offset + len(inputs), device=self.accelerator.device)

    def _record_tokens(
        self,
        inputs: dict[str, Any],
        student_lp: torch.Tensor,
        teacher_lp: torch.Tensor,
        advantage: torch.Tensor,
        mask: torch.Tensor,
        entropy: torch.Tensor,
        contrast_lp: torch.Tensor | None = None,
    ) -> None:
        """Keep one micro-batch's per-token values (all ``[B, T]``, ``contrast_lp [B, K, T]``)."""
        with self.timer("logging"):
            completion_mask = inputs["completion_mask"]
            counted = completion_mask.bool()
            kl = torch.zeros_like(student_lp)
            if self.start_model is not None:
                with torch.no_grad():
                    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
                    attention = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
                    logits = self._forward_logits_for(
                        self.start_model, ids, attention, completion_mask.size(1)
                    )
                    ref_lp = selective_log_softmax(logits, inputs["completion_ids"])
                    delta = ref_lp - student_lp
                    kl = torch.exp(delta) - delta - 1.0
            self._records.append(
                {
                    "sample": inputs["sample_index"].detach().cpu(),
                    "completion_ids": inputs["completion_ids"].detach().cpu(),
                    "lengths": _first_eos_lengths(completion_mask).cpu(),
                    "student_lp": student_lp.detach().float().cpu(),
                    "teacher_lp": teacher_lp.detach().float().cpu(),
                    "contrast_lp": None if contrast_lp is None else contrast_lp.detach().float().cpu(),
                    "advantage": advantage.detach().float().cpu(),
                    "mask": mask.detach().bool().cpu() & counted.cpu(),
                    "entropy_sum": float((entropy.detach().float() * counted).sum()),
                    "kl_sum": float((kl.detach().float() * counted).sum()),
                    "n_tokens": int(counted.sum()),
                }
            )

    def _forward_logits_for(self, model, input_ids, attention_mask, logits_to_keep: int) -> torch.Tensor:
        """Temperature-scaled logits ``[B, T, V]`` of ``model`` aligned to the last ``logits_to_keep`` tokens."""
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits[:, :-1, :][:, -logits_to_keep:, :] / self.temperature

    def _local_table(self, step: int) -> pd.DataFrame | None:
        frames = []
        tokenizer = self.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        config = self.run.config
        for record in self._records:
            samples = record["sample"].tolist()
            info = [self._rollouts[s] for s in samples]
            ids = record["completion_ids"]
            lengths = record["lengths"].tolist()
            tokens = [
                tokenizer.batch_decode([[t] for t in row[:n].tolist()])
                for row, n in zip(ids, lengths, strict=True)
            ]
            tokens = [t + [""] * (ids.shape[1] - len(t)) for t in tokens]
            responses = [
                tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
                for row, n in zip(ids, lengths, strict=True)
            ]
            frames.append(
                schema.build_token_table(
                    example_ids=[f"step{step}-sample{s}" for s in samples],
                    prompt_ids=[i["prompt_id"] for i in info],
                    token_ids=ids,
                    tokens=tokens,
                    teacher_lp=record["teacher_lp"].double(),
                    student_lp=record["student_lp"].double(),
                    contrast_lp=None if record["contrast_lp"] is None else record["contrast_lp"].double(),
                    mask=record["mask"],
                    lengths=lengths,
                    lam=config.lam,
                    pool=config.pool,
                    example_columns={
                        "run": [self.run.name] * len(samples),
                        "algo": [self.run.algo] * len(samples),
                        "step": [step] * len(samples),
                        "sample": samples,
                        "outcome_reward": [i["outcome_reward"] for i in info],
                        "prompt": [i["prompt"] for i in info],
                        "feedback": [i["feedback"] for i in info],
                        "response": responses,
                    },
                    token_columns={"advantage": record["advantage"]},
                )
            )
        return pd.concat(frames, ignore_index=True) if frames else None

    # ---- one optimizer step -----------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        start = self.timer.now()
        output = super().training_step(model, inputs, num_items_in_batch)
        self._train_step_time += self.timer.now() - start
        return output

    def _flush_step(self, step: int, step_seconds: float) -> None:
        """Gather this step's records on the main process; write its token table; stash its metrics."""
        phases = self.timer.pop()
        with self.timer("logging"):
            write_tokens = step % self.run.config.log_tokens_every == 0
            local_table = self._local_table(step) if write_tokens else None
            samples = sorted({s for r in self._records for s in r["sample"].tolist()})
            local = {
                "table": local_table,
                "outcomes": [
                    (self._rollouts[s]["outcome_reward"], self._rollouts[s]["passed"]) for s in samples
                ],
                "lengths": [n for r in self._records for n in r["lengths"].tolist()],
                "sums": [sum(r[k] for r in self._records) for k in ("entropy_sum", "kl_sum", "n_tokens")],
            }
            gathered = gather_object([local])
            self._records = []
            if self.accelerator.is_main_process:
                tables = [g["table"] for g in gathered if g["table"] is not None]
                if write_tokens and tables:
                    table = pd.concat(tables, ignore_index=True).sort_values(["sample", "position"])
                    runs.write_step_tokens(self.run.run_dir, step, table.reset_index(drop=True))
                outcomes = [o for g in gathered for o in g["outcomes"]]
                lengths = [n for g in gathered for n in g["lengths"]]
                entropy, kl, n_tokens = (sum(g["sums"][k] for g in gathered) for k in range(3))
                self._step_metrics = {
                    "step": step,
                    "reward": _mean([o[0] for o in outcomes]),
                    "pass_rate": _mean([float(o[1]) for o in outcomes]),
                    "response_length": _mean(lengths),
                    "entropy": entropy / n_tokens if n_tokens else math.nan,
                    "kl": kl / n_tokens if n_tokens and self.start_model is not None else math.nan,
                }
        phases["logging"] += self.timer.pop()["logging"]
        if self._step_metrics is not None:
            inner = phases["generation"] + phases["scoring"] + phases["contrast"] + phases["logging"]
            self._step_metrics.update({f"time_{k}": v for k, v in phases.items()})
            self._step_metrics["time_backward"] = max(self._train_step_time - inner, 0.0)
            self._step_metrics["time_step"] = step_seconds
        self._train_step_time = 0.0

    def _write_metrics(self, trl_logs: dict[str, float]) -> None:
        if self._step_metrics is None or not self.accelerator.is_main_process:
            return
        record = dict(self._step_metrics)
        for key in ("loss", "grad_norm", "learning_rate"):
            if key in trl_logs:
                record[key] = float(trl_logs[key])
        runs.append_jsonl(self.run.run_dir / runs.METRICS, record)
        self._step_metrics = None

    # ---- held-out evaluation ----------------------------------------------------------------
    def evaluate_env(self, step: int) -> None:
        """Greedy decoding on the env's eval split (sharded over processes); main appends ``eval.jsonl``."""
        problems = self.run.eval_problems
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = problems[rank::world]
        tokenizer = self.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        results: list[tuple[float, bool]] = []
        was_training = self.model.training
        self.model.eval()
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model, torch.no_grad():
            batch = max(1, self.run.config.batch_size)
            for start in range(0, len(mine), batch):
                chunk = mine[start : start + batch]
                prompts = [model_prompt(p, tokenizer) for p in chunk]
                if isinstance(prompts[0], list):
                    texts = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=False)
                else:
                    texts = prompts
                encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(
                    self.accelerator.device
                )
                out = model.generate(
                    **encoded,
                    max_new_tokens=self.run.config.max_completion_length,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=self.eos_token_ids
                    if hasattr(self, "eos_token_ids")
                    else tokenizer.eos_token_id,
                )
                decoded = tokenizer.batch_decode(
                    out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
                )
                for problem, text in zip(chunk, decoded, strict=True):
                    outcome = self.run.env.verify(problem, completion_text(text))
                    results.append((float(outcome.reward), bool(outcome.passed)))
        if was_training:
            self.model.train()
        everything = gather_object(results)
        if self.accelerator.is_main_process and everything:
            runs.append_jsonl(
                self.run.run_dir / runs.EVAL,
                {
                    "step": step,
                    "score": _mean([float(p) for _, p in everything]),
                    "mean_reward": _mean([r for r, _ in everything]),
                    "n": len(everything),
                },
            )

    # ---- checkpoints ------------------------------------------------------------------------
    def _separate_teacher(self) -> torch.nn.Module | None:
        teacher = getattr(self, "teacher_model", None)
        if teacher is None or teacher is self.model or self.args.teacher_model_kind != "ema":
            return None
        return self.accelerator.unwrap_model(teacher)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            teacher = self._separate_teacher()
            if teacher is not None:
                torch.save(teacher.state_dict(), folder / TEACHER_STATE)
            runs.atomic_write_text(folder / COMPLETE_MARKER, f"{self.state.global_step}\n")
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        teacher = self._separate_teacher()
        path = Path(resume_from_checkpoint) / TEACHER_STATE
        if teacher is not None and path.exists():
            teacher.load_state_dict(torch.load(path, map_location=self.accelerator.device))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


class RunLogCallback(TrainerCallback):
    """Drives :class:`RunLogMixin`: evals at step 0 / every ``eval_every`` / the end, logs every step."""

    def __init__(self, trainer: RunLogMixin):
        self.trainer = trainer
        self._step_start = 0.0
        self._bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc=f"train {self.trainer.run.name}"
            )
        done = {r.get("step") for r in runs.read_jsonl(self.trainer.run.run_dir / runs.EVAL)}
        if state.global_step == 0 and 0 not in done:
            self.trainer.evaluate_env(0)
        self.trainer.accelerator.wait_for_everyone()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = self.trainer.timer.now()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        self.trainer._flush_step(step, self.trainer.timer.now() - self._step_start)
        every = self.trainer.run.config.eval_every
        if (every and step % every == 0) or step == state.max_steps:
            self.trainer.evaluate_env(step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            if self._bar is not None and self.trainer._step_metrics is not None:
                metrics = self.trainer._step_metrics
                self._bar.set_postfix(loss=f"{logs['loss']:.3g}", reward=f"{metrics['reward']:.2f}")
                self._bar.update(1)
            self.trainer._write_metrics(logs)

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.close()


def last_complete_checkpoint(checkpoint_dir: Path) -> tuple[int, Path | None]:
    """Highest ``checkpoint-N`` holding the completion marker: ``(N, path)``, or ``(0, None)``."""
    best = (0, None)
    if not checkpoint_dir.is_dir():
        return best
    for folder in checkpoint_dir.glob("checkpoint-*"):
        try:
            step = int(folder.name.split("-")[1])
        except ValueError:
            continue
        if (folder / COMPLETE_MARKER).exists() and step > best[0]:
            best = (step, folder)
    return best


def truncate_run(run_dir: Path, step: int) -> None:
    """Drop log records, token tables and incomplete checkpoints past ``step`` (used by ``--resume``)."""
    for name in (runs.METRICS, runs.EVAL):
        path = run_dir / name
        if path.exists():
            runs.rewrite_jsonl(path, [r for r in runs.read_jsonl(path) if int(r.get("step", 0)) <= step])
    folder = run_dir / runs.TOKENS_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".") or int(path.stem.split("_")[1]) > step:
                path.unlink()
    for ckpt in (run_dir / "checkpoints").glob("checkpoint-*"):
        if not (ckpt / COMPLETE_MARKER).exists() or int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)


def world_size() -> int:
    """Number of processes of this launch (``torchrun`` / ``accelerate`` set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
