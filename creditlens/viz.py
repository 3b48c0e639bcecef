"""Plotting helpers shared by the dashboard and the notebooks.

Everything here reads the per-token table of :mod:`creditlens.schema` and run directories of
:mod:`creditlens.runs`; nothing recomputes credit. Three kinds of helpers:

- token heatmaps: :func:`token_heatmap_html` (one ``<span class="cl-token">`` per response token,
  a diverging colour scale centred at 0, exact values on hover) and :func:`token_heatmap_figure`;
- frames and figures for runs, decomposition and the pMI check (``*_frame``, :func:`learning_curves`);
- analysis objects that render in Jupyter (``_repr_html_``), with ``.show()`` and ``.to_dataframe()``:
  :class:`TokenHeatmap`, :class:`CreditDecomposition`, :class:`PMICheck`, :class:`RunComparison`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from creditlens import schema
from creditlens.runs import Run

COMPONENTS: dict[str, str] = {
    "sd_reward": "SD reward r_t = log pi_T - log pi_S",
    "credit_reward": "CREDIT reward r_t - lam * generic",
    "specific": "input-specific part: log pi_T - B_t",
    "shortcut": "input-generic part of r_t: B_t - log pi_S",
    "generic": "input-generic part of log pi_T: B_t",
    "teacher_logprob": "teacher log-prob log pi_T(y_t | x, f, y_<t)",
    "student_logprob": "student log-prob log pi_S(y_t | x, y_<t)",
    "advantage": "per-token advantage the trainer used",
}
"""Per-token columns a heatmap can show, with the label used in legends."""

HOVER_COLUMNS = tuple(COMPONENTS)
NEGATIVE_RGB = (202, 0, 32)  # colour of -vmax
POSITIVE_RGB = (5, 113, 176)  # colour of +vmax
MISSING_RGB = (224, 224, 224)  # NaN (no contrasts) and masked tokens
PMI_COLUMNS = ("pmi", "pmi_estimate", "pmi_est", "pmi_mc", "pmi_hat")
PMI_SE_COLUMNS = ("pmi_se", "log_pf_x_se", "pmi_stderr", "pmi_std_err", "pmi_sem", "gap_se", "se")


def _figure_axes(ax, figsize: tuple[float, float]):
    """``(figure, axes)``: a new figure of ``figsize`` when ``ax`` is None, else ``ax`` and its figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=figsize)
    return ax.figure, ax


def available_components(table: pd.DataFrame) -> list[str]:
    """Components of :data:`COMPONENTS` present in ``table`` with at least one finite value."""
    return [
        name
        for name in COMPONENTS
        if name in table.columns and np.isfinite(table[name].to_numpy(dtype=np.float64)).any()
    ]


def diverging_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """Map ``values`` ``[N]`` to colours ``[N, 3]`` (uint8): white at 0, red at -vmax, blue at +vmax.

    NaN maps to light grey. Values beyond ``vmax`` saturate.
    """
    values = np.asarray(values, dtype=np.float64)
    scale = float(vmax) if vmax and math.isfinite(vmax) and vmax > 0 else 1.0
    level = np.clip(np.nan_to_num(values / scale), -1.0, 1.0)[:, None]
    white = np.array([255.0, 255.0, 255.0])
    end = np.where(level < 0, np.array(NEGATIVE_RGB, dtype=np.float64), np.array(POSITIVE_RGB, dtype=np.float64))
    rgb = white + np.abs(level) * (end - white)
    rgb[np.isnan(values)] = MISSING_RGB
    return np.rint(rgb).astype(np.uint8)


