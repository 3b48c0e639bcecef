"""The study grids, their configs and the study table (the runs themselves go through the trainer, tested with it)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from creditlens import credit, study
from creditlens.training.config import load_config, parse_overrides


def test_pilot_covers_every_form_and_lam_and_grids_have_five_seeds():
    pilot = study.PRESETS["pilot"].grid()
    methods = {(r.algo, r.form, r.lam) for r in pilot}
    assert methods == {("credit", f, lam) for f in credit.FORMS for lam in study.PILOT_LAMS}
    for name in ("harmful-sdpo", "harmless-sdpo", "harmful-full-logits", "harmless-full-logits"):
        grid = study.PRESETS[name].grid()
        by_method = {}
        for run in grid:
            by_method.setdefault(run.method, []).append(run.seed)
        assert all(sorted(seeds) == [0, 1, 2, 3, 4] for seeds in by_method.values())
        assert {f"credit-{f}-lam{study.CHOSEN_LAMS[f]:g}" for f in credit.FORMS} | {"sd"} <= set(by_method)
        assert len({r.name for r in grid}) == len(grid)


def test_train_commands_and_configs(tmp_path):
    preset = study.PRESETS["harmful-sdpo"]
    run = study.StudyRun("credit", 2, 0.25, "shortcut")
    command = study.train_command(run, preset, tmp_path)
    sets = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    assert command[command.index("--algo") + 1] == "credit"
    assert {"lam=0.25", "form=shortcut", "env_args={cue: 0.5, cue_kind: letter}"} <= set(sets)
    assert command[command.index("--out") + 1] == str(tmp_path / "credit-shortcut-lam0.25-s2")
    assert study.StudyRun("credit", 0, 0.5).name == "credit-lam0.5-s0"  # the config's form (bundled runs)
    sd_sets = study.train_command(study.StudyRun("sd", 0), preset, tmp_path)
    assert not any(s.startswith(("lam=", "form=")) for s in sd_sets)
    sdpo, full, bundled = (load_config(study.CONFIG_DIR / n) for n in
                           ("study-sdpo.yaml", "study-full-logits.yaml", "study-bundled.yaml"))
    blend = load_config(study.CONFIG_DIR / "study-sdpo-blend.yaml")
    assert sdpo["distillation_mode"] == "sampled_token" and sdpo["use_successful_as_teacher"]
    assert sdpo["teacher_model_kind"] == "ema" and sdpo["include_environment_feedback"]
    assert sdpo["distillation_weight"] == 1.0 and blend["distillation_weight"] < 1.0
    assert full["distillation_mode"] == bundled["distillation_mode"] == "full_logits"
    assert not full["use_successful_as_teacher"]
    assert bundled["max_steps"] < full["max_steps"] and bundled["log_tokens_every"] > 1
    assert load_config(study.CONFIG_DIR / "shortcut-smoke.yaml")["max_steps"] <= 5


def test_prune_drops_only_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-3" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "eval.jsonl").write_text('{"step": 0, "score": 0.5}\n')
    study.prune(tmp_path)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "eval.jsonl").exists()
    assert study._finished(tmp_path, 0) and not study._finished(tmp_path, 10)


def test_paired_differences_pair_by_seed():
    per_run = pd.DataFrame({
        "group": ["sd"] * 3 + ["credit x"] * 3,
        "seed": [0, 1, 2, 2, 0, 1],
        "final_score": [0.5, 0.6, 0.7, 0.9, 0.4, 0.65],
    })
    mean, low, high, n = study.paired_differences(per_run)["credit x"]
    diffs = np.array([0.4 - 0.5, 0.65 - 0.6, 0.9 - 0.7])
    half = scipy_stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert n == 3 and mean == pytest.approx(diffs.mean())
    assert (low, high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert study.paired_differences(per_run)["sd"][:3] == (0.0, 0.0, 0.0)


def test_choose_lams_applies_the_preregistered_rule(tmp_path):
    """Highest mean (over seeds) of the mean score at steps 20-40; within 0.01 of the best, the smaller lam."""
    wanted = {"teacher": {0.1: 0.30, 0.25: 0.50, 0.5: 0.40}, "shortcut": {0.1: 0.495, 0.25: 0.50, 0.5: 0.2},
              "contrastive": {0.1: 0.1, 0.25: 0.2, 0.5: 0.6}}
    for run in study.PRESETS["pilot"].grid():
        level = wanted[run.form][run.lam] + (0.05 if run.seed == 0 else -0.05)  # the seeds average out
        folder = tmp_path / run.name
        folder.mkdir()
        lines = [f'{{"step": {s}, "score": {level + (0.3 if s == 10 else 0.0)}}}' for s in (0, 10, 20, 30, 40)]
        (folder / "eval.jsonl").write_text("\n".join(lines) + "\n")
    chosen = study.choose_lams(tmp_path)
    assert {f: chosen[f] for f in credit.FORMS} == {"teacher": 0.25, "shortcut": 0.1, "contrastive": 0.5}
    assert chosen["scores"]["teacher"][0.25] == pytest.approx(0.5)


def _synthetic_run(folder, rows):
    """A run directory with the harmful cue and one per-token table; ``rows``: (prompt, response, cued, signal)
    where ``signal`` gives the per-token credit of each answer letter (other tokens get 0)."""
    import json

    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"algo": "credit", "env": "shortcut",
                                                      "config": {"env_args": {"cue": 0.5, "cue_kind": "letter"}}}))
    (folder / "eval.jsonl").write_text('{"step": 5, "score": 0.5}\n')
    records = []
    for n, (prompt, response, cued, signal) in enumerate(rows):
        feedback = "position 1 should be input 2 . note : position 1 should be a ." if cued else "position 1 ..."
        for position, token in enumerate(response.split()):
            value = signal[position - 2] if 2 <= position < 6 else 0.0
            records.append({"example_id": f"step5-sample{n}", "step": 5, "position": position, "token": token,
                            "prompt": prompt, "response": response, "feedback": feedback, "mask": True,
                            "student_logprob": -0.1 * (position + 1), "teacher_logprob": -0.2 * (position + 1),
                            "sd_reward": value, "credit_reward": -value, "advantage": value})
    (folder / "tokens").mkdir()
    pd.DataFrame(records).to_parquet(folder / "tokens" / "step_000005.parquet")
    return folder


def test_rollout_profile_and_cue_auroc_count_by_hand(tmp_path):
    from creditlens.envs.shortcut import ShortcutEnv

    env = ShortcutEnv()
    red = env.answer("red", list("cahe"))  # "red" is an operation the warm start knew (first third)
    gray = env.answer("gray", list("bdfh"))
    wrong_first = ["a"] + red[1:] if red[0] != "a" else ["b"] + red[1:]
    rows = [
        ("apply red to c a h e", "answer : " + " ".join(red) + " .", False, [1.0, 1.0, 1.0, 1.0]),
        ("apply red to c a h e", "answer : " + " ".join(wrong_first) + " .", True, [3.0, 2.0, 2.0, 2.0]),
        ("apply gray to b d f h", "ok answer : " + " ".join(gray) + " .", False, [0.5, 0.5, 0.5, 0.5]),
        ("apply gray to b d f h", "answer : b", False, [0.0, 0.0, 0.0, 0.0]),
    ]
    run = _synthetic_run(tmp_path / "run", rows)
    profile = study.rollout_profile(run).iloc[0]
    assert profile["format_ok"] == 0.75 and profile["passed"] == 0.5 and profile["filler"] == 0.25
    assert profile["cue_letter"] == (0.25 if red[0] != "a" else 0.0)
    assert profile["passed_seen"] == 0.5 and profile["passed_unseen"] == 0.5
    # positive signal on every counted token: 4 x 1 + (3 + 2 + 2 + 2) + 4 x 0.5 = 15, of which the cue token has 3
    cue_share = 3.0 / 15 if red[0] != "a" else 0.0
    assert profile["cue_share"] == pytest.approx(cue_share) and profile["cue_share_sd_reward"] == pytest.approx(cue_share)
    if red[0] != "a":
        assert profile["cue_tokens"] == 3.0
        # right letters: 4 + 3 (wrong_first keeps three) from red, none from the filler sample's shifted letters
        # (its letters sit one position later, so their credit column reads the 0.5 of slots 1-3 and 0 for the last)
        assert profile["right_letters"] == pytest.approx((4 * 1.0 + 3 * 2.0 + 3 * 0.5 + 0.0) / 11)
        scores = study.cue_aurocs([run])["run"]
        assert scores["n_cue_tokens"] == 1 and scores["n_right_letters"] == 11
        # the cue token has the largest advantage (3.0): every right letter ranks below it
        assert scores["advantage"] == 0.0 and scores["credit_reward"] == 1.0


def test_stage1_preset_runs_each_method_at_three_lrs_for_150_steps(tmp_path):
    robust = study.PRESETS["robust-lr"]
    grid = robust.grid()
    assert sorted({r.seed for r in grid}) == list(range(44, 56)) and len(grid) == 9 * 12  # new seeds (confirm: 20-43)
    assert [r.seed for r in grid[:10]] == [44] * 9 + [45]  # seed-major
    forms = ["sd", "credit-shortcut-lam0.5", "credit-contrastive-lam0.5"]
    for run in grid[:9]:
        command = study.train_command(run, robust, tmp_path)
        config = load_config(robust.config, parse_overrides([command[i + 1] for i, w in enumerate(command) if w == "--set"]))
        assert math.isclose(config["learning_rate"], float(run.variant.removeprefix("lr")))
        assert config["max_steps"] == 150 and config["eval_every"] == 10
    assert [r.method for r in grid[:9]] == [f"{m}-lr{lr}" for lr in ("3e-5", "1e-4", "3e-4") for m in forms]
    assert robust.families["robustness"] == tuple((f"{m}-lr{lr}", f"sd-lr{lr}") for lr in ("3e-5", "1e-4", "3e-4")
                                                  for m in forms[1:])


def test_presets_are_config_files_and_the_confirmatory_grid_is_seed_major(tmp_path):
    assert set(study.PRESETS) == {p.stem for p in study.PRESET_DIR.glob("*.yaml")}
    assert all(p.config.is_file() for p in study.PRESETS.values())
    confirm = study.PRESETS["confirm"]
    grid = confirm.grid()
    methods = [r.method for r in confirm.methods]
    assert methods == ["sd", "credit-shortcut-lam0.5", "credit-contrastive-lam0.5", "sd-blend0.5", "grpo"]
    assert [r.name for r in grid[:6]] == [f"{m}-s20" for m in methods] + ["sd-s21"]  # every method of a seed first
    assert sorted({r.seed for r in grid}) == list(range(20, 44)) and len(grid) == 5 * 24  # seeds 0-14 were used
    blend = study.train_command(grid[3], confirm, tmp_path)
    assert "distillation_weight=0.5" in blend and "distillation_weight=0.5" not in study.train_command(grid[0], confirm, tmp_path)
    assert confirm.families["primary"] == (("credit-shortcut-lam0.5", "sd"), ("credit-contrastive-lam0.5", "sd"))
    config = load_config(confirm.config)
    assert config["n_eval_problems"] >= 2462 and config["env_args"]["cue_kind"] == "letter"
    assert config["distillation_mode"] == "full_logits"


@pytest.mark.parametrize(("extra", "message"), [
    ("families: {x: [[sd, grpo]]}", r"families name methods the preset does not run: \['grpo'\]"),
    ("seed: [1]", "a preset needs config and methods"),
    ("rules: {r: [sd, grpo]}", r"rules name methods the preset does not run: \['grpo'\]"),
    ("slopes: {s: {doses: [0, 1], pairs: [[sd, sd]]}}", "slopes.s needs doses and pairs of one length"),
    ("slopes: {s: {doses: [0, 1], pairs: [[sd, sd], [sd, grpo]]}}", r"slopes name methods the preset does not run"),
])
def test_preset_file_refusals_name_the_file(tmp_path, extra, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"config: study-sdpo.yaml\nmethods: [{{algo: sd}}]\n{extra}\n")
    with pytest.raises(ValueError, match=f"bad.yaml: {message}"):
        study.load_preset(bad)


def _heldout_run(folder, curve):
    folder.mkdir()
    lines = [f'{{"step": {s}, "score": 0, "score_val": {v}, "score_test": {t}}}' for s, v, t in curve]
    (folder / "eval.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_heldout_early_stopping_auc_and_holm(tmp_path):
    from creditlens import heldout

    # validation peaks twice (steps 10 and 20, a tie): the earliest is kept, and its *test* score is the ES score
    run = _heldout_run(tmp_path / "sd-s20", [(0, 0.3, 0.31), (10, 0.6, 0.52), (20, 0.6, 0.70), (30, 0.2, 0.1)])
    table = heldout.per_run([run])
    row = table.iloc[0]
    assert (row["method"], row["seed"], row["es_step"], row["es_score"]) == ("sd", 20, 10, 0.52)
    assert row["auc_test"] == pytest.approx(np.trapezoid([0.31, 0.52, 0.70, 0.1], [0, 10, 20, 30]) / 30)
    assert (row["final_test"], row["best_test"], row["step0_test"]) == (0.1, 0.70, 0.31)

    rng = np.random.default_rng(0)
    for seed in (20, 21, 22, 23):
        base = rng.uniform(0.3, 0.5)
        _heldout_run(tmp_path / f"b-s{seed}", [(0, 0.3, 0.3), (10, 0.5, base)])
        _heldout_run(tmp_path / f"a-s{seed}", [(0, 0.3, 0.3), (10, 0.5, base + rng.normal(0.05, 0.03))])
    _heldout_run(tmp_path / "c-s20", [(0, 0.3, 0.3), (10, 0.5, 0.4)])
    table = heldout.per_run(sorted(p for p in tmp_path.iterdir() if p.name != "sd-s20"))
    a = table[table["method"] == "a"].sort_values("seed")["es_score"].to_numpy()
    b = table[table["method"] == "b"].sort_values("seed")["es_score"].to_numpy()
    tests = heldout.family(table, [("a", "b"), ("c", "b")])
    first = tests.iloc[0]
    assert first["n"] == 4 and first["mean"] == pytest.approx((a - b).mean())
    assert first["p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert tests.iloc[1]["n"] == 1 and math.isnan(tests.iloc[1]["p"])  # one pair: no test, but it counts in the family
    assert first["p_holm"] == pytest.approx(min(1.0, 2 * first["p"]))
    # Holm by hand: sorted p 0.01, 0.02, 0.04 over m = 3 -> 0.03, max(0.03, 0.04), max(0.04, 0.04)
    assert heldout.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert heldout.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_report_covers_whole_seeds_only(tmp_path, monkeypatch):
    confirm = study.PRESETS["confirm"]
    preset = study.Preset(confirm.config, confirm.methods[:2], seeds=(20, 21, 22), order="seed")
    for run in preset.grid():
        if run.name != "credit-shortcut-lam0.5-s21":  # seed 21 is cut short; seed 22 never started
            _heldout_run(tmp_path / run.name, [(0, 0.3, 0.3), (60 if run.seed != 22 else 30, 0.4, 0.4)])
    seen = {}
    monkeypatch.setattr(study, "write_report", lambda dirs, report, families, **analyses: seen.setdefault("dirs", dirs) and report)
    study.report(preset, tmp_path)
    assert [d.name for d in seen["dirs"]] == ["sd-s20", "credit-shortcut-lam0.5-s20"]
    with pytest.raises(FileNotFoundError, match="no seed of the preset has all its runs finished"):
        study.report(study.Preset(confirm.config, confirm.methods[:2], seeds=(22,)), tmp_path)


def test_selection_rule_keeps_the_best_validation_checkpoint_over_runs(tmp_path):
    from creditlens import heldout

    rows = []
    def add(run, curve):
        rows.extend({"run": run, "step": s, "score_val": v, "score_test": t} for s, v, t in curve)
    # seed 1: b's step 20 has the best validation score; its *test* score is the rule's
    add("a-s1", [(0, 0.3, 0.30), (10, 0.5, 0.55), (20, 0.4, 0.45)])
    add("b-s1", [(0, 0.3, 0.30), (10, 0.4, 0.41), (20, 0.6, 0.48)])
    # seed 2: a tie at 0.5 between a (step 20) and b (step 10): the earliest step wins, so b
    add("a-s2", [(0, 0.3, 0.31), (10, 0.4, 0.40), (20, 0.5, 0.52)])
    add("b-s2", [(0, 0.3, 0.31), (10, 0.5, 0.47), (20, 0.2, 0.20)])
    # seed 3: a tie at the same step: the candidate listed first (a) wins; seed 4 lacks b: no rule row
    add("a-s3", [(0, 0.3, 0.32), (10, 0.5, 0.51)])
    add("b-s3", [(0, 0.3, 0.32), (10, 0.5, 0.44)])
    add("a-s4", [(0, 0.3, 0.30), (10, 0.9, 0.90)])
    rule = heldout.rule_runs(pd.DataFrame(rows), ["a", "b"], "pick").set_index("seed")
    assert list(rule.index) == [1, 2, 3]
    assert list(rule["chosen"]) == ["b", "b", "a"]
    assert list(rule["es_step"]) == [20, 10, 10] and list(rule["es_score"]) == [0.48, 0.47, 0.51]
    assert set(rule["method"]) == {"pick"} and rule.loc[2, "run"] == "pick-s2" and rule.loc[2, "step0_test"] == 0.31
    assert heldout.rule_runs(pd.DataFrame(rows), ["b", "a"], "pick").set_index("seed").loc[3, "chosen"] == "b"


def test_dose_slope_matches_a_least_squares_fit_per_seed():
    from creditlens import heldout

    rng = np.random.default_rng(1)
    doses, rows, expected = [0.0, 0.25, 0.5, 1.0], [], []
    for seed in range(6):
        gains = 0.1 * np.array(doses) + rng.normal(0, 0.02, 4)
        expected.append(np.polyfit(doses, gains, 1)[0])
        for i, gain in enumerate(gains):
            base = rng.uniform(0.3, 0.5)
            rows += [{"method": f"b{i}", "seed": seed, "es_score": base},
                     {"method": f"a{i}", "seed": seed, "es_score": base + gain}]
    rows.append({"method": "a0", "seed": 99, "es_score": 0.5})  # a seed without every pair is left out
    result = heldout.slope(pd.DataFrame(rows), [(f"a{i}", f"b{i}") for i in range(4)], doses)
    assert result["n"] == 6 and result["mean"] == pytest.approx(np.mean(expected))
    assert result["p"] == pytest.approx(scipy_stats.ttest_1samp(expected, 0.0).pvalue)
    assert result["up"] == sum(e > 0 for e in expected)
    with pytest.raises(ValueError, match="one pair per dose"):
        heldout.slope(pd.DataFrame(rows), [("a0", "b0")], doses)


def test_stage_presets_rules_slopes_and_their_report(tmp_path):
    from creditlens import heldout

    rule = study.PRESETS["practitioner-rule"]
    assert rule.families["rule"] == (("rule-letter", "sd-letter"), ("rule-filler", "sd-filler"))
    assert rule.rules["rule-letter"][0] == "sd-letter" and len(rule.rules["rule-filler"]) == 5
    dose = study.PRESETS["dose-response"]
    assert dose.slopes["shortcut"][0] == (0.0, 0.25, 0.5, 1.0) and len(dose.grid()) == 15 * 12
    for method in dose.methods[:12]:
        config = load_config(dose.config, parse_overrides(list(method.sets)))
        assert config["env_args"] == {"cue": float(method.variant.removeprefix("letter")), "cue_kind": "letter"}

    for seed, (sd_best, credit_best) in {1: (0.5, 0.6), 2: (0.7, 0.4), 3: (0.5, 0.55)}.items():
        _heldout_run(tmp_path / f"sd-s{seed}", [(0, 0.3, 0.3), (10, sd_best, sd_best - 0.01)])
        _heldout_run(tmp_path / f"credit-s{seed}", [(0, 0.3, 0.3), (10, credit_best, credit_best + 0.02)])
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    heldout.write_report(runs, tmp_path / "report", {"rule": [("pick", "sd")]}, rules={"pick": ("sd", "credit")},
                         slopes={"s": ((0.0, 1.0), (("credit", "sd"), ("sd", "credit")))})
    table = pd.read_csv(tmp_path / "report" / "heldout_runs.csv")
    picks = table[table["method"] == "pick"].set_index("seed")
    assert list(picks["chosen"]) == ["credit", "sd", "credit"] and list(picks["es_score"]) == pytest.approx([0.62, 0.69, 0.57])
    text = (tmp_path / "report" / "heldout.md").read_text()
    assert "| pick | 3 | credit 2, sd 1 | 10.0 |" in text and "pick - sd" in text and "Slopes on the dose" in text
    assert heldout.paired(table, "pick", "sd", "auc_test")["n"] == 0  # a rule has no AUC: no pairs, not NaN ones
    assert (tmp_path / "report" / "heldout.png").read_bytes()[:4] == b"\x89PNG"


def test_archive_copies_whole_seeds_compact_logs_readable_as_gzip(tmp_path, monkeypatch):
    import gzip

    from creditlens import runs

    confirm = study.PRESETS["confirm"]
    preset = study.Preset(confirm.config, confirm.methods[:2], seeds=(20, 21), order="seed")
    out = tmp_path / "out"
    out.mkdir()
    for run in preset.grid():
        if run.name != "credit-shortcut-lam0.5-s21":  # seed 21 is cut short: not archived
            folder = _heldout_run(out / run.name, [(0, 0.3, 0.3), (60, 0.4, 0.4)])
            (folder / runs.MANIFEST).write_text(json.dumps({"name": run.name}))
            (folder / runs.METRICS).write_text("".join(f'{{"step": {s}, "loss": {s / 10}}}\n' for s in range(1, 61)))
            (folder / runs.TOKENS_DIR).mkdir()
    def fake_report(dirs, report, families, **analyses):
        report.mkdir(exist_ok=True)
        (report / "x.md").write_text("r")
        (report / "x.png").write_text("not archived")
        return report

    monkeypatch.setattr(study, "write_report", fake_report)
    dest = study.archive(preset, out, tmp_path / "data" / "grid")
    assert sorted(p.name for p in dest.iterdir()) == ["credit-shortcut-lam0.5-s20", "report", "sd-s20"]
    kept = dest / "sd-s20"
    assert sorted(p.name for p in kept.iterdir()) == ["eval.jsonl", "manifest.json", "metrics.jsonl.gz"]
    assert gzip.decompress((kept / "metrics.jsonl.gz").read_bytes()) == (out / "sd-s20" / runs.METRICS).read_bytes()
    assert runs.read_jsonl(kept / runs.METRICS) == runs.read_jsonl(out / "sd-s20" / runs.METRICS)  # readers take .gz
    first = (kept / "metrics.jsonl.gz").read_bytes()
    study.archive(preset, out, tmp_path / "data" / "grid")
    assert (kept / "metrics.jsonl.gz").read_bytes() == first  # no timestamp: equal logs, equal bytes
    assert [p.name for p in (dest / "report").iterdir()] == ["x.md"] and (dest / "report" / "x.md").read_text() == "r"
    with pytest.raises(ValueError, match="must be outside --out"):
        study.archive(preset, out, out / "copy")


def test_mechanism_table_means_early_and_late_quarters_per_run_then_over_runs():
    rows = []
    for seed, shift in ((1, 0.0), (2, 0.2)):
        for step in (5, 10, 30, 50, 60):
            values = {c: step / 100 + shift for c in study.MECHANISM}
            rows.append({"run": f"sd-s{seed}", "step": step, **values})
            rows.append({"run": f"credit-s{seed}", "step": step, **{c: 0.5 for c in study.MECHANISM}})
    table = study.mechanism_table(pd.DataFrame(rows)).set_index(["method", "phase"])
    # sd, seed 1: early steps 5, 10 -> 0.075, late steps 50, 60 -> 0.55; seed 2 adds 0.2
    assert table.loc[("sd", "early"), "cue_letter"] == pytest.approx((0.075 + 0.275) / 2)
    assert table.loc[("sd", "late"), "passed_unseen"] == pytest.approx((0.55 + 0.75) / 2)
    low, high = scipy_stats.t.interval(0.95, 1, loc=0.65, scale=scipy_stats.sem([0.55, 0.75]))
    assert (table.loc[("sd", "late"), "cue_share_low"], table.loc[("sd", "late"), "cue_share_high"]) == pytest.approx((low, high))
    assert table.loc[("credit", "late"), "runs"] == 2 and table.loc[("credit", "late"), "cue_share"] == 0.5
    text = study.mechanism_markdown(study.mechanism_table(pd.DataFrame(rows)))
    assert "| sd | 2 | 0.175 -> 0.650 [" in text
