"""``creditlens compare`` on synthetic run directories, checked against independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from creditlens import cli, compare, runs, schema
from creditlens.credit import CreditSpec
from creditlens.stats import auroc

TOKENS = ["ok", "answer", ":", "c", "a", "h", "e", ".", "<|im_end|>"]  # labels: 3 generic, 4 specific, 2 generic
SPECIFIC_POSITIONS = {3, 4, 5, 6}
BATCH = (2, 3)  # num_prompts, num_generations


def _write_run(root, name, algo, seed, lam, scores, rng, with_tokens=True, feedback_axis=False):
    run_dir = root / name
    config = {"lam": lam, "num_prompts": BATCH[0], "num_generations": BATCH[1], "env_args": {"cue": 0.5}}
    runs.write_manifest(run_dir, {"name": name, "algo": algo, "env": "shortcut", "seed": seed, "config": config})
    for step, score in zip((0, 10, 20), scores, strict=True):
        runs.append_jsonl(run_dir / runs.EVAL, {"step": step, "score": score})
    for step in range(1, 21):
        runs.append_jsonl(run_dir / runs.METRICS, {"step": step, "response_length": float(rng.integers(5, 10)),
                                                   "time_step": float(rng.uniform(0.1, 1.0))})
    if not with_tokens:
        return run_dir
    for step in (5, 10):
        b, t, k = 6, len(TOKENS), 2
        teacher, student = -torch.rand(b, t, dtype=torch.float64) * 3, -torch.rand(b, t, dtype=torch.float64) * 3
        contrast = -torch.rand(b, k, t, dtype=torch.float64) * 3
        mask = torch.ones(b, t, dtype=torch.bool)
        mask[0, 2] = False
        table = schema.build_token_table(
            example_ids=[f"e{i}" for i in range(b)], prompt_ids=[f"p{i // 3}" for i in range(b)],
            token_ids=torch.arange(t).repeat(b, 1), tokens=[TOKENS] * b, teacher_lp=teacher, student_lp=student,
            contrast_lp=contrast, mask=mask,
            example_columns={"step": [step] * b, "sample": list(range(b))},
            token_columns={"advantage": torch.randn(b, t, dtype=torch.float64)},
            feedback_contrast_lp=-torch.rand(b, k, t, dtype=torch.float64) * 3 if feedback_axis else None, spec=CreditSpec(lam=lam or 0.0)
        )
        runs.write_step_tokens(run_dir, step, table)
    return run_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    scores = {}
    for algo, lam in (("sd", None), ("credit", 0.5)):
        for seed in range(3):
            s = [float(x) for x in rng.uniform(0, 1, 3)]
            scores[(algo, seed)] = s
            _write_run(root, f"{algo}-s{seed}", algo, seed, lam, s, rng)
    _write_run(root, "grpo-s0", "grpo", 0, None, [0.1, 0.2, 0.3], rng, with_tokens=False)
    return root, scores


def test_scores_and_intervals_match_scipy(study):
    root, scores = study
    result = compare.compare_runs([root])
    table = result.to_dataframe().set_index("group")
    for algo, group in (("sd", "sd"), ("credit", "credit teacher lam=0.5")):
        finals = [scores[(algo, s)][-1] for s in range(3)]
        bests = [max(scores[(algo, s)]) for s in range(3)]
        for column, values in (("final_score", finals), ("best_score", bests)):
            low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
            low, high = max(low, 0.0), min(high, 1.0)  # scores are pass rates: the interval is clipped to [0, 1]
            assert table.loc[group, column] == pytest.approx(np.mean(values))
            assert table.loc[group, f"{column}_low"] == pytest.approx(low)
            assert table.loc[group, f"{column}_high"] == pytest.approx(high)
    assert table.loc["grpo", "n_runs"] == 1 and math.isnan(table.loc["grpo", "final_score_low"])
    curve = result.curves.set_index(["group", "step"]).loc[("sd", 10)]
    at_10 = [scores[("sd", s)][1] for s in range(3)]
    assert curve["low"] == pytest.approx(max(0.0, stats.t.interval(0.95, 2, np.mean(at_10), stats.sem(at_10))[0]))
    assert curve["interval"] == "t"
    bounds = result.table[["final_score_low", "best_score_low", "final_score_high", "best_score_high"]].dropna()
    assert len(bounds) == 2 and bounds.ge(0).all(axis=None) and bounds.le(1).all(axis=None)


def test_tokens_and_seconds_to_target_by_hand(study):
    root, _ = study
    target = 0.5
    per_run = compare.compare_runs([root], target=target).per_run.set_index("run")
    for name in per_run.index:
        run = runs.load_run(root / name)
        evals, metrics = run.evals(), run.metrics()
        hits = [int(s) for s, v in zip(evals["step"], evals["score"], strict=True) if v >= target]
        row = per_run.loc[name]
        if not hits or min(hits) == 0:  # a run already at the target before training never "reached" it
            assert math.isnan(row["tokens_to_target"])
            continue
        before = [m for m in metrics.to_dict("records") if m["step"] <= min(hits)]
        assert row["tokens_to_target"] == pytest.approx(sum(m["response_length"] * 6 for m in before))
        assert row["seconds_to_target"] == pytest.approx(sum(m["time_step"] for m in before))


def test_generic_share_and_auroc_by_hand(study):
    root, _ = study
    per_run = compare.compare_runs([root]).per_run.set_index("run")
    table = runs.load_run(root / "credit-s1").tokens()
    counted = table[table["mask"]]
    generic = credit = 0.0
    for sd, shortcut in zip(counted["sd_reward"], counted["shortcut"], strict=True):
        if sd >= 0.05:  # moved up by the feedback: its generic part is the shortcut credit, within [0, sd]
            generic, credit = generic + min(max(shortcut, 0.0), sd), credit + sd
    assert per_run.loc["credit-s1", "generic_share"] == pytest.approx(generic / credit)
    is_specific = counted["position"].isin(SPECIFIC_POSITIONS).to_numpy()
    for column in ("sd_reward", "credit_reward", "specific", "advantage"):
        values = counted[column].to_numpy()
        for transform, key in ((lambda v: v, f"auroc_{column}"), (np.abs, f"auroc_abs_{column}")):
            v = transform(values)
            pairs = list(itertools.product(v[is_specific], v[~is_specific]))
            brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
            assert per_run.loc["credit-s1", key] == pytest.approx(brute)
    assert math.isnan(per_run.loc["grpo-s0", "auroc_sd_reward"])
    assert per_run.loc["credit-s1", "auroc_abs_own"] == per_run.loc["credit-s1", "auroc_abs_credit_reward"]
    assert per_run.loc["sd-s0", "auroc_own"] == per_run.loc["sd-s0", "auroc_sd_reward"]


def test_generic_share_checked_against_the_environment_labels(study):
    root, _ = study
    row = compare.compare_runs([root]).per_run.set_index("run").loc["credit-s0"]
    counted = runs.load_run(root / "credit-s0").tokens().query("mask")
    moved = counted[counted["sd_reward"] >= 0.05]
    fraction = moved["shortcut"].clip(lower=0.0).clip(upper=moved["sd_reward"]) / moved["sd_reward"]
    generic = ~moved["position"].isin(SPECIFIC_POSITIONS)
    assert row["label_generic_share"] == pytest.approx(moved.loc[generic, "sd_reward"].sum() / moved["sd_reward"].sum())
    pairs = list(itertools.product(fraction[generic], fraction[~generic]))
    assert row["generic_auroc"] == pytest.approx(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs))


def test_auroc_edge_cases():
    assert auroc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auroc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert math.isnan(auroc([1, 2], [True, True]))


def test_group_label_names_every_form(tmp_path):
    labels = []
    for name, config in (("a", {"lam": 0.5}), ("b", {"lam": 0.5, "form": "teacher"}),
                         ("c", {"lam": 1.0, "form": "shortcut"})):
        runs.write_manifest(tmp_path / name, {"name": name, "algo": "credit", "env": "shortcut", "config": config})
        labels.append(compare.group_label(runs.load_run(tmp_path / name)))
    assert labels == ["credit teacher lam=0.5", "credit teacher lam=0.5", "credit shortcut lam=1"]


def test_markdown_shows_the_feedback_generic_share_only_when_logged(study, tmp_path):
    rng = np.random.default_rng(1)
    _write_run(tmp_path, "sd-s0", "sd", 0, None, [0.1, 0.2, 0.3], rng)
    _write_run(tmp_path, "credit-s0", "credit", 0, 0.5, [0.1, 0.2, 0.4], rng, feedback_axis=True)
    lines = compare.compare_runs([tmp_path]).to_markdown().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {cells[2]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    column = header.index("feedback generic share")
    assert header[column - 1] == "generic share" and len(lines[1].split("---")) - 1 == len(header)
    counted = runs.load_run(tmp_path / "credit-s0").tokens().query("mask")
    moved = counted[counted["sd_reward"] >= 0.05]
    generic = np.minimum(np.maximum(moved["feedback_shortcut"], 0), moved["sd_reward"]).sum()
    assert rows["credit teacher lam=0.5"][column] == f"{generic / moved['sd_reward'].sum():.3f}"
    assert rows["sd"][column] == "-" and all(len(cells) == len(header) for cells in rows.values())
    assert "feedback generic share" not in compare.compare_runs([study[0]]).to_markdown()


def test_cli_writes_table_and_figures(study, tmp_path, capsys):
    root, _ = study
    out = tmp_path / "report"
    assert cli.main(["compare", str(root), "--out", str(out), "--target", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "credit teacher lam=0.5" in printed and "| sd | 3 |" in printed
    for name in ("comparison.csv", "comparison.parquet", "comparison.md", "runs.csv", "curves.csv",
                 "learning_curves.png", "credit_histograms.png", "credit_auroc.png"):
        assert (out / name).stat().st_size > 0
    assert pd.read_parquet(out / "comparison.parquet")["n_runs"].sum() == 7
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "plain.txt").write_text("x")  # the mode any file written here gets under this umask
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes.values()) == {(tmp_path / "plain.txt").stat().st_mode & 0o777}, modes
    assert cli.main(["compare", str(tmp_path / "nothing"), "--out", str(out)]) == 2


# ---- grouping: what makes runs comparable, and the one-line refusals ----


def _tiny_run(root, name, algo="sd", seed=0, env="shortcut", model="m", scores=(0.2, 0.4), **config):
    runs.write_manifest(root / name, {"name": name, "algo": algo, "env": env, "model": model, "seed": seed,
                                      "config": {"lam": 0.5, "n_contrast": 2, "max_steps": 10, **config}})
    for step, score in zip((0, 10), scores, strict=True):
        runs.append_jsonl(root / name / runs.EVAL, {"step": step, "score": score, "n": 20})
    return root / name


def test_groups_never_mix_environments_models_or_configs(tmp_path):
    _tiny_run(tmp_path, "a-s0", seed=0)
    _tiny_run(tmp_path, "a-s1", seed=1, log_tokens_every=7)  # bookkeeping: not part of the config hash
    _tiny_run(tmp_path, "science-s0", env="science")
    _tiny_run(tmp_path, "other-model-s0", model="m2")
    _tiny_run(tmp_path, "longer-s0", max_steps=20)
    _tiny_run(tmp_path, "k1-s0", n_contrast=1)
    _tiny_run(tmp_path, "credit-s0", algo="credit")
    _tiny_run(tmp_path, "credit-lam1-s0", algo="credit", lam=1.0)
    table = compare.compare_runs([tmp_path]).table
    assert len(table) == 7 and table["n_runs"].tolist().count(2) == 1
    pair = table[table["n_runs"] == 2].iloc[0]
    assert pair["seeds"] == 2 and pair["env"] == "shortcut" and pair["model"] == "m" and pair["K"] == 2
    assert table["group"].is_unique and not table["env"].astype(str).str.contains("|", regex=False).any()
    hashes = {compare.group_key(runs.load_run(tmp_path / n))["config"] for n in ("a-s0", "a-s1", "longer-s0")}
    assert len(hashes) == 2
    pooled = compare.compare_runs([tmp_path], pool=True)
    assert pooled.table.set_index("method").loc["sd [K=2]", "n_runs"] == 5  # a x2, science, other model, longer
    assert "Pooled" in pooled.to_markdown() and "Pooled" not in compare.compare_runs([tmp_path]).to_markdown()
    assert "| sd [K=2] | 2 (5 runs) |" in pooled.to_markdown()  # seeds 0 and 1; the interval is over 5 runs


def test_manifests_written_before_trls_names_group_with_new_ones(tmp_path):
    """An old manifest (teacher, include_feedback, trl: {...}) hashes like a new one with TRL's names;
    a different value under either spelling still separates them."""
    old = dict(teacher="ema", include_feedback=True, save_every=3, tensorboard=False, gradient_checkpointing=False,
               trl={"beta": 0.1})
    new = dict(teacher_model_kind="ema", include_environment_feedback=True, save_steps=5, report_to=[],
               activation_checkpointing=True, beta=0.1)
    _tiny_run(tmp_path, "old-s0", **old)
    _tiny_run(tmp_path, "new-s1", seed=1, **new)
    _tiny_run(tmp_path, "base-s0", **{**new, "teacher_model_kind": "base"})
    keys = {n: compare.group_key(runs.load_run(tmp_path / n))["config"] for n in ("old-s0", "new-s1", "base-s0")}
    assert keys["old-s0"] == keys["new-s1"] != keys["base-s0"]


def test_a_group_name_says_which_config_field_differs(tmp_path):
    _tiny_run(tmp_path, "w1-s0", distillation_weight=1.0)
    _tiny_run(tmp_path, "w05-s0", distillation_weight=0.5, log_tokens_every=5)  # bookkeeping: not named
    _tiny_run(tmp_path, "credit-s0", algo="credit", distillation_weight=1.0)
    for name, n in (("long-a-s0", 20), ("long-b-s0", 21)):  # differences too long to name: the config hash
        _tiny_run(tmp_path, name, env="science", env_args={"templates": ["readout"] * n})
    per_run = compare.compare_runs([tmp_path]).per_run.set_index("run")
    assert per_run.loc["w1-s0", "method"] == "sd [distillation_weight=1.0]"
    assert per_run.loc["w05-s0", "method"] == "sd [distillation_weight=0.5]"
    assert per_run.loc["credit-s0", "method"] == "credit teacher lam=0.5"  # one config among its method's runs
    for name in ("long-a-s0", "long-b-s0"):
        digest = compare.group_key(runs.load_run(tmp_path / name))["config"]
        assert per_run.loc[name, "method"] == f"sd [config={digest}]"


def test_single_seed_pass_rate_gets_a_wilson_interval_inside_unit_range(tmp_path):
    _tiny_run(tmp_path, "a-s0", scores=(0.0, 1.0))
    row = compare.compare_runs([tmp_path]).table.iloc[0]
    z = stats.norm.ppf(0.975)
    centre = (1 + z * z / 40) / (1 + z * z / 20)
    half = z / (1 + z * z / 20) * math.sqrt(z * z / 1600)
    assert row["interval"] == "wilson" and row["final_score_high"] == pytest.approx(1.0)
    assert row["final_score_low"] == pytest.approx(centre - half)
    curves = compare.compare_runs([tmp_path]).curves.set_index("step")  # each eval of a one-seed curve: Wilson
    assert curves["interval"].tolist() == ["wilson", "wilson"] and curves.loc[0, "low"] == 0.0
    assert (curves.loc[10, "low"], curves.loc[10, "high"]) == pytest.approx((centre - half, 1.0))
    text = compare.compare_runs([tmp_path], confidence=0.9).to_markdown()
    assert "the 90% Wilson interval of the final pass rate" in text and "none for the best score" in text


def test_a_run_that_starts_at_the_target_never_reaches_it_at_step_zero(tmp_path):
    _tiny_run(tmp_path, "flat-s0", scores=(0.0, 0.0))
    _tiny_run(tmp_path, "flat-s1", seed=1, scores=(0.0, 0.0))
    row = compare.compare_runs([tmp_path]).table.iloc[0]
    assert row["reached_target"] == 0 and math.isnan(row["tokens_to_target"])


@pytest.mark.parametrize("case", ["twice", "symlink twice", "dangling", "loop", "cycle", "duplicate eval", "same seed"])
def test_refusals_are_one_line_errors(tmp_path, capsys, case):
    root = tmp_path / "runs"
    run = _tiny_run(root, "a-s0")
    given = [root]
    if case == "twice":
        given = [root, run]
    elif case == "symlink twice":
        (tmp_path / "link").symlink_to(run)
        given = [root, tmp_path / "link"]
    elif case == "dangling":
        (root / "gone").symlink_to(tmp_path / "nowhere")
    elif case == "loop":
        (root / "up").symlink_to(root)
    elif case == "cycle":
        (root / "x").symlink_to(root / "y")
        (root / "y").symlink_to(root / "x")
    elif case == "duplicate eval":
        runs.append_jsonl(run / runs.EVAL, {"step": 10, "score": 0.5})
    else:
        _tiny_run(root, "b-s0")
    expected = {"twice": "the same run as", "symlink twice": "the same run as", "dangling": "dangling symlink",
                "loop": "loops back", "cycle": "a symlink loop", "duplicate eval": "eval.jsonl:3: step 10 was already evaluated on line 2",
                "same seed": "share seed 0"}[case]
    assert cli.main(["compare", *map(str, given), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "report").exists()


def test_a_symlinked_run_is_followed(tmp_path):
    _tiny_run(tmp_path / "elsewhere", "a-s1", seed=1)
    _tiny_run(tmp_path / "runs", "a-s0")
    (tmp_path / "runs" / "a-s1").symlink_to(tmp_path / "elsewhere" / "a-s1")
    assert compare.compare_runs([tmp_path / "runs"]).table["seeds"].tolist() == [2]
