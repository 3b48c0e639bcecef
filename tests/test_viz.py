"""viz and stats helpers: colour scale, heatmap HTML, frames, statistics and analysis objects, against
independent computations."""

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

from creditlens import runs, schema, stats, viz  # noqa: E402


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


def test_short_response_keeps_the_order_of_its_colours():
    values = np.array([0.2, 0.91, 5.38])  # a 3-token answer: "S" (+0.91) and "yd" (+5.38) must differ
    rows = pd.DataFrame({"token": ["a", "S", "yd"], "position": range(3), "mask": True, "sd_reward": values})
    body = viz.token_heatmap_html(rows, "sd_reward")
    blue = [int(b) for *_, b in re.findall(r"background:rgb\((\d+),(\d+),(\d+)\)", body)]
    red = [int(r) for r, *_ in re.findall(r"background:rgb\((\d+),(\d+),(\d+)\)", body)]
    assert red[0] > red[1] > red[2] and "beyond" not in body  # stronger credit, stronger blue; nothing clipped
    assert viz.symmetric_vmax(values, 95) == 5.38
    many = np.linspace(0.1, 1.0, viz.MIN_CLIPPED)
    assert viz.symmetric_vmax(many, 95) < 1.0 and len(blue) == 3


def test_robust_scale_ignores_one_outlier_and_keeps_true_values():
    values = np.concatenate([np.linspace(-1.0, 1.0, 39), [80.0]])  # 40 counted tokens, one outlier
    assert viz.symmetric_vmax(values) == 80.0
    assert viz.symmetric_vmax(values, 95) == pytest.approx(np.sort(np.abs(values))[int(0.95 * 39)])
    assert viz.symmetric_vmax(values, 95) <= 1.0
    rows = pd.DataFrame({"token": [f"t{i}" for i in range(40)], "position": range(40), "mask": True,
                         "sd_reward": values})
    body = viz.token_heatmap_html(rows, "sd_reward")
    shown = [float(v) for v in re.findall(r'data-value="([^"]+)"', body)]
    np.testing.assert_allclose(shown, values, rtol=1e-5)  # the true values, not the clipped ones
    assert "1 token(s) beyond" in body and "+80" not in body.split('class="cl-heatmap"')[0]
    colours = re.findall(r"background:rgb\((\d+),(\d+),(\d+)\)", body)
    assert tuple(map(int, colours[-1])) == viz.POSITIVE_RGB  # the outlier saturates
    assert tuple(map(int, colours[-2])) == viz.POSITIVE_RGB  # so does the largest value of the rest
    full = viz.token_heatmap_html(rows, "sd_reward", clip=None)
    assert "+80" in full.split('class="cl-heatmap"')[0] and "beyond" not in full


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
    sd = specific + shortcut
    moved = table["mask"] & (sd >= stats.MOVED)  # tokens the feedback raises; their generic part: shortcut in [0, sd]
    generic = shortcut.clip(lower=0).where(shortcut.clip(lower=0) < sd, sd)
    assert moved.sum() > 3 and (~moved & table["mask"]).sum() > 3
    assert analysis.generic_share() == pytest.approx(generic[moved].sum() / sd[moved].sum())
    assert stats.generic_share(table) == analysis.generic_share()
    by_example = stats.generic_share_by_example(table)
    for example, part in table.groupby("example_id"):
        rows = part.index[moved[part.index]]
        expected = generic[rows].sum() / sd[rows].sum() if len(rows) else np.nan
        assert by_example[example] == pytest.approx(expected, nan_ok=True)
    top = analysis.top_shortcut(3)
    by_token = generic[moved].groupby(table.loc[moved, "token"]).sum()
    by_token = by_token[by_token > 0].sort_values(ascending=False, kind="stable")
    assert list(top["token"]) == list(by_token.index[:3])
    np.testing.assert_allclose(top["generic_sum"], by_token.iloc[:3])
    profile = analysis.by_position()
    np.testing.assert_allclose(profile["specific"], specific.groupby(table["position"]).mean())
    assert "Generic share" in analysis._repr_html_() and analysis.show(as_html=True) == analysis._repr_html_()
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
        np.testing.assert_allclose(frame["sd_sum"], summary["sd_sum"])
        legend = [t.get_text() for t in check.figure().axes[0].get_legend().get_texts()]
        if se is None:
            assert frame["gap_se"].isna().all() and np.isnan(check.stats()["within_2se"])
            assert legend == ["examples", "identity: sum r_t = pMI"]  # no error bars to name
            assert "no standard error" in check._repr_html_()
        else:
            assert (frame["gap_se"] == 0.05).all() and check.stats()["within_2se"] == 1.0
            assert legend == ["identity: sum r_t = pMI", "examples (bars: 2 s.e.)"]
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


