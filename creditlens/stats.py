"""Statistics of per-token tables and runs: generic share, top shortcut tokens, the pMI gap, intervals, AUROC.

Pure pandas / numpy / scipy on the per-token table of :mod:`creditlens.schema`; no drawing (that is
:mod:`creditlens.viz`). The vocabulary, defined once in docs/dashboard.md:

- ``contrast_baseline`` = ``B_t``, the teacher log-prob pooled over K contrast inputs;
- ``specific`` = ``teacher_logprob - contrast_baseline``: what this input explains;
- ``shortcut`` = ``contrast_baseline - student_logprob``: what the feedback raises whatever the input;
  ``sd_reward = specific + shortcut`` exactly;
- generic share = ``sum |shortcut| / (sum |specific| + sum |shortcut|)`` over counted tokens.

The feedback axis (docs/CREDIT-MATH.md section 8) uses the same names with a ``feedback_`` prefix
(``feedback_specific``, ``feedback_shortcut``); ``axis="feedback"`` computes its generic share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

PMI_COLUMNS = ("pmi", "pmi_estimate", "pmi_est", "pmi_mc", "pmi_hat")
"""Accepted names of a per-example pMI estimate, first match wins."""
PMI_SE_COLUMNS = ("pmi_se", "log_pf_x_se", "pmi_stderr", "pmi_std_err", "pmi_sem", "gap_se", "se")
"""Accepted names of its standard error (that of the Monte-Carlo ``log p(f | x)`` term)."""


AXIS_COLUMNS = {"input": ("specific", "shortcut"), "feedback": ("feedback_specific", "feedback_shortcut")}
"""The (specific, shortcut) columns of each contrast axis."""


def axis_columns(axis: str) -> tuple[str, str]:
    """The ``(specific, shortcut)`` column names of ``axis`` ("input" or "feedback")."""
    if axis not in AXIS_COLUMNS:
        raise ValueError(f"axis: must be one of {tuple(AXIS_COLUMNS)}, got {axis!r}")
    return AXIS_COLUMNS[axis]


def has_axis(table: pd.DataFrame, axis: str) -> bool:
    """Whether ``table`` holds a finite split along ``axis``."""
    return all(name in table.columns and np.isfinite(table[name].to_numpy(dtype=np.float64)).any()
               for name in axis_columns(axis))


def require_contrasts(table: pd.DataFrame, source: str = "table", axis: str = "input") -> None:
    """Raise ValueError when ``table`` has no finite split along ``axis`` (scored with K = 0 there)."""
    if axis_columns(axis) == AXIS_COLUMNS["feedback"]:
        if not has_axis(table, axis):
            raise ValueError(
                f"{source}: no feedback-axis split (columns 'feedback_specific' / 'feedback_shortcut' missing or "
                "all NaN); score with `--feedback-contrast K` (K >= 1) to split the credit by feedback"
            )
        return
    for name in AXIS_COLUMNS["input"]:
        if name not in table.columns or not np.isfinite(table[name].to_numpy(dtype=np.float64)).any():
            raise ValueError(
                f"{source}: no input-specific / shortcut split (column {name!r} is missing or all NaN); "
                "it holds no contrast log-probs: score with `--contrast K` (K >= 1), or train SD/CREDIT with "
                "n_contrast >= 1, to decompose the credit"
            )


def generic_share(table: pd.DataFrame, axis: str = "input") -> float:
    """Share of SD credit mass that is generic along ``axis``, over counted tokens (``mask``):
    ``sum |shortcut| / (sum |specific| + sum |shortcut|)`` (``feedback_*`` columns for the feedback axis);
    NaN when both sums are 0."""
    require_contrasts(table, axis=axis)
    specific, shortcut_column = axis_columns(axis)
    counted = table[table["mask"]]
    shortcut = float(counted[shortcut_column].abs().sum())
    total = shortcut + float(counted[specific].abs().sum())
    return shortcut / total if total > 0 else float("nan")


def generic_share_by_example(table: pd.DataFrame, axis: str = "input") -> pd.Series:
    """:func:`generic_share` of each response along ``axis`` (indexed by ``example_id``)."""
    require_contrasts(table, axis=axis)
    specific, shortcut = axis_columns(axis)
    counted = table[table["mask"]]
    sums = counted.assign(s=counted[specific].abs(), g=counted[shortcut].abs()).groupby("example_id")[["s", "g"]].sum()
    total = sums["s"] + sums["g"]
    return (sums["g"] / total.where(total > 0)).rename("generic_share")


def top_shortcut_tokens(table: pd.DataFrame, n: int = 20, min_count: int = 1) -> pd.DataFrame:
    """Tokens ranked by the magnitude of their total ``shortcut`` credit over counted tokens.

    Columns: ``token, count, shortcut_sum, shortcut_mean, specific_mean, sd_mean``; sorted by
    ``|shortcut_sum|`` (largest first), so large negative totals rank as high as large positive ones.
    """
    require_contrasts(table)
    counted = table[table["mask"]]
    frame = counted.groupby("token", sort=False).agg(
        count=("position", "size"),
        shortcut_sum=("shortcut", "sum"),
        shortcut_mean=("shortcut", "mean"),
        specific_mean=("specific", "mean"),
        sd_mean=("sd_reward", "mean"),
    ).reset_index()
    frame = frame[frame["count"] >= min_count]
    order = frame["shortcut_sum"].abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order].head(n).reset_index(drop=True)


def position_profile(table: pd.DataFrame, columns: Sequence[str] = ("sd_reward", "specific", "shortcut",
                                                                        "credit_reward")) -> pd.DataFrame:
    """Mean of each of ``columns`` (those present) over counted tokens at each response position."""
    present = [c for c in columns if c in table.columns]
    counted = table[table["mask"]]
    return counted.groupby("position")[present].mean().reset_index()


def pmi_columns(summary: pd.DataFrame) -> tuple[str, str | None] | None:
    """Names of the pMI-estimate column and of its standard-error column in a per-example summary,
    or None when the summary has no pMI estimate (``se`` is None when only the estimate exists)."""
    estimate = next((c for c in PMI_COLUMNS if c in summary.columns), None)
    if estimate is None:
        return None
    return estimate, next((c for c in PMI_SE_COLUMNS if c in summary.columns), None)


NO_PMI_HELP = ("`creditlens score EXAMPLES --gap-samples M --out DIR` estimates it for every example into "
               "DIR/summary.parquet (M >= 2 for a standard error); `creditlens demo` does so for 4 bundled examples "
               "into runs/demo-scored/summary.parquet")


def pmi_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Per example: ``example_id, sd_sum, pmi, gap = sd_sum - pmi, gap_se``; ValueError without pMI.

    Examples whose pMI estimate is NaN (not estimated) are left out. ``sd_sum`` is exact, so the
    standard error of the gap is that of the pMI estimate, i.e. of its Monte-Carlo ``log p(f | x)``
    term (``log_pf_x_se`` of :mod:`creditlens.gap`); NaN when the summary has none.
    """
    found = pmi_columns(summary)
    if found is None:
        raise ValueError(f"no pMI estimate in the summary (looked for columns {list(PMI_COLUMNS)}); {NO_PMI_HELP}")
    if "sd_sum" not in summary.columns:
        raise ValueError("the summary has no 'sd_sum' column (the SD trajectory sum of each example)")
    estimate, se = found
    ids = summary["example_id"].astype(str) if "example_id" in summary else summary.index.astype(str)
    frame = pd.DataFrame({"example_id": ids.to_numpy(), "sd_sum": summary["sd_sum"].to_numpy(dtype=np.float64),
                          "pmi": summary[estimate].to_numpy(dtype=np.float64)})
    frame["gap"] = frame["sd_sum"] - frame["pmi"]
    frame["gap_se"] = summary[se].to_numpy(dtype=np.float64) if se else np.nan
    frame = frame[frame["pmi"].notna()]
    if frame.empty:
        raise ValueError(f"column {estimate!r} is NaN for every example (no pMI was estimated); {NO_PMI_HELP}")
    return frame.reset_index(drop=True)


def gap_stats(frame: pd.DataFrame) -> dict[str, float]:
    """Of a :func:`pmi_frame`: number of examples, mean and largest ``|gap|``, and the share of
    examples with ``|gap| <= 2 gap_se`` (NaN unless every example has a standard error)."""
    gap = frame["gap"].abs()
    se = frame["gap_se"]
    within = float((gap <= 2 * se).mean()) if len(se) and se.notna().all() else float("nan")
    return {"n_examples": float(len(frame)), "mean_abs_gap": float(gap.mean()), "max_abs_gap": float(gap.max()),
            "within_2se": within}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval of the mean over seeds; low/high NaN with one value."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties count 1/2 (Mann-Whitney U)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = scipy_stats.rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
