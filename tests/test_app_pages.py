"""Every dashboard page driven by Streamlit's AppTest on fixture runs and scored sets from the exact model.

Shown values are checked against independent computations: the exact model's log-probs recomputed
from the prompt, feedback and response the page shows, and the contrast log-probs stored in the table.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from creditlens import credit, runs, schema, viz

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import appdata  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app"
PAGES = {
    "runs": APP / "Runs.py",
    "tokens": APP / "pages" / "1_Token_credit.py",
    "decomposition": APP / "pages" / "2_Decomposition.py",
    "pmi": APP / "pages" / "3_pMI_check.py",
    "live": APP / "pages" / "4_Live_scoring.py",
}
SPAN = re.compile(r'<span class="cl-token" data-position="(\d+)" data-value="([^"]+)" title="([^"]*)"[^>]*>([^<]*)</span>')


def run_page(name: str, root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("CREDITLENS_RUNS_DIR", str(root))
    return AppTest.from_file(str(PAGES[name]), default_timeout=30).run()


def spans(at: AppTest, i: int = 0) -> list[tuple[int, float, str, str]]:
    found = SPAN.findall(at.html[i].proto.body)
    return [(int(p), float(v), html.unescape(t), html.unescape(text)) for p, v, t, text in found]


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def shown_triple(at: AppTest) -> tuple[int, int, list[int]]:
    """(input x, feedback f, response ids) parsed from the prompt and feedback the page shows and the
    token texts of its heatmap."""
    prompt, feedback = (c.value for c in at.code[:2])
    x = int(re.search(r"input (\d+)", prompt).group(1))
    f = int(re.search(r"#(\d+)", feedback).group(1))
    texts = [text.replace("\u21b5", "") for *_, text in spans(at)]
    return x, f, [appdata.WORDS.index(text) for text in texts]


def response_box(at: AppTest):
    """The sidebar's Response select box (its key names the source shown)."""
    return next(box for box in at.sidebar.selectbox if box.label == "Response")


def count(at: AppTest, element_type: str) -> int:
    """Number of elements of ``element_type`` (e.g. "vega_lite_chart", "image") anywhere in the page."""
    def walk(node) -> int:
        own = int(getattr(node, "type", None) == element_type)
        return own + sum(walk(child) for child in getattr(node, "children", {}).values())
    return walk(at._tree)


def chart_protos(at: AppTest) -> list:
    """The protos of every Vega-Lite chart of the page (spec and Arrow datasets)."""
    def walk(node) -> list:
        own = [node.proto] if getattr(node, "type", None) == "vega_lite_chart" else []
        return own + [p for child in getattr(node, "children", {}).values() for p in walk(child)]
    return walk(at._tree)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app")
    appdata.make_runs_dir(root / "runs")
    appdata.make_scored_dir(root / "scored")
    return root


def test_runs_page_lists_runs_and_plots_curves(data, monkeypatch):
    at = run_page("runs", data, monkeypatch)
    no_exception(at)
    table = at.dataframe[0].value
    assert sorted(table["algo"]) == ["credit", "grpo", "sd"]
    for run, best, steps in zip(table["run"], table["best_score"], table["steps"], strict=True):
        lines = (data / "runs" / run / "eval.jsonl").read_text().splitlines()
        assert best == pytest.approx(max(json.loads(line)["score"] for line in lines))
        assert steps == max(json.loads(line)["step"] for line in lines)
    assert [s.value for s in at.subheader] == ["eval:score", "train:reward"]
    assert count(at, "vega_lite_chart") == 2
    at.multiselect(key="curves").set_value(["train:loss"]).run()
    no_exception(at)
    assert [s.value for s in at.subheader] == ["train:loss"]
    assert count(at, "vega_lite_chart") == 1


def test_runs_page_shows_one_environment_at_a_time_and_calls_out_collapses(tmp_path, monkeypatch):
    root = appdata.make_runs_dir(tmp_path / "runs")
    for name, best, final in (("science-sd-s0", 0.55, 0.12), ("science-sd-s1", 0.5, 0.45)):
        runs.write_manifest(root / name, {"name": name, "algo": "sd", "env": "science", "model": "m",
                                          "seed": int(name[-1]), "config": {"max_steps": 6}})
        for step, score in ((0, 0.3), (2, best), (6, final)):
            runs.append_jsonl(root / name / runs.EVAL, {"step": step, "score": score})
    at = run_page("runs", tmp_path, monkeypatch)
    no_exception(at)
    assert at.radio(key="env").options == ["science", "shortcut"]
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["science-sd-s0", "science-sd-s1"]
    assert table["group"].nunique() == 1  # two seeds of one method, as creditlens compare groups them
    assert len(at.warning) == 1 and "science-sd-s0" in at.warning[0].value and "0.55 → 0.12" in at.warning[0].value
    at.radio(key="env").set_value("shortcut").run()
    no_exception(at)
    table = at.dataframe[0].value
    assert sorted(table["algo"]) == ["credit", "grpo", "sd"] and len(at.warning) == 0
    assert table.loc[table["algo"] != "credit", "form"].eq("").all()  # blanks, not "None"
    assert table.loc[table["algo"] != "credit", "lam"].isna().all()


