"""Drawing and display helpers shared by the dashboard, the notebooks and ``creditlens compare``.

Everything here reads the per-token table of :mod:`creditlens.schema` and run directories of
:mod:`creditlens.runs`; nothing recomputes credit, and the numbers come from :mod:`creditlens.stats`.
Four kinds of helpers:

- token heatmaps: :func:`token_heatmap_html` (one ``<span class="cl-token">`` per response token,
  a diverging colour scale centred at 0, clipped at a percentile by default, true values on hover)
  and :func:`token_heatmap_figure`; :func:`chat_html` renders a prompt stored as chat messages;
- frames of runs and responses (:func:`runs_table`, :func:`examples_index`, :func:`learning_curve_frame`);
- matplotlib figures (``*_figure``, :func:`learning_curves`); they draw on pyplot figures and never
  choose a backend (``creditlens compare`` saves and closes them);
- analysis objects that render in Jupyter (``_repr_html_``), with ``.show()``, ``.to_html()`` and
  ``.to_dataframe()``: :class:`TokenHeatmap`, :class:`CreditDecomposition`, :class:`PMICheck`,
  :class:`RunComparison`.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from creditlens import schema, stats
from creditlens.runs import Run

COMPONENTS: dict[str, str] = {
    "sd_reward": "SD reward r_t = log pi_T - log pi_S",
    "credit_reward": "CREDIT reward (form and lam: the table's form / lam columns)",
    "specific": "specific = log pi_T - B_t (what this input explains)",
    "shortcut": "shortcut = B_t - log pi_S (raised whatever the input)",
    "contrast_baseline": "contrast_baseline B_t (teacher log-prob pooled over contrasts)",
    "feedback_credit_reward": "reward form on the feedback axis (shortcut at lam=1: RLCSD)",
    "feedback_specific": "feedback_specific = log pi_T - F_t (what this feedback explains)",
    "feedback_shortcut": "feedback_shortcut = F_t - log pi_S (raised by any reprompt)",
    "feedback_baseline": "feedback_baseline F_t (teacher log-prob pooled over other feedback)",
    "teacher_logprob": "teacher log-prob log pi_T(y_t | x, f, y_<t)",
    "student_logprob": "student log-prob log pi_S(y_t | x, y_<t)",
    "advantage": "per-token advantage the trainer used",
}
"""Per-token columns a heatmap can show, with the label used in legends (vocabulary: docs/dashboard.md)."""

HOVER_COLUMNS = tuple(COMPONENTS)
NEGATIVE_RGB = (202, 0, 32)  # colour of -vmax
POSITIVE_RGB = (5, 113, 176)  # colour of +vmax
MISSING_RGB = (224, 224, 224)  # NaN (no contrasts) and masked tokens
CLIP_PERCENTILE = 95.0
"""Default colour-scale half-width: this percentile of the counted tokens' absolute values."""
MIN_CLIPPED = 20
"""Fewer finite values than this are never clipped: in a short response the percentile is the largest or
second-largest value, so clipping would give tokens of very different credit one saturated colour."""


def _figure_axes(ax, figsize: tuple[float, float]):
    """``(figure, axes)``: a new figure of ``figsize`` when ``ax`` is None, else ``ax`` and its figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=figsize)
    return ax.figure, ax


AXIS_VIEW = {"specific": "feedback_specific", "shortcut": "feedback_shortcut",
             "contrast_baseline": "feedback_baseline", "credit_reward": "feedback_credit_reward"}
"""Input-axis column -> its feedback-axis counterpart (docs/CREDIT-MATH.md section 8)."""


def along_axis(table: pd.DataFrame, axis: str, source: str = "table") -> pd.DataFrame:
    """``table`` with ``specific``, ``shortcut``, ``contrast_baseline`` and ``credit_reward`` holding the split
    along ``axis`` ("input": the table itself; "feedback": its ``feedback_*`` columns), so every input-axis
    view reads either axis. ValueError when the table has no split along ``axis``."""
    stats.require_contrasts(table, source, axis)
    if axis == "input":
        return table
    return table.assign(**{name: table[feedback] for name, feedback in AXIS_VIEW.items()})


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


def symmetric_vmax(values: np.ndarray, percentile: float | None = None) -> float:
    """Half-width of a centred scale: the largest absolute finite value, or its ``percentile``
    (e.g. 95: robust to a few outliers; an observed value, never interpolated towards an outlier) when there
    are at least :data:`MIN_CLIPPED` finite values, so that a short response keeps its order of colours;
    1.0 when there is no non-zero finite value."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.abs(values[np.isfinite(values)])
    if not finite.size or finite.max() <= 0:
        return 1.0
    robust = percentile is not None and finite.size >= MIN_CLIPPED
    vmax = float(np.percentile(finite, percentile, method="lower") if robust else finite.max())
    return vmax if vmax > 0 else float(finite.max())


