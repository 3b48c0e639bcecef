"""Checkpoints a run can resume from: the EMA teacher saved beside TRL's state, and a completion marker
written last, so ``--resume`` only restarts from a checkpoint that was fully saved."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from creditlens import runs
from creditlens.errors import RunError

COMPLETE_MARKER = "creditlens_complete"
TEACHER_STATE = "teacher_model.pt"


def _separate_teacher(trainer: Any) -> torch.nn.Module | None:
    """The EMA teacher when it is a model of its own (not the student, not a LoRA adapter)."""
    teacher = getattr(trainer, "teacher_model", None)
    if teacher is None or teacher is trainer.model or trainer.args.teacher_model_kind != "ema":
        return None
    return trainer.accelerator.unwrap_model(teacher)


class CheckpointCallback(TrainerCallback):
    """After TRL saves ``checkpoint-N``: add the EMA teacher's weights and the completion marker.

    ``resume_from``: the checkpoint this run restarts from; its teacher weights are loaded at train begin.
    """

    def __init__(self, trainer: Any, resume_from: Path | None = None):
        self.trainer = trainer
        self.resume_from = resume_from

    def on_train_begin(self, args, state, control, **kwargs):
        teacher = _separate_teacher(self.trainer)
        path = None if self.resume_from is None else self.resume_from / TEACHER_STATE
        if teacher is not None and path is not None and path.exists():
            teacher.load_state_dict(torch.load(path, map_location=self.trainer.accelerator.device))

    def on_save(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            teacher = _separate_teacher(self.trainer)
            if teacher is not None:
                torch.save(teacher.state_dict(), folder / TEACHER_STATE)
            runs.atomic_write_text(folder / COMPLETE_MARKER, f"{state.global_step}\n")
        accelerator.wait_for_everyone()


def last_complete_checkpoint(checkpoint_dir: Path) -> tuple[int, Path | None]:
    """Highest ``checkpoint-N`` holding the completion marker: ``(N, path)``, or ``(0, None)``."""
    best: tuple[int, Path | None] = (0, None)
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


def resume_point(run_dir: Path) -> tuple[int, Path]:
    """The ``(step, checkpoint)`` ``--resume`` restarts ``run_dir`` from; ``RunError`` when there is none.

    The message says what the directory holds and what to do; nothing is changed.
    """
    if not run_dir.is_dir():
        raise RunError(f"--resume {run_dir}: no such run directory; drop --resume to start a new run there")
    step, checkpoint = last_complete_checkpoint(run_dir / runs.CHECKPOINTS_DIR)
    if checkpoint is not None:
        return step, checkpoint
    held = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    if not held:
        raise RunError(
            f"--resume {run_dir}: the directory is empty, there is nothing to resume; drop --resume to start a run"
        )
    raise RunError(
        f"--resume {run_dir}: no complete checkpoint under {runs.CHECKPOINTS_DIR}/ (the directory holds "
        f"{', '.join(held)}; checkpoints are pruned by 'creditlens study' or were deleted), so the run cannot "
        "continue; start it again with another --out (or delete this directory first)"
    )


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
    for checkpoint in (run_dir / runs.CHECKPOINTS_DIR).glob("checkpoint-*"):
        if not (checkpoint / COMPLETE_MARKER).exists() or int(checkpoint.name.split("-")[1]) > step:
            shutil.rmtree(checkpoint)
