"""``creditlens headroom`` on the tiny model: rates recomputed from the attempts, log-probs from plain forwards."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
import torch

from creditlens import cli, headroom, models
from creditlens.contexts import Templates
from creditlens.envs.base import Environment, Outcome, Problem
from creditlens.errors import CreditlensError


class CoinEnv(Environment):
    """Passes a response when the CRC of its text is even: about half pass, deterministically."""

    name = "coin"

    def problems(self, split="train", n=None, seed=0):
        return [Problem(id=f"coin/{i}", prompt=[{"role": "user", "content": f"Say something about {i} cats."}],
                        reference={}) for i in range(n or 4)]

    def verify(self, problem, response):
        ok = zlib.crc32(response.encode()) % 2 == 0
        return Outcome(float(ok), ok, "" if ok else f"The text {response[:10]!r} has an odd checksum.")


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny")


@pytest.fixture(scope="module")
def run(tiny):
    model, tokenizer = tiny
    config = headroom.HeadroomConfig(num_generations=4, max_completion_length=8, max_teacher_asks=3, n_contrast=2,
                                     lam=0.25)
    return headroom.headroom(CoinEnv(), model, tokenizer, 5, config, progress=False)


def test_rates_match_the_attempts(run):
    summary, attempts, _ = run
    env = CoinEnv()
    problems = {p.id: p for p in env.problems(n=5)}
    assert summary["n_problems"] == 5 and summary["n_attempts"] == len(attempts) == 20
    passed = [env.verify(problems[r.problem_id], r.response).passed for r in attempts.itertuples()]
    assert passed == attempts["passed"].tolist()
    assert summary["student_pass_rate"] == pytest.approx(sum(passed) / len(passed))
    assert 0 < sum(passed) < len(passed), "the coin env should give both outcomes"
    for kind in ("feedback", "sibling"):
        teacher, matched = [], []
        for problem_id, group in attempts.groupby("problem_id"):
            ok = group["passed"].tolist()
            for i, row in enumerate(group.itertuples()):
                text = getattr(row, f"teacher_{kind}_response")
                if row.passed or text is None:
                    continue
                teacher.append(env.verify(problems[problem_id], text).passed)
                others = ok[:i] + ok[i + 1:]
                matched.append(sum(others) / len(others))
        expected_n = sum(min(3, (~g["passed"]).sum()) for _, g in attempts.groupby("problem_id")
                         if kind == "feedback" or g["passed"].any())
        assert summary[f"n_{kind}"] == len(teacher) == expected_n
        assert summary[f"teacher_{kind}_pass_rate"] == pytest.approx(sum(teacher) / len(teacher))
        assert summary[f"headroom_{kind}"] == pytest.approx(sum(teacher) / len(teacher) - sum(matched) / len(matched))


def test_token_logprobs_are_those_of_the_sdpo_teacher_context(run, tiny):
    model, tokenizer = tiny
    summary, attempts, tokens = run
    failed = attempts[~attempts["passed"] & attempts["teacher_feedback_response"].notna()]
    assert sorted(tokens["example_id"].unique()) == sorted(f"{r.problem_id}#{r.attempt}" for r in failed.itertuples())
    problems = {p.id: p for p in CoinEnv().problems(n=5)}
    row = failed[failed["solution"].notna()].iloc[0] if failed["solution"].notna().any() else failed.iloc[0]
    response = list(row["response_ids"])

    def forward(messages):
        context = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(context, add_special_tokens=False)["input_ids"] + response
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -len(response) - 1:-1].double()
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)

    problem = problems[row["problem_id"]]
    mine = tokens[tokens["example_id"] == f"{row['problem_id']}#{row['attempt']}"].sort_values("position")
    torch.testing.assert_close(torch.tensor(mine["student_logprob"].to_numpy()), forward(problem.prompt),
                               atol=1e-4, rtol=0)
    teacher = headroom.reprompt(problem, row["feedback"], row["solution"])
    assert row["feedback"] in teacher[-1]["content"]
    torch.testing.assert_close(torch.tensor(mine["teacher_logprob"].to_numpy()), forward(teacher), atol=1e-4, rtol=0)


def test_decomposition_statistics(run):
    summary, _, tokens = run
    counted = tokens[tokens["mask"]]
    sd = counted["teacher_logprob"] - counted["student_logprob"]
    shortcut = counted["contrast_baseline"] - counted["student_logprob"]
    moved = sd >= 0.05  # the tokens the feedback raises; their generic part is the shortcut within [0, sd]
    expected = np.minimum(np.maximum(shortcut[moved], 0), sd[moved]).sum() / sd[moved].sum()
    assert summary["generic_share"] == pytest.approx(expected, rel=1e-6)
    assert summary["mean_sd_reward"] == pytest.approx(
        (counted["teacher_logprob"] - counted["student_logprob"]).mean(), abs=1e-6)
    assert summary["mean_specific"] + summary["mean_shortcut"] == pytest.approx(summary["mean_sd_reward"], abs=1e-6)


def test_cli_writes_table_and_json(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("num_generations: 2\nmax_completion_length: 8\nlearning_rate: 1.0e-5\n")
    out = tmp_path / "out"
    argv = ["headroom", "--env", "science", "--model", "tiny", "--n", "2", "--config", str(config), "--no-progress"]
    assert cli.main(argv + ["--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "headroom.json").read_text())
    assert printed["n_attempts"] == 4 and printed["config"]["num_generations"] == 2
    assert len(pd.read_json(out / "attempts.jsonl", lines=True)) == 4
    assert cli.main(argv) == 0
    assert "student pass rate" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, tiny):
    model, tokenizer = tiny
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    tokenizer.chat_template = None
    try:
        tokenizer.save_pretrained(plain)
    finally:
        tokenizer.chat_template = models.CHATML_TEMPLATE
    typo = tmp_path / "typo.yaml"
    typo.write_text("temperatur: 0.5\n")
    capsys.readouterr()
    cases = [
        (["--env", "nope", "--model", "tiny"], "invalid choice: 'nope'"),
        (["--env", "science", "--model", str(tmp_path / "missing")], "missing"),
        (["--env", "science", "--model", "tiny", "--n", "0"], "--n: must be >= 1"),
        (["--env", "science", "--model", str(plain)], "no chat template"),
        (["--env", "science", "--model", "no-such-model"], "model 'no-such-model': no such local directory"),
        (["--env", "science", "--model", "tiny", "--config", str(typo)], "unknown key 'temperatur'"),
    ]
    for argv, message in cases:
        assert cli.main(["headroom", *argv, "--no-progress"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("creditlens headroom: error:") and message in errors[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("temperatur: 0.5\n")
    with pytest.raises(CreditlensError, match="unknown key 'temperatur'"):
        headroom.load_headroom_config(bad)
    with pytest.raises(CreditlensError, match="num_generations"):
        headroom.load_headroom_config(None, {"num_generations": 0})


def test_trl_templates_shape_the_teacher_as_in_training(tiny):
    from creditlens.training.config import parse_config

    model, tokenizer = tiny
    templates = {"reprompt_template": "Q: {prompt}{solution}{feedback}\nFix it.",
                 "solution_template": "\nGood: {successful_previous_attempt}", "feedback_template": "\nFB: {feedback_raw}"}
    _, train = parse_config(templates, "sd", "unused")
    assert Templates.of(templates) == Templates.of(train)
    problem = CoinEnv().problems(n=1)[0]
    messages = headroom.reprompt(problem, "odd", "a fine text", templates)
    assert messages[-1]["content"] == "Q: Say something about 0 cats.\nGood: a fine text\nFB: odd\nFix it."
    config = headroom.HeadroomConfig(num_generations=2, max_completion_length=6, n_contrast=1, templates=templates)
    _, attempts, tokens = headroom.headroom(CoinEnv(), model, tokenizer, 4, config, progress=False)
    row = attempts[~attempts["passed"] & attempts["teacher_feedback_response"].notna()].iloc[0]
    response = list(row["response_ids"])
    teacher = headroom.reprompt(CoinEnv().problems(n=4)[int(row["problem_id"].split("/")[1])], row["feedback"],
                                row["solution"], templates)
    context = tokenizer.apply_chat_template(teacher, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(context, add_special_tokens=False)["input_ids"] + response
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -len(response) - 1:-1].double()
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)
    mine = tokens[tokens["example_id"] == f"{row['problem_id']}#{row['attempt']}"].sort_values("position")
    torch.testing.assert_close(torch.tensor(mine["teacher_logprob"].to_numpy()), expected, atol=1e-4, rtol=0)
    with pytest.raises(CreditlensError, match="reprompt_template: must be a string"):
        headroom.load_headroom_config(None, {"reprompt_template": 3})
    with pytest.raises(CreditlensError, match="key 'trl' was renamed: write its keys .* at the top level"):
        headroom.load_headroom_config(None, {"trl": templates})


def test_pass_rate_intervals_are_wilson_intervals():
    for p, n in ((0.0, 16), (1.0, 3), (0.25, 8)):
        low, high = headroom._ci95(p, n)
        z = 1.959963984540054
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
        assert (low, high) == pytest.approx((centre - half, centre + half)) and 0 <= low < high <= 1
    text = headroom.format_table({"env": "e", "n_problems": 1, "config": {"num_generations": 3}, "n_failed": 0,
                                  "student_pass_rate": 1.0, "student_pass_at_k": 1.0,
                                  **dict(zip(("student_ci95_low", "student_ci95_high"), headroom._ci95(1.0, 3), strict=True)),
                                  "n_feedback": 0, "n_sibling": 0})
    assert "100.0%  [43.9%, 100.0%]" in text