def test_token_page_heatmap_matches_exact_model(data, monkeypatch):
    at = run_page("tokens", data, monkeypatch)
    no_exception(at)
    model = appdata.exact_model()
    x, f, ids = shown_triple(at)
    expected_sd = model.teacher_logprobs(x, f, ids) - model.student_logprobs(x, ids)
    shown = spans(at)
    assert len(shown) == model.length
    assert [p for p, *_ in shown] == list(range(model.length))
    np.testing.assert_allclose([v for _, v, _, _ in shown], expected_sd, rtol=1e-5, atol=1e-6)
    assert "".join(appdata.WORDS[i] for i in ids).strip() == at.code[2].value.strip()
    assert f"sd_reward = {expected_sd[0]:+.4f}" in shown[0][2]
    assert "cl-legend" in at.html[0].proto.body
    assert at.metric[0].value == f"{expected_sd.sum():+.3f}"

    at.sidebar.selectbox(key="component").set_value("teacher_logprob").run()
    no_exception(at)
    np.testing.assert_allclose([v for _, v, _, _ in spans(at)], model.teacher_logprobs(x, f, ids), rtol=1e-5)

    at.sidebar.selectbox(key="second").set_value("student_logprob").run()
    no_exception(at)
    assert len(at.html) == 2
    np.testing.assert_allclose([v for _, v, _, _ in spans(at, 1)], model.student_logprobs(x, ids), rtol=1e-5)


def test_token_page_every_response_and_scored_source(data, monkeypatch):
    at = run_page("tokens", data, monkeypatch)
    options = response_box(at).options
    assert len(options) == 6
    response_box(at).set_value(5).run()
    no_exception(at)
    table = pd.read_parquet(data / "runs" / "credit-seed0" / "tokens" / "step_000010.parquet")
    expected = table.loc[table["sample"] == 5, "example_id"].iloc[0]
    assert f"example `{expected}`" in at.caption[0].value
    at.sidebar.radio(key="source_kind").set_value("Scored examples").run()
    no_exception(at)
    scored_ids = set(pd.read_parquet(data / "scored" / "tokens.parquet")["example_id"])
    assert {option.split(" ")[0] for option in response_box(at).options} == scored_ids  # this source's labels
    x, f, ids = shown_triple(at)
    model = appdata.exact_model(7)
    np.testing.assert_allclose([v for _, v, _, _ in spans(at)],
                               model.teacher_logprobs(x, f, ids) - model.student_logprobs(x, ids), rtol=1e-5, atol=1e-6)


def independent_parts(table: pd.DataFrame) -> pd.DataFrame:
    """specific and generic part of r_t recomputed from the stored contrast log-probs (mean pooling)."""
    baseline = np.array([np.mean(v) for v in table["contrast_logprobs"]])
    return table.assign(specific=table["teacher_logprob"] - baseline, shortcut=baseline - table["student_logprob"])


def test_decomposition_page(data, monkeypatch):
    at = run_page("decomposition", data, monkeypatch)
    no_exception(at)
    run_dir = sorted((data / "runs").iterdir())[0]
    step = max(int(p.stem.split("_")[1]) for p in (run_dir / "tokens").glob("*.parquet"))
    table = independent_parts(pd.read_parquet(run_dir / "tokens" / f"step_{step:06d}.parquet"))
    sd = table["specific"] + table["shortcut"]
    moved = table["mask"] & (sd >= 0.05)  # tokens the feedback raises; generic part: shortcut within [0, sd]
    generic = np.minimum(table["shortcut"].clip(lower=0), sd)
    assert moved.sum() > 0 and at.metric[0].value == f"{generic[moved].sum() / sd[moved].sum():.1%}"
    assert at.metric[1].value == f"{table['specific'].mean():+.3f}"
    top = at.dataframe[0].value
    by_token = generic[moved].groupby(table.loc[moved, "token"]).sum()
    expected = by_token[by_token > 0].sort_values(ascending=False, kind="stable")
    assert list(top["token"]) == list(expected.index[: len(top)])
    np.testing.assert_allclose(top["generic_sum"], expected.iloc[: len(top)])
    assert count(at, "vega_lite_chart") == 2
    scatter = json.loads(chart_protos(at)[0].spec)
    assert scatter["encoding"]["color"]["field"] == "label"  # the fixture tables carry ground-truth labels
    assert any("ground-truth token label" in c.value for c in at.caption)
    at.sidebar.selectbox(key="step_decomposition").set_value("all steps").run()
    no_exception(at)
    assert "all steps" in at.caption[0].value and "12 responses" in at.caption[0].value


