"""Checkpoints a run can resume from: the EMA teacher saved beside TRL's state, and a completion marker
written last (the step, then the extra parts saved), so ``--resume`` only restarts from a checkpoint that
was fully saved. :func:`check_resume` reads every part of it (weights, optimizer, scheduler, RNG, trainer
state, EMA teacher) and every log file before :func:`truncate_run` changes anything."""

from __future__ import annotations

import errno
import json
import shutil
import struct
import zipfile
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
        if teacher is not None and self.resume_from is not None:
            path = self.resume_from / TEACHER_STATE
            if not path.is_file():  # check_resume refuses this first; never continue with a fresh teacher
                raise RunError(f"--resume {path.parent}: lacks the EMA teacher state {TEACHER_STATE}; "
                               "resume from a checkpoint that has it, or start a new run")
            teacher.load_state_dict(torch.load(path, map_location=self.trainer.accelerator.device))

    def on_save(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            teacher = _separate_teacher(self.trainer)
            extra = []
            if teacher is not None:
                torch.save(teacher.state_dict(), folder / TEACHER_STATE)
                extra.append(TEACHER_STATE)
            runs.atomic_write_text(folder / COMPLETE_MARKER, "".join(f"{line}\n" for line in [state.global_step, *extra]))
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


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a full disk or quota, however the writing library
    reports it (``OSError`` ENOSPC/EDQUOT, safetensors' "os error 28", torch's "file write failed")."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(error) for text in ("No space left on device", "os error 28", "Disk quota exceeded",
                                                "file write failed")):
            return True
        error = error.__cause__ or error.__context__
    return False


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")


def check_resume(run_dir: Path, checkpoint: Path, step: int, needs_teacher: bool, world_size: int) -> None:
    """Read every part ``--resume`` needs, changing nothing; ``RunError`` naming the first missing or damaged one.

    Parts: model weights (safetensors headers against the file sizes, or a torch zip), ``optimizer.pt``,
    ``scheduler.pt``, the RNG state of each of ``world_size`` processes, ``trainer_state.json`` at ``step``,
    the EMA teacher state when the run has one (``needs_teacher``, or listed in the completion marker), and
    the run's logs (``metrics.jsonl``, ``eval.jsonl``: every line but a cut-off last one must parse).
    """
    marker = (checkpoint / COMPLETE_MARKER).read_text(encoding="utf-8", errors="replace").split()
    weights = next((checkpoint / name for name in WEIGHTS if (checkpoint / name).is_file()), None)
    if weights is None:
        _refuse(checkpoint, "model weights (model.safetensors)", "is missing")
    _check_weights(checkpoint, weights)
    rng = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]
    teacher = [TEACHER_STATE] if needs_teacher or TEACHER_STATE in marker[1:] else []
    for name in ["optimizer.pt", "scheduler.pt", *rng, *teacher]:
        _check_torch_file(checkpoint, checkpoint / name)
    try:
        saved = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        _refuse(checkpoint, "trainer_state.json", f"is missing or unreadable ({type(error).__name__})")
    if saved != step:
        _refuse(checkpoint, "trainer_state.json", f"says step {saved!r}, not {step}")
    for name in (runs.METRICS, runs.EVAL):
        runs.read_jsonl(run_dir / name)  # RunError naming file:line when a line is damaged


def _refuse(checkpoint: Path, part: str, why: str):
    raise RunError(f"--resume {checkpoint}: {part} {why}; the checkpoint is incomplete or damaged, so nothing "
                   "was changed (delete this checkpoint folder to resume from an earlier one)")


def _check_weights(checkpoint: Path, path: Path) -> None:
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            _refuse(checkpoint, path.name, "is unreadable")
        for shard in shards:
            _check_weights(checkpoint, checkpoint / shard)
    elif path.suffix == ".safetensors":
        _check_safetensors(checkpoint, path)
    else:
        _check_torch_file(checkpoint, path)


def _check_safetensors(checkpoint: Path, path: Path) -> None:
    """The header parses and its tensors end exactly at the end of the file (a cut-off copy does not)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError:
        _refuse(checkpoint, path.name, "is missing")
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        _refuse(checkpoint, path.name, "is unreadable (not a safetensors file)")
    if 8 + length + end != size:
        _refuse(checkpoint, path.name, f"is truncated ({size} bytes, its header needs {8 + length + end})")


def _check_torch_file(checkpoint: Path, path: Path) -> None:
    """``torch.save``'s zip archive is complete and every record matches its CRC (nothing is unpickled)."""
    if not path.is_file():
        _refuse(checkpoint, path.name, "is missing")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        _refuse(checkpoint, path.name, f"is truncated or damaged ({error})")
    if bad is not None:
        _refuse(checkpoint, path.name, f"is damaged (record {bad} fails its checksum)")


def truncate_run(run_dir: Path, step: int) -> None:
    """Drop log records, token tables and incomplete checkpoints past ``step`` (used by ``--resume``, after
    :func:`check_resume`)."""
    for name in (runs.METRICS, runs.EVAL):
        path = run_dir / name
        if path.exists():
            runs.rewrite_jsonl(path, [r for r in runs.read_jsonl(path) if int(r.get("step", 0)) <= step])
    folder = run_dir / runs.TOKENS_DIR
    if folder.is_dir():  # files that are not step tables (a user's notes) are left alone
        for path in folder.iterdir():
            table = runs.TOKEN_FILE.fullmatch(path.name)
            if path.name.startswith(".") and path.is_file() or table and int(table.group(1)) > step:
                path.unlink()
    for checkpoint in (run_dir / runs.CHECKPOINTS_DIR).glob("checkpoint-*"):
        if not (checkpoint / COMPLETE_MARKER).exists() or int(checkpoint.name.split("-")[1]) > step:
            shutil.rmtree(checkpoint)
