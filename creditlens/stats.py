"""Statistics of per-token tables and runs: generic share, top shortcut tokens, the pMI gap, intervals, AUROC.

Pure pandas / numpy / scipy on the per-token table of :mod:`creditlens.schema`; no drawing (that is
:mod:`creditlens.viz`). The vocabulary, defined once in docs/dashboard.md:

- ``contrast_baseline`` = ``B_t``, the teacher log-prob pooled over K contrast inputs;
- ``specific`` = ``teacher_logprob - contrast_baseline``: what this input explains;
- ``shortcut`` = ``contrast_baseline - student_logprob``: what the feedback raises whatever the input;
  ``sd_reward = specific + shortcut`` exactly;
- generic share (docs/CREDIT-MATH.md section 9) = the share of the *positive* SD credit that is
  input-generic: over counted tokens the feedback moves up (``sd_reward >= MOVED``), each token's generic
  part is ``clip(shortcut, 0, sd_reward)``, and the share is ``sum generic part / sum sd_reward``.

The feedback axis (docs/CREDIT-MATH.md section 8) uses the same names with a ``feedback_`` prefix
(``feedback_specific``, ``feedback_shortcut``); ``axis="feedback"`` computes its generic share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

MOVED = 0.05
"""Nats: a token whose SD reward is below this (probability raised by less than 5%) is not moved by the
feedback and is left out of the generic share (docs/CREDIT-MATH.md section 9)."""

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


def generic_part(table: pd.DataFrame, axis: str = "input", moved: float = MOVED) -> pd.DataFrame:
    """The counted tokens the feedback moves up along ``axis`` (``mask`` and ``sd_reward >= moved``), with
    ``credit`` = their SD reward and ``generic`` = ``clip(shortcut, 0, sd_reward)``, the part of it that
    the contrast inputs (or feedbacks) also give: what the feedback raises whatever the input."""
    require_contrasts(table, axis=axis)
    _, shortcut = axis_columns(axis)
    rows = table[table["mask"].to_numpy(dtype=bool) & (table["sd_reward"].to_numpy(dtype=np.float64) >= moved)]
    credit = rows["sd_reward"].to_numpy(dtype=np.float64)
    generic = np.clip(rows[shortcut].to_numpy(dtype=np.float64), 0.0, credit)
    return rows.assign(credit=credit, generic=generic)


def generic_share(table: pd.DataFrame, axis: str = "input", moved: float = MOVED) -> float:
    """Share of the positive SD credit that is input-generic along ``axis`` (docs/CREDIT-MATH.md section 9):
    ``sum clip(shortcut, 0, sd_reward) / sum sd_reward`` over counted tokens with ``sd_reward >= moved``
    (``feedback_shortcut`` for the feedback axis); NaN when no token is moved."""
    part = generic_part(table, axis, moved)
    total = float(part["credit"].sum())
    return float(part["generic"].sum()) / total if total > 0 else float("nan")


def generic_share_by_example(table: pd.DataFrame, axis: str = "input", moved: float = MOVED) -> pd.Series:
    """:func:`generic_share` of each response along ``axis`` (indexed by ``example_id``; NaN when the
    feedback moves none of its tokens)."""
    part = generic_part(table, axis, moved)
    ids = table.loc[table["mask"].to_numpy(dtype=bool), "example_id"].unique()
    sums = part.groupby("example_id")[["credit", "generic"]].sum().reindex(ids)
    return (sums["generic"] / sums["credit"].where(sums["credit"] > 0)).rename("generic_share")


def generic_share_validation(table: pd.DataFrame, labels: pd.Series, moved: float = MOVED,
                             bins: int = 5) -> dict[str, object]:
    """How well :func:`generic_share` matches ground-truth token labels ("generic"/"specific", aligned with
    ``table``) on the tokens it counts: ``share`` (the estimate), ``label_share`` (the share of the same
    positive SD credit that sits on generic-labelled tokens), ``auroc`` (the per-token generic fraction
    ``generic / sd_reward`` ranking generic-labelled tokens above specific ones), ``n_tokens``, and
    ``calibration``: per bin of the generic fraction, its credit-weighted mean and the credit-weighted share
    of generic labels in it."""
    part = generic_part(table, moved=moved)
    generic = (labels.reindex(part.index) == "generic").to_numpy()
    fraction = part["generic"].to_numpy() / part["credit"].to_numpy()
    credit = part["credit"].to_numpy()
    total = credit.sum()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(fraction, edges[1:-1]), 0, bins - 1)
    calibration = pd.DataFrame([
        {"bin": f"[{edges[b]:.1f}, {edges[b + 1]:.1f}{']' if b == bins - 1 else ')'}", "n_tokens": int(inside.sum()),
         "credit": float(credit[inside].sum()),
         "generic_fraction": float(np.average(fraction[inside], weights=credit[inside])) if inside.any() else math.nan,
         "generic_labels": float(np.average(generic[inside], weights=credit[inside])) if inside.any() else math.nan}
        for b in range(bins) for inside in [which == b]
    ])
    return {"share": float(part["generic"].sum() / total) if total > 0 else math.nan,
            "label_share": float(credit[generic].sum() / total) if total > 0 else math.nan,
            "auroc": auroc(fraction, generic), "n_tokens": int(len(part)), "calibration": calibration}


def top_shortcut_tokens(table: pd.DataFrame, n: int = 20, min_count: int = 1) -> pd.DataFrame:
    """Tokens ranked by the input-generic credit they receive (:func:`generic_part`, summed over their counted
    occurrences the feedback moves up): the tokens the feedback raises whatever the input.

    Columns: ``token, count, generic_sum, credit_sum, generic_fraction, shortcut_mean, specific_mean, sd_mean``
    (the means over every counted occurrence); sorted by ``generic_sum``, largest first.
    """
    require_contrasts(table)
    counted = table[table["mask"]]
    part = generic_part(table)
    moved = part.groupby("token", sort=False)[["generic", "credit"]].sum()
    frame = counted.groupby("token", sort=False).agg(
        count=("position", "size"),
        shortcut_mean=("shortcut", "mean"),
        specific_mean=("specific", "mean"),
        sd_mean=("sd_reward", "mean"),
    )
    frame = frame.join(moved.rename(columns={"generic": "generic_sum", "credit": "credit_sum"}), how="inner")
    frame["generic_fraction"] = frame["generic_sum"] / frame["credit_sum"]
    frame = frame[(frame["count"] >= min_count) & (frame["generic_sum"] > 0)].reset_index()
    frame = frame[["token", "count", "generic_sum", "credit_sum", "generic_fraction", "shortcut_mean",
                   "specific_mean", "sd_mean"]]
    return frame.sort_values("generic_sum", ascending=False, kind="stable").head(n).reset_index(drop=True)


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
    """``(mean, low, high)``: Student-t interval of the mean over seeds (``scipy.stats.t.interval``); low/high
    NaN with fewer than two finite values, or equal to the mean when every value is the same."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    if np.all(data == data[0]):
        return mean, mean, mean
    low, high = scipy_stats.t.interval(confidence, data.size - 1, loc=mean, scale=scipy_stats.sem(data))
    return mean, float(low), float(high)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a pass rate ``successes / n`` (``scipy.stats.binomtest``): inside [0, 1]
    and not empty at 0/n or n/n, unlike the Wald interval; NaN for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    interval = scipy_stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties count 1/2 (Mann-Whitney U)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = scipy_stats.rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
