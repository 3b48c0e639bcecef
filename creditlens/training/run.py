"""One training run: check every input, write the manifest, build the TRL trainer, attach the run log, train.

Nothing is written to ``--out`` before every input has been checked (config, environment, model, the
TRL arguments, ``--resume``'s checkpoint and logs): a refused start leaves the directory as it was. The
main process holds the run's lock (``creditlens.training.lock``) from before those checks to the end.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from creditlens import envs, models, runs
from creditlens.cache import staged_dir
from creditlens.choices import ALGOS
from creditlens.envs.base import Environment
from creditlens.errors import ConfigError, RunError
from creditlens.training.config import RunConfig, check_reporters, parse_config, recorded

PACKAGES = ("creditlens", "torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "numpy")
MANIFEST_KEYS = ("algo", "env", "model", "seed", "config")


def world_size() -> int:
    """Number of processes of this launch (``torchrun`` / ``accelerate`` set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_env(name: str, env_args: dict[str, Any]) -> Environment:
    """The environment registered under ``name``, built with the config's ``env_args``."""
    try:
        return envs.get(name, **env_args)
    except TypeError as error:
        raise ConfigError(
            f"config env_args {env_args}: not accepted by environment {name!r} ({error})"
        ) from error


def check_model(name: str | None, env: Environment) -> str:
    """Where the start model loads from, checked locally without writing anything (``models.resolve``).

    ``None`` picks the env's default model. Returns a model directory, or ``models.TINY_MODEL``, which
    :func:`materialize_model` saves into the run directory.
    """
    return models.resolve(str(env.default_model()) if name is None else name)


def materialize_model(where: str, run_dir: Path) -> str:
    """A local directory holding the start model (TRL re-loads the teacher and reference from it).

    ``models.TINY_MODEL`` is saved once into ``run_dir/start_model`` (atomically: staged, then renamed).
    """
    if where != models.TINY_MODEL:
        return where
    target = run_dir / runs.START_MODEL_DIR
    if not target.is_dir():
        model, tokenizer = models.load(models.TINY_MODEL)
        with staged_dir(target, "config.json") as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return str(target)


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


def manifest_for(name: str, algo: str, env: str, model: str | None, model_path: str, config: dict, args: Any) -> dict:
    """The ``manifest.json`` content: everything needed to run this again (``config``: :func:`recorded`), and
    under ``credit`` the CREDIT settings the trainer runs with (its ``args.spec``: lam 0 for sd; None for grpo).
    ``model_digest`` fingerprints the start weights (:func:`creditlens.models.weights_digest`; None for the tiny
    model, which is built from a fixed config into the run directory)."""
    spec = getattr(args, "spec", None)
    return {
        "name": name,
        "algo": algo,
        "env": env,
        "model": model,
        "model_path": model_path,
        "model_digest": models.weights_digest(model_path) if Path(model_path).is_dir() else None,
        "seed": args.seed,
        "config": config,
        "credit": None if spec is None else spec.labels(),
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
            raise RunError(
                f"--resume: {key} differs from {run_dir / runs.MANIFEST} ({manifest.get(key)!r} there, "
                f"{wanted[key]!r} now); resume with the run's own settings"
            )


def check_contrasts(algo: str, run: RunConfig, args: Any, n_prompts: int) -> None:
    """CREDIT (and sd with ``log_contrasts``) needs ``n_contrast`` other distinct prompts among the train prompts."""
    if algo != "credit" and not (algo == "sd" and run.log_contrasts):
        return
    if n_prompts - 1 < args.n_contrast:
        raise ConfigError(
            f"config: n_contrast={args.n_contrast} needs {args.n_contrast + 1} distinct train prompts "
            f"(each sample is contrasted with n_contrast other prompts), but the train split has {n_prompts}; "
            "lower n_contrast or raise n_train_problems"
        )


def build_trainer(algo: str, env: Environment, model_path: str, run: RunConfig, args: Any) -> Any:
    """The TRL trainer of ``algo`` (``run, args`` from :func:`parse_config`), without run logging."""
    from transformers import AutoTokenizer

    from creditlens.training.feedback import EnvReward, build_dataset
    from creditlens.training.trainers import GRPOEnvTrainer, SDPOEnvTrainer

    if algo not in ALGOS:
        raise ConfigError(f"--algo must be one of {ALGOS}, got {algo!r}")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_problems = env.problems("train", run.n_train_problems, args.seed)
    check_contrasts(algo, run, args, len({p.id for p in train_problems}))
    trainer_class = GRPOEnvTrainer if algo == "grpo" else SDPOEnvTrainer
    trainer = trainer_class(
        model=model_path,
        reward_funcs=[EnvReward(env, train_problems)],
        args=args,
        train_dataset=build_dataset(train_problems, tokenizer),
        processing_class=tokenizer,
    )
    if algo == "sd":
        trainer.log_contrasts = run.log_contrasts
    return trainer


def train(
    algo: str,
    env_name: str,
    model: str | None,
    config: dict[str, Any],
    out: str | Path,
    resume: bool = False,
    env: Environment | None = None,
) -> Path:
    """Train ``algo`` on ``env_name`` into the run directory ``out`` with ``config``, a flat config mapping
    (:func:`~creditlens.training.config.load_config`); returns the run directory.

    ``env`` overrides the registry lookup (tests, custom environments). With ``resume`` the run restarts
    from its last complete checkpoint and logs past it are dropped first; with nothing to resume from it
    is a ``RunError`` and no file changes.
    """
    from accelerate import PartialState

    from creditlens.training.checkpoints import disk_full, last_complete_checkpoint, resume_point
    from creditlens.training.lock import run_lock

    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir}: a file, not a directory; choose another --out")
    existing = next(p for p in [run_dir.absolute(), *run_dir.absolute().parents] if p.exists())
    if not os.access(existing, os.W_OK):
        raise RunError(f"--out {run_dir}: {existing} is not writable; choose another --out")
    run, args = parse_config(config, algo, run_dir / runs.CHECKPOINTS_DIR, world_size())
    check_reporters(args)
    env = env if env is not None else resolve_env(env_name, run.env_args)
    if resume and not run_dir.is_dir():
        resume_point(run_dir)  # no such run: refused before the lock creates the directory
    state = PartialState()
    try:
        with run_lock(run_dir) if state.is_main_process else contextlib.nullcontext():  # one writer per run
            return _train_locked(algo, env_name, model, recorded(config, run, args), run_dir, resume, env,
                                 (run, args), state)
    except Exception as error:
        if not disk_full(error):  # libraries report a full disk in their own words (safetensors, torch.save)
            raise
        then = ("--resume: it restarts from the last complete checkpoint" if last_complete_checkpoint(
            run_dir / runs.CHECKPOINTS_DIR)[1] else "start the run again (delete the directory if it holds a run)")
        raise RunError(f"--out {run_dir}: the disk is full ({str(error).strip().splitlines()[0][:160]}); free "
                       f"space, then {then}") from error


def _train_locked(algo: str, env_name: str, model: str | None, config: dict[str, Any], run_dir: Path, resume: bool,
                  env: Environment, parsed: tuple[RunConfig, Any], state: Any) -> Path:
    """:func:`train` once the main process holds the run's lock: check the resume point, write, train
    (``config``: the recorded config, ``parsed``: ``(RunConfig, TRL config)``)."""
    from creditlens.training.checkpoints import check_resume, resume_point, truncate_run
    from creditlens.training.runlog import RunContext, attach_run_log

    has_manifest = (run_dir / runs.MANIFEST).exists()
    if has_manifest and not resume:
        raise RunError(f"--out {run_dir}: a run already exists there; pass --resume or choose another --out")
    run, args = parsed
    wanted = {"algo": algo, "env": env_name, "model": model, "seed": args.seed, "config": runs.jsonable(config)}
    step, checkpoint = 0, None
    if resume:
        step, checkpoint = resume_point(run_dir)
        if has_manifest:
            _check_resume(run_dir, wanted)
        check_resume(run_dir, checkpoint, step, algo != "grpo" and args.teacher_model_kind == "ema", world_size())
    where = check_model(model, env)
    train_problems = env.problems("train", run.n_train_problems, args.seed)
    if not train_problems:
        raise ConfigError(f"env {env_name!r}: the train split has no problems; raise n_train_problems")
    check_contrasts(algo, run, args, len({p.id for p in train_problems}))
    state.wait_for_everyone()  # every process has read the directory before the main one changes it
    if state.is_main_process:
        if resume:
            truncate_run(run_dir, step)
        if not has_manifest:
            start = str(run_dir / runs.START_MODEL_DIR) if where == models.TINY_MODEL else where
            runs.write_manifest(run_dir, manifest_for(run_dir.name, algo, env_name, model, start, config, args))
    with state.main_process_first():
        model_path = materialize_model(where, run_dir)
    state.wait_for_everyone()
    if checkpoint is not None and step >= args.max_steps:
        return run_dir
    trainer = build_trainer(algo, env, model_path, run, args)
    eval_problems = env.problems("eval", run.n_eval_problems, args.seed)
    attach_run_log(trainer, RunContext(run_dir, run_dir.name, algo, env, eval_problems, run), checkpoint)
    with warnings.catch_warnings():
        # transformers 5 deprecates the gradient_checkpointing_* names that TRL's generation helpers call
        warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    return run_dir
