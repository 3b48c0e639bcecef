"""The shortcut-testbed study: GRPO vs SD vs CREDIT (a ``lam`` sweep) over seeds, through the trainer.

Each run is one ``creditlens train`` process (``OMP_NUM_THREADS=1``, ``jobs`` at a time) on the
shortcut environment with its warm-started tiny model; checkpoints are pruned afterwards (only the
logs are kept), then :func:`creditlens.compare.compare_runs` writes ``OUT/report/``. Presets:

- ``full``: grpo, sd and credit with lam in (0.25, 0.5, 1.0), seeds 0-2, ``configs/study_shortcut.yaml``
  (the numbers of docs/results.md);
- ``bundled``: grpo, sd and credit lam=0.5, seed 0, ``configs/study_bundled.yaml`` (the small real
  runs shipped in ``data/runs/``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from creditlens import runs
from creditlens.compare import compare_runs
from creditlens.envs.shortcut import ShortcutEnv
from creditlens.training.config import load_config
from creditlens.warmstart import shortcut_model_dir

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class StudyRun:
    """One cell of the grid: ``algo`` (``lam`` only for credit) and ``seed``."""

    algo: str
    seed: int
    lam: float | None = None

    @property
    def name(self) -> str:
        method = self.algo if self.lam is None else f"credit-lam{self.lam:g}"
        return f"{method}-s{self.seed}"


@dataclass(frozen=True)
class Preset:
    """A study grid: methods x seeds, one config file."""

    config: Path
    lams: tuple[float, ...] = (0.25, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    baselines: tuple[str, ...] = ("grpo", "sd")
    overrides: dict[str, str] = field(default_factory=dict)

    def grid(self) -> list[StudyRun]:
        """Every run, seed-major so that a partial study already covers every method."""
        return [
            run
            for seed in self.seeds
            for run in [StudyRun(a, seed) for a in self.baselines] + [StudyRun("credit", seed, lam) for lam in self.lams]
        ]


PRESETS = {
    "full": Preset(CONFIG_DIR / "study_shortcut.yaml"),
    "bundled": Preset(CONFIG_DIR / "study_bundled.yaml", lams=(0.5,), seeds=(0,)),
}


def train_command(run: StudyRun, config: Path, out: Path) -> list[str]:
    """The ``creditlens train`` command line of one run."""
    command = [sys.executable, "-m", "creditlens.cli", "train", "--algo", run.algo, "--env", "shortcut",
               "--config", str(config), "--seed", str(run.seed), "--out", str(out / run.name)]
    if run.lam is not None:
        command += ["--set", f"lam={run.lam}"]
    return command


def prune(run_dir: Path) -> None:
    """Drop a finished run's checkpoints (weights and optimizer state): the logs are what the study keeps."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def _finished(run_dir: Path, max_steps: int) -> bool:
    evals = runs.read_jsonl(run_dir / runs.EVAL)
    return any(int(e.get("step", -1)) == max_steps for e in evals)


def run_study(preset: str | Preset, out: str | os.PathLike, jobs: int = 1, keep_checkpoints: bool = False) -> Path:
    """Run every missing cell of ``preset`` into ``out/NAME`` (finished runs are skipped, unfinished ones
    restarted from scratch), then write ``out/report``. Returns ``out``."""
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    if not preset.config.is_file():
        raise FileNotFoundError(f"{preset.config}: study config not found")
    config = load_config(preset.config)
    shortcut_model_dir(ShortcutEnv(**config.env_args))  # build the warm start once, before the parallel runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in preset.grid() if not _finished(out / r.name, config.max_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    running: list[tuple[StudyRun, subprocess.Popen, float, object]] = []
    failed: list[str] = []
    with tqdm(total=len(todo), desc="study runs", disable=None) as bar:
        while todo or running:
            while todo and len(running) < max(1, jobs):
                run = todo.pop(0)
                shutil.rmtree(out / run.name, ignore_errors=True)
                log = open(out / f"{run.name}.log", "w")
                command = train_command(run, preset.config, out)
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append((run, process, time.time(), log))
            time.sleep(0.5)
            for item in list(running):
                run, process, start, log = item
                if process.poll() is None:
                    continue
                running.remove(item)
                log.close()
                bar.update(1)
                if process.returncode != 0:
                    failed.append(f"{run.name} (exit {process.returncode}, see {out / run.name}.log)")
                elif not keep_checkpoints:
                    prune(out / run.name)
                bar.set_postfix_str(f"{run.name} {time.time() - start:.0f}s")
    if failed:
        raise RuntimeError("study runs failed: " + "; ".join(failed))
    for log in out.glob("*.log"):
        log.unlink()
    compare_runs([out / r.name for r in preset.grid()]).save(out / "report")
    return out
