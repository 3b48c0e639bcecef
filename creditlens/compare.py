"""Compare run directories: runs grouped by method (algo, and ``lam`` for CREDIT) across seeds.

``compare_runs(paths)`` returns a :class:`Comparison` with, per group: final and best held-out score
with 95% t-intervals over seeds, training tokens and wall time to first reach a target score, the
generic share of SD credit, and (when the environment labels its response tokens, like ``shortcut``)
the AUROC with which each per-token credit column separates input-specific from generic tokens.
``Comparison.save(out)`` writes the table (CSV, Parquet, Markdown) and PNG figures. See docs/results.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from creditlens import envs, runs, viz
from creditlens.runs import Run

CREDIT_COLUMNS = ("advantage", "sd_reward", "credit_reward", "specific", "shortcut")
"""Per-token columns whose AUROC is reported (``advantage``: what the trainer actually used)."""
OWN_CREDIT = {"grpo": "advantage", "sd": "sd_reward", "credit": "credit_reward"}
"""The per-token credit each algorithm trains on (reported as ``auroc_own`` / ``auroc_abs_own``)."""


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval of the mean over seeds; low/high NaN with one value."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties count 1/2 (Mann-Whitney U)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def group_label(run: Run) -> str:
    """``grpo``, ``sd`` or ``credit lam=0.5``: the method a run belongs to (seeds are pooled)."""
    if run.algo == "credit":
        return f"credit lam={float(run.manifest.get('config', {}).get('lam', math.nan)):g}"
    return run.algo


def label_tokens(run: Run, table: pd.DataFrame) -> pd.Series | None:
    """Ground-truth token labels ("specific"/"generic") of a token table, from its ``label`` column or
    from the run's environment (``token_labels``); None when neither is available."""
    if "label" in table.columns:
        return table["label"]
    try:
        env = envs.get(run.env, **run.manifest.get("config", {}).get("env_args", {}))
    except (ValueError, TypeError, KeyError):
        return None
    if not hasattr(env, "token_labels"):
        return None
    keys = [c for c in ("step", "sample", "example_id") if c in table.columns]
    ordered = table.sort_values(keys + ["position"])
    starts = np.flatnonzero(~ordered.duplicated(subset=keys).to_numpy())
    tokens = ordered["token"].tolist()
    bounds = list(starts) + [len(tokens)]
    labels = [label for a, b in zip(bounds[:-1], bounds[1:], strict=True) for label in env.token_labels(None, tokens[a:b])]
    return pd.Series(labels, index=ordered.index, dtype=object).reindex(table.index)


def _to_target(run: Run, evals: pd.DataFrame, target: float) -> tuple[float, float]:
    """Training tokens and seconds spent before the first eval with score >= target (NaN if never)."""
    hit = evals[evals["score"] >= target]
    if hit.empty:
        return math.nan, math.nan
    step = int(hit["step"].min())
    metrics = run.metrics()
    if metrics.empty or step == 0:
        return 0.0, 0.0
    before = metrics[metrics["step"] <= step]
    config = run.manifest.get("config", {})
    batch = int(config.get("num_prompts", 1)) * int(config.get("num_generations", 1))
    tokens = float((before["response_length"] * batch).sum()) if "response_length" in before else math.nan
    seconds = float(before["time_step"].sum()) if "time_step" in before else math.nan
    return tokens, seconds


def run_summary(run: Run, target: float) -> dict:
    """One row of per-run numbers (scores, cost to ``target``, generic share, AUROC per credit column)."""
    evals = run.evals()
    row: dict = {"run": run.name, "path": str(run.path), "group": group_label(run), "algo": run.algo,
                 "seed": run.seed, "lam": run.manifest.get("config", {}).get("lam") if run.algo == "credit" else None}
    has_evals = not evals.empty and "score" in evals
    row["final_score"] = run.final_score() if has_evals else math.nan
    row["best_score"] = run.best_score() if has_evals else math.nan
    row["tokens_to_target"], row["seconds_to_target"] = _to_target(run, evals, target) if has_evals else (math.nan,) * 2
    row["generic_share"] = math.nan
    for column in CREDIT_COLUMNS + ("own",):
        row[f"auroc_{column}"] = row[f"auroc_abs_{column}"] = math.nan
    if not run.token_steps():
        return row
    table = run.tokens()
    if table["shortcut"].notna().any() if "shortcut" in table else False:
        row["generic_share"] = viz.generic_share(table)
    labels = label_tokens(run, table)
    if labels is None:
        return row
    counted = table["mask"].to_numpy(dtype=bool)
    specific = (labels == "specific").to_numpy()[counted]
    for column in CREDIT_COLUMNS:
        if column in table and table[column].notna().any():
            values = table[column].to_numpy(dtype=np.float64)[counted]
            row[f"auroc_{column}"] = auroc(values, specific)
            row[f"auroc_abs_{column}"] = auroc(np.abs(values), specific)
    own = OWN_CREDIT.get(run.algo)
    if own is not None:
        row["auroc_own"], row["auroc_abs_own"] = row[f"auroc_{own}"], row[f"auroc_abs_{own}"]
    return row


