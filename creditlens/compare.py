"""Compare run directories: runs grouped by what makes them comparable, seeds as the replicates.

A group holds the runs that share environment, model, start weights, algo, CREDIT form, lam, contrast axis, K and
every other config field (a hash of the rest): :func:`group_key`. ``compare_runs(paths)`` returns a
:class:`Comparison` with, per group: final and best held-out score with 95% t-intervals over seeds
(clipped to [0, 1] for pass rates; a single seed gets the Wilson interval of its pass rate), training
tokens and wall time to first reach a target score, the generic share of SD credit, and (when the
environment labels its response tokens, like ``shortcut``) the AUROC with which each per-token credit
column separates input-specific from generic tokens, and how the generic share matches those labels.
``Comparison.save(out)`` writes the table (CSV, Parquet, Markdown) and PNG figures. See docs/results.md.

Refused with one line (:class:`~creditlens.errors.InputError`): a run given twice (also through a
symlink), a dangling or looping symlink, an eval step recorded twice, two runs of one seed in a group.
``pool=True`` groups by method only (algo, form, lam, axis, K), across environments, models and
configs; the report then says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from creditlens import envs, renamed, runs, viz
from creditlens.cache import staged_dir
from creditlens.errors import InputError
from creditlens.runs import Run
from creditlens.stats import (
    auroc,
    generic_share,
    generic_share_validation,
    has_axis,
    t_interval,
    wilson_interval,
)

REPORT_FILES = frozenset({"comparison.csv", "comparison.parquet", "comparison.md", "runs.csv", "curves.csv",
                          "learning_curves.png", "credit_histograms.png", "credit_auroc.png"})  # what save writes
CREDIT_COLUMNS = ("advantage", "sd_reward", "credit_reward", "specific", "shortcut")
"""Per-token columns whose AUROC is reported (``advantage``: what the trainer actually used)."""
OWN_CREDIT = {"grpo": "advantage", "sd": "sd_reward", "credit": "credit_reward"}
"""The per-token credit each algorithm trains on (reported as ``auroc_own`` / ``auroc_abs_own``)."""
KEY_FIELDS = ("env", "model", "weights", "algo", "form", "lam", "axis", "K", "config")
"""What a group shares: ``weights`` is the manifest's ``model_digest`` (the start weights; None in runs written
before it was recorded), ``config`` a hash of every config field not named here, nor a seed or bookkeeping."""
METHOD_FIELDS = ("algo", "form", "lam", "axis", "K")
"""The key under ``pool=True``: runs of other environments, models and configs are pooled."""
NOT_HASHED = frozenset({
    "seed", "lam", "form", "contrast_axis", "n_contrast",  # seed, or a key field of its own
    "save_steps", "save_total_limit", "log_tokens_every", "log_contrasts", "log_kl", "report_to",  # bookkeeping
    "activation_checkpointing",  # memory only; manifests before TRL's names recorded False where TRL's True ran
})
"""Config fields left out of the ``config`` hash (by their TRL names: older manifests are read through
:func:`creditlens.renamed.upgrade`)."""


def group_key(run: Run) -> dict[str, object]:
    """The comparable settings of ``run`` (:data:`KEY_FIELDS`): ``form``, ``lam`` and ``axis`` only for
    CREDIT (``teacher`` form for runs written before forms existed), ``K`` (``n_contrast``) for SD and
    CREDIT, the start weights' digest, and the first 8 hex digits of a SHA-256 of the remaining config."""
    config = renamed.upgrade(run.manifest.get("config", {}))
    credit = run.algo == "credit"
    rest = {k: v for k, v in config.items() if k not in NOT_HASHED}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]
    lam = config.get("lam")
    return {"env": run.env, "model": run.model, "weights": run.manifest.get("model_digest"), "algo": run.algo,
            "form": config.get("form", "teacher") if credit else None,
            "lam": float(lam) if credit and lam is not None else None,
            "axis": config.get("contrast_axis", "input") if credit else None,
            "K": int(config.get("n_contrast", 0)) if run.algo != "grpo" else None,
            "config": digest}


