"""Decomposition: where SD credit sits, input-specific vs input-generic, by token and by position."""

import sys
from pathlib import Path

import streamlit as st

APP_DIR = str(Path(__file__).resolve().parents[1])
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)  # creditlens_dashboard.py sits in app/, also when a page runs on its own

import creditlens_dashboard as common  # noqa: E402

from creditlens import viz  # noqa: E402

MAX_POINTS = 5000

root = common.setup("Decomposition")
cat = common.catalog(root)
source = common.pick_source(cat, allow_all_steps=True, key="_decomposition")
try:
    analysis = viz.CreditDecomposition(source.table, f"`{source.label}`")
except ValueError as error:
    common.fail(str(error))

counted = analysis.to_dataframe()
st.caption(f"{source.label} · {source.table['example_id'].nunique()} responses · {len(counted)} counted tokens. "
           "SD reward r_t = specific + generic part, where specific = log pi_T - B_t and generic part = "
           "B_t - log pi_S (what the feedback raises whatever the input).")
share, mean_specific, mean_shortcut = st.columns(3)
share.metric("Generic share of SD credit", f"{analysis.generic_share():.1%}",
             help="sum |generic part| / (sum |specific| + sum |generic part|) over counted tokens")
mean_specific.metric("Mean specific", f"{counted['specific'].mean():+.3f}")
mean_shortcut.metric("Mean generic part", f"{counted['shortcut'].mean():+.3f}")

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Specific vs generic, per token")
    points = counted.sample(MAX_POINTS, random_state=0) if len(counted) > MAX_POINTS else counted
    if len(points) < len(counted):
        st.caption(f"A random {MAX_POINTS} of {len(counted)} tokens.")
    st.scatter_chart(points, x="specific", y="shortcut", color="label" if "label" in points else None, height=360)
with right:
    st.subheader("Per-position averages")
    profile = analysis.by_position()
    st.line_chart(profile.melt("position", var_name="component", value_name="mean"), x="position", y="mean",
                  color="component", height=360)

st.subheader("Tokens with the most input-generic credit")
min_count = st.slider("Minimum occurrences", 1, 20, 1, key="min_count")
st.dataframe(analysis.top_generic(25, min_count), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%+.3f")
                            for c in ("shortcut_sum", "shortcut_mean", "specific_mean", "sd_mean")})
