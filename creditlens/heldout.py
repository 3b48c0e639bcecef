"""Held-out metrics of a study whose evaluations score a validation and a test part (``score_val`` /
``score_test`` in ``eval.jsonl``, :mod:`creditlens.training.evaluation`): the early-stopping score, the area
under the test curve, and paired tests by seed with Holm's correction over a named family.
The definitions are the ones the confirmatory plan of docs/results.md fixes:

- **early-stopping score**: the test score at the eval step with the highest validation score (ties: the
  earliest such step), i.e. what a practitioner who keeps the checkpoint chosen on validation would get;
- **test AUC**: the trapezoid area under the test-score curve divided by the steps it spans (a mean test
  score over training, in [0, 1]);
- **paired test**: per seed, method A's value minus method B's; mean, Student-t interval and two-sided
  one-sample t-test p-value of the differences; Holm's step-down adjustment over the family's tests;
- **selection rule** (:func:`rule_runs`): per seed, the evaluation with the highest validation score among the
  runs of several methods (a practitioner who trains them all and keeps one checkpoint); its test score is
  the rule's early-stopping score, so a family can test the rule like a method;
- **dose slope** (:func:`slope`): per seed, the least-squares slope of method A's value minus method B's over
  a dose (e.g. the cue probability), tested against 0 over seeds.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from creditlens import runs
from creditlens.stats import t_interval

METRICS = ("es_score", "auc_test", "final_test", "best_test")
"""Per-run columns of :func:`per_run` that a family can test (``es_score`` is the primary one)."""


def curve(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run's held-out curve: ``step``, ``score_val``, ``score_test`` (sorted by step, one row per step)."""
    evals = pd.DataFrame(runs.read_jsonl(Path(run_dir) / runs.EVAL))
    if evals.empty or not {"score_val", "score_test"} <= set(evals.columns):
        raise ValueError(f"{Path(run_dir) / runs.EVAL}: no score_val/score_test (needs an env with eval_part)")
    return evals.drop_duplicates("step", keep="last").sort_values("step")[["step", "score_val", "score_test"]]


def early_stopping(heldout: pd.DataFrame) -> tuple[int, float]:
    """``(step, test score)`` at the step with the highest validation score; ties go to the earliest step."""
    best = heldout["score_val"].max()
    row = heldout[heldout["score_val"] == best].iloc[0]
    return int(row["step"]), float(row["score_test"])


