"""Scorer vs a plain unbatched forward pass over the ids that ``Scorer.build`` / ``plan`` return."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from creditlens import models, schema
from creditlens.contexts import SDPO_TEMPLATE, ContextConfig
from creditlens.scoring import Scorer

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny")


@pytest.fixture(scope="module")
def examples():
    out = []
    for p in range(4):
        for s in range(2):
            out.append(
                {
                    "example_id": f"p{p}-s{s}",
                    "prompt_id": f"p{p}",
                    "prompt": f"Problem {p}: write add{p}(a, b) returning a + b + {p}.",
                    "feedback": f"assert add{p}(1, 2) == {3 + p} failed: got {s}",
                    "response": f"def add{p}(a, b):\n    return a - b{' + 1' * s}",
                }
            )
    return out


def plain_logprobs(model, ids: list[int], n: int) -> torch.Tensor:
    """Log-probs of the last n tokens of ids with one unpadded forward pass, full logits."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)
    positions = torch.arange(len(ids) - n - 1, len(ids) - 1)
    return lp[positions, torch.tensor(ids[len(ids) - n :])]


def by_key(table):
    return table.sort_values(["example_id", "position"]).reset_index(drop=True)


def test_table_matches_plain_forward_pass(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, batch_size=3, progress=False)
    table = scorer.score(examples, contrast=2, lam=0.5, seed=1)
    schema.validate_token_table(table)
    plan = {b.example_id: b for b in scorer.plan(examples, contrast=2, seed=1)}
    for example_id, rows in table.groupby("example_id"):
        b = plan[example_id]
        n = len(b.response)
        assert rows["token_id"].tolist() == b.response
        assert json.loads(rows["contrast_examples"].iloc[0]) == b.contrast_example_ids
        student = plain_logprobs(model, b.student_ids, n)
        teacher = plain_logprobs(model, b.teacher_ids, n)
        contrast = torch.stack([plain_logprobs(model, ids, n) for ids in b.contrast_ids])
        np.testing.assert_allclose(rows["student_logprob"], student, atol=TOL)
        np.testing.assert_allclose(rows["teacher_logprob"], teacher, atol=TOL)
        np.testing.assert_allclose(np.stack(rows["contrast_logprobs"].to_list()), contrast.T, atol=TOL)
        baseline = contrast.mean(0)
        np.testing.assert_allclose(rows["sd_reward"], teacher - student, atol=TOL)
        np.testing.assert_allclose(rows["specific"], teacher - baseline, atol=TOL)
        np.testing.assert_allclose(rows["credit_reward"], teacher - 0.5 * baseline - student, atol=TOL)
    # the model is context sensitive, so the comparisons above can fail
    assert (table["teacher_logprob"] - table["student_logprob"]).abs().mean() > 0.1


@pytest.mark.parametrize(
    ("batch_size", "padding_side", "reverse"),
    [(1, "right", False), (5, "left", True), (64, "left", False), (2, "right", True)],
)
def test_independent_of_batch_size_order_and_padding(tiny, examples, batch_size, padding_side, reverse):
    model, tok = tiny
    reference = by_key(Scorer(model, tok, batch_size=8, progress=False).score(examples, contrast=2))
    scorer = Scorer(model, tok, batch_size=batch_size, padding_side=padding_side, progress=False)
    raw = scorer.score(examples[::-1] if reverse else examples, contrast=2)
    assert raw["example_id"].unique().tolist() == reference["example_id"].unique().tolist()
    table = by_key(raw)
    assert table["contrast_examples"].tolist() == reference["contrast_examples"].tolist()
    for column in ("student_logprob", "teacher_logprob", "contrast_baseline", "credit_reward", "specific"):
        np.testing.assert_allclose(table[column], reference[column], atol=TOL, err_msg=column)


def test_response_ids_are_appended_unchanged(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    # byte-level ids of a text that the tokenizer would merge differently
    odd = [tok.convert_tokens_to_ids(c) for c in ["d", "e", "f", "Ġ", "r", "e", "t"]]
    example = dict(examples[0], response=odd)
    b = scorer.plan([example] + examples[2:], contrast=2)[0]
    assert b.response == odd
    for ids in [b.student_ids, b.teacher_ids, *b.contrast_ids]:
        assert ids[-len(odd) :] == odd
    text = scorer.build(examples[0])
    assert text.response == tok(examples[0]["response"], add_special_tokens=False)["input_ids"]


def test_contexts_render_the_reprompt_template(tiny, examples):
    model, tok = tiny
    ex = examples[0]
    b = Scorer(model, tok, progress=False).build(ex, contrast_with=[examples[3]])
    user = SDPO_TEMPLATE.format(prompt=ex["prompt"], feedback=ex["feedback"], solution="")
    chat = [{"role": "user", "content": user}]
    assert tok.decode(b.teacher) == tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    contrast_user = SDPO_TEMPLATE.format(prompt=examples[3]["prompt"], feedback=ex["feedback"], solution="")
    contrast_chat = [{"role": "user", "content": contrast_user}]
    assert tok.decode(b.contrast[0]) == tok.apply_chat_template(contrast_chat, add_generation_prompt=True, tokenize=False)
    student_chat = [{"role": "user", "content": ex["prompt"]}]
    assert tok.decode(b.student) == tok.apply_chat_template(student_chat, add_generation_prompt=True, tokenize=False)

    plain = Scorer(model, tok, context=ContextConfig(chat=False), progress=False).build(dict(ex, solution="x = 1"))
    solution = "Correct solution:\n\nx = 1\n\n"
    assert plain.teacher[0] == tok.bos_token_id
    assert tok.decode(plain.teacher[1:]) == SDPO_TEMPLATE.format(prompt=ex["prompt"], feedback=ex["feedback"], solution=solution)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ex["prompt"]}]
    b = Scorer(model, tok, progress=False).build(dict(ex, prompt=messages))
    assert tok.decode(b.teacher).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + ex["prompt"])


