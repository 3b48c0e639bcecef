"""The per-token table: one row per response token, the data contract of creditlens.

The scorer, the trainer's run logs, the dashboard and the notebooks all read and write this table
as Parquet. ``TOKEN_COLUMNS`` are required, ``OPTIONAL_COLUMNS`` are checked when present, and any
other column is kept as is. Contrast-dependent columns (``contrast_baseline``, ``specific``,
``shortcut``, ``credit_reward``) are NaN when a table was scored without contrasts (K = 0). Rows with
``mask`` False carry 0 in every reward column (the credit math's convention).

Vocabulary: ``contrast_baseline`` is B_t (a log-prob); ``specific = teacher_logprob - contrast_baseline``
is what this input explains; ``shortcut = contrast_baseline - student_logprob`` is what the feedback
raises whatever the input, so ``sd_reward = specific + shortcut`` exactly. Tables written before
``shortcut`` was required carry a ``generic`` column (a copy of ``contrast_baseline``); they still read.

Feedback axis (docs/CREDIT-MATH.md section 8): tables scored with feedback contrasts (x, f_j, y) carry the same
vocabulary with a ``feedback_`` prefix (``FEEDBACK_COLUMNS``): ``feedback_baseline`` F_t, ``feedback_specific``
(what this feedback explains), ``feedback_shortcut`` (what any reprompt raises), ``feedback_credit_reward``;
``feedback_specific + feedback_shortcut = sd_reward``. They are optional but come together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from creditlens.atomic import atomic_write
from creditlens.errors import SchemaError

if TYPE_CHECKING:
    from torch import Tensor

    from creditlens.credit import CreditSpec

TOKEN_COLUMNS: dict[str, str] = {
    "example_id": "str",  # identifies the (prompt, feedback, response) triple
    "prompt_id": "str",  # examples with the same prompt id are never each other's contrast
    "position": "int",  # 0-based index of the token inside the response
    "token_id": "int",  # the response token id, identical in every context
    "token": "str",  # the token decoded on its own
    "student_logprob": "float",  # log pi_S(y_t | x, y_<t)
    "teacher_logprob": "float",  # log pi_T(y_t | x, f, y_<t)
    "contrast_baseline": "float",  # B_t, pooled teacher log-prob under K other inputs
    "sd_reward": "float",  # teacher_logprob - student_logprob
    "specific": "float",  # teacher_logprob - contrast_baseline: what this input explains
    "shortcut": "float",  # contrast_baseline - student_logprob: what the feedback raises whatever the input
    "credit_reward": "float",  # the CREDIT reward of the table's `form` (creditlens.credit.credit_rewards)
    "mask": "bool",  # False: the token does not count (its reward columns are 0)
}

OPTIONAL_COLUMNS: dict[str, str] = {
    "contrast_logprobs": "list",  # the K teacher log-probs under contrast inputs
    "lam": "float",  # lambda used for credit_reward (creditlens.credit.CreditSpec; absent for GRPO rows)
    "pool": "str",  # "mean" or "logmeanexp"
    "form": "str",  # the CREDIT reward form (creditlens.credit.FORMS)
    "generic": "float",  # legacy tables only: a copy of contrast_baseline
    "n_contrast": "int",  # K this row's sample used (0: no contrast)
    "run": "str",
    "algo": "str",  # "grpo", "sd" or "credit"
    "step": "int",  # training step that produced the rollout
    "sample": "int",  # index of the rollout inside its step
    "advantage": "float",  # the per-token advantage the trainer actually used
    "outcome_reward": "float",  # the environment's scalar reward for the whole response
    "prompt": "str",
    "feedback": "str",
    "response": "str",
    "label": "str",  # ground-truth token label where known ("specific" or "generic")
    "feedback_contrast_logprobs": "list",  # the K teacher log-probs under other feedback (x, f_j, y)
    "feedback_baseline": "float",  # F_t, pooled teacher log-prob under K other feedbacks
    "feedback_specific": "float",  # teacher_logprob - feedback_baseline: what this feedback explains
    "feedback_shortcut": "float",  # feedback_baseline - student_logprob: what any reprompt raises
    "feedback_credit_reward": "float",  # the table's form and lam applied to the feedback contrasts
    "n_feedback_contrast": "int",  # K of the feedback axis
    "feedback_contrast_examples": "str",  # JSON list of the example ids whose feedback each contrast uses
}

CONTRAST_COLUMNS = ("contrast_baseline", "specific", "shortcut", "credit_reward")
REWARD_COLUMNS = ("sd_reward", "specific", "shortcut", "credit_reward", "contrast_baseline")
FEEDBACK_COLUMNS = ("feedback_baseline", "feedback_specific", "feedback_shortcut", "feedback_credit_reward")
FEEDBACK_SPLIT_TOLERANCE = 1e-3  # |feedback_specific + feedback_shortcut - sd_reward| allowed on read (float32 tables)


def _kind_ok(series: pd.Series, kind: str) -> bool:
    dtype = series.dtype
    if kind == "str":
        return pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
    if kind == "int":
        return pd.api.types.is_integer_dtype(dtype)
    if kind == "float":
        return pd.api.types.is_float_dtype(dtype)
    if kind == "bool":
        return pd.api.types.is_bool_dtype(dtype)
    return pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.ArrowDtype)


def validate_token_table(table: pd.DataFrame, source: str = "token table") -> pd.DataFrame:
    """Check columns, kinds and key uniqueness; return the table or raise :class:`SchemaError`."""
    if not isinstance(table, pd.DataFrame):
        raise SchemaError(f"{source}: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [name for name in TOKEN_COLUMNS if name not in table.columns]
    if missing:
        raise SchemaError(f"{source}: missing required column(s) {missing}")
    for name, kind in {**TOKEN_COLUMNS, **OPTIONAL_COLUMNS}.items():
        if name in table.columns and not _kind_ok(table[name], kind):
            raise SchemaError(f"{source}: column {name!r} has dtype {table[name].dtype}, expected {kind}")
    if len(table) and (table["position"] < 0).any():
        raise SchemaError(f"{source}: column 'position' has negative values")
    for name in ("student_logprob", "teacher_logprob", "sd_reward"):
        if len(table) and not np.isfinite(table[name].to_numpy(dtype=np.float64)).all():
            raise SchemaError(f"{source}: column {name!r} has NaN or inf values")
    _check_feedback_columns(table, source)
    keys = [c for c in ("run", "step", "sample") if c in table.columns] + ["example_id", "position"]
    duplicated = table.duplicated(subset=keys)
    if duplicated.any():
        row = table.loc[duplicated].iloc[0]
        raise SchemaError(
            f"{source}: duplicate row for key {dict(zip(keys, row[keys].tolist(), strict=True))}"
        )
    return table


def _check_feedback_columns(table: pd.DataFrame, source: str) -> None:
    """Feedback-axis columns come together and split ``sd_reward`` (where finite), or raise :class:`SchemaError`."""
    present = [name for name in FEEDBACK_COLUMNS if name in table.columns]
    if not present:
        return
    missing = [name for name in FEEDBACK_COLUMNS if name not in table.columns]
    if missing:
        raise SchemaError(f"{source}: has feedback-axis column(s) {present} but not {missing}; "
                          "write all of them (schema.build_token_table(feedback_contrast_lp=...)) or none")
    error = (table["feedback_specific"] + table["feedback_shortcut"] - table["sd_reward"]).abs().to_numpy(np.float64)
    bad = np.flatnonzero(error > FEEDBACK_SPLIT_TOLERANCE)
    if bad.size:
        raise SchemaError(f"{source}: row {int(bad[0])}: feedback_specific + feedback_shortcut differs from sd_reward "
                          f"by {error[bad[0]]:.3g} (> {FEEDBACK_SPLIT_TOLERANCE}); rescore the table")


def _as_numpy(value: Tensor | np.ndarray | Sequence) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _split_columns(
    names: tuple[str, ...],
    teacher_lp: Tensor,
    contrast_lp: Tensor,
    student_lp: Tensor,
    counted: Tensor,
    spec: CreditSpec,
) -> dict[str, Tensor]:
    """One axis's ``[B, T]`` columns (baseline, specific, shortcut, credit reward), named by ``names``.

    A sample whose ``contrast_lp [K, T]`` is all NaN had no contrast (the run log marks such samples so,
    e.g. a feedback-axis sample whose teacher context holds no feedback): its columns are NaN.
    """
    import torch

    from creditlens import credit

    scored = ~torch.isnan(contrast_lp).flatten(1).all(dim=1)
    columns = [torch.full_like(teacher_lp, float("nan")) for _ in names]
    if scored.any():
        teacher, contrast, student, mask = teacher_lp[scored], contrast_lp[scored], student_lp[scored], counted[scored]
        parts = credit.decompose(teacher, contrast, student, mask, spec)
        reward = credit.credit_rewards(teacher, contrast, student, mask, spec)
        for column, value in zip(columns, (parts.baseline, parts.specific, parts.shortcut, reward), strict=True):
            column[scored] = value.to(column.dtype)
    return dict(zip(names, columns, strict=True))


def _contrasts_used(contrast_lp: Tensor | None, batch: int) -> np.ndarray:
    """K used per sample ``[B]``: the contrast axis's size, 0 for a sample whose ``[K, T]`` is all NaN (none)."""
    if contrast_lp is None:
        return np.zeros(batch, dtype=np.int64)
    scored = ~contrast_lp.isnan().flatten(1).all(dim=1)
    return (scored.long() * contrast_lp.shape[1]).cpu().numpy()


