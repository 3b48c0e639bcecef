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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from creditlens import envs, runs, viz
from creditlens.runs import Run
from creditlens.stats import auroc, generic_share, has_axis, t_interval

CREDIT_COLUMNS = ("advantage", "sd_reward", "credit_reward", "specific", "shortcut")
"""Per-token columns whose AUROC is reported (``advantage``: what the trainer actually used)."""
OWN_CREDIT = {"grpo": "advantage", "sd": "sd_reward", "credit": "credit_reward"}
"""The per-token credit each algorithm trains on (reported as ``auroc_own`` / ``auroc_abs_own``)."""


def group_label(run: Run) -> str:
    """``grpo``, ``sd`` or ``credit contrastive lam=0.5``: the method a run belongs to (seeds are pooled). A
    CREDIT run names its reward form (``teacher`` for runs written before forms existed) and its contrast
    axis when it is ``feedback`` (``credit feedback shortcut lam=1``, the RLCSD reward)."""
    if run.algo == "credit":
        config = run.manifest.get("config", {})
        form = config.get("form", "teacher")
        axis = "feedback " if config.get("contrast_axis", "input") == "feedback" else ""
        return f"credit {axis}{form} lam={float(config.get('lam', math.nan)):g}"
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
    row["generic_share"] = row["feedback_generic_share"] = math.nan
    for column in CREDIT_COLUMNS + ("own",):
        row[f"auroc_{column}"] = row[f"auroc_abs_{column}"] = math.nan
    if not run.token_steps():
        return row
    table = run.tokens()
    if table["shortcut"].notna().any() if "shortcut" in table else False:
        row["generic_share"] = generic_share(table)
    if has_axis(table, "feedback"):
        row["feedback_generic_share"] = generic_share(table, "feedback")
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

    def show(self, as_html: bool = False) -> str | None:
        """Print the Markdown table, or return the HTML table with ``as_html``."""
        if as_html:
            return self._repr_html_()
        print(self.to_markdown())
        return None

    def _repr_html_(self) -> str:
        return self.table.to_html(index=False, float_format="{:.3f}".format, na_rep="-")

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write comparison.{csv,parquet,md}, runs.csv, curves.csv and the PNG figures into ``out``.

        Files are written in place with plain ``open`` (mode 0644 under the usual umask 022): a report
        is regenerated from the runs, so it needs no crash-safe write.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        writers: dict[str, Callable[[Path], object]] = {
            "comparison.csv": lambda p: self.table.to_csv(p, index=False),
            "comparison.parquet": lambda p: self.table.to_parquet(p, index=False),
            "comparison.md": lambda p: p.write_text(self.to_markdown() + "\n"),
            "runs.csv": lambda p: self.per_run.to_csv(p, index=False),
            "curves.csv": lambda p: self.curves.to_csv(p, index=False),
        }
        figures = {"learning_curves.png": viz.group_curves_figure(self.curves, self.confidence),
                   "credit_histograms.png": credit_histograms(self.runs),
                   "credit_auroc.png": auroc_bars(self.table)}
        for name, figure in figures.items():
            if figure is not None:
                writers[name] = lambda p, figure=figure: figure.savefig(p, format="png", dpi=100)
        written = []
        for name, write in writers.items():
            write(out / name)
            written.append(out / name)
        for figure in figures.values():
            if figure is not None:
                _close(figure)
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
        for column in ["generic_share", "feedback_generic_share"] + [c for c in per_run.columns if c.startswith("auroc_")]:
            row[column] = float(part[column].mean()) if part[column].notna().any() else math.nan
        groups.append(row)
    return Comparison(found, per_run, pd.DataFrame(groups), _curves(found, confidence), target, confidence)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(table: pd.DataFrame, target: float, confidence: float = 0.95) -> str:
    """Markdown rendering of a group table (see :func:`compare_runs`); the feedback generic share gets a
    column when some run logged feedback-axis contrasts."""
    level = f"{confidence:.0%}"
    feedback = "feedback_generic_share" in table and bool(table["feedback_generic_share"].notna().any())
    header = (f"| method | seeds | final score ({level} CI) | best score ({level} CI) | reached {_fmt(target, 2)} "
              "| tokens to target | seconds to target | generic share | "
              + ("feedback generic share | " if feedback else "") + "AUROC of own credit (abs) |")
    lines = [header, "|" + "---|" * (10 if feedback else 9)]
    for row in table.to_dict("records"):
        final = f"{_fmt(row['final_score'])} [{_fmt(row['final_score_low'])}, {_fmt(row['final_score_high'])}]"
        best = f"{_fmt(row['best_score'])} [{_fmt(row['best_score_low'])}, {_fmt(row['best_score_high'])}]"
        tokens = _fmt(row["tokens_to_target"], 0)
        shares = _fmt(row["generic_share"]) + (f" | {_fmt(row['feedback_generic_share'])}" if feedback else "")
        lines.append(
            f"| {row['group']} | {row['n_runs']} | {final} | {best} | {row['reached_target']}/{row['n_runs']} | "
            f"{tokens} | {_fmt(row['seconds_to_target'], 1)} | {shares} | "
            f"{_fmt(row.get('auroc_own', math.nan))} ({_fmt(row.get('auroc_abs_own', math.nan))}) |"
        )
    return "\n".join(lines)


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def credit_histograms(run_list: Sequence[Run]):
    """:func:`viz.credit_histograms_figure` of the counted tokens of every SD / CREDIT run (all logged
    steps), pooled per group; None when no such run has token tables."""
    pooled: dict[str, list[pd.DataFrame]] = {}
    for run in run_list:
        if run.token_steps() and run.algo != "grpo":
            table = run.tokens()
            pooled.setdefault(group_label(run), []).append(table[table["mask"]])
    if not pooled:
        return None
    return viz.credit_histograms_figure({group: pd.concat(tables) for group, tables in pooled.items()})


def auroc_bars(table: pd.DataFrame):
    """:func:`viz.auroc_figure` of the credit columns some group has an AUROC for; None when no group
    has labelled tokens."""
    columns = [c for c in CREDIT_COLUMNS if f"auroc_abs_{c}" in table and table[f"auroc_abs_{c}"].notna().any()]
    return viz.auroc_figure(table, columns) if columns else None