def _token_text(token: str) -> str:
    text = html.escape(token).replace("\n", "\u21b5\n").replace("\t", "\u2192\t")
    return text if text else "\u2205"


def legend_html(component: str, vmax: float, clipped: int = 0) -> str:
    """A colour bar from ``-vmax`` to ``+vmax`` under the component's label; ``clipped`` tokens lie
    beyond the scale (they saturate; hover shows their true values)."""
    low, high = (f"rgb{tuple(int(c) for c in rgb)}" for rgb in (NEGATIVE_RGB, POSITIVE_RGB))
    label = html.escape(COMPONENTS.get(component, component))
    note = f"<span>{clipped} token(s) beyond ±{vmax:.3g} saturate; hover for true values</span>" if clipped else ""
    return (
        '<div class="cl-legend" style="font-size:0.8rem;margin:6px 0 2px 0;font-family:sans-serif;color:#444">'
        f'<div style="font-weight:600;overflow-wrap:anywhere">{label}</div>'
        '<div style="display:flex;flex-wrap:wrap;align-items:center;gap:4px 8px">'
        f'<span style="font-family:monospace">{-vmax:+.3g}</span>'
        f'<span style="display:inline-block;width:140px;height:12px;border:1px solid #bbb;border-radius:2px;'
        f'background:linear-gradient(to right,{low},white,{high})"></span>'
        f'<span style="font-family:monospace">{vmax:+.3g}</span>'
        '<span style="display:inline-block;width:12px;height:12px;border:1px solid #bbb;'
        f'background:rgb{MISSING_RGB}"></span><span>n/a or masked</span>{note}'
        "</div></div>"
    )


def token_heatmap_html(
    tokens: pd.DataFrame,
    component: str = "sd_reward",
    vmax: float | None = None,
    legend: bool = True,
    clip: float | None = CLIP_PERCENTILE,
) -> str:
    """HTML of one response: a ``<span class="cl-token">`` per row of ``tokens`` in position order.

    ``tokens`` holds the rows of one example (``token``, ``position``, ``mask`` and the component
    column). The background encodes ``component`` on a diverging scale of half-width ``vmax``
    (default: the ``clip`` percentile of the counted tokens' absolute values, or their maximum when
    ``clip`` is None; tokens beyond it saturate). Each span's ``data-value`` and ``title`` (shown on
    hover) hold the true values of every component. Masked tokens are grey.
    """
    if component not in tokens.columns:
        raise ValueError(f"component {component!r} is not a column of the table; choose one of {list(COMPONENTS)}")
    rows = tokens.sort_values("position")
    values = rows[component].to_numpy(dtype=np.float64).copy()
    masked = ~rows["mask"].to_numpy(dtype=bool)
    values[masked] = np.nan
    vmax = symmetric_vmax(values, clip) if vmax is None else float(vmax)
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
    clipped = int((np.abs(values[np.isfinite(values)]) > vmax).sum())
    return (legend_html(component, vmax, clipped) if legend else "") + body


def chat_messages(prompt: object) -> list[dict[str, str]] | None:
    """The ``[{"role", "content"}, ...]`` messages of a prompt stored as a chat (a list, or its JSON
    text as the scorer writes it); None for a plain-text prompt."""
    messages = prompt
    if isinstance(prompt, str):
        if not prompt.lstrip().startswith("["):
            return None
        try:
            messages = json.loads(prompt)
        except json.JSONDecodeError:
            return None
    if isinstance(messages, list) and messages and all(
        isinstance(m, Mapping) and {"role", "content"} <= set(m) for m in messages
    ):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    return None


