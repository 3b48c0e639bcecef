"""creditlens dashboard, entry page: the runs of a directory and their learning curves.

Start it with ``creditlens app [RUNS_DIR]``; the other pages are under ``pages/``. Runs are grouped as
``creditlens compare`` groups them (:func:`creditlens.compare.group_names`) and one environment is shown at
a time, so curves of different environments never share an axis.
"""

import altair as alt
import pandas as pd
import streamlit as st

from creditlens import compare, runs, viz
from creditlens.app import common

COLLAPSE = 0.1  # a final held-out score this far below the run's best is called out

root = common.setup("Runs")
cat = common.catalog(root)
if not cat.runs:
    message = f"No run directories (with a `manifest.json`) under `{root}`."
    if cat.scored:
        message += f" It holds {len(cat.scored)} scored example set(s): open **Token credit** to see them."
    st.info(message + " Train one with `creditlens train --algo credit --env shortcut --out RUNS_DIR/NAME`.")
    st.stop()

try:
    table = common.runs_table(cat)
    loaded = [runs.load_run(p) for p in table["path"]]
except common.READ_ERRORS as error:
    common.fail(f"Could not read the runs: {error}")
table = table.assign(group=compare.group_names(loaded))

environments = sorted(table["env"].unique())
env = st.radio("Environment", environments, horizontal=True, key="env",
               help="One environment at a time: runs of different environments never share a plot.") \
    if len(environments) > 1 else environments[0]
shown = table[table["env"] == env].reset_index(drop=True)
st.caption(f"{len(shown)} of {len(table)} run(s) under `{root}`, environment `{env}`. Tick runs in the first column "
           "to compare their learning curves. `group`: the runs `creditlens compare` treats as seeds of one method "
           "(same model, method and config); `form` and `lam` are the CREDIT reward settings (blank for GRPO and SD).")
collapsed = shown[shown["best_score"] - shown["final_score"] > COLLAPSE]
for row in collapsed.itertuples():
    st.warning(f"`{row.run}` ends {row.best_score - row.final_score:.2f} below its best held-out score "
               f"({row.best_score:.2f} → {row.final_score:.2f}): it collapsed after its best step.")

columns = ["run", "group", "algo", "form", "lam", "model", "seed", "steps", "token_steps", "best_score", "final_score"]
editor = shown[columns].assign(form=shown["form"].fillna(""), lam=pd.to_numeric(shown["lam"]), compare=True)
edited = st.data_editor(
    editor[["compare"] + columns],
    hide_index=True,
    disabled=columns,
    column_config={
        "compare": st.column_config.CheckboxColumn("compare", help="show this run in the plots below"),
        "group": st.column_config.TextColumn("group", help="creditlens compare's group (seeds of one method)"),
        "form": st.column_config.TextColumn("form", help="CREDIT reward form (docs/dashboard.md)"),
        "lam": st.column_config.NumberColumn("lam", help="CREDIT lambda", format="%g"),
        "best_score": st.column_config.NumberColumn("best score", format="%.3f"),
        "final_score": st.column_config.NumberColumn("final score", format="%.3f"),
        "token_steps": st.column_config.NumberColumn("token logs", help="steps with a per-token table"),
    },
    key=f"runs_editor:{env}",
    width="stretch",
)
chosen = [runs.load_run(p) for p, keep in zip(shown["path"], edited["compare"], strict=True) if keep]
if not chosen:
    st.info("Tick at least one run to plot its learning curves.")
    st.stop()

metrics = viz.curve_metrics(chosen)
if not metrics:
    st.info("The chosen runs log no numeric metrics yet (`metrics.jsonl`, `eval.jsonl`).")
    st.stop()
default = [m for m in ("eval:score", "train:reward") if m in metrics] or metrics[:1]
picked = st.multiselect("Curves", metrics, default=default, key="curves")
groups = dict(zip(shown["run"], shown["group"], strict=True))
plots = st.columns(2)
for i, metric in enumerate(picked):
    frame = viz.learning_curve_frame(chosen, metric)
    frame = frame.assign(group=frame["run"].map(groups))
    chart = alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=20)).encode(
        x=alt.X("step:Q", title="training step"),
        y=alt.Y("value:Q", title=metric),
        color=alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=2, labelLimit=0, title=None)),
        strokeDash=alt.StrokeDash("group:N", legend=None),
        tooltip=["run", "group", "step", "value"],
    ).properties(height=300)
    with plots[i % 2]:
        st.subheader(metric)
        st.altair_chart(chart, width="stretch")
