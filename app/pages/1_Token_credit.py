"""Token credit: one response as a per-token heatmap of a chosen credit component."""

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

APP_DIR = str(Path(__file__).resolve().parents[1])
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)  # creditlens_dashboard.py sits in app/, also when a page runs on its own

import creditlens_dashboard as common  # noqa: E402

from creditlens import viz  # noqa: E402

root = common.setup("Token credit")
cat = common.catalog(root)
source = common.pick_source(cat)
tokens = common.pick_example(source)

components = viz.available_components(tokens)
missing = [c for c in viz.COMPONENTS if c not in components]
component = st.sidebar.selectbox("Colour by", components, format_func=lambda c: f"{c} — {viz.COMPONENTS[c]}",
                                 key="component")
second = st.sidebar.selectbox("Side by side with", [None] + [c for c in components if c != component],
                              format_func=lambda c: "(nothing)" if c is None else c, key="second")
shared = st.sidebar.checkbox("Same colour scale for both", value=False, key="shared_scale",
                             disabled=second is None)
if missing:
    st.sidebar.caption("Not in this table: " + ", ".join(missing)
                       + (" (scored without contrasts, K = 0)" if "specific" in missing else ""))

head = tokens.iloc[0]
st.caption(f"{source.label} · example `{head['example_id']}` · {len(tokens)} tokens "
           f"({int(tokens['mask'].sum())} counted) · hover a token for its exact values")

left, right = st.columns([3, 2], gap="large")
with left:
    vmax = None
    if second is not None and shared:
        vmax = max(viz.symmetric_vmax(tokens.loc[tokens["mask"], c].to_numpy()) for c in (component, second))
    if second is None:
        st.html(viz.token_heatmap_html(tokens, component, vmax))
    else:
        first_col, second_col = st.columns(2)
        for column, name in ((first_col, component), (second_col, second)):
            with column:
                st.html(viz.token_heatmap_html(tokens, name, vmax))
    counted = tokens[tokens["mask"]]
    sums = st.columns(4)
    for column, name in zip(sums, ("sd_reward", "credit_reward", "specific", "shortcut"), strict=False):
        value = counted[name].sum(min_count=1) if name in counted else float("nan")
        column.metric(f"Σ {name}", "n/a" if pd.isna(value) else f"{value:+.3f}")
with right:
    for name in ("prompt", "feedback", "response"):
        if name in tokens.columns:
            st.markdown(f"**{name.capitalize()}**")
            st.code(str(head[name]), language=None, wrap_lines=True)
    if "outcome_reward" in tokens.columns:
        st.metric("Outcome reward", f"{head['outcome_reward']:g}")
    if "lam" in tokens.columns:
        st.caption(f"lambda = {head['lam']:g} · pool = {head.get('pool', '?')} · K = {head.get('n_contrast', '?')}")

with st.expander("Token values"):
    st.dataframe(viz.TokenHeatmap(tokens, component).to_dataframe(), hide_index=True, width="stretch")