def symmetric_vmax(values: np.ndarray) -> float:
    """Largest absolute finite value (1.0 when there is none): the half-width of a centred scale."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _token_text(token: str) -> str:
    text = html.escape(token).replace("\n", "\u21b5\n").replace("\t", "\u2192\t")
    return text if text else "\u2205"


def legend_html(component: str, vmax: float) -> str:
    """A colour bar from ``-vmax`` to ``+vmax`` with the component's label."""
    low, high = (f"rgb{tuple(int(c) for c in rgb)}" for rgb in (NEGATIVE_RGB, POSITIVE_RGB))
    label = html.escape(COMPONENTS.get(component, component))
    return (
        '<div class="cl-legend" style="display:flex;align-items:center;gap:8px;font-size:0.8rem;'
        'margin:6px 0 2px 0;font-family:sans-serif;color:#444">'
        f'<span style="font-weight:600">{label}</span>'
        f'<span style="font-family:monospace">{-vmax:+.3g}</span>'
        f'<span style="display:inline-block;width:160px;height:12px;border:1px solid #bbb;border-radius:2px;'
        f'background:linear-gradient(to right,{low},white,{high})"></span>'
        f'<span style="font-family:monospace">{vmax:+.3g}</span>'
        '<span style="display:inline-block;width:12px;height:12px;border:1px solid #bbb;'
        f'background:rgb{MISSING_RGB}"></span><span>n/a or masked</span>'
        "</div>"
    )


def token_heatmap_html(
    tokens: pd.DataFrame,
    component: str = "sd_reward",
    vmax: float | None = None,
    legend: bool = True,
) -> str:
    """HTML of one response: a ``<span class="cl-token">`` per row of ``tokens`` in position order.

    ``tokens`` holds the rows of one example (``token``, ``position``, ``mask`` and the component
    column). The background encodes ``component`` on a diverging scale of half-width ``vmax``
    (default: the largest absolute value of the counted tokens); the ``title`` of each span holds
    the exact values of every component, shown on hover. Masked tokens are grey.
    """
    if component not in tokens.columns:
        raise ValueError(f"component {component!r} is not a column of the table; choose one of {list(COMPONENTS)}")
    rows = tokens.sort_values("position")
    values = rows[component].to_numpy(dtype=np.float64).copy()
    masked = ~rows["mask"].to_numpy(dtype=bool)
    values[masked] = np.nan
    vmax = symmetric_vmax(values) if vmax is None else float(vmax)
    colours = diverging_rgb(values, vmax)
    hover_columns = [c for c in HOVER_COLUMNS if c in rows.columns]
    hover_values = rows[hover_columns].to_numpy(dtype=np.float64)
    spans = []
    for i, (token, position) in enumerate(zip(rows["token"].tolist(), rows["position"].tolist(), strict=True)):
        lines = [f"{token!r}  position {position}" + ("  (masked)" if masked[i] else "")]
        lines += [f"{name} = {value:+.4f}" for name, value in zip(hover_columns, hover_values[i], strict=True)]
        red, green, blue = (int(c) for c in colours[i])
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 140
        style = f"background:rgb({red},{green},{blue});color:{'#fff' if dark else '#111'}"
        if masked[i]:
            style += ";opacity:0.6;text-decoration:line-through"
        value = "nan" if math.isnan(values[i]) else f"{values[i]:.6g}"
        spans.append(
            f'<span class="cl-token" data-position="{position}" data-value="{value}" '
            f'title="{html.escape(chr(10).join(lines))}" style="{style};border-radius:3px;padding:1px 1px">'
            f"{_token_text(token)}</span>"
        )
    body = (
        '<div class="cl-heatmap" style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.92rem;'
        "line-height:1.9;white-space:pre-wrap;word-break:break-word;padding:8px 10px;border:1px solid #e6e6e6;"
        f'border-radius:6px;background:#fff">{"".join(spans)}</div>'
    )
    return (legend_html(component, vmax) if legend else "") + body