def build_token_table(
    example_ids: Sequence[str],
    prompt_ids: Sequence[str],
    token_ids: Tensor,
    tokens: Sequence[Sequence[str]],
    teacher_lp: Tensor,
    student_lp: Tensor,
    contrast_lp: Tensor | None = None,
    mask: Tensor | None = None,
    lengths: Sequence[int] | Tensor | None = None,
    spec: CreditSpec | None = None,
    example_columns: Mapping[str, Sequence] | None = None,
    token_columns: Mapping[str, Tensor | np.ndarray] | None = None,
    feedback_contrast_lp: Tensor | None = None,
    credit_columns: Mapping[str, Tensor] | None = None,
) -> pd.DataFrame:
    """Build the per-token table from right-padded ``[B, T]`` tensors (``contrast_lp`` ``[B, K, T]``).

    ``lengths[b]`` response tokens of row b become rows (default: all T). ``mask`` ``[B, T]`` marks
    the tokens that count; ``spec`` (:class:`creditlens.credit.CreditSpec`) sets the credit columns and the
    ``lam``/``pool``/``form`` labels of every row (None: a run without CREDIT settings, e.g. GRPO: no labels,
    contrast columns NaN); ``n_contrast`` is the K each row's sample used. ``example_columns`` adds per-example
    values (length B), ``token_columns`` per-token values (``[B, T]``). ``feedback_contrast_lp`` ``[B, K_f, T]``
    (teacher log-probs under other feedback) adds the feedback-axis columns (``FEEDBACK_COLUMNS``, same spec).
    ``credit_columns`` (name -> ``[B, T]``: ``sd_reward`` and any of ``CONTRAST_COLUMNS`` / ``FEEDBACK_COLUMNS``)
    are what a trainer computed: they are written as they are, never recomputed; the others come from
    :mod:`creditlens.credit`.
    """
    import torch  # imported here so that readers of tables (the app) start without torch

    from creditlens import credit

    given = dict(credit_columns or {})
    if spec is None and (contrast_lp is not None or feedback_contrast_lp is not None):
        raise SchemaError("spec: contrast log-probs need the CreditSpec that scores them")
    if getattr(token_ids, "ndim", None) != 2:
        raise SchemaError(f"token_ids: expected a [B, T] tensor, got {type(token_ids).__name__} "
                          f"of shape {tuple(getattr(token_ids, 'shape', ()))}")
    batch, length = token_ids.shape
    if tuple(getattr(teacher_lp, "shape", ())) != (batch, length):
        raise SchemaError(f"teacher_lp: shape {tuple(getattr(teacher_lp, 'shape', ()))} differs from token_ids "
                          f"{(batch, length)}")
    if lengths is None:
        lengths = [length] * batch
    lengths = [int(n) for n in _as_numpy(lengths).tolist()]
    if len(lengths) != batch or len(example_ids) != batch or len(prompt_ids) != batch or len(tokens) != batch:
        raise SchemaError(
            "example_ids, prompt_ids, tokens and lengths must all have one entry per row of token_ids"
        )
    for row, (n, row_tokens) in enumerate(zip(lengths, tokens, strict=True)):
        if not 0 <= n <= length or len(row_tokens) < n:
            raise SchemaError(f"lengths[{row}] = {n}: must be in [0, {length}] with at least that many "
                              f"tokens[{row}] (got {len(row_tokens)})")
    in_response = torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    counted = in_response if mask is None else in_response & mask.bool().cpu()
    counted = counted.to(teacher_lp.device)
    columns: dict[str, Tensor] = {
        "student_logprob": student_lp,
        "teacher_logprob": teacher_lp,
        "sd_reward": given.pop("sd_reward", None),
    }
    if columns["sd_reward"] is None:
        columns["sd_reward"] = credit.sd_rewards(teacher_lp, student_lp, counted)
    for names, lp in ((CONTRAST_COLUMNS, contrast_lp), (FEEDBACK_COLUMNS, feedback_contrast_lp)):
        if names == FEEDBACK_COLUMNS and lp is None:
            continue
        missing = [name for name in names if name not in given]
        if lp is None or lp.shape[1] == 0:
            columns.update({name: torch.full_like(teacher_lp, float("nan")) for name in missing})
        elif missing:
            computed = _split_columns(names, teacher_lp, lp, student_lp, counted, spec)
            columns.update({name: computed[name] for name in missing})
        columns.update({name: given.pop(name) for name in names if name in given})
    if given:
        raise SchemaError(f"credit_columns: unknown column(s) {sorted(given)}; give sd_reward, {CONTRAST_COLUMNS} "
                          f"or {FEEDBACK_COLUMNS}")
    keep = in_response.numpy()
    rows, cols = np.nonzero(keep)
    data: dict[str, object] = {
        "example_id": np.asarray([str(example_ids[r]) for r in rows], dtype=object),
        "prompt_id": np.asarray([str(prompt_ids[r]) for r in rows], dtype=object),
        "position": cols.astype(np.int64),
        "token_id": _as_numpy(token_ids)[rows, cols].astype(np.int64),
        "token": np.asarray([tokens[r][c] for r, c in zip(rows, cols, strict=True)], dtype=object),
    }
    for name, value in columns.items():
        data[name] = _as_numpy(value.double())[rows, cols]
    data["mask"] = counted.cpu().numpy()[rows, cols]
    if contrast_lp is not None and contrast_lp.shape[1]:
        contrast = _as_numpy(contrast_lp.double())
        data["contrast_logprobs"] = [contrast[r, :, c] for r, c in zip(rows, cols, strict=True)]
    if spec is not None:
        data.update(lam=np.full(len(rows), spec.lam), pool=np.full(len(rows), spec.pool, dtype=object),
                    form=np.full(len(rows), spec.form, dtype=object))
        data["n_contrast"] = _contrasts_used(contrast_lp, batch)[rows]
    if feedback_contrast_lp is not None and feedback_contrast_lp.shape[1]:
        by_feedback_lp = _as_numpy(feedback_contrast_lp.double())
        data["feedback_contrast_logprobs"] = [by_feedback_lp[r, :, c] for r, c in zip(rows, cols, strict=True)]
        data["n_feedback_contrast"] = _contrasts_used(feedback_contrast_lp, batch)[rows]
    for name, values in (example_columns or {}).items():
        if len(values) != batch:
            raise SchemaError(f"example_columns[{name!r}]: {len(values)} values for {batch} examples")
        data[name] = np.asarray(list(values), dtype=object if isinstance(values[0], str) else None)[rows]
    for name, values in (token_columns or {}).items():
        data[name] = _as_numpy(values)[rows, cols]
    return validate_token_table(pd.DataFrame(data), "build_token_table")


