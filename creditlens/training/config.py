"""The training config: creditlens' run section plus TRL's own config dataclass, read from one flat YAML.

A config file (``configs/*.yaml``) and every ``--set KEY=VALUE`` is one flat mapping. TRL's
``HfArgumentParser`` routes each key to the dataclass that declares it: :class:`RunConfig`, creditlens' own
settings (the environment, the batch in prompts, evaluation and logging), or the algorithm's TRL config, which
owns every other setting under TRL's name, help and checks: ``trl.GRPOConfig`` for grpo,
:class:`~creditlens.training.credit_config.CreditConfig` (TRL's ``SDPOConfig`` plus the CREDIT fields ``lam``,
``form``, ``pool``, ``contrast_axis``, ``n_contrast``) for sd (at ``lam = 0``) and credit. A key only the other
algorithm's config declares is ignored, so one file serves a grid of grpo, sd and credit runs; a key no config
declares, an old creditlens spelling (:mod:`creditlens.renamed`) or a TRL argument creditlens sets itself
(:data:`MANAGED`) is a one-line error naming the file and what to write.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditlens.choices import ALGOS
from creditlens.errors import ConfigError
from creditlens.renamed import refuse_renamed
from creditlens.yamlfiles import parse_yaml, read_yaml


@dataclass
class RunConfig:
    """creditlens' own settings of a run: the ones TRL's configs have no field for."""

    env_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Keyword arguments of the environment (e.g. shortcut: {cue: 0.5})."},
    )
    num_prompts: int = field(
        default=2,
        metadata={"help": "Distinct prompts per step, across all processes: the step's batch is num_prompts x "
                          "num_generations rollouts, whatever the number of processes."},
    )
    n_train_problems: int | None = field(
        default=None, metadata={"help": "Train problems drawn from the env's train split (None: all)."}
    )
    n_eval_problems: int = field(default=16, metadata={"help": "Held-out problems of the env's eval split."})
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Eval prompts per greedy generate call (None: num_prompts x num_generations)."}
    )
    eval_every: int = field(default=5, metadata={"help": "Held-out eval every N steps, at step 0 and at the end."})
    log_tokens_every: int = field(default=1, metadata={"help": "Write the per-token table every N steps."})
    log_kl: bool = field(
        default=True, metadata={"help": "Log KL to the start model (one extra no-grad forward of a frozen copy)."}
    )
    log_contrasts: bool = field(
        default=False,
        metadata={"help": "sd: also score each response under n_contrast other prompts (no grad, logging only), so the "
                          "table's contrast columns and generic share compare with credit's; grpo ignores it."},
    )

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.env_args, dict), "env_args must be a mapping of environment arguments"),
            (self.num_prompts >= 1, "num_prompts must be >= 1"),
            (self.n_train_problems is None or self.n_train_problems >= 1, "n_train_problems must be >= 1"),
            (self.n_eval_problems >= 0, "n_eval_problems must be >= 0"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size must be >= 1 (or null)"),
            (self.eval_every >= 0, "eval_every must be >= 0 (0: only at step 0 and at the end)"),
            (self.log_tokens_every >= 1, "log_tokens_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"config: {message}")


DEFAULTS: dict[str, Any] = {
    "seed": 0, "max_steps": 10, "num_generations": 2, "max_completion_length": 64, "learning_rate": 1e-5,
    "lr_scheduler_type": "constant", "bf16": False, "include_environment_feedback": True,
    "save_steps": 1, "save_total_limit": 2, "report_to": [],
}
"""creditlens' defaults of TRL arguments where TRL's do not suit a small run (every other default is TRL's)."""

MANAGED = {
    "output_dir": "--out", "data_seed": "seed", "save_strategy": "save_steps",
    "per_device_train_batch_size": "num_prompts * num_generations / (processes * gradient_accumulation_steps)",
    **dict.fromkeys(("logging_steps", "remove_unused_columns", "disable_tqdm", "diagnostics_warning_interval"),
                    "creditlens's run log"),
    **dict.fromkeys(("dataloader_pin_memory", "use_cpu"), "the device creditlens trains on"),
}
"""TRL arguments creditlens sets itself, with what they follow; a config may not set them."""

LIMITS: dict[str, tuple[str, Any]] = {
    "seed": (">= 0", lambda v: v >= 0), "max_steps": (">= 1", lambda v: v >= 1),
    "num_generations": (">= 1", lambda v: v >= 1), "max_completion_length": (">= 1", lambda v: v >= 1),
    "temperature": ("> 0", lambda v: v > 0), "top_p": ("in (0, 1]", lambda v: 0 < v <= 1),
    "learning_rate": (">= 0", lambda v: v >= 0), "warmup_steps": (">= 0", lambda v: v >= 0),
    "max_grad_norm": (">= 0", lambda v: v >= 0), "gradient_accumulation_steps": (">= 1", lambda v: v >= 1),
    "save_steps": (">= 1", lambda v: v >= 1), "save_total_limit": (">= 1", lambda v: v >= 1),
}
"""What a creditlens run needs of TRL arguments that TRL leaves unchecked."""

RECORDED = (
    "seed", "max_steps", "num_generations", "max_prompt_length", "max_completion_length", "temperature", "top_p",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm",
    "gradient_accumulation_steps", "bf16", "activation_checkpointing", "beta", "epsilon", "loss_type",
    "scale_rewards", "distillation_mode", "distillation_topk", "distillation_alpha", "distillation_add_tail",
    "distillation_is_clip", "distillation_weight", "teacher_model_kind", "teacher_update_rate",
    "include_environment_feedback", "use_successful_as_teacher", "success_reward_threshold",
    "lam", "n_contrast", "pool", "form", "contrast_axis", "save_steps", "save_total_limit", "report_to",
    "use_vllm", "vllm_mode",
)
"""TRL arguments every ``manifest.json`` records (besides the run section and every key the config sets)."""


def trl_class(algo: str) -> type:
    """The TRL config of ``algo``: ``GRPOConfig`` for grpo, ``CreditConfig`` for sd and credit."""
    if algo not in ALGOS:
        raise ConfigError(f"--algo must be one of {ALGOS}, got {algo!r}")
    if algo == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    from creditlens.training.credit_config import CreditConfig

    return CreditConfig


@functools.cache
def declared() -> dict[str, tuple[type, Any]]:
    """Every key a config may hold -> (the dataclass that declares it, its type): RunConfig's, CreditConfig's,
    GRPOConfig's."""
    out: dict[str, tuple[type, Any]] = {}
    for cls in (RunConfig, trl_class("credit"), trl_class("grpo")):
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            out.setdefault(item.name, (cls, hints[item.name]))
    return out


def check_values(values: Any, source: str = "config") -> dict[str, Any]:
    """``values`` with each key checked against the dataclass declaring it (name, type, :data:`LIMITS`); a YAML
    1.1 float string such as ``5e-4`` becomes a float. A bad key or value is a ``ConfigError`` naming ``source``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config fields, got {type(values).__name__}")
    known = declared()
    out = {}
    for key, value in values.items():
        refuse_renamed(key, source)
        if key in MANAGED:
            raise ConfigError(f"{source}: {key} is set by creditlens (from {MANAGED[key]}); remove it")
        if key not in known:
            raise ConfigError(f"{source}: unknown config key {key!r}: neither creditlens' RunConfig nor TRL's "
                              "CreditConfig (SDPOConfig) or GRPOConfig declares it (docs/training.md lists the keys)")
        value = _checked_type(key, value, known[key][1], source)
        if key in LIMITS and value is not None and not LIMITS[key][1](value):
            raise ConfigError(f"{source}: {key} must be {LIMITS[key][0]}, got {value!r}")
        out[key] = value
    return out


def _checked_type(key: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` if it fits the field's type ``hint`` (a float string becomes a float), else ``ConfigError``."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return value
    for option in (o for o in options if o is not type(None)):
        base = typing.get_origin(option) or option
        if option is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                continue
        fits = {
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            bool: isinstance(value, bool), str: isinstance(value, str),
            dict: isinstance(value, dict), list: isinstance(value, list),
            typing.Literal: value in typing.get_args(option),
        }.get(base, value is not None)
        if fits:
            if option is float and not math.isfinite(value):
                raise ConfigError(f"{source}: config key {key!r} must be a finite number, got {value!r}")
            return float(value) if option is float else value
    name = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    raise ConfigError(f"{source}: config key {key!r} expects {name or str(hint).replace('typing.', '')}, "
                      f"got {value!r}")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked flat mapping of a YAML config file (None: no file, all defaults) with ``overrides`` applied:
    its values are those a ``RunConfig`` and a ``CreditConfig`` (the CREDIT and SDPO fields) accept."""
    values: Any = {}
    source = "defaults"
    if path is not None:
        values = read_yaml(path)  # one-line ConfigError for a missing file, bad UTF-8 or YAML, too deep nesting
        source = str(path)
    if isinstance(values, dict) and overrides:
        source = f"{source} with overrides {sorted(overrides)}"
        values = {**values, **overrides}
    values = check_values(values, source)
    parse_config(values, "credit", "unused", source=source)  # a bad value is refused naming the file
    return values


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lam=0.25", "env_args={cue: 1.0}"]`` -> ``{"lam": 0.25, "env_args": {"cue": 1.0}}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_yaml(value, f"--set {item!r}")
    return out


def parse_config(values: dict[str, Any], algo: str, output_dir: str | Path, world_size: int = 1,
                 source: str = "config") -> tuple[RunConfig, Any]:
    """``(RunConfig, TRL config of algo)`` of a flat config mapping, parsed by ``HfArgumentParser``: the config's
    values over :data:`DEFAULTS`, the :data:`MANAGED` arguments, and ``lam = 0`` for sd (SDPO exactly)."""
    from transformers import HfArgumentParser

    cls = trl_class(algo)
    settings = {**DEFAULTS, **check_values(values, source)}
    if algo == "sd":
        settings["lam"] = 0.0
    batch = settings.get("num_prompts", RunConfig.num_prompts) * settings["num_generations"]
    accumulation = settings.get("gradient_accumulation_steps", 1)
    if batch % world_size:
        raise ConfigError(f"{source}: num_prompts * num_generations = {batch} must be divisible by the "
                          f"{world_size} processes")
    if batch // world_size % accumulation:
        raise ConfigError(f"{source}: the per-process batch must be divisible by gradient_accumulation_steps")
    settings.update(_managed(settings, output_dir, batch // world_size // accumulation))
    try:
        with warnings.catch_warnings():
            # TRL's config base sets transformers 5's deprecated `gradient_checkpointing` name itself
            warnings.filterwarnings("ignore", message=r"`gradient_checkpointing` is deprecated", category=FutureWarning)
            run, args = HfArgumentParser((RunConfig, cls)).parse_dict(settings, allow_extra_keys=True)
    except ConfigError as error:
        raise ConfigError(f"{source}: {str(error).removeprefix('config: ')}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source} (TRL {cls.__name__}): {error}") from None
    return run, args


def check_reporters(args: Any, source: str = "config") -> None:
    """``ConfigError`` when ``args.report_to`` names TensorBoard and it is not installed (checked when a run starts,
    so a config file for a GPU machine still loads elsewhere)."""
    if "tensorboard" in (args.report_to or []) and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"{source}: report_to: [tensorboard] needs the tensorboard package "
                          "(pip install 'tensorboard>=2.15')")


def _managed(settings: dict[str, Any], output_dir: str | Path, per_device_batch: int) -> dict[str, Any]:
    """The :data:`MANAGED` TRL arguments of a run."""
    import torch

    return dict(
        output_dir=str(output_dir), data_seed=settings["seed"], per_device_train_batch_size=per_device_batch,
        logging_steps=1, save_strategy="steps", remove_unused_columns=False, disable_tqdm=True,
        diagnostics_warning_interval=0, dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )


def recorded(values: dict[str, Any], run: RunConfig, args: Any) -> dict[str, Any]:
    """The config ``manifest.json`` records, flat like a config file: the run section, then :data:`RECORDED` and
    every key ``values`` sets, each as the trainer's TRL config holds it (a key it lacks: as set, else its default)."""
    known = declared()
    out = dataclasses.asdict(run)
    for key in dict.fromkeys((*RECORDED, *values)):
        if key in out:
            continue
        if hasattr(args, key):
            out[key] = getattr(args, key)
        elif key in values or key in DEFAULTS:
            out[key] = values.get(key, DEFAULTS.get(key))
        else:
            out[key] = next(f.default for f in dataclasses.fields(known[key][0]) if f.name == key)
    return out