def test_pmi_page_gap_is_zero_on_exact_model(data, monkeypatch):
    at = run_page("pmi", data, monkeypatch)
    no_exception(at)
    frame = at.dataframe[0].value
    expected = pd.read_parquet(data / "scored" / "summary.parquet")
    assert len(frame) == len(expected) == 8
    np.testing.assert_allclose(frame["pmi"], expected["pmi"])
    np.testing.assert_allclose(frame["sd_sum"], expected["sd_sum"])
    np.testing.assert_allclose(frame["gap_se"], expected["pmi_se"])
    assert np.abs(frame["gap"]).max() < 1e-9
    assert at.metric[0].value == "8 of 8"
    assert at.metric[3].value == "100%"
    assert count(at, "image") == 1
    at.sidebar.radio(key="source_kind_pmi").set_value("Run").run()
    no_exception(at)
    assert "No pMI estimate" in at.info[0].value and "--gap-samples M" in at.info[0].value
    assert count(at, "vega_lite_chart") == 1


def test_pmi_page_with_part_of_the_examples_estimated(tmp_path, monkeypatch):
    """As after `creditlens demo`: a pMI for some examples only, ids that sort differently as text."""
    scored = appdata.make_scored_dir(tmp_path / "scored")
    summary = pd.read_parquet(scored / "summary.parquet")
    summary["example_id"] = [f"sample{i + 1}" for i in range(len(summary))]
    summary.loc[summary.index[3:], ["pmi", "pmi_se"]] = np.nan
    summary["pmi"] += [0.5, -0.25, 0.0] + [np.nan] * (len(summary) - 3)
    summary.to_parquet(scored / "summary.parquet")
    at = run_page("pmi", tmp_path, monkeypatch)
    no_exception(at)
    assert at.metric[0].value == f"3 of {len(summary)}"
    assert at.metric[1].value == "0.25" and at.metric[2].value == "0.5"
    assert at.metric[3].value == "33%"  # |gap| 0.5 and 0.25 > 2 x 0.01; only 0 is within
    frame = at.dataframe[0].value
    assert list(frame["example_id"]) == ["sample1", "sample2", "sample3"]
    np.testing.assert_allclose(frame["gap"], [-0.5, 0.25, 0.0], atol=1e-9)


def test_pmi_page_sorts_bars_by_number(tmp_path, monkeypatch):
    scored = appdata.make_scored_dir(tmp_path / "scored")
    (scored / "summary.parquet").unlink()
    table = pd.read_parquet(scored / "tokens.parquet")
    ids = {old: f"sample{i}" for i, old in enumerate(sorted(table["example_id"].unique()), start=3)}
    table.assign(example_id=table["example_id"].map(ids)).to_parquet(scored / "tokens.parquet")
    at = run_page("pmi", tmp_path, monkeypatch)
    no_exception(at)
    chart = chart_protos(at)[0]
    assert json.loads(chart.spec)["encoding"]["x"]["sort"] is None  # bars in data order
    shown = pa.ipc.open_stream(chart.datasets[0].data.data).read_all().to_pandas()
    assert list(shown["example"]) == [f"sample{i}" for i in range(3, 3 + len(ids))]  # sample9 before sample10


def test_live_scoring_without_scoring_module(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "creditlens.scoring", None)
    at = run_page("live", data, monkeypatch)
    no_exception(at)
    assert "could not be imported" in at.warning[0].value


def test_empty_directory_messages(tmp_path, monkeypatch):
    for name in ("runs", "tokens", "decomposition", "pmi"):
        at = run_page(name, tmp_path, monkeypatch)
        no_exception(at)
        assert any("No run directories" in i.value for i in at.info), name


def test_missing_directory_message(tmp_path, monkeypatch):
    at = run_page("tokens", tmp_path / "nowhere", monkeypatch)
    no_exception(at)
    assert "does not exist" in at.error[0].value
    (tmp_path / "notes.txt").write_text("x")
    at = run_page("runs", tmp_path / "notes.txt", monkeypatch)
    no_exception(at)
    assert "is a file, not a directory" in at.error[0].value and ".parquet" in at.error[0].value