def write_token_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate and write a table to Parquet atomically (:func:`creditlens.atomic.atomic_write`)."""
    validate_token_table(table, str(path))
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    return atomic_write(path, lambda tmp: pq.write_table(arrow, tmp))


def read_token_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet file, or every ``*.parquet`` under a directory, and validate it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise SchemaError(f"{path}: no .parquet files in this directory")
        return validate_token_table(pd.concat([_read_one(p) for p in files], ignore_index=True), str(path))
    return validate_token_table(_read_one(path), str(path))


def _read_one(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise SchemaError(f"{path}: no such file")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as error:
        raise SchemaError(f"{path}: not a readable Parquet file ({error})") from error


def example_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per example (and run/step/sample if present) with trajectory sums over counted tokens.

    ``sd_sum`` is the pMI estimate of section 2 of the math page, ``credit_sum`` the contrastive pMI;
    ``specific_sum + shortcut_sum = sd_sum``; tables with feedback-axis columns add ``feedback_specific_sum``,
    ``feedback_shortcut_sum`` and ``feedback_credit_sum`` (``feedback_specific_sum + feedback_shortcut_sum = sd_sum``).
    """
    validate_token_table(table)
    keys = [c for c in ("run", "algo", "step", "sample") if c in table.columns] + ["example_id", "prompt_id"]
    sums = {
        "sd_sum": "sd_reward",
        "credit_sum": "credit_reward",
        "specific_sum": "specific",
        "shortcut_sum": "shortcut",
        "teacher_sum": "teacher_logprob",
        "student_sum": "student_logprob",
    }
    if "feedback_specific" in table.columns:
        sums.update(feedback_specific_sum="feedback_specific", feedback_shortcut_sum="feedback_shortcut",
                    feedback_credit_sum="feedback_credit_reward")
    counted = table[table["mask"]]
    summary = counted.groupby(keys, sort=False, dropna=False).agg(
        n_tokens=("position", "size"),
        **{out: (col, lambda s: s.sum(min_count=1)) for out, col in sums.items()},
    )
    texts = [c for c in ("prompt", "feedback", "response", "outcome_reward") if c in table.columns]
    if texts:
        summary = summary.join(table.groupby(keys, sort=False, dropna=False)[texts].first())
    return summary.reset_index()
