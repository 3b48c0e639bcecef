"""Scorer vs a plain unbatched forward pass over the ids that ``Scorer.build`` / ``plan`` return."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from creditlens import credit, errors, models, schema
from creditlens.contexts import ContextConfig
from creditlens.credit import CreditSpec
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


def form_reward(form, teacher, student, baseline, k, lam):
    """The CREDIT reward of ``form`` from per-token arrays, docs/CREDIT-MATH.md section 4 written out."""
    penalty = {
        "teacher": baseline,
        "shortcut": baseline - student,
        "contrastive": np.log((np.exp(teacher) + k * np.exp(baseline)) / (k + 1)) - student,
    }[form]
    return teacher - student - lam * penalty


@pytest.mark.parametrize("share_prefixes", [False, True])
def test_table_matches_plain_forward_pass(tiny, examples, share_prefixes):
    model, tok = tiny
    scorer = Scorer(model, tok, batch_size=3, share_prefixes=share_prefixes, chunk_tokens=7, progress=False)
    table = scorer.score(examples, seed=1, spec=CreditSpec(n_contrast=2, lam=0.5))
    schema.validate_token_table(table)
    plan = {b.example_id: b for b in scorer.plan(examples, seed=1, spec=CreditSpec(n_contrast=2))}
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
        assert (rows["form"] == credit.DEFAULT_FORM).all()
        expected = form_reward(credit.DEFAULT_FORM, teacher.numpy(), student.numpy(), baseline.numpy(), 2, 0.5)
        np.testing.assert_allclose(rows["credit_reward"], expected, atol=TOL)
    # the model is context sensitive, so the comparisons above can fail
    assert (table["teacher_logprob"] - table["student_logprob"]).abs().mean() > 0.1


@pytest.mark.parametrize(
    ("batch_size", "padding_side", "reverse", "share_prefixes"),
    [(1, "right", False, False), (5, "left", True, False), (64, "left", False, False), (2, "right", True, False),
     (1, "right", True, True)],
)
def test_independent_of_batch_size_order_and_padding(tiny, examples, batch_size, padding_side, reverse, share_prefixes):
    model, tok = tiny
    reference = by_key(Scorer(model, tok, batch_size=8, share_prefixes=False, progress=False).score(examples, spec=CreditSpec(n_contrast=2)))
    scorer = Scorer(model, tok, batch_size=batch_size, padding_side=padding_side, share_prefixes=share_prefixes,
                    progress=False)
    raw = scorer.score(examples[::-1] if reverse else examples, spec=CreditSpec(n_contrast=2))
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
    b = scorer.plan([example] + examples[2:], spec=CreditSpec(n_contrast=2))[0]
    assert b.response == odd
    for ids in [b.student_ids, b.teacher_ids, *b.contrast_ids]:
        assert ids[-len(odd) :] == odd
    text = scorer.build(examples[0])
    assert text.response == tok(examples[0]["response"], add_special_tokens=False)["input_ids"]


def trl_reprompt(prompt: str, feedback: str, solution: str = "") -> str:
    """TRL SDPO's default teacher reprompt (SDPOConfig's three templates), written out here."""
    solution = f"\nCorrect solution:\n\n{solution}\n\n" if solution else ""
    feedback = f"\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback}\n\n"
    return f"{prompt}{solution}{feedback}\n\nCorrectly solve the original question.\n"


def test_contexts_render_trl_sdpo_reprompt(tiny, examples):
    model, tok = tiny
    ex = examples[0]
    b = Scorer(model, tok, progress=False).build(ex, contrast_with=[examples[3]])
    user = trl_reprompt(ex["prompt"], ex["feedback"])
    chat = [{"role": "user", "content": user}]
    assert tok.decode(b.teacher) == tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    contrast_user = trl_reprompt(examples[3]["prompt"], ex["feedback"])
    contrast_chat = [{"role": "user", "content": contrast_user}]
    assert tok.decode(b.contrast[0]) == tok.apply_chat_template(contrast_chat, add_generation_prompt=True, tokenize=False)
    student_chat = [{"role": "user", "content": ex["prompt"]}]
    assert tok.decode(b.student) == tok.apply_chat_template(student_chat, add_generation_prompt=True, tokenize=False)

    plain = Scorer(model, tok, context=ContextConfig(chat=False), progress=False).build(dict(ex, solution="x = 1"))
    assert plain.teacher == tok(trl_reprompt(ex["prompt"], ex["feedback"], "x = 1"))["input_ids"]  # TRL's text path
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ex["prompt"]}]
    b = Scorer(model, tok, progress=False).build(dict(ex, prompt=messages))
    assert tok.decode(b.teacher).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + ex["prompt"])


@pytest.mark.parametrize("share_prefixes", [False, True])
def test_only_response_positions_reach_the_vocabulary(tiny, examples, share_prefixes):
    model, tok = tiny
    rows = []
    hook = model.lm_head.register_forward_hook(lambda _m, _i, out: rows.append(out.reshape(-1, out.shape[-1]).shape[0]))
    scorer = Scorer(model, tok, batch_size=3, share_prefixes=share_prefixes, progress=False)
    try:
        table = scorer.score(examples, spec=CreditSpec(n_contrast=1))
    finally:
        hook.remove()
    if not share_prefixes:
        assert sum(rows) == len(table) * 3  # student, teacher and one contrast per response token
        return
    # with shared prefixes, each distinct prefix that predicts a response token is projected once
    distinct = set()
    for b in scorer.plan(examples, spec=CreditSpec(n_contrast=1)):
        for ids in [b.student_ids, b.teacher_ids, *b.contrast_ids]:
            distinct.update(tuple(ids[: p + 1]) for p in range(len(ids) - len(b.response) - 1, len(ids) - 1))
    assert sum(rows) == len(distinct) < len(table) * 3


def test_contrast_choice(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    plans = [scorer.plan(examples, seed=s, spec=CreditSpec(n_contrast=3)) for s in (0, 0, 1)]
    choice = [[b.contrast_example_ids for b in plan] for plan in plans]
    assert choice[0] == choice[1] and choice[0] != choice[2]
    pid = {e["example_id"]: e["prompt_id"] for e in examples}
    for b in plans[0]:
        assert len(set(b.contrast_example_ids)) == 3
        assert all(pid[other] != b.prompt_id for other in b.contrast_example_ids)


def test_plain_sd_and_logmeanexp_pool(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    table = scorer.score(examples, spec=CreditSpec(n_contrast=0))
    assert table["contrast_baseline"].isna().all() and table["credit_reward"].isna().all()
    assert np.isfinite(table["sd_reward"]).all()
    table = scorer.score(examples, spec=CreditSpec(n_contrast=2, pool="logmeanexp", lam=1.0))
    lps = np.stack(table["contrast_logprobs"].to_list())
    baseline = np.logaddexp.reduce(lps, axis=1) - math.log(2)
    np.testing.assert_allclose(table["contrast_baseline"], baseline, atol=1e-5)
    teacher, student = table["teacher_logprob"].to_numpy(), table["student_logprob"].to_numpy()
    expected = form_reward(credit.DEFAULT_FORM, teacher, student, baseline, 2, 1.0)
    np.testing.assert_allclose(table["credit_reward"], expected, atol=1e-5)


def test_long_feedback_is_truncated_never_the_response(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, max_length=120, progress=False)
    long = [dict(e, feedback=e["feedback"] + " Traceback line." * 60) for e in examples]
    with pytest.warns(UserWarning, match="feedback truncated"):
        table = scorer.score(long, spec=CreditSpec(n_contrast=1))
        plan = scorer.plan(long, spec=CreditSpec(n_contrast=1))
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
        Scorer(model, tok, progress=False).score(bad, spec=CreditSpec(n_contrast=1))


def test_too_few_prompts_and_duplicate_ids(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    few = scorer.score(examples[:4], spec=CreditSpec(n_contrast=2))  # 2 distinct prompts: 1 contrast each
    assert (few["n_contrast"] == 1).all()
    for row in few.drop_duplicates("example_id").itertuples():
        assert json.loads(row.contrast_examples)[0].split("-")[0] != row.prompt_id  # never its own prompt
    with pytest.raises(ValueError, match="repeats"):
        scorer.score([examples[0], examples[0], examples[3]], spec=CreditSpec(n_contrast=1))
    with pytest.raises(ValueError, match="pool"):
        scorer.score(examples, spec=CreditSpec(pool="max"))
    with pytest.raises(ValueError, match="unknown option"):
        Scorer(model, tok, batchsize=3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s, ex: s.score([]), "examples: the list is empty"),
        (lambda s, ex: s.score(ex[0]), "examples: expected a list .* got dict \\(wrap a single example in a list\\)"),
        (lambda s, ex: s.score("text"), "examples: expected a list .* got str"),
        (lambda s, ex: s.score(ex, seed="abc"), "seed: must be an integer, got 'abc'"),
        (lambda s, ex: s.score(ex, feedback_contrast=-1), "feedback_contrast: must be an integer >= 0"),
        (lambda s, ex: s.score([dict(ex[0], response=[10**9])], spec=CreditSpec(n_contrast=0)), "example p0-s0: response has .* out of range"),
    ],
)
def test_bad_arguments_name_the_argument(tiny, examples, call, match):
    model, tok = tiny
    with pytest.raises(errors.InputError, match=match):
        call(Scorer(model, tok, progress=False), examples)


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_length", -5), ("max_length", 1.5), ("batch_size", 0), ("chunk_tokens", "8"), ("share_prefixes", "yes"),
     ("padding_side", "up"), ("min_shared_tokens", True)],
)
def test_bad_options_name_the_option(tiny, option, value):
    model, tok = tiny
    with pytest.raises(errors.ConfigError, match=f"^{option}: must be"):
        Scorer(model, tok, **{option: value})


@pytest.mark.parametrize("form", ["teacher", "shortcut", "contrastive"])
def test_reward_form_and_lam_are_applied_and_recorded(tiny, examples, form):
    model, tok = tiny
    table = Scorer(model, tok, progress=False).score(examples, spec=CreditSpec(n_contrast=2, lam=0.3, form=form))
    assert (table["form"] == form).all() and (table["lam"] == 0.3).all()
    teacher, student = table["teacher_logprob"].to_numpy(), table["student_logprob"].to_numpy()
    baseline = np.stack(table["contrast_logprobs"].to_list()).mean(1)
    expected = form_reward(form, teacher, student, baseline, 2, 0.3)
    np.testing.assert_allclose(table["credit_reward"], expected, atol=1e-5)
    np.testing.assert_allclose(table["shortcut"], baseline - student, atol=1e-5)
    np.testing.assert_allclose(table["specific"] + table["shortcut"], table["sd_reward"], atol=1e-5)


def test_padded_batches_stay_within_max_padding(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, batch_size=8, max_padding=0.05, progress=False)
    sequences = [(ids, len(b.response)) for b in scorer.plan(examples, spec=CreditSpec(n_contrast=2))
                 for ids in [b.student_ids, b.teacher_ids, *b.contrast_ids]]
    batches = scorer.padded_batches(sequences)
    assert sorted(i for batch, _ in batches for i in batch) == list(range(len(sequences)))
    for batch, tensors in batches:
        real = sum(len(sequences[i][0]) for i in batch)
        assert len(batch) <= 8 and tensors["input_ids"].numel() <= 1.05 * real
    assert any(len(batch) > 1 for batch, _ in batches)
