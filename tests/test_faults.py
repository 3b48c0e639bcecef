"""Faults with real processes: one writer per run directory, a resume that checks before it changes, a
failed start that leaves nothing behind. Tiny model, a few steps; each case is one line naming the cause."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_support import EchoEnv, tiny_fields

from creditlens import runs
from creditlens.cache import clean_stale_staging, staged_dir
from creditlens.errors import RunError
from creditlens.training import run as run_module
from creditlens.training.checkpoints import TEACHER_STATE, last_complete_checkpoint
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
                train("credit", "echo", "tiny", tiny_fields(2), out, resume=resume, env=EchoEnv())
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
        train("credit", "echo", "tiny", tiny_fields(2), out, env=EchoEnv())
    assert not out.exists()  # manifest, start model and lock removed with the directory this start made
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="generation_batch_size"):
        train("credit", "echo", "tiny", tiny_fields(2), out, env=EchoEnv())
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # what was there before stays


def test_config_cannot_set_what_creditlens_manages():
    from creditlens.errors import ConfigError
    from creditlens.training.config import parse_config

    for key, message in (("output_dir", r"output_dir is set by creditlens \(from --out\)"),
                         ("data_seed", r"data_seed is set by creditlens \(from seed\)"),
                         ("per_device_train_batch_size", r"per_device_train_batch_size is set by creditlens "
                                                         r"\(from num_prompts \* num_generations"),
                         ("logging_steps", r"logging_steps is set by creditlens \(from creditlens's run log")):
        with pytest.raises(ConfigError, match=rf"^config: {message}"):
            parse_config({key: 1}, "credit", "unused")
    assert parse_config({"reprompt_template": "{prompt}"}, "sd", "unused")[1].reprompt_template == "{prompt}"


@pytest.mark.slow
def test_live_run_is_locked_and_a_damaged_checkpoint_is_refused_before_any_change(tmp_path):
    """A real training process: a second train/--resume is refused naming its PID; once it is killed, a
    resume from a checkpoint lacking (or with a damaged) part is refused naming it and changes no file."""
    out, steps = tmp_path / "live", 40
    process = subprocess.Popen([sys.executable, str(SCRIPT), "credit", str(out), str(steps)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tiny_fields(steps)
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


# --- replacing an output folder: the complete old or the complete new one at every instant ----------

REPLACER = """
import sys
from pathlib import Path
from creditlens import cache
out, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "no-exchange":  # a file system without RENAME_EXCHANGE, killed between its two renames
    import os
    cache._exchange = lambda a, b: False
    rename = Path.rename
    def rename_then_die(self, target):
        rename(self, target)
        if ".old." in str(target):
            os._exit(9)
    Path.rename = rename_then_die
generation = 0
while True:
    generation += 1
    with cache.staged_dir(out, "a", replace=True) as staging:
        for name in ("a", "b", "c"):
            (staging / name).write_text(str(generation) * 1000)
    print(generation, flush=True)