@pytest.fixture
def broken(tmp_path) -> Path:
    root = appdata.make_runs_dir(tmp_path, steps=(0,), batch_size=4)
    (tmp_path / "credit-seed0" / "tokens" / "step_000000.parquet").write_bytes(b"PAR1 not really parquet")
    table = pd.read_parquet(tmp_path / "sd-seed0" / "tokens" / "step_000000.parquet").drop(columns=["sd_reward"])
    pq.write_table(pa.Table.from_pandas(table), tmp_path / "sd-seed0" / "tokens" / "step_000000.parquet")
    (tmp_path / "bad-run").mkdir()
    (tmp_path / "bad-run" / "manifest.json").write_text("{not json")
    return root


def test_corrupt_parquet_missing_column_and_bad_manifest(broken, monkeypatch):
    at = run_page("tokens", broken, monkeypatch)
    no_exception(at)
    assert any("Skipped a run directory" in w.value and "bad-run" in w.value for w in at.warning)
    assert "not a readable Parquet file" in at.error[0].value
    at.sidebar.selectbox(key="run").set_value(str(broken / "sd-seed0")).run()
    no_exception(at)
    assert "missing required column" in at.error[0].value and "sd_reward" in at.error[0].value
    at.sidebar.selectbox(key="run").set_value(str(broken / "grpo-seed0")).run()
    no_exception(at)
    assert len(spans(at)) == appdata.exact_model().length
    runs_page = run_page("runs", broken, monkeypatch)
    no_exception(runs_page)
    assert len(runs_page.dataframe[0].value) == 3


def test_scored_set_without_contrasts(tmp_path, monkeypatch):
    appdata.make_scored_dir(tmp_path / "k0", contrasts=False)
    tokens = run_page("tokens", tmp_path, monkeypatch)
    no_exception(tokens)
    assert tokens.sidebar.selectbox(key="component").options == ["sd_reward", "teacher_logprob", "student_logprob"]
    empty = [c.value for c in tokens.sidebar.caption if c.value.startswith("No values here")]
    assert empty == ["No values here (all NaN): credit_reward, specific, shortcut, contrast_baseline "
                     "(scored without contrasts, K = 0)"]
    assert len(spans(tokens)) == appdata.exact_model().length
    decomposition = run_page("decomposition", tmp_path, monkeypatch)
    no_exception(decomposition)
    assert "--contrast K" in decomposition.error[0].value and "`k0`" in decomposition.error[0].value


def test_live_scoring_with_tiny_model_matches_plain_forward(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    scoring = pytest.importorskip("creditlens.scoring")
    from creditlens import models

    at = run_page("live", tmp_path, monkeypatch)
    no_exception(at)
    assert "Press **Score**" in at.info[0].value
    at.text_input(key="model").set_value("tiny")
    at.text_area(key="contrasts").set_value("What is the capital of France?")
    assert at.radio(key="form").value == credit.DEFAULT_FORM  # the library's default form is preselected
    at.radio(key="form").set_value("shortcut")
    at.button[0].click().run()
    no_exception(at)
    shown = spans(at)

    model, tokenizer = models.load("tiny")
    prompt, feedback, response = (at.text_area(key=k).value for k in ("prompt", "feedback", "response"))
    scorer = scoring.Scorer(model, tokenizer)
    built = scorer.build(dict(prompt=prompt, feedback=feedback, response=response, prompt_id="live"))
    ids = built.response

    def plain(context: list[int]) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.tensor([context])).logits[0, -len(ids) - 1 : -1].double()
        return logits.log_softmax(-1).gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1).numpy()

    expected = plain(built.teacher_ids) - plain(built.student_ids)
    assert len(shown) == len(ids) == len(tokenizer(response, add_special_tokens=False).input_ids)
    np.testing.assert_allclose([v for _, v, _, _ in shown], expected, atol=1e-4)
    assert at.metric[0].value == f"{expected.sum():+.3f}"
    assert "form = shortcut" in at.caption[0].value and "lambda = 0.5" in at.caption[0].value
    values = at.dataframe[0].value  # Token values: shortcut form = specific + (1 - lam) * shortcut
    assert [m.label for m in at.metric] == ["Σ sd_reward", "Σ credit_reward", "Σ specific", "Σ shortcut"]
    for metric, column in zip(at.metric[1:], ("credit_reward", "specific", "shortcut"), strict=True):
        assert metric.value == f"{values[column].sum():+.3f}"  # the same four sums as the Token credit page
    np.testing.assert_allclose(values["credit_reward"], values["specific"] + 0.5 * values["shortcut"], atol=1e-6)
    at.selectbox(key="live_component").set_value("specific").run()
    no_exception(at)
    assert len(spans(at)) == len(ids)