def token_heatmap_figure(tokens: pd.DataFrame, component: str = "sd_reward", vmax: float | None = None,
                         width: int = 80, ax=None):
    """Matplotlib figure of one response: tokens laid out in lines of ``width`` characters, coloured
    on the same diverging scale as :func:`token_heatmap_html`, with a colour bar."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    rows = tokens.sort_values("position")
    values = rows[component].to_numpy(dtype=np.float64).copy()
    values[~rows["mask"].to_numpy(dtype=bool)] = np.nan
    vmax = symmetric_vmax(values) if vmax is None else float(vmax)
    colours = diverging_rgb(values, vmax) / 255.0
    texts = [t.replace("\n", "\u21b5") or "\u2205" for t in rows["token"].tolist()]
    places, line, column = [], 0, 0
    for text in texts:
        if column and column + len(text) > width:
            line, column = line + 1, 0
        places.append((column, line))
        column += max(len(text), 1)
    n_lines = line + 1
    fig, ax = _figure_axes(ax, (min(14, 0.12 * width + 1), 0.35 * n_lines + 0.9))
    for (x, y), text, colour in zip(places, texts, colours, strict=True):
        ax.text(x, -y, text, family="monospace", fontsize=9, va="center", ha="left",
                bbox=dict(boxstyle="square,pad=0.15", facecolor=colour, edgecolor="none"))
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-n_lines + 0.4, 0.6)
    ax.axis("off")
    cmap = LinearSegmentedColormap.from_list(
        "creditlens", [np.array(NEGATIVE_RGB) / 255, (1, 1, 1), np.array(POSITIVE_RGB) / 255]
    )
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=Normalize(-vmax, vmax), cmap=cmap), ax=ax,
                       orientation="horizontal", fraction=0.08, pad=0.02, aspect=40)
    bar.set_label(COMPONENTS.get(component, component))
    return fig


EXAMPLE_KEYS = ("run", "step", "sample", "example_id")  # the columns that identify one response


def examples_index(table: pd.DataFrame) -> pd.DataFrame:
    """One row per response of ``table`` (its ``EXAMPLE_KEYS`` columns) with its number of tokens,
    of counted tokens, SD sum and outcome reward, in the order they appear."""
    keys = [c for c in EXAMPLE_KEYS if c in table.columns]
    counted = table["sd_reward"].where(table["mask"], 0.0)
    grouped = table.assign(_counted=counted).groupby(keys, sort=False)
    index = grouped.agg(n_tokens=("position", "size"), n_counted=("mask", "sum"), sd_sum=("_counted", "sum"))
    if "outcome_reward" in table.columns:
        index["outcome_reward"] = grouped["outcome_reward"].first()
    return index.reset_index()


def select_example(table: pd.DataFrame, example: dict) -> pd.DataFrame:
    """Rows of one response, sorted by position. ``example`` maps ``EXAMPLE_KEYS`` columns to values
    (a row of :func:`examples_index` as a dict works; its other entries are ignored)."""
    keep = np.ones(len(table), dtype=bool)
    for key, value in example.items():
        if key in EXAMPLE_KEYS:
            keep &= (table[key] == value).to_numpy()
    return table.loc[keep].sort_values("position")


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: name, algo, env, model, seed, logged steps, steps with token tables,
    best and final eval score, path."""
    records = []
    for run in runs:
        metrics = run.metrics()
        records.append(
            dict(
                run=run.name,
                algo=run.algo,
                env=run.env,
                model=run.model,
                seed=run.seed,
                steps=int(metrics["step"].max()) if "step" in metrics and len(metrics) else 0,
                token_steps=len(run.token_steps()),
                best_score=run.best_score(),
                final_score=run.final_score(),
                path=str(run.path),
            )
        )
    return pd.DataFrame(records, columns=["run", "algo", "env", "model", "seed", "steps", "token_steps",
                                          "best_score", "final_score", "path"])


def curve_metrics(runs: Sequence[Run]) -> list[str]:
    """Numeric series the runs log: ``eval:<col>`` for ``eval.jsonl``, ``train:<col>`` for metrics."""
    names: list[str] = []
    for prefix, frames in (("eval", [r.evals() for r in runs]), ("train", [r.metrics() for r in runs])):
        for frame in frames:
            for column in frame.columns:
                name = f"{prefix}:{column}"
                if column != "step" and pd.api.types.is_numeric_dtype(frame[column]) and name not in names:
                    names.append(name)
    return names


def learning_curve_frame(runs: Sequence[Run], metric: str = "eval:score") -> pd.DataFrame:
    """Long frame ``run, algo, step, value`` of ``metric`` (``eval:<col>`` or ``train:<col>``)."""
    source, _, column = metric.partition(":")
    if source not in ("eval", "train") or not column:
        raise ValueError(f"metric {metric!r}: expected 'eval:<column>' or 'train:<column>'")
    frames = []
    for run in runs:
        frame = run.evals() if source == "eval" else run.metrics()
        if column in frame.columns and "step" in frame.columns:
            part = frame[["step", column]].dropna().rename(columns={column: "value"})
            frames.append(part.assign(run=run.name, algo=run.algo))
    if not frames:
        return pd.DataFrame(columns=["run", "algo", "step", "value"])
    return pd.concat(frames, ignore_index=True)[["run", "algo", "step", "value"]].sort_values(["run", "step"])