def test_only_response_positions_reach_the_vocabulary(tiny, examples):
    model, tok = tiny
    rows = []
    hook = model.lm_head.register_forward_hook(lambda _m, _i, out: rows.append(out.reshape(-1, out.shape[-1]).shape[0]))
    try:
        table = Scorer(model, tok, batch_size=3, progress=False).score(examples, contrast=1)
    finally:
        hook.remove()
    assert sum(rows) == len(table) * 3  # student, teacher and one contrast per response token


def test_contrast_choice(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    plans = [scorer.plan(examples, contrast=3, seed=s) for s in (0, 0, 1)]
    choice = [[b.contrast_example_ids for b in plan] for plan in plans]
    assert choice[0] == choice[1] and choice[0] != choice[2]
    pid = {e["example_id"]: e["prompt_id"] for e in examples}
    for b in plans[0]:
        assert len(set(b.contrast_example_ids)) == 3
        assert all(pid[other] != b.prompt_id for other in b.contrast_example_ids)


def test_plain_sd_and_logmeanexp_pool(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    table = scorer.score(examples, contrast=0)
    assert table["contrast_baseline"].isna().all() and table["credit_reward"].isna().all()
    assert np.isfinite(table["sd_reward"]).all()
    table = scorer.score(examples, contrast=2, pool="logmeanexp", lam=1.0)
    lps = np.stack(table["contrast_logprobs"].to_list())
    baseline = np.logaddexp.reduce(lps, axis=1) - math.log(2)
    np.testing.assert_allclose(table["contrast_baseline"], baseline, atol=1e-5)
    np.testing.assert_allclose(table["credit_reward"], table["teacher_logprob"] - baseline - table["student_logprob"], atol=1e-5)


def test_long_feedback_is_truncated_never_the_response(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, max_length=120, progress=False)
    long = [dict(e, feedback=e["feedback"] + " Traceback line." * 60) for e in examples]
    with pytest.warns(UserWarning, match="feedback truncated"):
        table = scorer.score(long, contrast=1)
        plan = scorer.plan(long, contrast=1)
    for b in plan:
        assert b.feedback_dropped > 0
        assert all(len(ids) <= 120 for ids in [b.teacher_ids, *b.contrast_ids])
        assert b.response == tok(next(e["response"] for e in long if e["example_id"] == b.example_id), add_special_tokens=False)["input_ids"]
    assert (table["feedback_dropped"] > 0).all()
    left = Scorer(model, tok, max_length=120, context=ContextConfig(feedback_truncation="left"), progress=False)
    with pytest.warns(UserWarning):
        b = left.build(long[0])
    assert tok.decode(b.teacher).count("Traceback line.") > 0 and "assert add0" not in tok.decode(b.teacher)
    with pytest.raises(ValueError, match="never truncated"):
        Scorer(model, tok, max_length=40, progress=False).build(dict(examples[0], response="x = 1\n" * 30))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"response": ""}, "response"),
        ({"response": []}, "response"),
        ({"feedback": None}, "feedback"),
        ({"feedback": "  "}, "feedback"),
        ({"prompt": None}, "prompt"),
    ],
)
def test_bad_examples_raise(tiny, examples, change, match):
    model, tok = tiny
    bad = [dict(examples[0], **change)] + examples[1:]
    with pytest.raises(ValueError, match=match):
        Scorer(model, tok, progress=False).score(bad, contrast=1)


def test_too_few_prompts_and_duplicate_ids(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    with pytest.raises(ValueError, match="distinct prompt ids"):
        scorer.score(examples[:4], contrast=2)
    with pytest.raises(ValueError, match="repeats"):
        scorer.score([examples[0], examples[0], examples[3]], contrast=1)
    with pytest.raises(ValueError, match="pool"):
        scorer.score(examples, pool="max")
    with pytest.raises(ValueError, match="unknown option"):
        Scorer(model, tok, batchsize=3)