def test_learning_curves_never_put_two_environments_on_one_axis(tmp_path):
    import matplotlib.pyplot as plt

    appdata.make_runs_dir(tmp_path)
    runs.write_manifest(tmp_path / "science-s0", {"name": "science-s0", "algo": "sd", "env": "science", "seed": 0})
    runs.append_jsonl(tmp_path / "science-s0" / runs.EVAL, {"step": 0, "score": 0.5})
    found = runs.list_runs(tmp_path)
    figure = viz.learning_curves(found)
    assert [ax.get_title() for ax in figure.axes] == ["science", "shortcut"]
    assert [len(ax.lines) for ax in figure.axes] == [1, 3]
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="2 environments .* cannot share one axis"):
        viz.learning_curves(found, ax=ax)
    plt.close("all")


def test_examples_index_counts_masked_tokens_out(exact):
    _, table, _ = exact
    table = table.copy()
    table.loc[table["position"] == 0, ["mask", "sd_reward"]] = [False, 0.0]
    index = viz.examples_index(table)
    expected = table[table["mask"]].groupby("example_id", sort=False)["sd_reward"].sum()
    np.testing.assert_allclose(index.set_index("example_id")["sd_sum"], expected)
    assert (index["n_tokens"] == appdata.exact_model().length).all()
    assert (index["n_counted"] == appdata.exact_model().length - 1).all()
    assert list(index["example_id"]) == list(table["example_id"].unique())  # in order of appearance


def test_select_example_takes_an_index_row_and_ignores_its_statistics(exact):
    _, table, _ = exact
    table = table.assign(outcome_reward=np.nan)  # NaN never equals NaN: it must not be used as a key
    row = viz.examples_index(table).iloc[1].to_dict()
    rows = viz.select_example(table, row)
    expected = table[table["example_id"] == row["example_id"]].sort_values("position")
    pd.testing.assert_frame_equal(rows, expected)
    assert len(rows) == row["n_tokens"]


def test_first_counted_skips_fully_masked_responses(exact):
    _, table, _ = exact
    table = table.copy()
    first, second = table["example_id"].unique()[:2]
    table.loc[table["example_id"].isin([first, second]), "mask"] = False
    index = viz.examples_index(table)
    assert viz.first_counted(index) == 2
    assert viz.first_counted(index.assign(n_counted=0)) == 0


def test_chat_prompts_and_natural_order():
    chat = [{"role": "system", "content": "Be <brief>."}, {"role": "user", "content": "2 + 2?"}]
    assert viz.chat_messages(json.dumps(chat)) == chat and viz.chat_messages(chat) == chat
    assert viz.chat_messages("[not json") is None and viz.chat_messages("What is 2 + 2?") is None
    assert viz.chat_messages(json.dumps([1, 2])) is None
    body = viz.chat_html(json.dumps(chat))
    assert body.count("white-space:pre-wrap") == 2 and "Be &lt;brief&gt;." in body and ">system<" in body
    assert "What &amp; why" in viz.chat_html("What & why")
    ids = ["sample10", "sample3", "sample1", "code-02", "code-10", "code-9"]
    assert sorted(ids, key=viz.natural_key) == ["code-02", "code-9", "code-10", "sample1", "sample3", "sample10"]


