"""Decomposition: where SD credit sits, `specific` vs `shortcut`, by token and by position, along the input axis
or, for tables scored with feedback contrasts, the feedback axis (docs/CREDIT-MATH.md section 8)."""

import streamlit as st

from creditlens import compare, runs, stats, viz
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
table = source.table
if "label" not in table.columns and source.run_path:  # runs logged before token tables carried labels
    labels = compare.label_tokens(runs.load_run(source.run_path), table)
    table = table if labels is None else table.assign(label=labels)
try:
    analysis = viz.CreditDecomposition(table, f"`{source.label}`", axis)
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
             help=f"Of the positive SD credit of the counted tokens the feedback raises by at least {stats.MOVED} "
                  "nats, the share that is input-generic: sum clip(shortcut, 0, sd_reward) / sum sd_reward "
                  "(docs/CREDIT-MATH.md section 9)")
mean_specific.metric("Mean specific", f"{counted['specific'].mean():+.3f}")
mean_shortcut.metric("Mean shortcut", f"{counted['shortcut'].mean():+.3f}")

left, right = st.columns(2, gap="large")
with left:
    st.subheader("specific vs shortcut, per token")
    moved_only = st.checkbox(f"Only tokens the feedback moves (|SD reward| >= {stats.MOVED})", value=True,
                             key="moved_only", help="A token the feedback does not move lies on the diagonal "
                             "shortcut = -specific and says nothing about where credit sits.")
    shown = counted[counted["sd_reward"].abs() >= stats.MOVED] if moved_only else counted
    points = shown.sample(MAX_POINTS, random_state=0) if len(shown) > MAX_POINTS else shown
    if len(points) < len(shown):
        st.caption(f"A random {MAX_POINTS} of {len(shown)} tokens.")
    if "label" in points:
        st.caption("Coloured by the ground-truth token label of the environment.")
    st.scatter_chart(points, x="specific", y="shortcut", color="label" if "label" in points else None, height=360,
                     x_label=f"specific = log pi_T - {symbol}", y_label=f"shortcut = {symbol} - log pi_S")
with right:
    st.subheader("Per-position averages")
    profile = analysis.by_position()
    st.line_chart(profile.melt("position", var_name="component", value_name="mean"), x="position", y="mean",
                  color="component", height=360, x_label="response position", y_label="mean over counted tokens")

st.subheader("Tokens with the most input-generic credit")
st.caption(f"Sorted by generic_sum, the token's summed generic part clip(shortcut, 0, SD reward) over its occurrences "
           f"the feedback raises ({shortcut_words}); credit_sum is their SD reward, generic_fraction the ratio.")
min_count = st.slider("Minimum occurrences", 1, 20, 1, key="min_count")
st.dataframe(analysis.top_shortcut(25, min_count), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%+.3f")
                            for c in ("generic_sum", "credit_sum", "generic_fraction", "shortcut_mean",
                                      "specific_mean", "sd_mean")})
