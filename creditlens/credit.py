"""Per-token credit for on-policy self-distillation: pure tensor math, no model I/O.

Shapes used throughout (see ``CREDIT-MATH.md``):

- ``teacher_lp``  ``[B, T]``     log pi_T(y_t | x, f, y_<t)
- ``student_lp``  ``[B, T]``     log pi_S(y_t | x, y_<t)
- ``contrast_lp`` ``[B, K, T]``  log pi_T(y_t | x_j, f, y_<t) for K contrast inputs x_j
- ``mask``        ``[B, T]``     1 for response tokens, 0 for padding (ignored everywhere)

Every function keeps the floating dtype of its inputs and returns exactly 0 at masked positions.

The CREDIT settings travel as one frozen, validated :class:`CreditSpec` (lam, form, pool, axis, n_contrast);
its defaults are the only ones. Reward forms are a registry (:data:`FORMS`, name -> :class:`RewardForm`, one
reading of the paper's abstract each; docs/CREDIT-MATH.md section 4): ``teacher`` subtracts the contrast
teacher's log-prob, ``shortcut`` removes the input-generic part of the SD reward, ``contrastive`` is a bounded
InfoNCE reward (0 extra for a token equally likely under every input). A new form is one function and one
:func:`reward_form` decorator. Contrasts are drawn by one rule, :func:`draw_contrasts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from creditlens.errors import ConfigError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
AXES = ("input", "feedback")  # contrast axis: other inputs (x_j, f, y) or other feedback (x, f_j, y)


def _pool_mean(contrast_lp: Tensor) -> Tensor:
    return contrast_lp.mean(dim=1)


def _pool_logmeanexp(contrast_lp: Tensor) -> Tensor:
    return torch.logsumexp(contrast_lp, dim=1) - math.log(contrast_lp.shape[1])


POOLS: dict[str, Callable[[Tensor], Tensor]] = {"mean": _pool_mean, "logmeanexp": _pool_logmeanexp}
"""How K contrast log-probs ``[B, K, ...]`` pool into ``B_t [B, ...]``: mean of log-probs or of probabilities."""


@dataclass(frozen=True)
class RewardForm:
    """A CREDIT reward form: ``reward = sd - lam * penalty(teacher_lp, baseline, student_lp, k)``.

    ``penalty`` maps ``[B, T]`` (sampled tokens) or ``[B, T, V]`` (a vocabulary) log-probs, the pooled baseline
    of the same shape and K to the same shape; the distillation target is ``log_softmax(log pi_T - lam * penalty)``.
    ``needs_student``: whether ``penalty`` reads ``student_lp`` (None is passed otherwise).
    """

    penalty: Callable[[Tensor, Tensor, Tensor | None, int], Tensor]
    needs_student: bool


FORMS: dict[str, RewardForm] = {}
"""The registry of reward forms, name -> :class:`RewardForm` (in the style of inseq's step functions)."""


def reward_form(name: str, needs_student: bool = True) -> Callable:
    """Register the decorated ``penalty(teacher_lp, baseline, student_lp, k)`` as reward form ``name``."""

    def register(penalty: Callable[[Tensor, Tensor, Tensor | None, int], Tensor]) -> Callable:
        FORMS[name] = RewardForm(penalty, needs_student)
        return penalty

    return register


@reward_form("teacher", needs_student=False)
def teacher_penalty(teacher_lp: Tensor, baseline: Tensor, student_lp: Tensor | None, k: int) -> Tensor:
    """``r_t - lam * B_t``: the contrast teacher's log-prob."""
    return baseline


@reward_form("shortcut")
def shortcut_penalty(teacher_lp: Tensor, baseline: Tensor, student_lp: Tensor | None, k: int) -> Tensor:
    """``r_t - lam * (B_t - log pi_S)`` = specific + (1 - lam) * shortcut."""
    return baseline - student_lp


@reward_form("contrastive")
def contrastive_penalty(teacher_lp: Tensor, baseline: Tensor, student_lp: Tensor | None, k: int) -> Tensor:
    """``r_t - lam * (L_t - log pi_S)`` = (1 - lam) * r_t + lam * (log pi_T - L_t), L_t of :func:`pool_with_input`."""
    return pool_with_input(teacher_lp, baseline, k) - student_lp


DEFAULT_FORM = "contrastive"  # chosen by the pre-registered rule of docs/results.md, "Default"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class CreditSpec:
    """The CREDIT settings, validated once here (``ConfigError`` naming the field) and read everywhere else.

    ``lam``: weight of the contrast term in [0, 1] (0: plain self-distillation); ``form``: one of :data:`FORMS`;
    ``pool``: one of :data:`POOLS`; ``axis``: what the contrasts change, one of :data:`AXES`; ``n_contrast``:
    K, the contrasts asked per sample (fewer are used where fewer distinct ones exist, :func:`draw_contrasts`;
    0: none, the contrast columns are NaN).
    """

    lam: float = 0.5
    form: str = DEFAULT_FORM
    pool: str = "mean"
    axis: str = "input"
    n_contrast: int = 1

    def __post_init__(self) -> None:
        checks = [
            (_is_number(self.lam) and 0.0 <= self.lam <= 1.0, f"lam: must be a number in [0, 1], got {self.lam!r}"),
            (self.form in FORMS, f"form: must be one of {tuple(FORMS)}, got {self.form!r}"),
            (self.pool in POOLS, f"pool: must be one of {tuple(POOLS)}, got {self.pool!r}"),
            (self.axis in AXES, f"contrast_axis: must be one of {AXES}, got {self.axis!r}"),
            (
                isinstance(self.n_contrast, int) and not isinstance(self.n_contrast, bool) and self.n_contrast >= 0,
                f"n_contrast: must be an int >= 0, got {self.n_contrast!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        object.__setattr__(self, "lam", float(self.lam))

    def labels(self) -> dict[str, object]:
        """The settings as recorded in manifests and token rows."""
        return {"lam": self.lam, "form": self.form, "pool": self.pool, "contrast_axis": self.axis,
                "n_contrast": self.n_contrast}


DEFAULT_SPEC = CreditSpec()


@dataclass(frozen=True)
class Decomposition:
    """Split of teacher log-probs and SD rewards along the input axis; every field is ``[B, T]``.

    ``teacher_lp = specific + baseline`` and ``sd = specific + shortcut`` hold exactly.
    """

    specific: Tensor  # log pi_T(y_t | x, f, y_<t) - B_t: what this input explains
    baseline: Tensor  # B_t, the contrast baseline: teacher log-prob the token keeps under other inputs
    sd: Tensor  # r_t = log pi_T - log pi_S
    shortcut: Tensor  # B_t - log pi_S: what the feedback raises whatever the input


@dataclass(frozen=True)
class SequenceSums:
    """Per-sequence sums over unmasked tokens; every field is ``[B]``.

    Under posterior compatibility ``sd`` equals pMI(y; f | x); ``credit`` is the sequence objective of
    the form (docs/CREDIT-MATH.md section 5), e.g. ``pMI - lam * mean_j log pi_T(y | x_j, f)`` for ``teacher``.
    """

    sd: Tensor
    credit: Tensor
    specific: Tensor
    baseline: Tensor
    teacher: Tensor
    student: Tensor
    n_tokens: Tensor


def _check_tensor(name: str, value: object, ndim: int) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {tuple(value.shape)}")
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected a floating dtype, got {value.dtype}")


def _check_finite(name: str, value: Tensor, mask: Tensor | None) -> None:
    finite = torch.isfinite(value)
    if mask is not None:
        keep = mask if value.dim() == 2 else mask.unsqueeze(1).expand_as(value)
        finite = finite | ~keep
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        raise ValueError(f"{name}: NaN or inf at unmasked index {bad}")


def _check_mask(mask: Tensor | None, shape: torch.Size) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not match log-probs shape {tuple(shape)}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask: values must be 0 (padding) or 1 (response token)")
    return mask.bool()


def _check_pair(teacher_lp: Tensor, student_lp: Tensor, mask: Tensor | None) -> Tensor | None:
    _check_tensor("teacher_lp", teacher_lp, 2)
    _check_tensor("student_lp", student_lp, 2)
    if teacher_lp.shape != student_lp.shape:
        raise ValueError(
            f"student_lp: shape {tuple(student_lp.shape)} differs from teacher_lp {tuple(teacher_lp.shape)}"
        )
    if teacher_lp.dtype != student_lp.dtype:
        raise ValueError(f"student_lp: dtype {student_lp.dtype} differs from teacher_lp {teacher_lp.dtype}")
    mask = _check_mask(mask, teacher_lp.shape)
    _check_finite("teacher_lp", teacher_lp, mask)
    _check_finite("student_lp", student_lp, mask)
    return mask


def _check_contrast(contrast_lp: Tensor, teacher_lp: Tensor, mask: Tensor | None) -> None:
    _check_tensor("contrast_lp", contrast_lp, 3)
    b, k, t = contrast_lp.shape
    if (b, t) != tuple(teacher_lp.shape):
        raise ValueError(
            f"contrast_lp: shape {tuple(contrast_lp.shape)} must be [B, K, T] with [B, T] = {tuple(teacher_lp.shape)}"
        )
    if k < 1:
        raise ValueError("contrast_lp: needs at least one contrast input (K >= 1)")
    if contrast_lp.dtype != teacher_lp.dtype:
        raise ValueError(f"contrast_lp: dtype {contrast_lp.dtype} differs from teacher_lp {teacher_lp.dtype}")
    _check_finite("contrast_lp", contrast_lp, mask)


def _masked(value: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return value
    return torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))


def pool_contrast(contrast_lp: Tensor, spec: CreditSpec = DEFAULT_SPEC) -> Tensor:
    """Pool contrast log-probs over the contrast axis with ``spec.pool``: ``[B, K, ...] -> [B, ...]`` (K >= 1).

    ``"mean"`` averages log-probs (B_t of the math page); ``"logmeanexp"`` averages probabilities.
    """
    if contrast_lp.dim() < 2 or contrast_lp.shape[1] < 1:
        raise ValueError(
            f"contrast_lp: needs a contrast axis with K >= 1 entries at dim 1, got shape {tuple(contrast_lp.shape)}"
        )
    return POOLS[spec.pool](contrast_lp)


def pool_with_input(teacher_lp: Tensor, baseline: Tensor, k: int) -> Tensor:
    """InfoNCE pool of the true input with the K pooled contrasts: ``log((pi_T + K exp(B)) / (K + 1))``.

    Shapes: ``teacher_lp`` and ``baseline`` alike (``[B, T]`` or ``[B, T, V]``) -> the same shape.
    ``teacher_lp - pool_with_input(...)`` lies in ``(-inf, log(K + 1)]`` and is 0 where ``teacher_lp == baseline``.
    """
    return torch.logaddexp(teacher_lp, baseline + math.log(k)) - math.log(k + 1)


def sd_rewards(teacher_lp: Tensor, student_lp: Tensor, mask: Tensor | None = None) -> Tensor:
    """Self-distillation token reward ``r_t = log pi_T - log pi_S``: ``[B, T], [B, T] -> [B, T]``."""
    mask = _check_pair(teacher_lp, student_lp, mask)
    return _masked(teacher_lp - student_lp, mask)


def contrast_baseline(contrast_lp: Tensor, mask: Tensor | None = None, spec: CreditSpec = DEFAULT_SPEC) -> Tensor:
    """Batch-contrastive baseline ``B_t`` pooled by ``spec.pool``: ``[B, K, T] -> [B, T]``, 0 at masked positions."""
    _check_tensor("contrast_lp", contrast_lp, 3)
    mask = _check_mask(mask, contrast_lp.shape[::2])
    _check_finite("contrast_lp", contrast_lp, mask)
    return _masked(pool_contrast(contrast_lp, spec), mask)


def decompose(
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    mask: Tensor | None = None,
    spec: CreditSpec = DEFAULT_SPEC,
) -> Decomposition:
    """Split teacher log-probs and SD rewards into input-specific and input-generic parts (``spec.pool``).

    Shapes: ``teacher_lp, student_lp [B, T]``, ``contrast_lp [B, K, T]``, ``mask [B, T]``.
    """
    mask = _check_pair(teacher_lp, student_lp, mask)
    _check_contrast(contrast_lp, teacher_lp, mask)
    baseline = _masked(pool_contrast(contrast_lp, spec), mask)
    return Decomposition(
        specific=_masked(teacher_lp - baseline, mask),
        baseline=baseline,
        sd=_masked(teacher_lp - student_lp, mask),
        shortcut=_masked(baseline - student_lp, mask),
    )


def credit_rewards(
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    mask: Tensor | None = None,
    spec: CreditSpec = DEFAULT_SPEC,
) -> Tensor:
    """CREDIT token reward of ``spec`` (form, lam, pool): ``[B, T], [B, K, T], [B, T] -> [B, T]``.

    With ``r_t = log pi_T - log pi_S``, ``B_t`` the pooled contrast baseline and
    ``L_t = log((pi_T + K exp(B_t)) / (K + 1))`` (:func:`pool_with_input`):

    - ``"teacher"``:     ``r_t - lam * B_t``
    - ``"shortcut"``:    ``r_t - lam * (B_t - log pi_S)`` = specific + (1 - lam) * shortcut
    - ``"contrastive"``: ``r_t - lam * (L_t - log pi_S)`` = (1 - lam) * r_t + lam * (log pi_T - L_t)

    K is ``contrast_lp.shape[1]``, the contrasts actually used. ``lam = 0`` is plain self-distillation for
    every form.
    """
    bool_mask = _check_pair(teacher_lp, student_lp, mask)
    _check_contrast(contrast_lp, teacher_lp, bool_mask)
    if spec.lam == 0.0:
        return _masked(teacher_lp - student_lp, bool_mask)
    teacher, student = (_masked(v, bool_mask) for v in (teacher_lp, student_lp))
    contrast = contrast_lp if bool_mask is None else torch.where(bool_mask.unsqueeze(1), contrast_lp, 0.0)
    baseline = pool_contrast(contrast, spec)
    penalty = FORMS[spec.form].penalty(teacher, baseline, student, contrast_lp.shape[1])
    return _masked(teacher - student - spec.lam * penalty, bool_mask)


def sequence_sums(
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    mask: Tensor | None = None,
    spec: CreditSpec = DEFAULT_SPEC,
) -> SequenceSums:
    """Trajectory sums of every token quantity: ``[B, T] -> [B]``.

    ``sd`` is the pMI estimate; ``credit`` the sequence objective of ``spec`` (docs/CREDIT-MATH.md section 5).
    """
    parts = decompose(teacher_lp, contrast_lp, student_lp, mask, spec)
    reward = credit_rewards(teacher_lp, contrast_lp, student_lp, mask, spec)
    bool_mask = None if mask is None else mask.bool()
    n_tokens = (
        torch.full(teacher_lp.shape[:1], teacher_lp.shape[1], device=teacher_lp.device)
        if bool_mask is None
        else bool_mask.sum(dim=1)
    )
    return SequenceSums(
        sd=parts.sd.sum(dim=1),
        credit=reward.sum(dim=1),
        specific=parts.specific.sum(dim=1),
        baseline=parts.baseline.sum(dim=1),
        teacher=_masked(teacher_lp, bool_mask).sum(dim=1),
        student=_masked(student_lp, bool_mask).sum(dim=1),
        n_tokens=n_tokens,
    )


def _check_vocab_logprobs(name: str, value: object, ndim: int) -> Tensor:
    _check_tensor(name, value, ndim)
    if bool(torch.isnan(value).any()):
        raise ValueError(f"{name}: NaN at index {torch.isnan(value).nonzero()[0].tolist()}")
    return value


def credit_target_logprobs(
    teacher_logprobs: Tensor,
    contrast_logprobs: Tensor,
    spec: CreditSpec = DEFAULT_SPEC,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """CREDIT distillation target over a vocabulary (top-K or full logits modes): ``-> [B, T, V]``.

    ``teacher_logprobs [B, T, V]`` (log-probs; any last axis, e.g. a top-K support with a tail bucket),
    ``contrast_logprobs [B, K, T, V]``, ``student_logprobs [B, T, V]`` (needed by forms whose
    ``RewardForm.needs_student``). The target is ``log_softmax(log pi_T - lam * penalty)`` over the last axis,
    with the penalty of ``spec.form`` (:data:`FORMS`), so ``log target(v) - log pi_S(v)`` is the form's
    sampled-token reward up to a per-position constant. ``lam = 0`` returns ``teacher_logprobs`` unchanged.
    """
    _check_vocab_logprobs("teacher_logprobs", teacher_logprobs, 3)
    _check_vocab_logprobs("contrast_logprobs", contrast_logprobs, 4)
    b, k, t, v = contrast_logprobs.shape
    if (b, t, v) != tuple(teacher_logprobs.shape) or k < 1:
        raise ValueError(
            f"contrast_logprobs: shape {tuple(contrast_logprobs.shape)} must be [B, K>=1, T, V] with "
            f"[B, T, V] = teacher_logprobs {tuple(teacher_logprobs.shape)}"
        )
    return target_from_baseline(teacher_logprobs, pool_contrast(contrast_logprobs, spec), k, spec, student_logprobs)


def target_from_baseline(
    teacher_logprobs: Tensor,
    baseline: Tensor,
    k: int,
    spec: CreditSpec = DEFAULT_SPEC,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """The target of :func:`credit_target_logprobs` from the already pooled baseline ``[B, T, V]`` of K contrasts
    (the full-logits trainer pools the K contrasts as it computes them): ``-> [B, T, V]``."""
    form = FORMS[spec.form]
    if form.needs_student:
        if student_logprobs is None:
            raise ValueError(f"student_logprobs: form {spec.form!r} needs the student's log-probs [B, T, V]")
        _check_vocab_logprobs("student_logprobs", student_logprobs, 3)
        if student_logprobs.shape != teacher_logprobs.shape:
            raise ValueError(
                f"student_logprobs: shape {tuple(student_logprobs.shape)} differs from teacher_logprobs "
                f"{tuple(teacher_logprobs.shape)}"
            )
    if spec.lam == 0.0:
        return teacher_logprobs
    penalty = form.penalty(teacher_logprobs, baseline, student_logprobs, k)
    return torch.log_softmax(teacher_logprobs - spec.lam * penalty, dim=-1)


def draw_contrasts(
    keys: Sequence[Hashable], k: int, generator: torch.Generator, earlier: Sequence[Hashable] = ()
) -> list[list[Hashable]]:
    """The one contrast rule of the scorer and the trainer: up to ``k`` contrast keys for each of ``keys``.

    ``keys`` has one prompt key per sample (B entries; samples of one prompt share it). The candidates of a
    sample are the batch's other distinct keys (never its own, no duplicates); only when fewer than ``k`` exist,
    the keys of ``earlier`` (e.g. earlier batches, most recent first) not in the batch join them. Every sample
    has the same number of candidates, so all get ``min(k, candidates)`` contrasts, drawn uniformly without
    replacement: fewer than ``k`` when fewer exist (0: no contrast). Returns B lists of equal length.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k: must be an integer >= 0, got {k!r}")
    in_batch = list(dict.fromkeys(keys))
    extra = [key for key in dict.fromkeys(earlier) if key not in set(in_batch)] if len(in_batch) - 1 < k else []
    used = min(k, len(in_batch) - 1 + len(extra))
    picks = []
    for key in keys:
        candidates = [c for c in in_batch if c != key] + extra
        order = torch.randperm(len(candidates), generator=generator)[:used].tolist() if used else []
        picks.append([candidates[j] for j in order])
    return picks
