"""pMI check: per example, the sum of SD rewards against the pMI estimate (the compatibility gap)."""

import streamlit as st

from creditlens import schema, viz
from creditlens.app import common

root = common.setup("pMI check")
st.caption("Under posterior compatibility the SD rewards of a response telescope: sum_t r_t = "
           "log p(f|x,y) - log p(f|x) = pMI. On a real LM the difference is the compatibility gap, "
           "gap = sum_t r_t - pMI; its standard error is that of the Monte-Carlo estimate of log p(f|x).")
cat = common.catalog(root)
source = common.pick_source(cat, key="_pmi", prefer="Scored examples")
summary = source.summary if source.summary is not None else schema.example_summary(source.table)
try:
    check = viz.PMICheck(summary)
except ValueError as error:
    st.info(f"No pMI estimate for `{source.label}`: {error}. Showing the sums of SD rewards only.")
    sums = summary.assign(example=summary["example_id"].astype(str))
    sums = sums.iloc[sorted(range(len(sums)), key=lambda i: viz.natural_key(sums["example"].iloc[i]))]
    st.bar_chart(sums, x="example", y="sd_sum", height=320, sort=False, x_label="example",
                 y_label="sum of SD rewards")
    st.stop()

found = check.stats()
frame = check.to_dataframe()
cols = st.columns(4)
cols[0].metric("Examples with pMI", f"{len(frame)} of {len(summary)}",
               help="Examples whose pMI was estimated (creditlens demo: a few; creditlens score: --gap-samples)")
cols[1].metric("Mean |gap|", f"{found['mean_abs_gap']:.4g}")
cols[2].metric("Max |gap|", f"{found['max_abs_gap']:.4g}")
cols[3].metric("Within 2 s.e.", f"{found['within_2se']:.0%}" if check.has_se() else "n/a",
               help="Share of examples with |gap| <= 2 x its standard error")
left, right = st.columns([1, 1], gap="large")
with left:
    st.pyplot(check.figure(), clear_figure=True)
with right:
    shown = frame.iloc[sorted(range(len(frame)), key=lambda i: viz.natural_key(frame["example_id"].iloc[i]))]
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"sd_sum": st.column_config.NumberColumn("Σ SD rewards", format="%+.4f"),
                                "pmi": st.column_config.NumberColumn("pMI", format="%+.4f"),
                                "gap": st.column_config.NumberColumn("gap", format="%+.4f"),
                                "gap_se": st.column_config.NumberColumn("gap s.e.", format="%.4f")})
    st.caption("gap = Σ SD rewards - pMI. For every example of a file: "
               "`creditlens score EXAMPLES --gap-samples 8 --out DIR`; in the demo: `creditlens demo --gap-examples N`.")