def test_navigation_through_every_page_and_a_single_file_root(data, monkeypatch):
    at = run_page("runs", data, monkeypatch)
    for name, path in PAGES.items():
        at.switch_page(str(path.relative_to(APP))).run()
        no_exception(at)
        assert at.title[0].value == {"runs": "Runs", "tokens": "Token credit", "decomposition": "Decomposition",
                                     "pmi": "pMI check", "live": "Live scoring"}[name]
    single = run_page("tokens", data / "runs" / "sd-seed0" / "tokens" / "step_000000.parquet", monkeypatch)
    no_exception(single)
    assert len(spans(single)) == appdata.exact_model().length


def test_token_page_opens_on_a_response_with_counted_tokens(tmp_path, monkeypatch):
    """A passed sample has no feedback (every token masked): the page starts on the first one that counts."""
    root = tmp_path / "runs"
    appdata.make_runs_dir(root)
    run_dir = next(p.parent for p in sorted(root.rglob("manifest.json")))
    run = runs.load_run(run_dir)
    step = run.token_steps()[0]
    table = run.tokens(step)
    first = table["example_id"].iloc[0]
    masked = table["example_id"] == first
    table.loc[masked, "mask"] = False
    table.loc[masked, list(schema.REWARD_COLUMNS)] = 0.0
    for other in run.token_steps():
        if other != step:
            runs.token_path(run_dir, other).unlink()
    runs.write_step_tokens(run_dir, step, table)
    monkeypatch.setenv("CREDITLENS_RUNS_DIR", str(run_dir))
    at = AppTest.from_file(str(PAGES["tokens"]), default_timeout=30).run()
    no_exception(at)
    shown = spans(at)
    assert shown and all(value != 0 for _, value, _, _ in shown)
    assert response_box(at).value == 1


def test_token_page_robust_scale_chat_prompt_and_settings(tmp_path, monkeypatch):
    """One outlier token: the default scale ends at the 95th percentile of |value| (true values stay in
    data-value); a chat prompt shows as chat messages; form and lambda of the table are shown."""
    scored = appdata.make_scored_dir(tmp_path / "scored")
    table = pd.read_parquet(scored / "tokens.parquet")
    first = table["example_id"] == sorted(table["example_id"].unique())[0]
    table.loc[first & (table["position"] == 0), "sd_reward"] = 50.0
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "input 3?"}]
    table["prompt"] = json.dumps(chat)
    table["advantage"] = np.nan  # all NaN: listed as having no values, not as absent
    table["form"] = next(form for form in credit.FORMS if form != credit.DEFAULT_FORM)  # read from the table
    table.to_parquet(scored / "tokens.parquet")
    at = run_page("tokens", tmp_path, monkeypatch)
    no_exception(at)
    rows = table[first].sort_values("position")
    values = rows["sd_reward"].where(rows["mask"]).to_numpy()
    shown = spans(at)
    np.testing.assert_allclose([v for _, v, _, _ in shown], values, rtol=1e-5)
    magnitudes = np.sort(np.abs(values[np.isfinite(values)]))
    legend = at.html[0].proto.body.split('class="cl-heatmap"')[0]
    if len(magnitudes) < viz.MIN_CLIPPED:  # a short response keeps its full range: its colours keep their order
        assert "+50" in legend and "beyond" not in legend
    else:
        robust = magnitudes[int(np.floor(0.95 * (len(magnitudes) - 1)))]  # an observed value, below the outlier
        assert f"{robust:+.3g}" in legend and "1 token(s) beyond" in legend and "+50" not in legend
    at.sidebar.checkbox(key="robust").uncheck().run()
    legend = at.html[0].proto.body.split('class="cl-heatmap"')[0]
    assert "+50" in legend and "beyond" not in legend
    assert [m.proto.name for m in at.get("chat_message")] == ["user", "user"]  # system shown with its own avatar
    assert "Be brief." in [t.value for t in at.text] and "input 3?" in [t.value for t in at.text]
    assert f"form = {table['form'].iloc[0]}" in at.caption[0].value and "lambda = 0.5" in at.caption[0].value
    assert [c.value for c in at.sidebar.caption if "advantage" in c.value] == ["No values here (all NaN): advantage"]