def chat_html(prompt: object) -> str:
    """HTML of a prompt: one box per chat message with its role, or the plain text in one box."""
    messages = chat_messages(prompt) or [{"role": "", "content": str(prompt)}]
    boxes = "".join(
        '<div style="margin:4px 0;padding:6px 8px;border-radius:6px;background:'
        f'{"#eef4fb" if m["role"] == "user" else "#f4f4f4"}">'
        + (f'<div style="font-size:0.75rem;color:#666;font-weight:600">{html.escape(m["role"])}</div>' if m["role"] else "")
        + f'<div style="white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:0.85rem">'
        f'{html.escape(m["content"])}</div></div>'
        for m in messages
    )
    return f'<div class="cl-chat">{boxes}</div>'


def natural_key(text: object) -> tuple:
    """Sort key that orders embedded numbers by value: ``sample3`` before ``sample10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text)) if part)


def token_heatmap_figure(tokens: pd.DataFrame, component: str = "sd_reward", vmax: float | None = None,
                         width: int = 80, ax=None, clip: float | None = CLIP_PERCENTILE):
    """Matplotlib figure of one response: tokens laid out in lines of ``width`` characters, coloured
    on the same diverging scale as :func:`token_heatmap_html`, with a colour bar."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    rows = tokens.sort_values("position")
    values = rows[component].to_numpy(dtype=np.float64).copy()
    values[~rows["mask"].to_numpy(dtype=bool)] = np.nan
    vmax = symmetric_vmax(values, clip) if vmax is None else float(vmax)
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


def first_counted(index: pd.DataFrame) -> int:
    """Row number in an :func:`examples_index` of the first response with a counted token (0 if none):
    a passed rollout has no feedback, so all its tokens are masked and carry 0."""
    counted = np.flatnonzero(index["n_counted"].to_numpy() > 0)
    return int(counted[0]) if counted.size else 0


def select_example(table: pd.DataFrame, example: dict) -> pd.DataFrame:
    """Rows of one response, sorted by position. ``example`` maps ``EXAMPLE_KEYS`` columns to values
    (a row of :func:`examples_index` as a dict works; its other entries are ignored)."""
    keep = np.ones(len(table), dtype=bool)
    for key, value in example.items():
        if key in EXAMPLE_KEYS:
            keep &= (table[key] == value).to_numpy()
    return table.loc[keep].sort_values("position")