def learning_curves(runs: Sequence[Run], metric: str = "eval:score", ax=None):
    """Matplotlib figure with one line per run of ``metric`` against the training step."""

    frame = learning_curve_frame(runs, metric)
    fig, ax = _figure_axes(ax, (7, 4))
    for name, part in frame.groupby("run", sort=False):
        ax.plot(part["step"], part["value"], marker="o", markersize=3, label=f"{name} ({part['algo'].iloc[0]})")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if len(frame):
        ax.legend(fontsize=8)
    return fig


def require_contrasts(table: pd.DataFrame, source: str = "table") -> None:
    """Raise ValueError when ``table`` has no finite ``specific``/``shortcut`` (scored with K = 0)."""
    for name in ("specific", "shortcut"):
        if name not in table.columns or not np.isfinite(table[name].to_numpy(dtype=np.float64)).any():
            raise ValueError(
                f"{source}: no input-specific / input-generic split (column {name!r} is missing or all NaN); "
                "it holds no contrast log-probs: score with `--contrast K` (K >= 1), or train SD/CREDIT with "
                "n_contrast >= 1, to decompose the credit"
            )


def top_generic_tokens(table: pd.DataFrame, n: int = 20, min_count: int = 1) -> pd.DataFrame:
    """Tokens ranked by total input-generic SD credit (``shortcut`` summed over counted tokens).

    Columns: ``token, count, shortcut_sum, shortcut_mean, specific_mean, sd_mean``.
    """
    require_contrasts(table)
    counted = table[table["mask"]]
    grouped = counted.groupby("token", sort=False)
    frame = grouped.agg(
        count=("position", "size"),
        shortcut_sum=("shortcut", "sum"),
        shortcut_mean=("shortcut", "mean"),
        specific_mean=("specific", "mean"),
        sd_mean=("sd_reward", "mean"),
    ).reset_index()
    frame = frame[frame["count"] >= min_count]
    return frame.sort_values("shortcut_sum", ascending=False).head(n).reset_index(drop=True)


def position_profile(table: pd.DataFrame, columns: Sequence[str] = ("sd_reward", "specific", "shortcut",
                                                                        "credit_reward")) -> pd.DataFrame:
    """Mean of each of ``columns`` (those present) over counted tokens at each response position."""
    present = [c for c in columns if c in table.columns]
    counted = table[table["mask"]]
    return counted.groupby("position")[present].mean().reset_index()


def generic_share(table: pd.DataFrame) -> float:
    """Share of SD credit mass that is input-generic: ``sum|shortcut| / (sum|specific| + sum|shortcut|)``."""
    require_contrasts(table)
    counted = table[table["mask"]]
    generic = float(counted["shortcut"].abs().sum())
    total = generic + float(counted["specific"].abs().sum())
    return generic / total if total > 0 else float("nan")


def pmi_columns(summary: pd.DataFrame) -> tuple[str, str | None] | None:
    """Names of the pMI-estimate column and of its standard-error column in a per-example summary,
    or None when the summary has no pMI estimate (``se`` is None when only the estimate exists)."""
    estimate = next((c for c in PMI_COLUMNS if c in summary.columns), None)
    if estimate is None:
        return None
    return estimate, next((c for c in PMI_SE_COLUMNS if c in summary.columns), None)


