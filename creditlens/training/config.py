"""The training config: one documented dataclass, read from YAML, mapped onto TRL's GRPO / SDPO configs.

Every field has a default and a ``help`` string (TRL style). Unknown YAML keys are an error that names
the key and the file. ``trl`` passes any further TRL/transformers argument through unchanged (DeepSpeed,
FSDP, vLLM server settings, ...); TRL validates those.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from creditlens.choices import ALGOS
from creditlens.credit import AXES, DEFAULT_SPEC, FORMS, POOLS, CreditSpec
from creditlens.errors import ConfigError
from creditlens.yamlfiles import parse_yaml, read_yaml

DISTILLATION_MODES = ("sampled_token", "topk_logits", "full_logits")
TEACHERS = ("ema", "base", "live")


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; the same fields drive GRPO, SD and CREDIT (fields an algorithm
    does not use are ignored by it and still recorded in ``manifest.json``)."""

    # --- run length, data and batch ---
    env_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Keyword arguments of the environment (e.g. shortcut: {cue: 0.5})."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the model init, the sampler, generation and contrasts."}
    )
    max_steps: int = field(default=10, metadata={"help": "Optimizer steps of the run."})
    num_prompts: int = field(
        default=2, metadata={"help": "Distinct prompts per step (across all processes)."}
    )
    num_generations: int = field(default=2, metadata={"help": "Rollouts per prompt (the GRPO group size)."})
    n_train_problems: int | None = field(
        default=None, metadata={"help": "Train problems drawn from the env's train split (None: all)."}
    )
    n_eval_problems: int = field(default=16, metadata={"help": "Held-out problems of the env's eval split."})
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Eval prompts per greedy generate call (None: num_prompts x num_generations)."}
    )
    max_prompt_length: int | None = field(
        default=512,
        metadata={"help": "Prompt tokens kept, left-truncated (sd/credit; TRL 1.16 GRPO keeps all)."},
    )
    max_completion_length: int = field(default=64, metadata={"help": "Maximum new tokens per rollout."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the rollouts."})

    # --- optimisation ---
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "transformers scheduler name."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})

    # --- GRPO policy loss (also SD/CREDIT's optional blend, see distillation_weight) ---
    beta: float = field(
        default=0.0, metadata={"help": "GRPO KL coefficient to the reference model (0: none)."}
    )
    epsilon: float = field(default=0.2, metadata={"help": "PPO clip range of the policy ratio."})
    loss_type: str = field(
        default="dapo", metadata={"help": "TRL loss aggregation: grpo, bnpo, dr_grpo, dapo."}
    )
    scale_rewards: str = field(default="group", metadata={"help": "Advantage scaling: group, batch or none."})

    # --- self-distillation (sd and credit) ---
    distillation_mode: str = field(
        default="sampled_token",
        metadata={"help": "sampled_token (per-token reward as advantage), topk_logits or full_logits."},
    )
    distillation_topk: int | None = field(
        default=None, metadata={"help": "K of topk_logits mode (e.g. 100)."}
    )
    distillation_alpha: float = field(
        default=1.0, metadata={"help": "0 forward KL, 1 reverse KL, between: generalized JSD (logit modes)."}
    )
    distillation_add_tail: bool = field(default=False, metadata={"help": "Tail bucket in topk_logits mode."})
    distillation_is_clip: float | None = field(
        default=2.0, metadata={"help": "Importance-weight clip of the distillation loss (None: off)."}
    )
    distillation_weight: float = field(
        default=1.0, metadata={"help": "Blend: (1 - w) * GRPO policy loss + w * distillation loss."}
    )
    teacher: str = field(
        default="ema", metadata={"help": "Teacher weights: ema, base (frozen start) or live."}
    )
    teacher_update_rate: float = field(default=0.05, metadata={"help": "EMA rate of the teacher."})
    include_feedback: bool = field(
        default=True,
        metadata={"help": "Put the environment's per-rollout feedback in the teacher's reprompt."},
    )
    use_successful_as_teacher: bool = field(
        default=True, metadata={"help": "Put a successful attempt of the same group in the reprompt."}
    )
    success_reward_threshold: float = field(
        default=1.0, metadata={"help": "Reward that counts as a success."}
    )

    # --- CREDIT (creditlens.credit.CreditSpec: its defaults, its checks) ---
    lam: float = field(default=DEFAULT_SPEC.lam, metadata={"help": "CREDIT lambda in [0, 1]; 0 reproduces SD exactly."})
    n_contrast: int = field(
        default=DEFAULT_SPEC.n_contrast,
        metadata={"help": "K, contrasts per sample (teacher forwards; fewer where fewer distinct prompts exist)."},
    )
    pool: str = field(default=DEFAULT_SPEC.pool, metadata={"help": f"Pooling of contrast log-probs, one of {tuple(POOLS)}."})
    form: str = field(
        default=DEFAULT_SPEC.form,
        metadata={"help": f"CREDIT reward form, one of {tuple(FORMS)} (see docs/CREDIT-MATH.md)."},
    )
    contrast_axis: str = field(
        default=DEFAULT_SPEC.axis,
        metadata={"help": f"What the contrasts change, one of {AXES}: the prompt (x_j, f, y) or the feedback "
                          "(x, f_j, y; the env's wrong hint first). shortcut form at lam 1 on feedback = RLCSD."},
    )

    # --- logging, evaluation, checkpoints ---
    log_contrasts: bool = field(
        default=False,
        metadata={
            "help": "sd: also score each response under n_contrast other prompts (no grad, logging only), so the "
            "table's contrast columns and generic share compare with credit's; grpo has no teacher and ignores it."
        },
    )
    log_tokens_every: int = field(default=1, metadata={"help": "Write the per-token table every N steps."})
    log_kl: bool = field(
        default=True,
        metadata={"help": "Log KL to the start model (one extra no-grad forward of a frozen copy)."},
    )
    eval_every: int = field(
        default=5, metadata={"help": "Held-out eval every N steps, at step 0 and at the end."}
    )
    save_every: int = field(
        default=1, metadata={"help": "Checkpoint every N steps (what --resume restarts from)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    tensorboard: bool = field(default=False, metadata={"help": "Also report TRL's scalars to TensorBoard."})
    use_vllm: bool = field(
        default=False, metadata={"help": "Generate with vLLM (GPU; see docs/training.md)."}
    )
    vllm_mode: str = field(default="colocate", metadata={"help": "vLLM mode: colocate or server."})
    trl: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Extra TRL/transformers arguments passed through (e.g. deepspeed: ds.json)."},
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            setattr(self, item.name, _coerce(item.name, getattr(self, item.name), "config"))
        checks = [
            (self.seed >= 0, "seed must be >= 0"),
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.num_prompts >= 1, "num_prompts must be >= 1"),
            (self.num_generations >= 1, "num_generations must be >= 1"),
            (self.max_completion_length >= 1, "max_completion_length must be >= 1"),
            (self.n_eval_problems >= 0, "n_eval_problems must be >= 0"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size must be >= 1 (or null)"),
            (self.n_train_problems is None or self.n_train_problems >= 1, "n_train_problems must be >= 1"),
            (self.temperature > 0, "temperature must be > 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.learning_rate >= 0, "learning_rate must be >= 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.max_grad_norm >= 0, "max_grad_norm must be >= 0"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (
                self.distillation_mode in DISTILLATION_MODES,
                f"distillation_mode must be one of {DISTILLATION_MODES}",
            ),
            (self.teacher in TEACHERS, f"teacher must be one of {TEACHERS}"),
            (self.log_tokens_every >= 1, "log_tokens_every must be >= 1"),
            (self.eval_every >= 0, "eval_every must be >= 0 (0: only at step 0 and at the end)"),
            (self.save_every >= 1, "save_every must be >= 1"),
            (self.save_total_limit >= 1, "save_total_limit must be >= 1"),
            (isinstance(self.trl, dict), "trl must be a mapping of TRL argument names to values"),
            (isinstance(self.env_args, dict), "env_args must be a mapping of environment arguments"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"config: {message}")
        try:
            _ = self.spec
        except ConfigError as error:
            raise ConfigError(f"config: {error}") from None

    @property
    def spec(self) -> CreditSpec:
        """The CREDIT settings of this config (what ``--algo credit`` trains with; sd trains at lam 0)."""
        return CreditSpec(self.lam, self.form, self.pool, self.contrast_axis, self.n_contrast)

    @property
    def batch_size(self) -> int:
        """Rollouts per optimizer step: ``num_prompts * num_generations``."""
        return self.num_prompts * self.num_generations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_fields() -> dict[str, dataclasses.Field]:
    """Name -> field of :class:`TrainConfig`."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a config from a mapping; a bad key or value raises ``ConfigError`` naming it and ``source``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config fields, got {type(values).__name__}")
    known = config_fields()
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown config key {key!r} (known keys: {', '.join(sorted(known))}; "
                "TRL arguments go under 'trl:')"
            )
    try:
        return TrainConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {str(error).removeprefix('config: ')}") from error


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check a field's type; a float written ``5e-4`` (a string to YAML 1.1) becomes a float."""
    kind = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    if value is None and kind.endswith("| None"):
        return value
    base = kind.removesuffix(" | None")
    if base == "float" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "dict[str, Any]": isinstance(value, dict),
    }.get(base, True)
    if not ok:
        raise ConfigError(f"{source}: config key {key!r} expects {kind}, got {value!r}")
    if base == "float" and not math.isfinite(value):
        raise ConfigError(f"{source}: config key {key!r} must be a finite number, got {value!r}")
    return float(value) if base == "float" else value


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config file (None: all defaults); ``overrides`` replace fields after reading."""
    values: Any = {}
    source = "defaults"
    if path is not None:
        values = read_yaml(path)  # one-line ConfigError for a missing file, bad UTF-8 or YAML, too deep nesting
        source = str(path)
    if isinstance(values, dict) and overrides:
        source = f"{source} with overrides {sorted(overrides)}"
        values = {**values, **overrides}
    return config_from_dict(values, source)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lam=0.25", "env_args={cue: 1.0}"]`` -> ``{"lam": 0.25, "env_args": {"cue": 1.0}}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_yaml(value, f"--set {item!r}")
    return out


def trl_args(config: TrainConfig, algo: str, output_dir: str | Path, world_size: int = 1) -> Any:
    """The TRL config of this run: ``GRPOConfig`` for grpo, ``CreditConfig`` for credit and for sd (``lam = 0``,
    which is TRL's ``SDPOConfig`` training exactly)."""
    if algo not in ALGOS:
        raise ConfigError(f"--algo must be one of {ALGOS}, got {algo!r}")
    if config.batch_size % world_size:
        raise ConfigError(
            f"config: num_prompts * num_generations = {config.batch_size} must be divisible by the "
            f"{world_size} processes"
        )
    common: dict[str, Any] = dict(
        output_dir=str(output_dir),
        seed=config.seed,
        data_seed=config.seed,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size // world_size // config.gradient_accumulation_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=config.bf16,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        beta=config.beta,
        epsilon=config.epsilon,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=config.save_total_limit,
        report_to=["tensorboard"] if config.tensorboard else [],
        remove_unused_columns=False,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        disable_tqdm=True,
    )
    _refuse_managed_trl(config)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("config: tensorboard: true needs the tensorboard package (pip install 'tensorboard>=2.15')")
    if config.gradient_checkpointing:
        common["activation_checkpointing"] = True
    if config.batch_size // world_size % config.gradient_accumulation_steps:
        raise ConfigError("config: the per-process batch must be divisible by gradient_accumulation_steps")
    if algo == "grpo":
        from trl import GRPOConfig

        return _build(GRPOConfig, {**common, **config.trl})
    from creditlens.training.credit_config import CreditConfig

    return _build(CreditConfig, dict(
        **common,
        lam=config.lam if algo == "credit" else 0.0,
        n_contrast=config.n_contrast,
        pool=config.pool,
        form=config.form,
        contrast_axis=config.contrast_axis,
        max_prompt_length=config.max_prompt_length,
        distillation_mode=config.distillation_mode,
        distillation_topk=config.distillation_topk,
        distillation_alpha=config.distillation_alpha,
        distillation_add_tail=config.distillation_add_tail,
        distillation_is_clip=config.distillation_is_clip,
        distillation_weight=config.distillation_weight,
        teacher_model_kind=config.teacher,
        teacher_update_rate=config.teacher_update_rate,
        include_environment_feedback=config.include_feedback,
        use_successful_as_teacher=config.use_successful_as_teacher,
        success_reward_threshold=config.success_reward_threshold,
        diagnostics_warning_interval=0,
    ) | config.trl)


# TRL arguments creditlens sets from elsewhere (``trl:`` may not override them), with where they come from
MANAGED_TRL = {
    "output_dir": "--out", "seed": "the config's seed", "data_seed": "the config's seed",
    "per_device_train_batch_size": "num_prompts * num_generations / gradient_accumulation_steps",
    "save_strategy": "save_every", "save_steps": "save_every", "report_to": "tensorboard",
    "activation_checkpointing": "gradient_checkpointing", "teacher_model_kind": "teacher",
    "include_environment_feedback": "include_feedback",
    **dict.fromkeys(("logging_steps", "remove_unused_columns", "disable_tqdm", "diagnostics_warning_interval"),
                    "creditlens's run log"),
    **dict.fromkeys(("dataloader_pin_memory", "use_cpu"), "the device creditlens trains on"),
}


def _refuse_managed_trl(config: TrainConfig) -> None:
    """``ConfigError`` when ``trl:`` sets an argument creditlens sets itself (two owners of one setting)."""
    own = {f.name for f in dataclasses.fields(TrainConfig)} - {"trl"}
    for key in sorted(config.trl):
        if key in own:
            raise ConfigError(f"config: trl.{key} duplicates the config field {key}; set `{key}:` at the top "
                              "level of the config, not under trl:")
        if key in MANAGED_TRL:
            raise ConfigError(f"config: trl.{key} is set by creditlens (from {MANAGED_TRL[key]}); remove it from trl:")


def _build(config_class: type, values: dict[str, Any]) -> Any:
    """``config_class(**values)``; TRL's refusal of a value becomes a ``ConfigError`` naming the config."""
    try:
        with warnings.catch_warnings():
            # TRL's config base sets transformers 5's deprecated `gradient_checkpointing` name itself
            warnings.filterwarnings("ignore", message=r"`gradient_checkpointing` is deprecated", category=FutureWarning)
            return config_class(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config (TRL {config_class.__name__}): {error}") from None
