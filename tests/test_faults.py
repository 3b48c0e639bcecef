"""Faults with real processes: one writer per run directory, a resume that checks before it changes, a
failed start that leaves nothing behind. Tiny model, a few steps; each case is one line naming the cause."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_support import EchoEnv, tiny_fields

from creditlens import runs
from creditlens.errors import RunError
from creditlens.training import run as run_module
from creditlens.training.checkpoints import TEACHER_STATE, last_complete_checkpoint
from creditlens.training.config import TrainConfig
from creditlens.training.lock import LOCK, run_lock
from creditlens.training.run import train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("train_support.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the lock's holder line) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK}


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A process that holds ``run_dir``'s lock until killed (prints 'held' once it does)."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom creditlens.training.lock import run_lock\n"
            f"with run_lock(Path({str(run_dir)!r})):\n    print('held', flush=True)\n    time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_live_lock_refuses_every_writer_and_a_killed_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        for resume in (False, True):
            with pytest.raises(RunError, match=rf"^--out {out}: another creditlens process \(PID {holder.pid}\) "
                                               "is writing this run"):
                train("credit", "echo", "tiny", TrainConfig(**tiny_fields(2)), out, resume=resume, env=EchoEnv())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK).read_text().split()[0] == str(holder.pid)  # stale: its holder is gone
    with run_lock(out):
        assert (out / LOCK).read_text().split()[0] == str(os.getpid())
    assert out.is_dir() and not any(out.iterdir())  # lock released and removed; the directory is not ours


def test_a_failed_start_leaves_nothing_that_blocks_the_rerun(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def broken(*args, **kwargs):
        raise ValueError("config (TRL): generation_batch_size must be a multiple of num_generations")

    monkeypatch.setattr(run_module, "build_trainer", broken)
    with pytest.raises(ValueError, match="generation_batch_size"):
        train("credit", "echo", "tiny", TrainConfig(**tiny_fields(2)), out, env=EchoEnv())
    assert not out.exists()  # manifest, start model and lock removed with the directory this start made
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="generation_batch_size"):
        train("credit", "echo", "tiny", TrainConfig(**tiny_fields(2)), out, env=EchoEnv())
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # what was there before stays


def test_trl_cannot_override_what_creditlens_manages():
    from creditlens.errors import ConfigError
    from creditlens.training.config import trl_args

    for key, message in (("output_dir", r"trl\.output_dir is set by creditlens \(from --out\)"),
                         ("seed", r"trl\.seed duplicates the config field seed; set `seed:` at the top level"),
                         ("per_device_train_batch_size", r"trl\.per_device_train_batch_size is set by creditlens "
                                                         r"\(from num_prompts \* num_generations"),
                         ("logging_steps", r"trl\.logging_steps is set by creditlens \(from creditlens's run log")):
        with pytest.raises(ConfigError, match=rf"^config: {message}"):
            trl_args(TrainConfig(trl={key: 1}), "credit", "unused")
    assert trl_args(TrainConfig(trl={"reprompt_template": "{prompt}"}), "sd", "unused").reprompt_template == "{prompt}"


@pytest.mark.slow
def test_live_run_is_locked_and_a_damaged_checkpoint_is_refused_before_any_change(tmp_path):
    """A real training process: a second train/--resume is refused naming its PID; once it is killed, a
    resume from a checkpoint lacking (or with a damaged) part is refused naming it and changes no file."""
    out, steps = tmp_path / "live", 40
    process = subprocess.Popen([sys.executable, str(SCRIPT), "credit", str(out), str(steps)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = TrainConfig(**tiny_fields(steps))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and last_complete_checkpoint(out / runs.CHECKPOINTS_DIR)[0] < 2:
            assert process.poll() is None, "the run ended early"
            time.sleep(0.1)
        for resume in (False, True):
            with pytest.raises(RunError, match=rf"another creditlens process \(PID {process.pid}\)"):
                train("credit", "echo", "tiny", config, out, resume=resume, env=EchoEnv())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    step, checkpoint = last_complete_checkpoint(out / runs.CHECKPOINTS_DIR)
    assert runs.read_jsonl(out / runs.METRICS)[-1]["step"] >= step  # logs past the checkpoint to keep
    before = snapshot(out)
    damage = {
        "optimizer.pt": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "model.safetensors": lambda p: p.write_bytes(p.read_bytes()[:-100]),
        "scheduler.pt": Path.unlink,
        "rng_state.pth": Path.unlink,
        TEACHER_STATE: Path.unlink,
        "trainer_state.json": lambda p: p.write_text("{"),
    }
    for name, harm in damage.items():
        original = (checkpoint / name).read_bytes()
        harm(checkpoint / name)
        with pytest.raises(RunError, match=rf"^--resume {checkpoint}: {name} (is missing|is truncated|is unreadable)"):
            train("credit", "echo", "tiny", config, out, resume=True, env=EchoEnv())
        (checkpoint / name).write_bytes(original)
        assert snapshot(out) == before, name
    metrics = out / runs.METRICS
    metrics.write_text(metrics.read_text().replace("\n", "\n{oops\n", 1))
    with pytest.raises(RunError, match=rf"{metrics}:2: not valid JSON"):
        train("credit", "echo", "tiny", config, out, resume=True, env=EchoEnv())
