"""Compatibility gap pieces vs independent forward passes on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from creditlens import models
from creditlens.credit import CreditSpec
from creditlens.gap import GapConfig, compatibility_gap, log_mean_exp, sample_responses, summary_with_gap
from creditlens.scoring import Scorer


@pytest.fixture(scope="module")
def setup():
    model, tok = models.load("tiny")
    scorer = Scorer(model, tok, progress=False)
    examples = [
        {
            "example_id": f"e{i}",
            "prompt": f"What is {i} + {i}? Answer with a number.",
            "feedback": f"Wrong: expected {2 * i}.",
            "response": f"The answer is {i + 1}.",
        }
        for i in range(3)
    ]
    return model, tok, scorer, examples


def plain_sum(model, ids: list[int], n: int) -> float:
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return float(sum(lp[t - 1, ids[t]] for t in range(len(ids) - n, len(ids))))


def test_gap_pieces_equal_plain_forward_passes(setup):
    model, tok, scorer, examples = setup
    config = GapConfig(samples=4, max_new_tokens=12, seed=3)
    gap = compatibility_gap(scorer, examples, config=config).set_index("example_id")
    bridge = tok("<|im_end|>\n<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    for raw in examples:
        example = scorer.examples([raw])[0]
        row = gap.loc[raw["example_id"]]
        b = scorer.build(example)
        feedback = tok(raw["feedback"], add_special_tokens=False)["input_ids"]
        n = len(feedback)
        log_pf_xy = plain_sum(model, b.student + b.response + bridge + feedback, n)
        assert row["log_pf_xy"] == pytest.approx(log_pf_xy, abs=1e-4)
        samples = sample_responses(scorer, example, config)
        values = []
        for y in samples:
            tail = bridge[1:] if y[-1] == bridge[0] else bridge
            values.append(plain_sum(model, b.student + y + tail + feedback, n))
        log_pf_x = math.log(np.mean(np.exp(values)))
        assert row["log_pf_x"] == pytest.approx(log_pf_x, abs=1e-4)
        sd_sum = plain_sum(model, b.teacher_ids, len(b.response)) - plain_sum(model, b.student_ids, len(b.response))
        assert row["sd_sum"] == pytest.approx(sd_sum, abs=1e-3)
        assert row["gap"] == pytest.approx(sd_sum - (log_pf_xy - log_pf_x), abs=1e-3)
        assert row["n_samples"] == 4 and row["log_pf_x_se"] > 0


def test_sampling_is_seeded_and_stops_at_eos(setup):
    _, tok, scorer, examples = setup
    example = scorer.examples(examples)[0]
    a = sample_responses(scorer, example, GapConfig(samples=6, max_new_tokens=10, seed=1))
    b = sample_responses(scorer, example, GapConfig(samples=6, max_new_tokens=10, seed=1))
    c = sample_responses(scorer, example, GapConfig(samples=6, max_new_tokens=10, seed=2))
    assert a == b and a != c and len(a) == 6
    for y in a:
        assert 1 <= len(y) <= 10
        assert tok.eos_token_id not in y[:-1]


def test_log_mean_exp_and_delta_method_standard_error():
    values = np.array([-3.0, -2.0, -2.5, -4.0])
    w = np.exp(values)
    estimate, se = log_mean_exp(values)
    assert estimate == pytest.approx(math.log(w.mean()), abs=1e-12)
    assert se == pytest.approx(np.std(w, ddof=1) / math.sqrt(4) / w.mean(), rel=1e-12)
    big, _ = log_mean_exp(np.array([-1000.0, -1001.0]))
    assert big == pytest.approx(-1000.0 + math.log((1 + math.exp(-1)) / 2))
    assert log_mean_exp(np.array([-2.0, -2.0]))[1] == 0.0


def test_summary_with_gap_merges_per_example(setup):
    _, _, scorer, examples = setup
    table = scorer.score(examples, spec=CreditSpec(n_contrast=1))
    gap = compatibility_gap(scorer, examples, table, GapConfig(samples=2, max_new_tokens=4))
    summary = summary_with_gap(table, gap)
    assert len(summary) == 3 and {"gap", "log_pf_x_se", "credit_sum", "sd_sum"} <= set(summary.columns)
    np.testing.assert_allclose(summary["sd_sum"], gap["sd_sum"], atol=1e-9)
    with pytest.raises(ValueError, match="no rows"):
        compatibility_gap(scorer, examples, table[table["example_id"] != "e0"], GapConfig(samples=2))


def test_gap_has_a_bar_that_ticks_per_example(setup, monkeypatch):
    from creditlens import gap

    model, tok, _, examples = setup
    bars = []

    class Bar:
        def __init__(self, iterable, desc=None, disable=False, **kwargs):
            self.items, self.desc, self.ticks = list(iterable), desc, 0
            bars.append(self)

        def __iter__(self):
            for item in self.items:
                yield item
                self.ticks += 1

    monkeypatch.setattr(gap, "tqdm", Bar)
    compatibility_gap(Scorer(model, tok), examples, config=GapConfig(samples=2, max_new_tokens=4))
    assert [(b.desc, b.ticks) for b in bars] == [("gap", len(examples))]