"""


def complete(out: Path) -> str:
    """The generation ``out`` holds; fails when it is missing or mixes generations."""
    texts = {(out / name).read_text() for name in ("a", "b", "c")}
    assert len(texts) == 1 and len(next(iter(texts))) >= 1000, texts
    return next(iter(texts))


def test_an_output_folder_is_never_missing_or_mixed_while_replaced_or_killed(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out, "a") as staging:
        for name in ("a", "b", "c"):
            (staging / name).write_text("0" * 1000)
    writer = subprocess.Popen([sys.executable, "-c", REPLACER, str(out), "exchange"], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline()
        seen = set()
        while len(seen) < 20:  # look while the other process swaps the folder over and over
            folder = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # out itself: never missing
            try:
                texts = set()
                for name in ("a", "b", "c"):
                    with open(os.open(name, os.O_RDONLY, dir_fd=folder)) as handle:
                        texts.add(handle.read())
                assert len(texts) == 1  # the folder as it was when opened: one generation, never a mix
                seen |= texts
            except FileNotFoundError:
                pass  # that old folder was being deleted after the swap
            finally:
                os.close(folder)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    complete(out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    with staged_dir(out, "a", replace=True) as staging:  # a later run removes the killed one's staging
        for name in ("a", "b", "c"):
            (staging / name).write_text("new" * 1000)
    assert complete(out) == "new" * 1000 and [p.name for p in tmp_path.iterdir()] == ["out"], leftovers


def test_without_rename_exchange_a_crash_between_renames_is_repaired_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out, "a") as staging:
        for name in ("a", "b", "c"):
            (staging / name).write_text("0" * 1000)
    crashed = subprocess.run([sys.executable, "-c", REPLACER, str(out), "no-exchange"], env=ENV, timeout=60)
    assert crashed.returncode == 9 and not out.exists()  # the window this fallback has
    assert clean_stale_staging(out) and complete(out) == "0" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_owned_replacement_keeps_the_users_files_and_drops_stale_outputs(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    for name, text in (("comparison.csv", "old"), ("credit_auroc.png", "old figure"), ("notes.md", "mine")):
        (out / name).write_text(text)
    (out / "drafts").mkdir()
    (out / "drafts" / "d.txt").write_text("draft")
    with staged_dir(out, "comparison.csv", replace=True, owned={"comparison.csv", "credit_auroc.png"}) as staging:
        (staging / "comparison.csv").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "drafts", "notes.md"]
    assert (out / "comparison.csv").read_text() == "new" and (out / "drafts" / "d.txt").read_text() == "draft"


def test_compare_will_not_swap_out_the_current_directory(tmp_path, monkeypatch):
    from creditlens.compare import Comparison
    from creditlens.errors import InputError

    monkeypatch.chdir(tmp_path)
    for out in (".", "..", "sub/.."):
        with pytest.raises(InputError, match=rf"^--out {re.escape(out)}: the current directory or one above it"):
            Comparison.save(None, out)


def test_a_dangling_symlink_out_is_named(tmp_path):
    from creditlens.errors import InputError
    from creditlens.runs import check_out_dir

    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(InputError, match=rf"^--out {link}: a symbolic link to {tmp_path / 'gone'}, which does not exist"):
        check_out_dir(link)


STUDY = """
import sys, types
from pathlib import Path
from creditlens import envs, study
marks = Path(sys.argv[1])
child = ("import signal, sys, time\\nfrom pathlib import Path\\n"
         "def stop(signum, frame):\\n    time.sleep(0.5)\\n"  # a run that takes a moment to save and exit
         "    Path(sys.argv[1], signal.Signals(signum).name).write_text('stopped')\\n    sys.exit(0)\\n"
         "signal.signal(signal.SIGTERM, stop)\\nsignal.signal(signal.SIGINT, stop)\\n"
         "Path(sys.argv[1], 'started').write_text('')\\ntime.sleep(120)\\n")
def fake_command(run, preset, out):
    (marks / run.name).mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-c", child, str(marks / run.name)]
study.train_command = fake_command
envs.get = lambda name, **kw: types.SimpleNamespace(default_model=lambda: None)
study.run_study(next(iter(study.PRESETS.values())), Path(sys.argv[2]), jobs=2)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_study_forwards_its_signal_to_the_runs_and_waits_for_them(tmp_path, sig):
    marks = tmp_path / "marks"
    process = subprocess.Popen([sys.executable, "-c", STUDY, str(marks), str(tmp_path / "study")], env=ENV,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(list(marks.glob("*/started"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    runs_started = sorted(p.parent.name for p in marks.glob("*/started"))
    assert len(runs_started) == 2
    process.send_signal(sig)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == (143 if sig == signal.SIGTERM else -signal.SIGINT), stderr  # the CLI: 130
    for name in runs_started:  # each run got the same signal, and the study ended only after they had
        assert (marks / name / sig.name).read_text() == "stopped"


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    saves = []
    save = transformers.modeling_utils.safe_save_file

    def full_from_the_third(*args, **kwargs):  # start model, checkpoint-1, then the disk is full
        saves.append(1)
        if len(saves) >= 3:  # what safetensors raised on a full 3 MB tmpfs:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return save(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_from_the_third)
    out = tmp_path / "run"
    with pytest.raises(RunError, match=rf"^--out {out}: the disk is full \(Error while serializing.*os error 28\)\); "
                                       "free space, then --resume: it restarts from the last complete checkpoint$"):
        train("sd", "echo", "tiny", tiny_fields(2), out, env=EchoEnv())
    assert last_complete_checkpoint(out / runs.CHECKPOINTS_DIR)[0] == 1
