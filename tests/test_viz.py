"""viz helpers: colour scale, heatmap HTML, frames and analysis objects, against independent computations."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import appdata  # noqa: E402

from creditlens import runs, schema, viz  # noqa: E402


@pytest.fixture(scope="module")
def exact():
    model = appdata.exact_model()
    table, batch = appdata.exact_table(model, batch_size=6, k=2, seed=3)
    return model, table, batch


def test_diverging_scale_is_centred_and_symmetric():
    rgb = viz.diverging_rgb(np.array([0.0, 1.0, -1.0, 0.5, -0.5, 5.0, np.nan]), vmax=1.0)
    assert tuple(rgb[0]) == (255, 255, 255)
    assert tuple(rgb[1]) == viz.POSITIVE_RGB and tuple(rgb[2]) == viz.NEGATIVE_RGB
    assert tuple(rgb[5]) == viz.POSITIVE_RGB  # saturates beyond vmax
    assert tuple(rgb[6]) == viz.MISSING_RGB
    for half, end in ((rgb[3], viz.POSITIVE_RGB), (rgb[4], viz.NEGATIVE_RGB)):
        np.testing.assert_allclose(half, (np.array(end) + 255) / 2, atol=1)
    assert viz.symmetric_vmax(np.array([-3.0, 2.0, np.nan])) == 3.0
    assert viz.symmetric_vmax(np.array([np.nan])) == 1.0


def test_heatmap_html_one_span_per_token_with_exact_values(exact):
    model, table, batch = exact
    example = table["example_id"].iloc[0]
    rows = viz.select_example(table, {"example_id": example})
    body = viz.token_heatmap_html(rows, "sd_reward")
    found = re.findall(r'data-position="(\d+)" data-value="([^"]+)" title="([^"]*)"', body)
    x, f, y = int(batch.inputs[0]), int(batch.feedback[0]), batch.responses[0].tolist()
    expected = model.teacher_logprobs(x, f, y) - model.student_logprobs(x, y)
    assert [int(p) for p, _, _ in found] == list(range(model.length))
    np.testing.assert_allclose([float(v) for _, v, _ in found], expected, rtol=1e-5, atol=1e-9)
    titles = [html.unescape(t) for *_, t in found]
    teacher = model.teacher_logprobs(x, f, y)
    assert all(f"teacher_logprob = {teacher[i]:+.4f}" in titles[i] for i in range(model.length))
    assert f"{-np.abs(expected).max():+.3g}" in body  # legend shows the symmetric scale


def test_heatmap_masked_and_nan_tokens_are_grey(exact):
    _, table, _ = exact
    rows = viz.select_example(table, {"example_id": table["example_id"].iloc[0]}).copy()
    rows.loc[rows.index[0], "mask"] = False
    rows.loc[rows.index[1], "token"] = '<b>&"'
    rows["specific"] = np.nan
    body = viz.token_heatmap_html(rows, "specific", legend=False)
    assert body.count(f"background:rgb{viz.MISSING_RGB}".replace(" ", "")) == len(rows)
    assert "line-through" in body and "cl-legend" not in body
    assert "<b>" not in body and "&lt;b&gt;&amp;&quot;</span>" in body  # token text is escaped
    with pytest.raises(ValueError, match="component 'nope'"):
        viz.token_heatmap_html(rows, "nope")


def test_token_heatmap_object(exact, capsys):
    _, table, _ = exact
    heat = viz.TokenHeatmap.from_table(table, table["example_id"].iloc[1], "credit_reward")
    frame = heat.to_dataframe()
    assert list(frame["position"]) == list(range(len(frame)))
    assert "cl-token" in heat._repr_html_() and "Feedback #" in heat._repr_html_()
    fig = heat.figure()
    assert len(fig.axes) == 2  # tokens and colour bar
    assert len(fig.axes[0].texts) == len(frame)
    heat.show()  # outside Jupyter: a text table
    assert "credit_reward" in capsys.readouterr().out
    with pytest.raises(ValueError, match="one response"):
        viz.TokenHeatmap(table)


def test_decomposition_against_stored_contrast_logprobs(exact):
    _, table, _ = exact
    baseline = np.array([np.mean(v) for v in table["contrast_logprobs"]])
    specific = table["teacher_logprob"] - baseline
    shortcut = baseline - table["student_logprob"]
    analysis = viz.CreditDecomposition(table)
    expected = shortcut.abs().sum() / (shortcut.abs().sum() + specific.abs().sum())
    assert analysis.generic_share() == pytest.approx(expected)
    top = analysis.top_generic(3)
    by_token = shortcut.groupby(table["token"]).sum().sort_values(ascending=False)
    assert list(top["token"]) == list(by_token.index[:3])
    np.testing.assert_allclose(top["shortcut_sum"], by_token.iloc[:3])
    profile = analysis.by_position()
    np.testing.assert_allclose(profile["specific"], specific.groupby(table["position"]).mean())
    assert "Generic share" in analysis._repr_html_()
    assert len(analysis.scatter().axes[0].collections) == 2  # one per ground-truth label
    no_contrast = table.assign(specific=np.nan, shortcut=np.nan)
    with pytest.raises(ValueError, match="--contrast K"):
        viz.CreditDecomposition(no_contrast)


def test_pmi_check_tolerates_column_names(exact):
    _, table, batch = exact
    summary = schema.example_summary(table)
    with pytest.raises(ValueError, match="no pMI estimate"):
        viz.PMICheck(summary)
    for estimate, se in (("pmi", "pmi_se"), ("pmi", "log_pf_x_se"), ("pmi_estimate", "pmi_stderr"), ("pmi_mc", None)):
        extra = {estimate: batch.pmi.numpy()} | ({se: 0.05} if se else {})
        check = viz.PMICheck(summary.assign(**extra))
        frame = check.to_dataframe()
        assert np.abs(frame["gap"]).max() < 1e-9  # the identity holds exactly on the exact model
        if se is None:
            assert frame["pmi_se"].isna().all() and np.isnan(check.stats()["within_2se"])
        else:
            assert check.stats()["within_2se"] == 1.0
        fig = check.figure()
        assert len(fig.axes[0].lines) >= 1
    assert "Compatibility gap" in check._repr_html_()
    partial = summary.assign(pmi=batch.pmi.numpy()).copy()
    partial.loc[0, "pmi"] = np.nan  # an example without a gap estimate is left out
    assert list(viz.PMICheck(partial).to_dataframe()["example_id"]) == list(summary["example_id"].iloc[1:])
    with pytest.raises(ValueError, match="NaN for every example"):
        viz.PMICheck(summary.assign(pmi=np.nan))


def test_runs_frames_and_comparison(tmp_path):
    appdata.make_runs_dir(tmp_path)
    found = runs.list_runs(tmp_path)
    table = viz.runs_table(found)
    for _, row in table.iterrows():
        scores = [json.loads(line)["score"] for line in (Path(row["path"]) / "eval.jsonl").read_text().splitlines()]
        assert row["best_score"] == pytest.approx(max(scores)) and row["final_score"] == pytest.approx(scores[-1])
    assert "eval:score" in viz.curve_metrics(found) and "train:loss" in viz.curve_metrics(found)
    curves = viz.learning_curve_frame(found, "train:reward")
    assert len(curves) == 3 * 5 and set(curves["algo"]) == {"grpo", "sd", "credit"}
    with pytest.raises(ValueError, match="eval:<column>"):
        viz.learning_curve_frame(found, "score")
    comparison = viz.RunComparison(found)
    assert len(comparison.figure().axes[0].lines) == 3
    assert "credit-seed0" in comparison._repr_html_()
    assert viz.learning_curve_frame(found, "eval:missing").empty


def test_examples_index_counts_masked_tokens_out(exact):
    _, table, _ = exact
    table = table.copy()
    table.loc[table["position"] == 0, ["mask", "sd_reward"]] = [False, 0.0]
    index = viz.examples_index(table)
    expected = table[table["mask"]].groupby("example_id", sort=False)["sd_reward"].sum()
    np.testing.assert_allclose(index.set_index("example_id")["sd_sum"], expected)
    assert (index["n_tokens"] == appdata.exact_model().length).all()
    assert (index["n_counted"] == appdata.exact_model().length - 1).all()
    assert isinstance(index, pd.DataFrame)


def test_select_example_takes_an_index_row_and_ignores_its_statistics(exact):
    _, table, _ = exact
    table = table.assign(outcome_reward=np.nan)  # NaN never equals NaN: it must not be used as a key
    row = viz.examples_index(table).iloc[1].to_dict()
    rows = viz.select_example(table, row)
    expected = table[table["example_id"] == row["example_id"]].sort_values("position")
    pd.testing.assert_frame_equal(rows, expected)
    assert len(rows) == row["n_tokens"]
