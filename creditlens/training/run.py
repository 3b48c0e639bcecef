"""One training run: resolve env and model, write the manifest, build the TRL trainer, train, resume."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import AutoTokenizer

from creditlens import envs, models, runs
from creditlens.cache import staged_dir
from creditlens.envs.base import Environment
from creditlens.training.config import ALGOS, TrainConfig, trl_args
from creditlens.training.credit_trainer import CreditTrainer
from creditlens.training.feedback import EnvReward, build_dataset
from creditlens.training.runlog import RunContext, last_complete_checkpoint, truncate_run, world_size
from creditlens.training.trainers import GRPORunTrainer, SDTrainer

PACKAGES = ("creditlens", "torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "numpy")
MANIFEST_KEYS = ("algo", "env", "model", "seed", "config")


def resolve_env(name: str, env_args: dict[str, Any]) -> Environment:
    """The environment registered under ``name``, built with the config's ``env_args``."""
    try:
        return envs.get(name, **env_args)
    except TypeError as error:
        raise ValueError(
            f"config env_args {env_args}: not accepted by environment {name!r} ({error})"
        ) from error


def resolve_model(name: str | None, env: Environment, run_dir: Path) -> str:
    """A local directory holding the start model (TRL re-loads the teacher and reference from it).

    ``None`` asks the env (``env.default_model()``: the embedded SmolLM2 unless the env overrides it, as
    ``shortcut`` does with its warm start). ``"tiny"`` is saved once into ``run_dir/start_model``
    (atomically: staged, then renamed).
    """
    if name is None:
        name = str(env.default_model())
    if name == models.TINY_MODEL:
        target = run_dir / "start_model"
        if not target.is_dir():
            model, tokenizer = models.load(name)
            with staged_dir(target, "config.json") as staging:
                model.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
        return str(target)
    return models.resolve(name)  # the embedded model, or a checked local directory; never a hub download


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip() or None
    return f"{commit}+dirty" if commit and dirty.stdout.strip() else commit


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def manifest_for(
    name: str, algo: str, env: str, model: str | None, model_path: str, config: TrainConfig
) -> dict:
    """The ``manifest.json`` content: everything needed to run this again."""
    return {
        "name": name,
        "algo": algo,
        "env": env,
        "model": model,
        "model_path": model_path,
        "seed": config.seed,
        "config": config.to_dict(),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "world_size": world_size(),
        "command": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _check_resume(run_dir: Path, wanted: dict[str, Any]) -> None:
    manifest = runs.load_run(run_dir).manifest
    for key in MANIFEST_KEYS:
        if manifest.get(key) != wanted[key]:
            raise ValueError(
                f"--resume: {key} differs from {run_dir / runs.MANIFEST} ({manifest.get(key)!r} there, "
                f"{wanted[key]!r} now); resume with the run's own settings"
            )


def _check_algo(algo: str, config: TrainConfig) -> None:
    if algo == "credit" and config.trl.get("use_teacher_server"):
        raise ValueError(
            "config: trl.use_teacher_server is not supported by --algo credit (the vLLM teacher server "
            "cannot score the contrast contexts); remove it"
        )
    if algo == "credit" and (config.num_prompts - 1) * config.num_generations < config.n_contrast:
        raise ValueError(
            f"config: credit needs n_contrast={config.n_contrast} examples with another prompt id for every "
            f"sample, but num_prompts={config.num_prompts} x num_generations={config.num_generations} gives "
            f"{(config.num_prompts - 1) * config.num_generations}; raise num_prompts or lower n_contrast"
        )


def build_trainer(
    algo: str, env: Environment, model_path: str, config: TrainConfig, args: Any, run_dir: Path
) -> Any:
    """The TRL trainer of ``algo`` (``args`` from :func:`trl_args`) with run logging into ``run_dir``."""
    if algo not in ALGOS:
        raise ValueError(f"--algo must be one of {ALGOS}, got {algo!r}")
    _check_algo(algo, config)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_problems = env.problems("train", config.n_train_problems, config.seed)
    eval_problems = env.problems("eval", config.n_eval_problems, config.seed)
    reward = EnvReward(env, train_problems)
    run = RunContext(run_dir, run_dir.name, algo, env, reward, eval_problems, config)
    kwargs: dict[str, Any] = dict(
        model=model_path,
        reward_funcs=[reward],
        args=args,
        train_dataset=build_dataset(train_problems, tokenizer),
        processing_class=tokenizer,
        run=run,
    )
    if algo == "grpo":
        return GRPORunTrainer(**kwargs)
    if algo == "sd":
        return SDTrainer(**kwargs)
    return CreditTrainer(**kwargs, lam=config.lam, n_contrast=config.n_contrast, pool=config.pool)


def train(
    algo: str,
    env_name: str,
    model: str | None,
    config: TrainConfig,
    out: str | Path,
    resume: bool = False,
    env: Environment | None = None,
) -> Path:
    """Train ``algo`` on ``env_name`` into the run directory ``out``; returns it.

    ``env`` overrides the registry lookup (tests, custom environments). With ``resume`` the run restarts
    from its last complete checkpoint and logs past it are dropped first.
    """
    run_dir = Path(out)
    env = env if env is not None else resolve_env(env_name, config.env_args)
    args = trl_args(config, algo, run_dir / "checkpoints", world_size())
    state = PartialState()
    has_manifest = (run_dir / runs.MANIFEST).exists()
    if has_manifest and not resume:
        raise ValueError(
            f"--out {run_dir}: a run already exists there; pass --resume or choose another --out"
        )
    wanted = {"algo": algo, "env": env_name, "model": model, "seed": config.seed, "config": config.to_dict()}
    if resume and has_manifest:
        _check_resume(run_dir, wanted)
    step, checkpoint = last_complete_checkpoint(run_dir / "checkpoints") if resume else (0, None)
    state.wait_for_everyone()  # every process has read the directory before the main one changes it
    with state.main_process_first():
        model_path = resolve_model(model, env, run_dir)
    if state.is_main_process:
        if resume:
            truncate_run(run_dir, step)
        if not has_manifest:
            runs.write_manifest(
                run_dir, manifest_for(run_dir.name, algo, env_name, model, model_path, config)
            )
    state.wait_for_everyone()
    if checkpoint is not None and step >= config.max_steps:
        return run_dir
    trainer = build_trainer(algo, env, model_path, config, args, run_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    return run_dir