def pmi_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Per example: ``example_id, sd_sum, pmi, pmi_se, gap = sd_sum - pmi``; ValueError without pMI.

    Examples whose pMI estimate is NaN (not estimated) are left out. The standard error of the pMI
    estimate is that of its Monte-Carlo ``log p(f | x)`` term (``log_pf_x_se`` of :mod:`creditlens.gap`).
    """
    found = pmi_columns(summary)
    if found is None:
        raise ValueError(
            f"no pMI estimate in the summary (looked for columns {list(PMI_COLUMNS)}); "
            "`creditlens score ... --out DIR` writes it to DIR/summary.parquet"
        )
    if "sd_sum" not in summary.columns:
        raise ValueError("the summary has no 'sd_sum' column (the SD trajectory sum of each example)")
    estimate, se = found
    frame = pd.DataFrame(
        {
            "example_id": summary["example_id"].astype(str) if "example_id" in summary else summary.index.astype(str),
            "sd_sum": summary["sd_sum"].astype(float),
            "pmi": summary[estimate].astype(float),
            "pmi_se": summary[se].astype(float) if se else np.nan,
        }
    )
    frame["gap"] = frame["sd_sum"] - frame["pmi"]
    frame = frame[frame["pmi"].notna()]
    if frame.empty:
        raise ValueError(f"column {estimate!r} is NaN for every example (no pMI was estimated)")
    return frame.reset_index(drop=True)


class _Rendered:
    """``.show()`` renders the HTML in Jupyter and prints a text table elsewhere (inseq style)."""

    def _repr_html_(self) -> str:
        raise NotImplementedError

    def to_dataframe(self) -> pd.DataFrame:
        raise NotImplementedError

    def show(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
        except ImportError:
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display(HTML(self._repr_html_()))
        else:
            print(self.to_dataframe().to_string(index=False))


class TokenHeatmap(_Rendered):
    """One response's per-token credit, rendered as a heatmap of ``component``."""

    def __init__(self, tokens: pd.DataFrame, component: str = "sd_reward", vmax: float | None = None):
        if tokens["example_id"].nunique() != 1 or not tokens["position"].is_unique:
            raise ValueError("TokenHeatmap: pass the rows of one response (see select_example and examples_index)")
        self.tokens, self.component, self.vmax = tokens.sort_values("position"), component, vmax

    @classmethod
    def from_table(cls, table: pd.DataFrame, example_id: str, component: str = "sd_reward", **keys) -> TokenHeatmap:
        """The heatmap of ``example_id`` (plus ``step=``/``sample=`` keys for run tables)."""
        rows = select_example(table, {"example_id": example_id, **keys})
        if rows.empty:
            raise ValueError(f"no rows for example_id={example_id!r} {keys or ''}")
        return cls(rows, component)

    def to_dataframe(self) -> pd.DataFrame:
        columns = ["position", "token", "mask"] + [c for c in COMPONENTS if c in self.tokens.columns]
        return self.tokens[columns].reset_index(drop=True)

    def figure(self, width: int = 80):
        return token_heatmap_figure(self.tokens, self.component, self.vmax, width)

    def _repr_html_(self) -> str:
        head = self.tokens.iloc[0]
        context = "".join(
            f"<div><b>{name}:</b> {html.escape(str(head[name]))}</div>"
            for name in ("prompt", "feedback")
            if name in self.tokens.columns
        )
        return f"<div>{context}{token_heatmap_html(self.tokens, self.component, self.vmax)}</div>"


class CreditDecomposition(_Rendered):
    """Where the SD credit of a table sits: input-specific vs input-generic, by token and position."""

    def __init__(self, table: pd.DataFrame, source: str = "table"):
        require_contrasts(table, source)
        self.table = table

    def to_dataframe(self) -> pd.DataFrame:
        columns = [c for c in ("example_id", "position", "token", "specific", "shortcut", "generic",
                               "sd_reward", "credit_reward", "label") if c in self.table.columns]
        return self.table.loc[self.table["mask"], columns].reset_index(drop=True)

    def generic_share(self) -> float:
        return generic_share(self.table)

    def top_generic(self, n: int = 20, min_count: int = 1) -> pd.DataFrame:
        return top_generic_tokens(self.table, n, min_count)

    def by_position(self) -> pd.DataFrame:
        return position_profile(self.table)

    def scatter(self, ax=None, max_points: int = 5000, seed: int = 0):
        """Matplotlib scatter of specific vs input-generic SD credit (``shortcut``) per token,
        coloured by ``label`` when the table has ground-truth labels."""

        points = self.to_dataframe()
        if len(points) > max_points:
            points = points.sample(max_points, random_state=seed)
        fig, ax = _figure_axes(ax, (5.5, 4.5))
        groups = points.groupby("label") if "label" in points.columns else [("token", points)]
        for name, part in groups:
            ax.scatter(part["specific"], part["shortcut"], s=8, alpha=0.6, label=str(name))
        ax.axhline(0, color="#999", lw=0.8)
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_xlabel("input-specific  log pi_T - B_t")
        ax.set_ylabel("input-generic  B_t - log pi_S")
        ax.legend(fontsize=8)
        return fig

    def _repr_html_(self) -> str:
        share = self.generic_share()
        return (
            f"<div><p><b>Generic share of SD credit:</b> {share:.1%} over {int(self.table['mask'].sum())} "
            f"counted tokens.</p><p><b>Tokens with the most input-generic credit</b></p>"
            f"{self.top_generic(10).to_html(index=False, float_format='{:+.3f}'.format)}</div>"
        )


