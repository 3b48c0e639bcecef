"""``CreditConfig``: TRL's ``SDPOConfig`` plus the CREDIT fields, validated once when the config is built."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, fields

import torch
from trl.experimental.sdpo import SDPOConfig

from creditlens.credit import AXES, DEFAULT_SPEC, FORMS, POOLS, CreditSpec
from creditlens.errors import ConfigError

CREDIT_FIELDS = (
    "lam", "n_contrast", "pool", "form", "contrast_axis", "contrast_bank_size", "contrast_chunk_rows", "sd_loss"
)
SD_LOSSES = ("trl", "rowwise")


@dataclass
class CreditConfig(SDPOConfig):
    r"""Configuration of :class:`creditlens.training.CreditTrainer`: every ``SDPOConfig`` field, plus

    Parameters (the first five are :class:`creditlens.credit.CreditSpec`'s, defaults and checks included;
    :attr:`spec` hands them over as one value):
        lam (`float`, *optional*, defaults to `CreditSpec.lam`, 0.5):
            CREDIT lambda in [0, 1]: weight of the contrast baseline. `0` trains exactly like `SDPOTrainer`.
        n_contrast (`int`, *optional*, defaults to `CreditSpec.n_contrast`, 1):
            K, the contrasts asked per sample; each costs one extra no-grad teacher forward. Where fewer distinct
            prompts (or feedbacks) exist, fewer are used (`creditlens.credit.draw_contrasts`); the run log records
            the K each sample used.
        pool (`str`, *optional*, defaults to `CreditSpec.pool`, `"mean"`):
            Pooling of the K contrast log-probs: `"mean"` (of log-probs) or `"logmeanexp"` (of probabilities).
        form (`str`, *optional*, defaults to `CreditSpec.form`, `"contrastive"`):
            Reward form, one of `creditlens.credit.FORMS` (docs/CREDIT-MATH.md).
        contrast_axis (`str`, *optional*, defaults to `CreditSpec.axis`, `"input"`):
            What the K contrast contexts change: `"input"`, another prompt with this sample's feedback (x_j, f, y);
            `"feedback"`, this prompt and solution with another feedback (x, f_j, y): the environment's wrong hint
            first when it offers one, then other samples' feedback (docs/CREDIT-MATH.md section 8). `form="shortcut"`
            with `lam=1` on the feedback axis is the RLCSD reward log pi_T(x, f) - log pi_T(x, f_wrong).
        contrast_bank_size (`int`, *optional*, defaults to `64`):
            Distinct prompts of earlier generation batches kept as contrast candidates, for batches with too
            few distinct prompts of their own (e.g. one prompt per generation batch); 0 keeps none.
        contrast_chunk_rows (`int` or `None`, *optional*, defaults to `1`):
            Rows of contrast logits computed at a time (the vocabulary projection of the contrast forwards,
            `creditlens.training.response_logits`): they add at most this many rows of logits to the step's peak
            memory (docs/training.md, "Memory"). `None`: the whole micro-batch at once.
        sd_loss (`str`, *optional*, defaults to `"trl"`):
            SDPO's loss in `topk_logits` mode, wherever it runs (`lam=0`, or a micro-batch without contrasts):
            `"trl"`, SDPOTrainer's own code, bit for bit; `"rowwise"`, CREDIT's row-wise top-k code, equal within 1e-6
            and without TRL's full-vocabulary `logsumexp` temporaries (docs/training.md, "Memory"). The other
            modes already share SDPOTrainer's code.

    Unlike ``SDPOConfig``, an unset ``bf16`` becomes ``False`` on a machine without a bf16 accelerator (and
    without ``use_cpu=True``), so the same script also runs on CPU, in float32.
    """

    lam: float = field(
        default=DEFAULT_SPEC.lam, metadata={"help": "CREDIT lambda in [0, 1]; 0 trains exactly like SDPOTrainer."}
    )
    n_contrast: int = field(
        default=DEFAULT_SPEC.n_contrast,
        metadata={"help": "K, contrasts per sample (one no-grad teacher forward each; fewer where fewer exist)."},
    )
    pool: str = field(
        default=DEFAULT_SPEC.pool, metadata={"help": f"Pooling of contrast log-probs, one of {tuple(POOLS)}."}
    )
    form: str = field(default=DEFAULT_SPEC.form, metadata={"help": f"Reward form, one of {tuple(FORMS)}."})
    contrast_axis: str = field(
        default=DEFAULT_SPEC.axis,
        metadata={"help": f"What contrasts change, one of {AXES}: the prompt (input) or the feedback (feedback)."},
    )
    contrast_bank_size: int = field(
        default=64,
        metadata={"help": "Distinct earlier prompts kept as contrast candidates (0: only the current batch)."},
    )
    contrast_chunk_rows: int | None = field(
        default=1, metadata={"help": "Rows of contrast logits at a time (bounds their memory); None: all at once."}
    )
    sd_loss: str = field(
        default="trl",
        metadata={"help": f"lam=0 top-k SD loss, one of {SD_LOSSES}: TRL's (bit for bit) or row-wise (less memory)."},
    )

    def __post_init__(self) -> None:
        if self.bf16 is None and not self.fp16 and not self.use_cpu and not _has_bf16_device():
            self.bf16 = False  # TRL's default (bf16) would refuse a CPU-only machine; train in float32 there
        super().__post_init__()
        check_credit_fields(self)

    @property
    def spec(self) -> CreditSpec:
        """The CREDIT settings of this config as one validated value (built from the fields on every read)."""
        return CreditSpec(self.lam, self.form, self.pool, self.contrast_axis, self.n_contrast)


def _has_bf16_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_credit_fields(config: SDPOConfig) -> None:
    """Raise ``ConfigError`` naming the field and its allowed values for any setting CREDIT cannot honour
    (the :class:`CreditSpec` fields are checked by ``CreditSpec`` itself)."""
    try:
        spec = config.spec
    except ConfigError as error:
        raise ConfigError(f"CreditConfig {error}") from None
    checks = [
        (config.sd_loss in SD_LOSSES, f"sd_loss: must be one of {SD_LOSSES}, got {config.sd_loss!r}"),
        (spec.n_contrast >= 1, f"n_contrast: must be >= 1 for CreditTrainer (K contrasts per sample), got {spec.n_contrast}"),
        (
            _is_int(config.contrast_bank_size) and config.contrast_bank_size >= 0,
            f"contrast_bank_size: must be an int >= 0, got {config.contrast_bank_size!r}",
        ),
        (
            config.contrast_chunk_rows is None or (_is_int(config.contrast_chunk_rows) and config.contrast_chunk_rows >= 1),
            f"contrast_chunk_rows: must be None or an int >= 1, got {config.contrast_chunk_rows!r}",
        ),
        (
            config.distillation_mode != "topk_logits" or _is_int(config.distillation_topk),
            "distillation_topk: must be an int when distillation_mode='topk_logits' (the student's top-k support)",
        ),
        (
            not config.use_teacher_server,
            "use_teacher_server: must be False for CREDIT (the vLLM teacher server scores only the sample's own "
            "teacher context, not the contrast contexts); set use_teacher_server=False",
        ),
        (
            config.distillation_weight > 0.0 or spec.lam == 0.0,
            "distillation_weight: must be > 0 for CREDIT with lam > 0 (at 0 the loss is GRPO's policy loss alone "
            "and the CREDIT term is never used); raise distillation_weight or use SDPOConfig",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"CreditConfig {message}")


def as_credit_config(args: SDPOConfig) -> CreditConfig:
    """An ``SDPOConfig`` upgraded to a ``CreditConfig`` with the CREDIT fields at their defaults.

    The SDPO fields keep their (already validated) values; the CREDIT fields are checked as usual. A user's
    ``SDPOConfig`` subclass keeps its class and its own fields: the result is an instance of both it and
    ``CreditConfig`` (:func:`credit_config_class`).
    """
    if isinstance(args, CreditConfig):
        return args
    upgraded = copy.copy(args)
    upgraded.__class__ = credit_config_class(type(args))
    for item in fields(CreditConfig):
        if item.name in CREDIT_FIELDS:
            setattr(upgraded, item.name, item.default)
    check_credit_fields(upgraded)
    return upgraded


@functools.cache
def credit_config_class(user_class: type[SDPOConfig]) -> type[CreditConfig]:
    """``CreditConfig`` for ``SDPOConfig`` itself; for a user's subclass, the dataclass deriving from both
    (``CreditConfig`` first), so ``isinstance`` checks, ``to_dict()`` and the saved args keep its fields."""
    if user_class is SDPOConfig:
        return CreditConfig
    namespace = {"__module__": user_class.__module__, "__reduce__": _reduce_combined, "user_class": user_class}
    return dataclass(type(f"Credit{user_class.__name__}", (CreditConfig, user_class), namespace))


def _reduce_combined(config: CreditConfig) -> tuple:
    """Pickle a combined config by its user class, so ``training_args.bin`` loads wherever that class imports."""
    return _rebuild_combined, (type(config).user_class, vars(config).copy())


def _rebuild_combined(user_class: type[SDPOConfig], state: dict) -> CreditConfig:
    config = object.__new__(credit_config_class(user_class))
    config.__dict__.update(state)
    return config