def test_compare_figures_have_labels_and_legends(tmp_path):
    curves = pd.DataFrame({"group": ["sd", "sd", "grpo", "grpo"], "step": [0, 10, 0, 10],
                           "mean": [0.1, 0.4, 0.2, 0.3], "low": [0.0, 0.3, 0.1, 0.2], "high": [0.2, 0.5, 0.3, 0.4]})
    ax = viz.group_curves_figure(curves).axes[0]
    assert ax.get_xlabel() == "training step" and [t.get_text() for t in ax.get_legend().get_texts()] == ["grpo", "sd"]
    assert ax.get_title() == "mean over seeds, 95% t-interval"
    assert viz.group_curves_figure(curves.assign(n=[3, 2, 3, 3])).axes[0].get_title() == "mean over seeds (n = 2-3), 95% t-interval"
    assert viz.group_curves_figure(curves.assign(n=1, env="e")).axes[0].get_title() == "e\none seed per group, no interval"
    named = curves.assign(env="e", model="m", method=curves["group"].str.upper(), group=curves["group"] + " [env=e]")
    ax = viz.group_curves_figure(named).axes[0]  # one model in the panel: curves by method, the model in the title
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GRPO", "SD"] and ax.get_title().startswith("e · m\n")
    ax = viz.group_curves_figure(named.assign(model=["m", "m", "m2", "m2"])).axes[0]  # two models: full group names
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["grpo [env=e]", "sd [env=e]"]
    assert ax.get_title().startswith("e\n")
    wilson = named.assign(n=1, interval=["wilson", "wilson", "", ""])
    assert viz.group_curves_figure(wilson).axes[0].get_title() == "e · m\none seed per group, 95% Wilson interval over its eval problems"
    mixed = named.assign(n=[1, 1, 3, 3], interval=["wilson", "wilson", "t", "t"])
    assert viz.group_curves_figure(mixed).axes[0].get_title().endswith("(n = 1-3), 95% t-interval (Wilson for one seed)")
    rng = np.random.default_rng(0)
    tables = {g: pd.DataFrame({"mask": True, **{c: rng.normal(size=50) for c in ("sd_reward", "credit_reward",
                                                                                 "specific", "shortcut")}})
              for g in ("sd", "credit lam=0.5")}
    fig = viz.credit_histograms_figure(tables)
    for ax, component in zip(fig.axes, ("sd_reward", "credit_reward", "specific", "shortcut"), strict=True):
        assert component in ax.get_xlabel() and ax.get_ylabel().startswith("density")
        assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["credit lam=0.5", "sd"]
    table = pd.DataFrame({"group": ["sd", "credit lam=0.5"], "auroc_abs_sd_reward": [0.95, 0.9],
                          "auroc_abs_credit_reward": [0.5, 0.97]})
    fig = viz.auroc_figure(table, ["sd_reward", "credit_reward"])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [patch.get_window_extent() for patch in ax.patches]
    assert len(bars) == 4 and not any(legend.overlaps(bar) for bar in bars)  # the legend covers no bar


def test_runs_table_names_form_and_lam(tmp_path):
    appdata.make_runs_dir(tmp_path)
    table = viz.runs_table(runs.list_runs(tmp_path)).set_index("algo")
    manifest = json.loads((Path(table.loc["credit", "path"]) / "manifest.json").read_text())
    assert table.loc["credit", "lam"] == manifest["config"]["lam"]
    assert table.loc["credit", "form"] == manifest["config"].get("form", "teacher")
    assert table.loc[["grpo", "sd"], ["form", "lam"]].isna().all().all()


def test_show_returns_the_html_or_prints_a_table(exact, capsys):
    _, table, _ = exact
    heat = viz.TokenHeatmap.from_table(table, table["example_id"].iloc[0])
    assert heat.show(as_html=True) == heat.to_html() == heat._repr_html_()
    assert heat.show() is None and "sd_reward" in capsys.readouterr().out