def run_settings(run: Run) -> dict:
    """``form`` and ``lam`` of a run's manifest config (None where the run does not use them: GRPO and
    SD have no lam; runs written before forms existed used the ``teacher`` form)."""
    config = run.manifest.get("config", {})
    if run.algo != "credit":
        return {"form": None, "lam": None}
    return {"form": config.get("form", "teacher"), "lam": config.get("lam")}


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: name, algo, form, lam, env, model, seed, logged steps, steps with token
    tables, best and final eval score, path."""
    records = []
    for run in runs:
        metrics = run.metrics()
        records.append(
            dict(
                run=run.name,
                algo=run.algo,
                **run_settings(run),
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
    return pd.DataFrame(records, columns=["run", "algo", "form", "lam", "env", "model", "seed", "steps",
                                          "token_steps", "best_score", "final_score", "path"])


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
    """Long frame ``run, algo, env, step, value`` of ``metric`` (``eval:<col>`` or ``train:<col>``)."""
    source, _, column = metric.partition(":")
    if source not in ("eval", "train") or not column:
        raise ValueError(f"metric {metric!r}: expected 'eval:<column>' or 'train:<column>'")
    frames = []
    for run in runs:
        frame = run.evals() if source == "eval" else run.metrics()
        if column in frame.columns and "step" in frame.columns:
            part = frame[["step", column]].dropna().rename(columns={column: "value"})
            frames.append(part.assign(run=run.name, algo=run.algo, env=run.env))
    columns = ["run", "algo", "env", "step", "value"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values(["run", "step"])


def learning_curves(runs: Sequence[Run], metric: str = "eval:score", ax=None):
    """Matplotlib figure with one line per run of ``metric`` against the training step, one panel per
    environment (runs of different environments never share an axis; ``ax`` takes runs of one)."""
    import matplotlib.pyplot as plt

    frame = learning_curve_frame(runs, metric)
    environments = sorted({run.env for run in runs})
    if ax is not None and len(environments) > 1:
        raise ValueError(f"runs of {len(environments)} environments ({', '.join(environments)}) cannot share one "
                         "axis; pass the runs of one environment, or no ax (one panel per environment)")
    if ax is None:
        fig, axes = plt.subplots(1, len(environments), figsize=(7 * len(environments), 4), squeeze=False)
        axes = list(axes[0])
    else:
        fig, axes = ax.figure, [ax]
    for ax, env in zip(axes, environments, strict=True):
        part_env = frame[frame["env"] == env]
        for name, part in part_env.groupby("run", sort=False):
            ax.plot(part["step"], part["value"], marker="o", markersize=3, label=f"{name} ({part['algo'].iloc[0]})")
        ax.set_title(f"{env}", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if len(part_env):
            ax.legend(fontsize=8)
    return fig


def group_curves_figure(curves: pd.DataFrame, confidence: float = 0.95):
    """Held-out score vs step per group of runs (``group, step, mean, low, high`` rows, optional ``env``, ``n``,
    ``model``, ``method`` and ``interval``): the mean over seeds with a ``confidence`` t-interval band (a one-seed
    group's band: the Wilson interval over eval problems where ``interval`` says so), one panel per environment
    (never two on one axis); the title gives the seeds per group and the kind of band. A panel of one model names it in its title and its curves by ``method`` when those are
    distinct there (else by ``group``)."""
    import matplotlib.pyplot as plt

    envs_ = sorted(curves["env"].unique()) if "env" in curves and len(curves) else [None]
    fig, axes = plt.subplots(1, len(envs_), figsize=(6 * len(envs_), 4), squeeze=False)
    for ax, env in zip(axes[0], envs_, strict=True):
        part_env = curves if env is None else curves[curves["env"] == env]
        models = sorted(set(part_env["model"])) if "model" in part_env else []
        methods = part_env.groupby("group")["method"].first() if "method" in part_env else None
        label_by = "method" if len(models) == 1 and methods is not None and methods.is_unique else "group"
        for _, part in part_env.groupby("group", sort=True):
            part = part.sort_values("step")
            ax.plot(part["step"], part["mean"], marker="o", markersize=3, label=part[label_by].iloc[0])
            ax.fill_between(part["step"], part["low"].astype(float), part["high"].astype(float), alpha=0.2)
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out score (pass rate)")
        seeds = sorted(set(part_env["n"].astype(int))) if "n" in part_env and len(part_env) else []
        wilson = "interval" in part_env and bool(part_env["interval"].eq("wilson").any())
        if seeds == [1]:
            title = f"one seed per group, {confidence:.0%} Wilson interval over its eval problems" if wilson else \
                "one seed per group, no interval"
        else:
            counted = f" (n = {seeds[0]}{'' if len(seeds) == 1 else f'-{seeds[-1]}'})" if seeds else ""
            title = f"mean over seeds{counted}, {confidence:.0%} t-interval" + (" (Wilson for one seed)" if wilson else "")
        where = " · ".join(str(x) for x in (env, *models[:1]) if x is not None) if len(models) == 1 else env
        ax.set_title(("" if where is None else f"{where}\n") + title, fontsize=9)
        ax.grid(alpha=0.3)
        if len(part_env):
            ax.legend(fontsize=7, title="method", title_fontsize=7)
    fig.tight_layout()
    return fig


def credit_histograms_figure(tables: Mapping[str, pd.DataFrame],
                             components: Sequence[str] = ("sd_reward", "credit_reward", "specific", "shortcut"),
                             max_tokens: int = 200_000):
    """One panel per component: a density histogram (log scale) of its counted-token values per group
    (``tables`` maps a group name to its per-token rows)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(components), figsize=(4 * len(components), 3.6), squeeze=False)
    for ax, component in zip(axes[0], components, strict=True):
        for group, table in sorted(tables.items()):
            values = table.loc[table["mask"], component].to_numpy(dtype=np.float64) if component in table else []
            values = np.asarray(values)[np.isfinite(values)][:max_tokens]
            if values.size:
                ax.hist(values, bins=60, histtype="step", density=True, label=group)
        ax.set_title(COMPONENTS.get(component, component), fontsize=8)
        ax.set_xlabel(f"{component} per token (nats)")
        ax.set_ylabel("density (log scale)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title="method", title_fontsize=7)
    fig.tight_layout()
    return fig


def auroc_figure(table: pd.DataFrame, columns: Sequence[str]):
    """Grouped bars of the AUROC of |credit| (specific vs generic tokens): one group of bars per row of
    ``table`` (its ``group`` and ``auroc_abs_<column>`` values), one bar per column; the legend sits
    below the axes so that it never covers a bar."""
    fig, ax = _figure_axes(None, (7, 4))
    width = 0.8 / len(columns)
    positions = np.arange(len(table))
    for i, column in enumerate(columns):
        ax.bar(positions + i * width, table[f"auroc_abs_{column}"].fillna(0.0), width, label=column)
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--", label="chance (0.5)")
    ax.set_xticks(positions + width * (len(columns) - 1) / 2, table["group"], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("method")
    ax.set_ylabel("AUROC of |credit|")
    ax.set_title("Specific vs generic tokens: where each credit puts its magnitude", fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(columns) + 1, 6), loc="upper center", bbox_to_anchor=(0.5, -0.18),
              title="per-token credit column", title_fontsize=7)
    fig.tight_layout()
    return fig


class _Rendered:
    """Rich display: ``_repr_html_`` in Jupyter; ``.show()`` displays it there and prints a text table
    elsewhere, or returns the HTML with ``as_html=True``."""

    def _repr_html_(self) -> str:
        raise NotImplementedError

    def to_dataframe(self) -> pd.DataFrame:
        raise NotImplementedError

    def to_html(self) -> str:
        """The HTML that Jupyter shows (a complete fragment, usable in any page)."""
        return self._repr_html_()

    def show(self, as_html: bool = False) -> str | None:
        """Display in Jupyter, else print a text table; with ``as_html`` return the HTML instead."""
        if as_html:
            return self.to_html()
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
        except ImportError:
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display(HTML(self._repr_html_()))
        else:
            print(self.to_dataframe().to_string(index=False))
        return None


class TokenHeatmap(_Rendered):
    """One response's per-token credit, rendered as a heatmap of ``component``."""

    def __init__(self, tokens: pd.DataFrame, component: str = "sd_reward", vmax: float | None = None,
                 clip: float | None = CLIP_PERCENTILE):
        if tokens["example_id"].nunique() != 1 or not tokens["position"].is_unique:
            raise ValueError("TokenHeatmap: pass the rows of one response (see select_example and examples_index)")
        self.tokens, self.component, self.vmax, self.clip = tokens.sort_values("position"), component, vmax, clip

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
        return token_heatmap_figure(self.tokens, self.component, self.vmax, width, clip=self.clip)

    def _repr_html_(self) -> str:
        head = self.tokens.iloc[0]
        context = ""
        if "prompt" in self.tokens.columns:
            context += f"<div><b>prompt:</b>{chat_html(head['prompt'])}</div>"
        if "feedback" in self.tokens.columns:
            context += f"<div><b>feedback:</b> {html.escape(str(head['feedback']))}</div>"
        return f"<div>{context}{token_heatmap_html(self.tokens, self.component, self.vmax, clip=self.clip)}</div>"


class CreditDecomposition(_Rendered):
    """Where the SD credit of a table sits: ``specific`` vs ``shortcut``, by token and position, along the
    input axis or (``axis="feedback"``, tables scored with feedback contrasts) the feedback axis."""

    def __init__(self, table: pd.DataFrame, source: str = "table", axis: str = "input"):
        self.table = along_axis(table, axis, source)
        self.axis = axis

    def to_dataframe(self) -> pd.DataFrame:
        columns = [c for c in ("example_id", "position", "token", "specific", "shortcut", "contrast_baseline",
                               "sd_reward", "credit_reward", "label") if c in self.table.columns]
        return self.table.loc[self.table["mask"], columns].reset_index(drop=True)

    def generic_share(self) -> float:
        return stats.generic_share(self.table)

    def top_shortcut(self, n: int = 20, min_count: int = 1) -> pd.DataFrame:
        return stats.top_shortcut_tokens(self.table, n, min_count)

    def by_position(self) -> pd.DataFrame:
        return stats.position_profile(self.table)

    def scatter(self, ax=None, max_points: int = 5000, seed: int = 0):
        """Matplotlib scatter of ``specific`` vs ``shortcut`` per counted token, coloured by ``label``
        when the table has ground-truth labels."""
        points = self.to_dataframe()
        if len(points) > max_points:
            points = points.sample(max_points, random_state=seed)
        fig, ax = _figure_axes(ax, (5.5, 4.5))
        groups = points.groupby("label") if "label" in points.columns else [("token", points)]
        for name, part in groups:
            ax.scatter(part["specific"], part["shortcut"], s=8, alpha=0.6, label=str(name))
        ax.axhline(0, color="#999", lw=0.8)
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_xlabel("specific = log pi_T - B_t")
        ax.set_ylabel("shortcut = B_t - log pi_S")
        ax.legend(fontsize=8, title="label" if "label" in points.columns else None)
        return fig

    def _repr_html_(self) -> str:
        share = self.generic_share()
        return (
            f"<div><p><b>Generic share of SD credit:</b> {share:.1%} of the positive SD credit of the "
            f"{len(stats.generic_part(self.table))} counted tokens the feedback raises by at least {stats.MOVED} nats "
            "is input-generic (sum clip(shortcut, 0, sd_reward) / sum sd_reward; docs/CREDIT-MATH.md section 9).</p>"
            "<p><b>Tokens with the most input-generic credit</b></p>"
            f"{self.top_shortcut(10).to_html(index=False, float_format='{:+.3f}'.format)}</div>"
        )


class PMICheck(_Rendered):
    """Per example, the sum of SD rewards against the pMI estimate: the compatibility gap and its
    standard error (:func:`creditlens.stats.pmi_frame`)."""

    def __init__(self, summary: pd.DataFrame):
        self.frame = stats.pmi_frame(summary)

    @classmethod
    def from_tokens(cls, table: pd.DataFrame, pmi: pd.DataFrame) -> PMICheck:
        """Join :func:`schema.example_summary` of ``table`` with a frame of ``example_id`` and pMI columns."""
        return cls(schema.example_summary(table).merge(pmi, on="example_id"))

    def to_dataframe(self) -> pd.DataFrame:
        return self.frame.copy()

    def has_se(self) -> bool:
        """Whether every example has a standard error (Monte-Carlo estimate with M >= 2 samples)."""
        return bool(self.frame["gap_se"].notna().all())

    def figure(self, ax=None):
        """Sum of SD rewards (x) against the pMI estimate (y), with 2-standard-error bars when known,
        and the identity line y = x."""
        frame = self.frame
        fig, ax = _figure_axes(ax, (5, 4.5))
        errors = 2 * frame["gap_se"].fillna(0.0)
        if self.has_se():
            ax.errorbar(frame["sd_sum"], frame["pmi"], yerr=errors, fmt="o", ms=4, capsize=2, alpha=0.8,
                        label="examples (bars: 2 s.e.)")
        else:
            ax.plot(frame["sd_sum"], frame["pmi"], "o", ms=4, alpha=0.8, label="examples")
        low = float(min(frame["sd_sum"].min(), (frame["pmi"] - errors).min()))
        high = float(max(frame["sd_sum"].max(), (frame["pmi"] + errors).max()))
        ax.plot([low, high], [low, high], color="#999", lw=1, ls="--", label="identity: sum r_t = pMI")
        ax.set_xlabel("sum of SD rewards  sum_t r_t")
        ax.set_ylabel("pMI estimate  log p(f|x,y) - log p(f|x)")
        ax.legend(fontsize=8)
        return fig

    def stats(self) -> dict[str, float]:
        """Number of examples, mean and largest ``|gap|``, share within 2 s.e. (:func:`stats.gap_stats`)."""
        return stats.gap_stats(self.frame)

    def _repr_html_(self) -> str:
        found = self.stats()
        within = (f", {found['within_2se']:.0%} within 2 s.e." if self.has_se()
                  else " (no standard error: exact pMI or a single sample)")
        return (
            f"<div><p><b>Compatibility gap</b> over {len(self.frame)} examples: mean |gap| "
            f"{found['mean_abs_gap']:.4g}, max |gap| {found['max_abs_gap']:.4g}{within}.</p>"
            f"{self.frame.to_html(index=False, float_format='{:+.4f}'.format, na_rep='-')}</div>"
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
