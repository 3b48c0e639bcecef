"""Per-token credit for on-policy self-distillation: pure tensor math, no model I/O.

Shapes used throughout (see ``CREDIT-MATH.md``):

- ``teacher_lp``  ``[B, T]``     log pi_T(y_t | x, f, y_<t)
- ``student_lp``  ``[B, T]``     log pi_S(y_t | x, y_<t)
- ``contrast_lp`` ``[B, K, T]``  log pi_T(y_t | x_j, f, y_<t) for K contrast inputs x_j
- ``mask``        ``[B, T]``     1 for response tokens, 0 for padding (ignored everywhere)

Every function keeps the floating dtype of its inputs and returns exactly 0 at masked positions.

Reward forms (:data:`FORMS`, one reading of the paper's abstract each; docs/CREDIT-MATH.md section 4):
``teacher`` subtracts the contrast teacher's log-prob, ``shortcut`` removes the input-generic part of the
SD reward, ``contrastive`` is a bounded InfoNCE reward (0 extra for a token equally likely under every input).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from creditlens.choices import DEFAULT_FORM, FORMS, POOLS  # torch-free, so the CLI's --help lists them

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


def _check_lam(lam: float) -> None:
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam: must be a number in [0, 1], got {lam!r}")


def _masked(value: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return value
    return torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))


def check_form(form: str) -> None:
    """Raise ``ValueError`` naming ``form`` unless it is one of :data:`FORMS`."""
    if form not in FORMS:
        raise ValueError(f"form: must be one of {FORMS}, got {form!r}")


def pool_contrast(contrast_lp: Tensor, pool: str = "mean") -> Tensor:
    """Pool contrast log-probs over the contrast axis: ``[B, K, ...] -> [B, ...]`` (K >= 1).

    ``"mean"`` averages log-probs (B_t of the math page); ``"logmeanexp"`` averages probabilities.
    """
    if contrast_lp.dim() < 2 or contrast_lp.shape[1] < 1:
        raise ValueError(
            f"contrast_lp: needs a contrast axis with K >= 1 entries at dim 1, got shape {tuple(contrast_lp.shape)}"
        )
    if pool == "mean":
        return contrast_lp.mean(dim=1)
    if pool == "logmeanexp":
        return torch.logsumexp(contrast_lp, dim=1) - math.log(contrast_lp.shape[1])
    raise ValueError(f"pool: must be one of {POOLS}, got {pool!r}")


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


def contrast_baseline(contrast_lp: Tensor, mask: Tensor | None = None, pool: str = "mean") -> Tensor:
    """Batch-contrastive baseline ``B_t``: ``[B, K, T] -> [B, T]``, 0 at masked positions."""
    if pool not in POOLS:
        raise ValueError(f"pool: must be one of {POOLS}, got {pool!r}")
    _check_tensor("contrast_lp", contrast_lp, 3)
    mask = _check_mask(mask, contrast_lp.shape[::2])
    _check_finite("contrast_lp", contrast_lp, mask)
    return _masked(pool_contrast(contrast_lp, pool), mask)


def decompose(
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    mask: Tensor | None = None,
    pool: str = "mean",
) -> Decomposition:
    """Split teacher log-probs and SD rewards into input-specific and input-generic parts.

    Shapes: ``teacher_lp, student_lp [B, T]``, ``contrast_lp [B, K, T]``, ``mask [B, T]``.
    """
    if pool not in POOLS:
        raise ValueError(f"pool: must be one of {POOLS}, got {pool!r}")
    mask = _check_pair(teacher_lp, student_lp, mask)
    _check_contrast(contrast_lp, teacher_lp, mask)
    baseline = _masked(pool_contrast(contrast_lp, pool), mask)
    return Decomposition(
        specific=_masked(teacher_lp - baseline, mask),
        baseline=baseline,
        sd=_masked(teacher_lp - student_lp, mask),
        shortcut=_masked(baseline - student_lp, mask),
    )


def _form_rewards(teacher_lp: Tensor, baseline: Tensor, student_lp: Tensor, k: int, lam: float, form: str) -> Tensor:
    """Unmasked token reward of ``form`` from ``[B, T]`` log-probs and the pooled baseline."""
    sd = teacher_lp - student_lp
    if form == "teacher":
        return sd - lam * baseline
    if form == "shortcut":
        return sd - lam * (baseline - student_lp)
    return sd - lam * (pool_with_input(teacher_lp, baseline, k) - student_lp)


def credit_rewards(
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    mask: Tensor | None = None,
    lam: float = 0.5,
    pool: str = "mean",
    form: str = DEFAULT_FORM,
) -> Tensor:
    """CREDIT token reward of one of :data:`FORMS`: ``[B, T], [B, K, T], [B, T] -> [B, T]``.

    With ``r_t = log pi_T - log pi_S``, ``B_t`` the pooled contrast baseline and
    ``L_t = log((pi_T + K exp(B_t)) / (K + 1))`` (:func:`pool_with_input`):

    - ``"teacher"``:     ``r_t - lam * B_t``
    - ``"shortcut"``:    ``r_t - lam * (B_t - log pi_S)`` = specific + (1 - lam) * shortcut
    - ``"contrastive"``: ``r_t - lam * (L_t - log pi_S)`` = (1 - lam) * r_t + lam * (log pi_T - L_t)

    ``lam = 0`` is plain self-distillation for every form.
    """
    _check_lam(lam)
    check_form(form)
    if pool not in POOLS:
        raise ValueError(f"pool: must be one of {POOLS}, got {pool!r}")
    bool_mask = _check_pair(teacher_lp, student_lp, mask)
    _check_contrast(contrast_lp, teacher_lp, bool_mask)
    if float(lam) == 0.0:
        return _masked(teacher_lp - student_lp, bool_mask)
    clean = [_masked(v, bool_mask) for v in (teacher_lp, student_lp)]
    contrast = contrast_lp if bool_mask is None else torch.where(bool_mask.unsqueeze(1), contrast_lp, 0.0)
    baseline = pool_contrast(contrast, pool)
    reward = _form_rewards(clean[0], baseline, clean[1], contrast_lp.shape[1], float(lam), form)
    return _masked(reward, bool_mask)


def sequence_sums(
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    mask: Tensor | None = None,
    lam: float = 0.5,
    pool: str = "mean",
    form: str = DEFAULT_FORM,
) -> SequenceSums:
    """Trajectory sums of every token quantity: ``[B, T] -> [B]``.

    ``sd`` is the pMI estimate; ``credit`` the sequence objective of ``form`` (docs/CREDIT-MATH.md section 5).
    """
    parts = decompose(teacher_lp, contrast_lp, student_lp, mask, pool)
    reward = credit_rewards(teacher_lp, contrast_lp, student_lp, mask, lam, pool, form)
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
    lam: float = 0.5,
    pool: str = "mean",
    form: str = DEFAULT_FORM,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """CREDIT distillation target over a vocabulary (top-K or full logits modes): ``-> [B, T, V]``.

    ``teacher_logprobs [B, T, V]`` (log-probs; any last axis, e.g. a top-K support with a tail bucket),
    ``contrast_logprobs [B, K, T, V]``, ``student_logprobs [B, T, V]`` (needed by ``shortcut`` and
    ``contrastive``). The target is ``log_softmax`` over the last axis of

    - ``"teacher"``:     ``log pi_T - lam * B``
    - ``"shortcut"``:    ``log pi_T - lam * (B - log pi_S)``
    - ``"contrastive"``: ``log pi_T - lam * (L - log pi_S)``, ``L = log((pi_T + K exp(B)) / (K + 1))``

    so ``log target(v) - log pi_S(v)`` is the form's sampled-token reward up to a per-position constant.
    ``lam = 0`` returns ``teacher_logprobs`` unchanged for every form.
    """
    _check_lam(lam)
    check_form(form)
    if pool not in POOLS:
        raise ValueError(f"pool: must be one of {POOLS}, got {pool!r}")
    _check_vocab_logprobs("teacher_logprobs", teacher_logprobs, 3)
    _check_vocab_logprobs("contrast_logprobs", contrast_logprobs, 4)
    b, k, t, v = contrast_logprobs.shape
    if (b, t, v) != tuple(teacher_logprobs.shape) or k < 1:
        raise ValueError(
            f"contrast_logprobs: shape {tuple(contrast_logprobs.shape)} must be [B, K>=1, T, V] with "
            f"[B, T, V] = teacher_logprobs {tuple(teacher_logprobs.shape)}"
        )
    if form != "teacher":
        if student_logprobs is None:
            raise ValueError(f"student_logprobs: form {form!r} needs the student's log-probs [B, T, V]")
        _check_vocab_logprobs("student_logprobs", student_logprobs, 3)
        if student_logprobs.shape != teacher_logprobs.shape:
            raise ValueError(
                f"student_logprobs: shape {tuple(student_logprobs.shape)} differs from teacher_logprobs "
                f"{tuple(teacher_logprobs.shape)}"
            )
    if float(lam) == 0.0:
        return teacher_logprobs
    baseline = pool_contrast(contrast_logprobs, pool)
    if form == "teacher":
        return torch.log_softmax(teacher_logprobs - float(lam) * baseline, dim=-1)
    if form == "contrastive":
        baseline = pool_with_input(teacher_logprobs, baseline, k)
    return torch.log_softmax(teacher_logprobs - float(lam) * (baseline - student_logprobs), dim=-1)


def contrast_indices(
    group_ids: Sequence[Hashable] | Tensor,
    k: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick, for each example, ``k`` other examples of the batch with a different prompt id.

    ``group_ids`` has length B (GRPO samples of one prompt share an id; a 1-D tensor or a sequence).
    Returns ``LongTensor[B, k]`` drawn without replacement, uniformly among the eligible examples.
    """
    if isinstance(group_ids, Tensor):
        if group_ids.dim() != 1:
            raise ValueError(f"group_ids: expected a 1-D tensor of prompt ids, got shape {tuple(group_ids.shape)}")
        ids = group_ids.tolist()
    elif isinstance(group_ids, Sequence) and not isinstance(group_ids, (str, bytes)):
        ids = list(group_ids)
    else:
        raise ValueError(f"group_ids: expected a sequence or 1-D tensor of prompt ids, got {type(group_ids).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: must be a positive integer, got {k!r}")
    out = torch.empty(len(ids), k, dtype=torch.long)
    for i, gid in enumerate(ids):
        eligible = torch.tensor([j for j, other in enumerate(ids) if other != gid], dtype=torch.long)
        if eligible.numel() < k:
            raise ValueError(
                f"group_ids: example {i} (prompt id {gid!r}) has {eligible.numel()} examples with another "
                f"prompt id in a batch of {len(ids)}, fewer than k={k}; use a batch with at least k+1 "
                "distinct prompts or a smaller k"
            )
        order = torch.randperm(eligible.numel(), generator=generator)[:k]
        out[i] = eligible[order]
    return out