def group_label(run: Run) -> str:
    """``grpo``, ``sd`` or ``credit contrastive lam=0.5``: the method of a run. A CREDIT run names its reward
    form (``teacher`` for runs written before forms existed) and its contrast axis when it is ``feedback``
    (``credit feedback shortcut lam=1``, the RLCSD reward)."""
    key = group_key(run)
    if run.algo == "credit":
        axis = "feedback " if key["axis"] == "feedback" else ""
        lam = math.nan if key["lam"] is None else key["lam"]
        return f"credit {axis}{key['form']} lam={lam:g}"
    return run.algo


def group_names(run_list: Sequence[Run], pool: bool = False,
                fields: Sequence[str] = ("env", "model", "weights", "K", "config")
                ) -> list[str]:
    """The group of each run: its :func:`group_label`, followed by ``[field=value, ...]`` for those of
    ``fields`` that differ between the runs given (weights and K: between the runs of its environment and
    model; config: between those of its method too, named by the config fields that differ, see
    :func:`config_differences`), so that runs of different environments, models, start weights, K or configs
    never share a name; ``pool`` leaves env, model, weights and config out of the key."""
    key_fields = METHOD_FIELDS if pool else KEY_FIELDS
    keys = [{f: group_key(r)[f] for f in KEY_FIELDS} for r in run_list]
    labels = [group_label(r) for r in run_list]
    differences = config_differences(run_list)

    def varies(field: str, key: dict, label: str) -> bool:
        local = field in ("weights", "K", "config")
        values = {k[field] for k, other in zip(keys, labels, strict=True)
                  if (k[field] is not None or field == "weights")  # unknown weights differ
                  and (not local or pool or (k["env"], k["model"]) == (key["env"], key["model"]))
                  and (field != "config" or other == label)}
        return field in key_fields and len(values) > 1

    names = []
    for key, label, difference in zip(keys, labels, differences, strict=True):
        shown = [f for f in fields if (key[f] is not None or f == "weights") and varies(f, key, label)]
        extra = ", ".join(difference if f == "config" and difference else
                          f"{f}={'unrecorded' if key[f] is None else key[f]}" for f in shown)
        names.append(label + (f" [{extra}]" if extra else ""))
    return names


SHOWN_CONFIG = 60
"""Characters of ``field=value`` text a group name may spend on its config; longer, it shows the config hash."""


def config_differences(run_list: Sequence[Run]) -> list[str | None]:
    """Per run, ``field=value, ...`` of the hashed config fields (:data:`NOT_HASHED` left out) that differ
    between the configs of the runs sharing its environment, model and method (:func:`group_label`), e.g.
    ``distillation_weight=0.5``; None where they share one config, or where the text would be ambiguous or
    longer than :data:`SHOWN_CONFIG` characters (the name then shows the config hash)."""
    keys = [group_key(r) for r in run_list]
    scopes = [(k["env"], k["model"], group_label(r)) for r, k in zip(run_list, keys, strict=True)]
    configs: dict[tuple, dict[object, dict]] = {}  # scope -> config hash -> one run's hashed config fields
    for run, key, scope in zip(run_list, keys, scopes, strict=True):
        config = run.manifest.get("config", {})
        configs.setdefault(scope, {}).setdefault(key["config"], {k: v for k, v in config.items() if k not in NOT_HASHED})

    def text(value: object) -> str:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)

    described: dict[tuple, str] = {}
    for scope, by_hash in configs.items():
        names = sorted({f for c in by_hash.values() for f in c})
        differ = [f for f in names if len({text(c.get(f)) for c in by_hash.values()}) > 1]
        texts = {h: ", ".join(f"{f}={text(c.get(f))}" for f in differ) for h, c in by_hash.items()}
        if len(by_hash) > 1 and len(set(texts.values())) == len(texts) and max(map(len, texts.values())) <= SHOWN_CONFIG:
            described.update({(scope, h): s for h, s in texts.items()})
    return [described.get((scope, key["config"])) for key, scope in zip(keys, scopes, strict=True)]