class PMICheck(_Rendered):
    """Per example, the SD trajectory sum against the pMI estimate (the compatibility gap)."""

    def __init__(self, summary: pd.DataFrame):
        self.frame = pmi_frame(summary)

    @classmethod
    def from_tokens(cls, table: pd.DataFrame, pmi: pd.DataFrame) -> PMICheck:
        """Join :func:`schema.example_summary` of ``table`` with a frame of ``example_id`` and pMI columns."""
        return cls(schema.example_summary(table).merge(pmi, on="example_id"))

    def to_dataframe(self) -> pd.DataFrame:
        return self.frame.copy()

    def figure(self, ax=None):
        """SD sum (x) against the pMI estimate (y) with 2-standard-error bars and the line y = x."""

        frame = self.frame
        fig, ax = _figure_axes(ax, (5, 4.5))
        errors = 2 * frame["pmi_se"].fillna(0.0)
        ax.errorbar(frame["sd_sum"], frame["pmi"], yerr=errors, fmt="o", ms=4, capsize=2, alpha=0.8,
                    label="examples (bars: 2 s.e.)")
        low = float(min(frame["sd_sum"].min(), (frame["pmi"] - errors).min()))
        high = float(max(frame["sd_sum"].max(), (frame["pmi"] + errors).max()))
        ax.plot([low, high], [low, high], color="#999", lw=1, ls="--", label="identity: sum r_t = pMI")
        ax.set_xlabel("SD trajectory sum  sum_t r_t")
        ax.set_ylabel("pMI estimate  log p(f|x,y) - log p(f|x)")
        ax.legend(fontsize=8)
        return fig

    def stats(self) -> dict[str, float]:
        """Mean and largest absolute gap, and the share of examples whose gap is within 2 s.e."""
        gap = self.frame["gap"].abs()
        se = self.frame["pmi_se"]
        within = float((gap <= 2 * se).mean()) if se.notna().all() else float("nan")
        return {"mean_abs_gap": float(gap.mean()), "max_abs_gap": float(gap.max()), "within_2se": within}

    def _repr_html_(self) -> str:
        stats = self.stats()
        return (
            f"<div><p><b>Compatibility gap</b> over {len(self.frame)} examples: mean |gap| "
            f"{stats['mean_abs_gap']:.4g}, max |gap| {stats['max_abs_gap']:.4g}.</p>"
            f"{self.frame.to_html(index=False, float_format='{:+.4f}'.format)}</div>"
        )


class RunComparison(_Rendered):
    """Several run directories side by side: a summary table and learning curves."""

    def __init__(self, runs: Sequence[Run]):
        if not runs:
            raise ValueError("RunComparison: no runs given")
        self.runs = list(runs)

    def to_dataframe(self) -> pd.DataFrame:
        return runs_table(self.runs)

    def curves(self, metric: str = "eval:score") -> pd.DataFrame:
        return learning_curve_frame(self.runs, metric)

    def figure(self, metric: str = "eval:score", ax=None):
        return learning_curves(self.runs, metric, ax)

    def _repr_html_(self) -> str:
        table = self.to_dataframe().drop(columns=["path"])
        return f"<div>{table.to_html(index=False, float_format='{:.3f}'.format, na_rep='-')}</div>"
