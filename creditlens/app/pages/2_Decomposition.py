"""Decomposition: where SD credit sits, `specific` vs `shortcut`, by token and by position."""

import streamlit as st

from creditlens import viz
from creditlens.app import common

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
           "SD reward = specific + shortcut, where specific = log pi_T - B_t (what this input explains) and "
           "shortcut = B_t - log pi_S (what the feedback raises whatever the input); B_t = contrast_baseline.")
share, mean_specific, mean_shortcut = st.columns(3)
share.metric("Generic share of SD credit", f"{analysis.generic_share():.1%}",
             help="sum |shortcut| / (sum |specific| + sum |shortcut|) over counted tokens")
mean_specific.metric("Mean specific", f"{counted['specific'].mean():+.3f}")
mean_shortcut.metric("Mean shortcut", f"{counted['shortcut'].mean():+.3f}")

left, right = st.columns(2, gap="large")
with left:
    st.subheader("specific vs shortcut, per token")
    points = counted.sample(MAX_POINTS, random_state=0) if len(counted) > MAX_POINTS else counted
    if len(points) < len(counted):
        st.caption(f"A random {MAX_POINTS} of {len(counted)} tokens.")
    st.scatter_chart(points, x="specific", y="shortcut", color="label" if "label" in points else None, height=360,
                     x_label="specific = log pi_T - B_t", y_label="shortcut = B_t - log pi_S")
with right:
    st.subheader("Per-position averages")
    profile = analysis.by_position()
    st.line_chart(profile.melt("position", var_name="component", value_name="mean"), x="position", y="mean",
                  color="component", height=360, x_label="response position", y_label="mean over counted tokens")

st.subheader("Tokens with the largest total shortcut credit")
st.caption("Sorted by |shortcut_sum|, the magnitude of the token's summed shortcut credit (positive: the feedback "
           "raises it whatever the input; negative: lowers it).")
min_count = st.slider("Minimum occurrences", 1, 20, 1, key="min_count")
st.dataframe(analysis.top_shortcut(25, min_count), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%+.3f")
                            for c in ("shortcut_sum", "shortcut_mean", "specific_mean", "sd_mean")})