@dataclass
class Comparison:
    """Per-run and per-group numbers of a set of runs; ``to_dataframe()`` is the group table."""

    runs: list[Run]
    per_run: pd.DataFrame
    table: pd.DataFrame
    curves: pd.DataFrame
    target: float
    confidence: float = 0.95

    def to_dataframe(self) -> pd.DataFrame:
        return self.table

    def to_markdown(self) -> str:
        """The group table as a Markdown table (scores as ``mean [low, high]``)."""
        return markdown_table(self.table, self.target, self.confidence)

    def show(self) -> None:
        print(self.to_markdown())

    def _repr_html_(self) -> str:
        return self.table.to_html(index=False, float_format="{:.3f}".format, na_rep="-")

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write comparison.{csv,parquet,md}, runs.csv, curves.csv and the PNG figures into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(out / "comparison.csv", index=False)
        self.table.to_parquet(out / "comparison.parquet", index=False)
        runs.atomic_write_text(out / "comparison.md", self.to_markdown() + "\n")
        self.per_run.to_csv(out / "runs.csv", index=False)
        self.curves.to_csv(out / "curves.csv", index=False)
        written = [out / n for n in ("comparison.csv", "comparison.parquet", "comparison.md", "runs.csv", "curves.csv")]
        written.append(plot_learning_curves(self.curves, out / "learning_curves.png", self.confidence))
        for figure in (plot_credit_histograms(self.runs, out / "credit_histograms.png"),
                       plot_auroc(self.table, out / "credit_auroc.png")):
            if figure is not None:
                written.append(figure)
        return written


def _curves(run_list: list[Run], confidence: float) -> pd.DataFrame:
    rows = []
    for run in run_list:
        evals = run.evals()
        if not evals.empty and "score" in evals:
            rows.append(evals[["step", "score"]].assign(group=group_label(run), run=run.name))
    if not rows:
        return pd.DataFrame(columns=["group", "step", "mean", "low", "high", "n"])
    frame = pd.concat(rows, ignore_index=True)
    out = []
    for (group, step), part in frame.groupby(["group", "step"]):
        mean, low, high = t_interval(part["score"].tolist(), confidence)
        out.append({"group": group, "step": int(step), "mean": mean, "low": low, "high": high, "n": len(part)})
    return pd.DataFrame(out)