def test_auc(heldout: pd.DataFrame) -> float:
    """Trapezoid area under the test curve over its step span, divided by the span (NaN for one eval)."""
    steps = heldout["step"].to_numpy(dtype=np.float64)
    if steps.size < 2:
        return math.nan
    scores = heldout["score_test"].to_numpy(dtype=np.float64)
    return float(np.sum((scores[1:] + scores[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def method_and_seed(run_dir: str | os.PathLike) -> tuple[str, int]:
    """``.../sd-blend0.5-s21`` -> ``("sd-blend0.5", 21)`` (a study run directory's name, ``StudyRun.name``)."""
    match = re.fullmatch(r"(.+)-s(\d+)", Path(run_dir).name)
    if match is None:
        raise ValueError(f"{run_dir}: a study run directory is named METHOD-sSEED")
    return match.group(1), int(match.group(2))


def per_run(run_dirs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per run: ``run``, ``method``, ``seed``, ``step0_test``, ``es_step``, ``es_score``, ``auc_test``,
    ``final_test`` (last eval), ``best_test`` (max over evals: optimistic, for comparison only)."""
    rows = []
    for run_dir in run_dirs:
        heldout = curve(run_dir)
        method, seed = method_and_seed(run_dir)
        es_step, es_score = early_stopping(heldout)
        rows.append({
            "run": Path(run_dir).name, "method": method, "seed": seed,
            "step0_test": float(heldout["score_test"].iloc[0]), "es_step": es_step, "es_score": es_score,
            "auc_test": test_auc(heldout), "final_test": float(heldout["score_test"].iloc[-1]),
            "best_test": float(heldout["score_test"].max()), "last_step": int(heldout["step"].iloc[-1]),
        })
    return pd.DataFrame(rows)


def rule_runs(curves: pd.DataFrame, candidates: Sequence[str], name: str) -> pd.DataFrame:
    """The selection rule ``name`` over the methods ``candidates``, as :func:`per_run` rows (``method`` = ``name``).

    ``curves``: every run's held-out curve with a ``run`` column (``heldout_curves.csv``). Per seed that has a
    run of every candidate: the evaluation with the highest ``score_val`` over all their steps (ties: the
    earliest step, then the candidate listed first); ``es_score`` is its ``score_test``, ``es_step`` its step,
    ``chosen`` its method. ``auc_test``/``final_test``/``best_test`` are NaN (a rule has no one curve)."""
    names = [method_and_seed(run) for run in curves["run"]]
    keyed = curves.assign(method=[method for method, _ in names], seed=[seed for _, seed in names])
    rows = []
    for seed, part in keyed.groupby("seed", sort=True):
        if not set(candidates) <= set(part["method"]):
            continue
        rank = part["method"].map({m: i for i, m in enumerate(candidates)})
        pool = part[rank.notna()].assign(rank=rank).sort_values(["step", "rank"], kind="stable")
        best = pool.iloc[int(np.argmax(pool["score_val"].to_numpy()))]
        first = pool[pool["step"] == pool["step"].min()].iloc[0]
        rows.append({"run": f"{name}-s{seed}", "method": name, "seed": int(seed),
                     "step0_test": float(first["score_test"]), "es_step": int(best["step"]),
                     "es_score": float(best["score_test"]), "auc_test": math.nan, "final_test": math.nan,
                     "best_test": math.nan, "last_step": int(pool["step"].max()), "chosen": best["method"]})
    return pd.DataFrame(rows)


def slope(table: pd.DataFrame, pairs: Sequence[Sequence[str]], doses: Sequence[float], column: str = "es_score",
          confidence: float = 0.95) -> dict:
    """Per seed that has every method of ``pairs``: the least-squares slope of ``a - b`` (one pair per dose,
    ``pairs[i]`` at ``doses[i]``) on the dose; over seeds, as :func:`paired`: ``mean``, ``low``, ``high``, ``n``,
    ``p`` (two-sided t-test of slope 0), ``up``/``down``."""
    if len(pairs) != len(doses) or len(set(doses)) < 2:
        raise ValueError(f"slope: one pair per dose and at least 2 distinct doses, got {len(pairs)} pairs, doses {list(doses)}")
    wide = table.pivot(index="seed", columns="method", values=column)
    needed = {m for pair in pairs for m in pair}
    x = np.asarray(doses, dtype=np.float64)
    slopes = []
    for _, row in (wide.dropna(subset=sorted(needed)) if needed <= set(wide.columns) else wide.iloc[:0]).iterrows():
        gains = np.array([float(row[a]) - float(row[b]) for a, b in pairs])
        slopes.append(float(np.sum((x - x.mean()) * (gains - gains.mean())) / np.sum((x - x.mean()) ** 2)))
    return {"comparison": f"slope of ({pairs[0][0]} - {pairs[0][1]}, ...) on dose {list(doses)}", "metric": column,
            **_one_sample(np.array(slopes), confidence)}


def _one_sample(values: np.ndarray, confidence: float) -> dict:
    """Over the finite ``values`` (per-seed differences or slopes): ``n``, ``mean``, ``low``, ``high`` (Student-t
    interval), ``p`` (two-sided t-test of mean 0; NaN below 2 values, 0 when all equal a non-zero value),
    ``up``/``down`` (values above/below 0)."""
    values = values[np.isfinite(values)]  # a seed where either value is undefined (a rule's AUC) is no pair
    mean, low, high = t_interval(list(values), confidence)
    p = math.nan
    if values.size >= 2:
        p = 0.0 if np.all(values == values[0]) and values[0] != 0 else float(scipy_stats.ttest_1samp(values, 0.0).pvalue)
    return {"n": int(values.size), "mean": mean, "low": low, "high": high, "p": p,
            "up": int((values > 0).sum()), "down": int((values < 0).sum())}


def paired(table: pd.DataFrame, a: str, b: str, column: str = "es_score", confidence: float = 0.95) -> dict:
    """``a - b`` on ``column``, paired by seed over the seeds where both methods have a value: ``mean``, ``low``, ``high``,
    ``n``, ``p`` (two-sided t-test of mean 0; NaN below 2 pairs), ``up``/``down`` (seeds above/below 0)."""
    left = table[table["method"] == a].set_index("seed")[column]
    right = table[table["method"] == b].set_index("seed")[column]
    seeds = sorted(set(left.index) & set(right.index))
    diffs = np.array([float(left[s]) - float(right[s]) for s in seeds])
    return {"comparison": f"{a} - {b}", "metric": column, **_one_sample(diffs, confidence)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values over a family of ``len(pvalues)`` tests (a NaN stays NaN and
    still counts in the family size)."""
    m = len(pvalues)
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * m
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def family(table: pd.DataFrame, comparisons: Sequence[Sequence[str]], column: str = "es_score",
           confidence: float = 0.95) -> pd.DataFrame:
    """Paired tests of every ``(a, b)`` in ``comparisons`` on ``column`` with Holm-adjusted p (``p_holm``)."""
    rows = [paired(table, a, b, column, confidence) for a, b in comparisons]
    for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
    return pd.DataFrame(rows)


def method_table(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per method: seeds, and mean with t-interval over seeds of every :data:`METRICS` column and the
    step-0 score, plus the mean early-stopping step."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        row = {"method": method, "seeds": len(part), "es_step": float(part["es_step"].mean())}
        for column in ("step0_test", *METRICS):
            row[column], row[f"{column}_low"], row[f"{column}_high"] = t_interval(part[column].tolist(), confidence)
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(mean: float, low: float, high: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f.format(mean) + ("" if math.isnan(low) else f" [{f.format(low)}, {f.format(high)}]")


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def markdown(table: pd.DataFrame, families: dict[str, Sequence[Sequence[str]]], confidence: float = 0.95,
             slopes: dict[str, tuple[Sequence[float], Sequence[Sequence[str]]]] | None = None) -> str:
    """The held-out report: the method table, the choices of every selection rule in ``table`` (rows with a
    ``chosen`` method), each named family on every metric (Holm within the family and metric; the plan names
    which family and metric are confirmatory), then ``slopes`` (name -> ``(doses, pairs)``, :func:`slope`) on
    the early-stopping score, Holm over the slopes."""
    methods = method_table(table, confidence)
    lines = ["| method | seeds | step 0 | early-stopping score | ES step (mean) | test AUC | final | best (max over evals) |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in methods.iterrows():
        cells = [_ci(r[c], r[f"{c}_low"], r[f"{c}_high"]) for c in ("step0_test", "es_score")]
        cells.append(f"{r['es_step']:.1f}")
        cells += [_ci(r[c], r[f"{c}_low"], r[f"{c}_high"]) for c in ("auc_test", "final_test", "best_test")]
        lines.append(f"| {r['method']} | {r['seeds']} | " + " | ".join(cells) + " |")
    lines += _rule_choices(table)
    for name, comparisons in families.items():
        for column in METRICS:
            tests = family(table, comparisons, column, confidence)
            lines += ["", f"Family `{name}`, metric `{column}` (paired by seed, Holm over {len(comparisons)}):", "",
                      "| comparison | pairs | mean (95% CI) | up / down | p | p (Holm) |", "|---|---|---|---|---|---|"]
            for _, r in tests.iterrows():
                lines.append(f"| {r['comparison']} | {r['n']} | {_ci(r['mean'], r['low'], r['high'], True)} | "
                             f"{r['up']} / {r['down']} | {_p(r['p'])} | {_p(r['p_holm'])} |")
    if slopes:
        rows = [slope(table, pairs, doses, confidence=confidence) | {"name": name} for name, (doses, pairs) in slopes.items()]
        lines += ["", f"Slopes on the dose, metric `es_score` (per seed, least squares; Holm over {len(rows)}):", "",
                  "| slope | of | seeds | mean slope (95% CI) | up / down | p | p (Holm) |", "|---|---|---|---|---|---|---|"]
        for r, ph in zip(rows, holm([r["p"] for r in rows]), strict=True):
            lines.append(f"| {r['name']} | {r['comparison']} | {r['n']} | {_ci(r['mean'], r['low'], r['high'], True)} | "
                         f"{r['up']} / {r['down']} | {_p(r['p'])} | {_p(ph)} |")
    return "\n".join(lines)


def _rule_choices(table: pd.DataFrame) -> list[str]:
    """Markdown lines: per selection rule of ``table``, how often it chose each method, and its mean step."""
    if "chosen" not in table.columns or table["chosen"].isna().all():
        return []
    lines = ["", "Selection rules: the method (run) each rule kept, over seeds:", "",
             "| rule | seeds | chosen (seeds) | mean chosen step |", "|---|---|---|---|"]
    for rule, part in table.dropna(subset=["chosen"]).groupby("method", sort=False):
        counts = ", ".join(f"{m} {n}" for m, n in part["chosen"].value_counts().items())
        lines.append(f"| {rule} | {len(part)} | {counts} | {part['es_step'].mean():.1f} |")
    return lines


def write_report(run_dirs: Sequence[str | os.PathLike], report: str | os.PathLike,
                 families: dict[str, Sequence[Sequence[str]]],
                 rules: dict[str, Sequence[str]] | None = None,
                 slopes: dict[str, tuple[Sequence[float], Sequence[Sequence[str]]]] | None = None) -> Path:
    """``heldout_runs.csv`` (one row per run, then one per seed of every selection rule of ``rules``: name ->
    candidate methods, :func:`rule_runs`), ``heldout_curves.csv`` (every run's val/test curve) and
    ``heldout.md`` (:func:`markdown`, with ``slopes``) and ``heldout.png`` (:func:`figure`) in ``report``, over the
    runs of ``run_dirs``."""
    report = Path(report)
    report.mkdir(parents=True, exist_ok=True)
    curves = pd.concat([curve(d).assign(run=Path(d).name) for d in run_dirs], ignore_index=True)
    table = pd.concat([per_run(run_dirs), *(rule_runs(curves, c, name) for name, c in (rules or {}).items())],
                      ignore_index=True)
    table.to_csv(report / "heldout_runs.csv", index=False)
    curves.to_csv(report / "heldout_curves.csv", index=False)
    (report / "heldout.md").write_text(markdown(table, families, slopes=slopes) + "\n")
    figure(table, curves, families, title=report.parent.name).savefig(report / "heldout.png", dpi=110)
    return report


def figure(table: pd.DataFrame, curves: pd.DataFrame, families: dict[str, Sequence[Sequence[str]]], title: str = ""):
    """A matplotlib Figure: the mean test curve per method (``curves``: ``heldout_curves.csv``), and per
    comparison of ``families`` the per-seed difference of the early-stopping score (one dot per seed, the mean
    and its 95% t-interval as a bar)."""
    from matplotlib.figure import Figure

    comparisons = [pair for pairs in families.values() for pair in pairs]
    figure = Figure(figsize=(13, 3.8 if len(comparisons) <= 4 else 5.2))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    method_of = dict(zip(table["run"], table["method"], strict=True))
    merged = curves.assign(method=curves["run"].map(method_of)).dropna(subset=["method"])
    for method, part in merged.groupby("method", sort=False):
        mean = part.groupby("step")["score_test"].mean()
        left.plot(mean.index, mean.values, marker=".", label=method)
    left.set(xlabel="step", ylabel="test score (mean over seeds)")
    left.legend(fontsize=6, ncol=2 if merged["method"].nunique() > 8 else 1)
    for i, (a, b) in enumerate(comparisons):
        result = paired(table, a, b)
        wide = table.pivot(index="seed", columns="method", values="es_score")
        diffs = (wide[a] - wide[b]).dropna() if {a, b} <= set(wide.columns) else pd.Series(dtype=float)
        right.scatter([i] * len(diffs), diffs, s=10, alpha=0.6)
        if not math.isnan(result["low"]):
            right.errorbar([i + 0.2], [result["mean"]], yerr=[[result["mean"] - result["low"]], [result["high"] - result["mean"]]],
                           fmt="o", color="black", capsize=3)
    right.axhline(0, color="grey", lw=0.8)
    right.set_xticks(range(len(comparisons)), [f"{a}\n- {b}" for a, b in comparisons], fontsize=6,
                     rotation=30 if len(comparisons) > 4 else 0, ha="right" if len(comparisons) > 4 else "center")
    right.set_ylabel("early-stopping score, paired difference")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
