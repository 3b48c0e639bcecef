"""pMI check: per example, the SD trajectory sum against the pMI estimate (the compatibility gap)."""

import sys
from pathlib import Path

import streamlit as st

APP_DIR = str(Path(__file__).resolve().parents[1])
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)  # creditlens_dashboard.py sits in app/, also when a page runs on its own

import creditlens_dashboard as common  # noqa: E402

from creditlens import schema, viz  # noqa: E402

root = common.setup("pMI check")
st.caption("Under posterior compatibility the SD rewards of a response telescope: sum_t r_t = "
           "log p(f|x,y) - log p(f|x) = pMI. On a real LM the difference is the compatibility gap.")
cat = common.catalog(root)
source = common.pick_source(cat, key="_pmi", prefer="Scored examples")
summary = source.summary if source.summary is not None else schema.example_summary(source.table)
try:
    check = viz.PMICheck(summary)
except ValueError as error:
    st.info(f"No pMI estimate for `{source.label}`: {error}. Showing the SD trajectory sums only.")
    st.bar_chart(summary.assign(example=summary["example_id"].astype(str)), x="example", y="sd_sum", height=320)
    st.stop()

stats = check.stats()
frame = check.to_dataframe()
cols = st.columns(4)
cols[0].metric("Examples", len(frame))
cols[1].metric("Mean |gap|", f"{stats['mean_abs_gap']:.4g}")
cols[2].metric("Max |gap|", f"{stats['max_abs_gap']:.4g}")
cols[3].metric("Within 2 s.e.", "n/a" if frame["pmi_se"].isna().any() else f"{stats['within_2se']:.0%}")
left, right = st.columns([1, 1], gap="large")
with left:
    st.pyplot(check.figure(), clear_figure=True)
with right:
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%+.4f")
                                for c in ("sd_sum", "pmi", "pmi_se", "gap")})