def _walk(path: Path, ancestors: frozenset[Path]) -> Iterator[Path]:
    """Run directories at or under ``path``, following symlinks; a dangling or looping one is an error."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        target = f" (-> {os.readlink(path)})" if path.is_symlink() else ""
        raise InputError(f"{path}: a dangling symlink{target} or a missing path; fix or remove it") from None
    except (RuntimeError, OSError):
        raise InputError(f"{path}: a symlink loop; remove the link") from None
    if real in ancestors:
        raise InputError(f"{path}: a symlink that loops back to {real}; remove the link")
    if not real.is_dir():
        return
    if (real / runs.MANIFEST).is_file():
        yield path
        return
    for child in sorted(path.iterdir()):
        if child.is_dir() or child.is_symlink():
            yield from _walk(child, ancestors | {real})


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Run]:
    """Every run directory given or under the folders given (symlinks followed), each checked with
    :func:`runs.load_run`; the same run reached twice, a dangling or looping symlink and a run whose
    ``eval.jsonl`` records a step twice raise :class:`InputError` (one line)."""
    seen: dict[Path, Path] = {}
    found: list[Run] = []
    for given in paths:
        for run_dir in _walk(Path(given), frozenset()):
            real = run_dir.resolve()
            if real in seen:
                raise InputError(f"{run_dir}: the same run as {seen[real]} (given twice); give each run once")
            seen[real] = run_dir
            run = runs.load_run(run_dir)
            _check_eval_steps(run)
            found.append(run)
    if not found:
        raise InputError(f"no run directories (with {runs.MANIFEST}) under {', '.join(map(str, paths))}")
    return found


def _check_eval_steps(run: Run) -> None:
    first: dict[int, int] = {}
    for line, record in runs.read_jsonl_lines(run.path / runs.EVAL):
        step = int(record["step"])
        if step in first:
            raise InputError(f"{run.path / runs.EVAL}:{line}: step {step} was already evaluated on line "
                             f"{first[step]}; keep one evaluation per step")
        first[step] = line


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
    """Training tokens and seconds spent before the first eval after step 0 with score >= target; NaN if
    never, and NaN when the run already scored >= target before training (step 0): it did not reach it."""
    evals = evals.sort_values("step")
    if evals.empty or not math.isfinite(target) or (evals["step"].iloc[0] == 0 and evals["score"].iloc[0] >= target):
        return math.nan, math.nan
    hit = evals[(evals["score"] >= target) & (evals["step"] > 0)]
    if hit.empty:
        return math.nan, math.nan
    step = int(hit["step"].min())
    metrics = run.metrics()
    if metrics.empty:
        return math.nan, math.nan
    before = metrics[metrics["step"] <= step]
    config = run.manifest.get("config", {})
    batch = int(config.get("num_prompts", 1)) * int(config.get("num_generations", 1))
    tokens = float((before["response_length"] * batch).sum()) if "response_length" in before else math.nan
    seconds = float(before["time_step"].sum()) if "time_step" in before else math.nan
    return tokens, seconds


def run_summary(run: Run, target: float, confidence: float = 0.95) -> dict:
    """One row of per-run numbers: scores (with the Wilson interval of the final pass rate when ``eval.jsonl``
    records ``n``), cost to ``target``, share of steps without learning signal, generic share, AUROC per
    credit column and the generic share's agreement with the token labels."""
    evals = run.evals()
    key = group_key(run)
    row: dict = {"run": run.name, "path": str(run.path), "group": group_label(run), "seed": run.seed, **key}
    has_evals = not evals.empty and "score" in evals
    row["final_score"] = run.final_score() if has_evals else math.nan
    row["best_score"] = run.best_score() if has_evals else math.nan
    row["final_n"] = math.nan
    row["final_wilson_low"] = row["final_wilson_high"] = math.nan
    if has_evals and "n" in evals:
        last = evals.sort_values("step").iloc[-1]
        if pd.notna(last["n"]) and last["n"] > 0 and 0.0 <= last["score"] <= 1.0:
            row["final_n"] = int(last["n"])
            row["final_wilson_low"], row["final_wilson_high"] = wilson_interval(
                round(float(last["score"]) * int(last["n"])), int(last["n"]), confidence)
    row["tokens_to_target"], row["seconds_to_target"] = _to_target(run, evals, target) if has_evals else (math.nan,) * 2
    metrics = run.metrics()
    row["no_signal_steps"] = (float(metrics["no_signal"].fillna(0).mean())
                              if "no_signal" in metrics and len(metrics) else math.nan)
    for name in ("generic_share", "feedback_generic_share", "label_generic_share", "generic_auroc"):
        row[name] = math.nan
    for column in CREDIT_COLUMNS + ("own",):
        row[f"auroc_{column}"] = row[f"auroc_abs_{column}"] = math.nan
    if not run.token_steps():
        return row
    table = run.tokens()
    if has_axis(table, "input"):
        row["generic_share"] = generic_share(table)
    if has_axis(table, "feedback"):
        row["feedback_generic_share"] = generic_share(table, "feedback")
    labels = label_tokens(run, table)
    if labels is None:
        return row
    if has_axis(table, "input"):
        check = generic_share_validation(table, labels)
        row["label_generic_share"], row["generic_auroc"] = check["label_share"], check["auroc"]
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
    """Per-run and per-group numbers of a set of runs; ``to_dataframe()`` is the group table. ``pooled``
    is True when groups were formed by method only (``--pool``), across environments, models and configs."""

    runs: list[Run]
    per_run: pd.DataFrame
    table: pd.DataFrame
    curves: pd.DataFrame
    target: float | dict[str, float]
    confidence: float = 0.95
    pooled: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dataframe(self) -> pd.DataFrame:
        return self.table

    def to_markdown(self) -> str:
        """The group table as a Markdown table (scores as ``mean [low, high]``), with its notes below."""
        return markdown_table(self.table, self.confidence, self.pooled) + "".join(f"\n\n{n}" for n in self.notes)

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

        The report is built in a staging folder beside ``out`` and swapped in whole
        (:func:`creditlens.cache.staged_dir`): a kill or a full disk leaves the complete old report; other
        files the user keeps in ``out`` are carried into the new one.
        """
        out, where = Path(out), Path(os.path.abspath(out))
        if Path.cwd() == where or where in Path.cwd().parents:  # the swap would leave the shell in a deleted folder
            raise InputError(f"--out {out}: the current directory or one above it; give a folder of its own "
                             "for the report (e.g. report/)")
        writers: dict[str, Callable[[Path], object]] = {
            "comparison.csv": lambda p: self.table.to_csv(p, index=False),
            "comparison.parquet": lambda p: self.table.to_parquet(p, index=False),
            "comparison.md": lambda p: p.write_text(self.to_markdown() + "\n"),
            "runs.csv": lambda p: self.per_run.to_csv(p, index=False),
            "curves.csv": lambda p: self.curves.to_csv(p, index=False),
        }
        figures = {"learning_curves.png": viz.group_curves_figure(self.curves, self.confidence),
                   "credit_histograms.png": credit_histograms(self.runs, self.per_run),
                   "credit_auroc.png": auroc_bars(self.table)}
        for name, figure in figures.items():
            if figure is not None:
                writers[name] = lambda p, figure=figure: figure.savefig(p, format="png", dpi=100)
        try:
            with staged_dir(out, "comparison.csv", replace=True, owned=REPORT_FILES) as staging:
                for name, write in writers.items():
                    write(staging / name)
        finally:
            for figure in figures.values():
                if figure is not None:
                    _close(figure)
        return [out / name for name in writers]


def score_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """:func:`t_interval` of held-out scores over seeds, clipped to [0, 1] when every score lies there (a pass
    rate cannot leave it)."""
    mean, low, high = t_interval(values, confidence)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if finite and all(0.0 <= v <= 1.0 for v in finite) and math.isfinite(low):
        low, high = max(low, 0.0), min(high, 1.0)
    return mean, low, high


def _curves(run_list: list[Run], groups: dict[str, str], methods: dict[str, str], confidence: float) -> pd.DataFrame:
    """Per group, environment and eval step: mean score over the runs with its interval (``interval``: ``t``
    over seeds; ``wilson`` for one run whose ``eval.jsonl`` records ``n``, over its eval problems; else none),
    and the group's method and model(s) (``a|b`` when pooled), which name the curves of one environment's panel."""
    rows = []
    for run in run_list:
        evals = run.evals()
        if not evals.empty and "score" in evals:
            path = str(run.path)
            problems = evals["n"] if "n" in evals else math.nan
            rows.append(evals[["step", "score"]].assign(problems=problems, group=groups[path], method=methods[path],
                                                        env=run.env, model=str(run.model), run=run.name))
    columns = ["group", "method", "env", "model", "step", "mean", "low", "high", "n", "interval"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(rows, ignore_index=True)
    out = []
    for (group, env, step), part in frame.groupby(["group", "env", "step"]):
        mean, low, high = score_interval(part["score"].tolist(), confidence)
        interval = "t" if len(part) > 1 else ""
        problems, score = part["problems"].iloc[0], part["score"].iloc[0]
        if len(part) == 1 and pd.notna(problems) and problems > 0 and 0.0 <= score <= 1.0:
            low, high = wilson_interval(round(score * int(problems)), int(problems), confidence)
            interval = "wilson"
        out.append({"group": group, "method": part["method"].iloc[0], "env": env,
                    "model": "|".join(sorted(set(part["model"]))), "step": int(step), "mean": mean, "low": low,
                    "high": high, "n": len(part), "interval": interval})
    return pd.DataFrame(out, columns=columns)


def _default_targets(run_list: list[Run]) -> dict[str, float]:
    """Per environment: 0.9 x the best eval score of its runs (NaN when none has one)."""
    bests: dict[str, list[float]] = {}
    for run in run_list:
        best = run.best_score()
        bests.setdefault(run.env, [])
        if best is not None:
            bests[run.env].append(best)
    return {env: 0.9 * max(values) if values else math.nan for env, values in bests.items()}


def compare_runs(
    paths: Sequence[str | os.PathLike], target: float | None = None, confidence: float = 0.95, pool: bool = False
) -> Comparison:
    """Compare run directories (each path may also be a folder of runs; symlinks are followed).

    Groups: :func:`group_key` (``pool``: method only, stated in the report). ``target``: the score whose cost
    (tokens, seconds) is reported; default, per environment, 0.9 x the best eval score of its runs.
    Intervals are two-sided Student-t intervals of the mean over the seeds of a group, clipped to [0, 1]
    for pass rates; a one-seed group shows the Wilson interval of its final pass rate instead.
    """
    found = find_runs(paths)
    names = dict(zip([str(r.path) for r in found], group_names(found, pool), strict=True))
    methods = dict(zip([str(r.path) for r in found], group_names(found, pool, ("K", "config")), strict=True))
    targets = _default_targets(found) if target is None else {r.env: float(target) for r in found}
    per_run = pd.DataFrame([run_summary(r, targets[r.env], confidence) for r in found])
    per_run["group"] = per_run["path"].map(names)
    per_run["method"] = per_run["path"].map(methods)
    per_run["target"] = per_run["env"].map(targets)
    groups = []
    for group, part in per_run.groupby("group", sort=False):
        seeds = part["seed"].tolist()
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if repeated and not pool:
            twins = ", ".join(part.loc[part["seed"].isin(repeated), "run"])
            raise InputError(f"group {group!r}: runs {twins} share seed {repeated[0]}; seeds of a group must be "
                             "distinct (drop the duplicate, or train another seed)")
        row = {"group": group, "method": part["method"].iloc[0], **{f: _joined(part[f]) for f in KEY_FIELDS},
               "n_runs": len(part),
               "seeds": int(part["seed"].nunique(dropna=False)), "target": float(part["target"].iloc[0])}
        for column in ("final_score", "best_score"):
            row[column], row[f"{column}_low"], row[f"{column}_high"] = score_interval(part[column].tolist(), confidence)
        row["interval"] = "t" if len(part) > 1 else ""
        if len(part) == 1 and pd.notna(part["final_wilson_low"].iloc[0]):
            row["final_score_low"], row["final_score_high"] = part[["final_wilson_low", "final_wilson_high"]].iloc[0]
            row["interval"] = "wilson"
        reached = part["tokens_to_target"].notna()
        row["reached_target"] = int(reached.sum())
        row["tokens_to_target"] = float(part.loc[reached, "tokens_to_target"].mean()) if reached.any() else math.nan
        row["seconds_to_target"] = float(part.loc[reached, "seconds_to_target"].mean()) if reached.any() else math.nan
        for column in ["no_signal_steps", "generic_share", "feedback_generic_share", "label_generic_share",
                       "generic_auroc"] + [c for c in per_run.columns if c.startswith("auroc_")]:
            row[column] = float(part[column].mean()) if part[column].notna().any() else math.nan
        groups.append(row)
    table = pd.DataFrame(groups).sort_values(["env", "model", "group"], kind="stable").reset_index(drop=True)
    notes = []
    if pool:
        notes.append("**Pooled (--pool):** groups are formed by method only (algo, form, lam, axis, K); runs of "
                     "different environments, models and configs are counted together.")
    if table["interval"].eq("wilson").any():
        notes.append(f"One-seed groups show the {confidence:.0%} Wilson interval of the final pass rate over its eval "
                     "problems (no seed variance) and none for the best score (the best of several evaluations is "
                     "biased upwards); other intervals are t-intervals over seeds, clipped to [0, 1].")
    return Comparison(found, per_run, table, _curves(found, names, methods, confidence), targets, confidence, pool, notes)


def _joined(values: pd.Series) -> object:
    """The one value of a key field in a group, or ``a|b`` of its distinct values (pooled groups)."""
    distinct = list(dict.fromkeys(None if pd.isna(v) else v for v in values))
    return distinct[0] if len(distinct) == 1 else "|".join(map(str, distinct))


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(table: pd.DataFrame, confidence: float = 0.95, pooled: bool = False) -> str:
    """Markdown rendering of a group table (see :func:`compare_runs`), one row per group with its environment
    and model; the feedback generic share and the label check get columns when some run has them. A pooled group
    whose runs repeat a seed shows ``seeds (n runs)``: its interval is over the runs."""
    level = f"{confidence:.0%}"
    feedback = "feedback_generic_share" in table and bool(table["feedback_generic_share"].notna().any())
    labelled = "label_generic_share" in table and bool(table["label_generic_share"].notna().any())
    header = (f"| env | model | method | seeds | final score ({level} CI) | best score ({level} CI) | target "
              "| reached | tokens to target | seconds to target | steps without signal | generic share | "
              + ("feedback generic share | " if feedback else "")
              + ("generic share of labels (AUROC) | " if labelled else "") + "AUROC of own credit (abs) |")
    lines = [("**Pooled across environments, models and configs (--pool).**\n\n" if pooled else "") + header,
             "|" + "---|" * (13 + feedback + labelled)]
    for row in table.to_dict("records"):
        final = f"{_fmt(row['final_score'])} [{_fmt(row['final_score_low'])}, {_fmt(row['final_score_high'])}]"
        final += " (Wilson)" if row.get("interval") == "wilson" else ""
        best = f"{_fmt(row['best_score'])} [{_fmt(row['best_score_low'])}, {_fmt(row['best_score_high'])}]"
        shares = _fmt(row["generic_share"]) + (f" | {_fmt(row['feedback_generic_share'])}" if feedback else "")
        shares += f" | {_fmt(row['label_generic_share'])} ({_fmt(row['generic_auroc'])})" if labelled else ""
        seeds = str(row["seeds"]) if row["seeds"] == row["n_runs"] else f"{row['seeds']} ({row['n_runs']} runs)"
        lines.append(
            f"| {row['env']} | {row['model']} | {row['method']} | {seeds} | {final} | {best} | "
            f"{_fmt(row['target'], 2)} | {row['reached_target']}/{row['n_runs']} | {_fmt(row['tokens_to_target'], 0)} | "
            f"{_fmt(row['seconds_to_target'], 1)} | {_fmt(row['no_signal_steps'], 2)} | {shares} | "
            f"{_fmt(row.get('auroc_own', math.nan))} ({_fmt(row.get('auroc_abs_own', math.nan))}) |"
        )
    return "\n".join(lines)


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def credit_histograms(run_list: Sequence[Run], per_run: pd.DataFrame | None = None):
    """:func:`viz.credit_histograms_figure` of the counted tokens of every SD / CREDIT run (all logged
    steps), pooled per group (``per_run``'s ``group`` column, else :func:`group_label`); None when no such
    run has token tables."""
    names = dict(zip(per_run["path"], per_run["group"], strict=True)) if per_run is not None else {}
    pooled: dict[str, list[pd.DataFrame]] = {}
    for run in run_list:
        if run.token_steps() and run.algo != "grpo":
            table = run.tokens()
            pooled.setdefault(names.get(str(run.path), group_label(run)), []).append(table[table["mask"]])
    if not pooled:
        return None
    return viz.credit_histograms_figure({group: pd.concat(tables) for group, tables in pooled.items()})


def auroc_bars(table: pd.DataFrame):
    """:func:`viz.auroc_figure` of the credit columns some group has an AUROC for; None when no group
    has labelled tokens."""
    columns = [c for c in CREDIT_COLUMNS if f"auroc_abs_{c}" in table and table[f"auroc_abs_{c}"].notna().any()]
    return viz.auroc_figure(table, columns) if columns else None
