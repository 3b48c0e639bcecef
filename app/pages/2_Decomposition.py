"""Decomposition: where SD credit sits, `specific` vs `shortcut`, by token and by position, along the input axis
or, for tables scored with feedback contrasts, the feedback axis (docs/CREDIT-MATH.md section 8)."""

import streamlit as st

from creditlens import stats, viz
from creditlens.app import common

MAX_POINTS = 5000
AXIS_WORDS = {  # axis -> (baseline symbol, what specific means, what shortcut means)
    "input": ("B_t", "what this input explains", "what the feedback raises whatever the input"),
    "feedback": ("F_t", "what this feedback explains", "what any reprompt raises, whatever the feedback says"),
}

root = common.setup("Decomposition")
cat = common.catalog(root)
source = common.pick_source(cat, allow_all_steps=True, key="_decomposition")
axes = [axis for axis in stats.AXIS_COLUMNS if stats.has_axis(source.table, axis)] or ["input"]
axis = st.sidebar.radio("Contrast axis", axes, key="axis", horizontal=True,
                        help="input: other prompts with this feedback (x_j, f, y); feedback: this prompt with other "
                             "feedback (x, f_j, y). Shown when the table has that axis's columns.")
try:
    analysis = viz.CreditDecomposition(source.table, f"`{source.label}`", axis)
except ValueError as error:
    common.fail(str(error))

symbol, specific_words, shortcut_words = AXIS_WORDS[axis]
counted = analysis.to_dataframe()
st.caption(f"{source.label} · {axis} axis · {source.table['example_id'].nunique()} responses · {len(counted)} "
           f"counted tokens. SD reward = specific + shortcut, where specific = log pi_T - {symbol} ({specific_words}) "
           f"and shortcut = {symbol} - log pi_S ({shortcut_words}); {symbol} = "
           f"{'contrast_baseline' if axis == 'input' else 'feedback_baseline'}.")
share, mean_specific, mean_shortcut = st.columns(3)
share.metric(f"Generic share of SD credit ({axis} axis)", f"{analysis.generic_share():.1%}",
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
                     x_label=f"specific = log pi_T - {symbol}", y_label=f"shortcut = {symbol} - log pi_S")
with right:
    st.subheader("Per-position averages")
    profile = analysis.by_position()
    st.line_chart(profile.melt("position", var_name="component", value_name="mean"), x="position", y="mean",
                  color="component", height=360, x_label="response position", y_label="mean over counted tokens")

st.subheader("Tokens with the largest total shortcut credit")
st.caption(f"Sorted by |shortcut_sum|, the magnitude of the token's summed shortcut credit (positive: "
           f"{shortcut_words}; negative: the opposite).")
min_count = st.slider("Minimum occurrences", 1, 20, 1, key="min_count")
st.dataframe(analysis.top_shortcut(25, min_count), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%+.3f")
                            for c in ("shortcut_sum", "shortcut_mean", "specific_mean", "sd_mean")})
