"""creditlens dashboard, entry page: the runs of a directory and their learning curves.

Start it with ``creditlens app [RUNS_DIR]``; the other pages are under ``pages/``.
"""

import streamlit as st

from creditlens import runs, viz
from creditlens.app import common

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
except common.READ_ERRORS as error:
    common.fail(f"Could not read the runs: {error}")

st.caption(f"{len(table)} run(s) under `{root}`. Tick runs in the first column to compare their learning curves. "
           "`form` and `lam` are the CREDIT reward settings (blank for GRPO and SD).")
shown = table.drop(columns=["path"]).assign(compare=True)[["compare"] + [c for c in table.columns if c != "path"]]
edited = st.data_editor(
    shown,
    hide_index=True,
    disabled=[c for c in shown.columns if c != "compare"],
    column_config={
        "compare": st.column_config.CheckboxColumn("compare", help="show this run in the plots below"),
        "form": st.column_config.TextColumn("form", help="CREDIT reward form (docs/dashboard.md)"),
        "lam": st.column_config.NumberColumn("lam", help="CREDIT lambda", format="%g"),
        "best_score": st.column_config.NumberColumn("best score", format="%.3f"),
        "final_score": st.column_config.NumberColumn("final score", format="%.3f"),
        "token_steps": st.column_config.NumberColumn("token logs", help="steps with a per-token table"),
    },
    key="runs_editor",
    width="stretch",
)
chosen = [runs.load_run(p) for p, keep in zip(table["path"], edited["compare"], strict=True) if keep]
if not chosen:
    st.info("Tick at least one run to plot its learning curves.")
    st.stop()

metrics = viz.curve_metrics(chosen)
if not metrics:
    st.info("The chosen runs log no numeric metrics yet (`metrics.jsonl`, `eval.jsonl`).")
    st.stop()
default = [m for m in ("eval:score", "train:reward") if m in metrics] or metrics[:1]
picked = st.multiselect("Curves", metrics, default=default, key="curves")
columns = st.columns(2)
for i, metric in enumerate(picked):
    frame = viz.learning_curve_frame(chosen, metric)
    with columns[i % 2]:
        st.subheader(metric)
        st.line_chart(frame, x="step", y="value", color="run", height=280, x_label="training step", y_label=metric)
