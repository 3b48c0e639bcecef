"""Token credit: one response as a per-token heatmap of a chosen credit component."""

import numpy as np
import pandas as pd
import streamlit as st

from creditlens import viz
from creditlens.app import common

root = common.setup("Token credit")
cat = common.catalog(root)
source = common.pick_source(cat)
tokens = common.pick_example(source)

components = viz.available_components(tokens)
empty = [c for c in viz.COMPONENTS if c in tokens.columns and c not in components]
component = st.sidebar.selectbox("Colour by", components, key="component", help="Token colour: "
                                 + "; ".join(f"{c}: {viz.COMPONENTS[c]}" for c in components))
second = st.sidebar.selectbox("Side by side with", [None] + [c for c in components if c != component],
                              format_func=lambda c: "(nothing)" if c is None else c, key="second")
shared = st.sidebar.checkbox("Same colour scale for both", value=False, key="shared_scale",
                             disabled=second is None)
robust = st.sidebar.checkbox(
    f"Robust colour scale ({viz.CLIP_PERCENTILE:g}th percentile)", value=True, key="robust",
    help=f"The scale ends at the {viz.CLIP_PERCENTILE:g}th percentile of |value| over counted tokens, so that one "
         f"outlier does not wash out the rest; tokens beyond it saturate. Responses of fewer than {viz.MIN_CLIPPED} "
         "counted tokens always use the full range, so their colours keep the order of their values. Hover a token "
         "for its true values.")
if empty:
    st.sidebar.caption("No values here (all NaN): " + ", ".join(empty)
                       + (" (scored without contrasts, K = 0)" if "specific" in empty else ""))

head = tokens.iloc[0]
st.caption(f"{source.label} · example `{head['example_id']}` · {len(tokens)} tokens "
           f"({int(tokens['mask'].sum())} counted) · {common.settings_caption(tokens, source.settings)} · "
           "hover a token for its exact values")

clip = viz.CLIP_PERCENTILE if robust else None
left, right = st.columns([3, 2], gap="large")
with left:
    vmax = None
    if second is not None and shared:
        vmax = max(viz.symmetric_vmax(tokens.loc[tokens["mask"], c].to_numpy(dtype=np.float64), clip)
                   for c in (component, second))
    if second is None:
        st.html(viz.token_heatmap_html(tokens, component, vmax, clip=clip))
    else:
        first_col, second_col = st.columns(2)
        for column, name in ((first_col, component), (second_col, second)):
            with column:
                st.html(viz.token_heatmap_html(tokens, name, vmax, clip=clip))
    counted = tokens[tokens["mask"]]
    sums = st.columns(4)
    for column, name in zip(sums, ("sd_reward", "credit_reward", "specific", "shortcut"), strict=False):
        value = counted[name].sum(min_count=1) if name in counted else float("nan")
        column.metric(f"Σ {name}", "n/a" if pd.isna(value) else f"{value:+.3f}")
    feedback_axis = [c for c in ("feedback_credit_reward", "feedback_specific", "feedback_shortcut") if c in counted]
    for column, name in zip(st.columns(4) if feedback_axis else [], feedback_axis, strict=False):
        value = counted[name].sum(min_count=1)  # the same sums along the feedback axis (x, f_j, y)
        column.metric(f"Σ {name}", "n/a" if pd.isna(value) else f"{value:+.3f}")
with right:
    if "prompt" in tokens.columns:
        st.markdown("**Prompt**")
        common.show_prompt(head["prompt"])
    for name in ("feedback", "response"):
        if name in tokens.columns:
            st.markdown(f"**{name.capitalize()}**")
            st.code(str(head[name]), language=None, wrap_lines=True)
    if "outcome_reward" in tokens.columns:
        st.metric("Outcome reward", f"{head['outcome_reward']:g}")

with st.expander("Token values"):
    st.dataframe(viz.TokenHeatmap(tokens, component).to_dataframe(), hide_index=True, width="stretch")