def compare_runs(
    paths: Sequence[str | os.PathLike], target: float | None = None, confidence: float = 0.95
) -> Comparison:
    """Compare run directories (each path may also be a folder of runs).

    ``target``: the score whose cost (tokens, seconds) is reported; default 0.9 x the best eval score
    of any run. Intervals are two-sided Student-t intervals of the mean over the runs (seeds) of a group.
    """
    found: list[Run] = []
    for path in paths:
        found += runs.list_runs(path)
    if not found:
        raise ValueError(f"no run directories (with {runs.MANIFEST}) under {', '.join(map(str, paths))}")
    if target is None:
        bests = [b for b in (r.best_score() for r in found) if b is not None]
        target = 0.9 * max(bests) if bests else math.nan
    per_run = pd.DataFrame([run_summary(r, target) for r in found])
    groups = []
    for group, part in per_run.groupby("group", sort=True):
        row = {"group": group, "algo": part["algo"].iloc[0], "lam": part["lam"].iloc[0], "n_runs": len(part)}
        for column in ("final_score", "best_score"):
            row[column], row[f"{column}_low"], row[f"{column}_high"] = t_interval(part[column].tolist(), confidence)
        reached = part["tokens_to_target"].notna()
        row["reached_target"] = int(reached.sum())
        row["tokens_to_target"] = float(part.loc[reached, "tokens_to_target"].mean()) if reached.any() else math.nan
        row["seconds_to_target"] = float(part.loc[reached, "seconds_to_target"].mean()) if reached.any() else math.nan
        for column in ["generic_share"] + [c for c in per_run.columns if c.startswith("auroc_")]:
            row[column] = float(part[column].mean()) if part[column].notna().any() else math.nan
        groups.append(row)
    return Comparison(found, per_run, pd.DataFrame(groups), _curves(found, confidence), target, confidence)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(table: pd.DataFrame, target: float, confidence: float = 0.95) -> str:
    """Markdown rendering of a group table (see :func:`compare_runs`)."""
    level = f"{confidence:.0%}"
    header = (f"| method | seeds | final score ({level} CI) | best score ({level} CI) | reached {_fmt(target, 2)} "
              "| tokens to target | seconds to target | generic share | AUROC of own credit (abs) |")
    lines = [header, "|" + "---|" * 9]
    for row in table.to_dict("records"):
        final = f"{_fmt(row['final_score'])} [{_fmt(row['final_score_low'])}, {_fmt(row['final_score_high'])}]"
        best = f"{_fmt(row['best_score'])} [{_fmt(row['best_score_low'])}, {_fmt(row['best_score_high'])}]"
        tokens = _fmt(row["tokens_to_target"], 0)
        lines.append(
            f"| {row['group']} | {row['n_runs']} | {final} | {best} | {row['reached_target']}/{row['n_runs']} | "
            f"{tokens} | {_fmt(row['seconds_to_target'], 1)} | {_fmt(row['generic_share'])} | "
            f"{_fmt(row.get('auroc_own', math.nan))} ({_fmt(row.get('auroc_abs_own', math.nan))}) |"
        )
    return "\n".join(lines)


def plot_learning_curves(curves: pd.DataFrame, path: str | os.PathLike, confidence: float = 0.95) -> Path:
    """Held-out score vs step per group, mean line with a t-interval band over seeds; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for group, part in curves.groupby("group", sort=True):
        part = part.sort_values("step")
        ax.plot(part["step"], part["mean"], marker="o", markersize=3, label=group)
        ax.fill_between(part["step"], part["low"], part["high"], alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out score (pass rate)")
    ax.set_title(f"Learning curves (mean over seeds, {confidence:.0%} t-interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_credit_histograms(run_list: Sequence[Run], path: str | os.PathLike, max_tokens: int = 200_000) -> Path | None:
    """Histograms of the per-token credit components (counted tokens, all steps) per group; PNG, or
    None when no run has token tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled: dict[str, list[pd.DataFrame]] = {}
    for run in run_list:
        if run.token_steps() and run.algo != "grpo":
            table = run.tokens()
            pooled.setdefault(group_label(run), []).append(table[table["mask"]])
    if not pooled:
        return None
    components = ["sd_reward", "credit_reward", "specific", "shortcut"]
    fig, axes = plt.subplots(1, len(components), figsize=(4 * len(components), 3.2), dpi=100)
    for ax, component in zip(axes, components, strict=True):
        for group, tables in sorted(pooled.items()):
            values = pd.concat(tables)[component].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)][:max_tokens]
            if values.size:
                ax.hist(values, bins=60, histtype="step", density=True, label=group)
        ax.set_title(viz.COMPONENTS.get(component, component), fontsize=8)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_auroc(table: pd.DataFrame, path: str | os.PathLike) -> Path | None:
    """Bar chart of the AUROC of |credit| (specific vs generic tokens) per group and column; None when
    no group has labelled tokens."""
    columns = [c for c in CREDIT_COLUMNS if f"auroc_abs_{c}" in table and table[f"auroc_abs_{c}"].notna().any()]
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    width = 0.8 / len(columns)
    positions = np.arange(len(table))
    for i, column in enumerate(columns):
        ax.bar(positions + i * width, table[f"auroc_abs_{column}"].fillna(0.0), width, label=column)
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(positions + width * (len(columns) - 1) / 2, table["group"], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC of |credit|")
    ax.set_title("Specific vs generic tokens: where each credit puts its magnitude", fontsize=9)
    ax.legend(fontsize=7, ncol=len(columns))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
