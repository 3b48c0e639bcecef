"""creditlens.credit against independent per-element computations (plain Python loops)."""

import dataclasses
import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlens import credit
from creditlens.errors import ConfigError
from creditlens.training.config import parse_config


def _random_inputs(b=3, k=2, t=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    teacher = -torch.rand(b, t, generator=gen, dtype=dtype) * 3
    student = -torch.rand(b, t, generator=gen, dtype=dtype) * 3
    contrast = -torch.rand(b, k, t, generator=gen, dtype=dtype) * 3
    return teacher, contrast, student


def _loop_reference(teacher, contrast, student, lam, pool):
    """Element-by-element reference of sections 1, 3 and 4 of the math page."""
    b, k, t = contrast.shape
    out = {name: torch.zeros(b, t, dtype=torch.float64) for name in ("sd", "baseline", "specific", "credit")}
    for i in range(b):
        for s in range(t):
            values = [float(contrast[i, j, s]) for j in range(k)]
            if pool == "mean":
                base = sum(values) / k
            else:
                base = math.log(sum(math.exp(v) for v in values) / k)
            sd = float(teacher[i, s]) - float(student[i, s])
            out["sd"][i, s] = sd
            out["baseline"][i, s] = base
            out["specific"][i, s] = float(teacher[i, s]) - base
            out["credit"][i, s] = float(teacher[i, s]) - lam * base - float(student[i, s])
    return out


@pytest.mark.parametrize("pool", ["mean", "logmeanexp"])
def test_matches_elementwise_reference(pool):
    teacher, contrast, student = _random_inputs(k=3)
    ref = _loop_reference(teacher, contrast, student, 0.3, pool)
    parts = credit.decompose(teacher, contrast, student, spec=credit.CreditSpec(pool=pool))
    torch.testing.assert_close(parts.sd, ref["sd"])
    torch.testing.assert_close(parts.baseline, ref["baseline"])
    torch.testing.assert_close(parts.specific, ref["specific"])
    torch.testing.assert_close(parts.shortcut, ref["baseline"] - student)
    torch.testing.assert_close(
        credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=0.3, pool=pool, form="teacher")), ref["credit"]
    )


def test_sign_teacher_minus_student():
    teacher = torch.tensor([[-0.1]])
    student = torch.tensor([[-2.0]])
    assert credit.sd_rewards(teacher, student).item() == pytest.approx(1.9)


def test_pooling_is_over_contrast_axis_not_time():
    teacher = torch.zeros(1, 2, dtype=torch.float64)
    student = torch.zeros(1, 2, dtype=torch.float64)
    contrast = torch.tensor([[[-1.0, -5.0], [-3.0, -7.0]]], dtype=torch.float64)  # [B=1, K=2, T=2]
    parts = credit.decompose(teacher, contrast, student)
    assert parts.baseline.tolist() == [[-2.0, -6.0]]
    lme = credit.decompose(teacher, contrast, student, spec=credit.CreditSpec(pool="logmeanexp")).baseline
    expected = [math.log((math.exp(-1) + math.exp(-3)) / 2), math.log((math.exp(-5) + math.exp(-7)) / 2)]
    assert lme[0].tolist() == pytest.approx(expected)


def test_lam_zero_is_sd_and_lam_scales_baseline():
    teacher, contrast, student = _random_inputs()
    sd = credit.sd_rewards(teacher, student)
    assert torch.equal(credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=0.0)), sd)
    full = credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=1.0, form="teacher"))
    torch.testing.assert_close(full, teacher - contrast.mean(1) - student)


def test_mask_zeroes_outputs_and_ignores_nan_padding():
    teacher, contrast, student = _random_inputs(b=2, t=4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    teacher[0, 3] = float("nan")
    student[1, 2] = float("inf")
    contrast[1, :, 1] = float("-inf")
    parts = credit.decompose(teacher, contrast, student, mask=mask)
    reward = credit.credit_rewards(teacher, contrast, student, mask=mask)
    for value in (parts.sd, parts.specific, parts.baseline, parts.shortcut, reward):
        assert torch.isfinite(value).all()
        assert (value[mask == 0] == 0).all()
    clean_t, clean_c, clean_s = _random_inputs(b=2, t=4)
    unmasked = credit.credit_rewards(clean_t, clean_c, clean_s)
    keep = mask.bool()
    assert torch.equal(reward[keep], unmasked[keep])
    # A masked position must not change unmasked ones (no leak across time through pooling).
    leak_t = clean_t.clone()
    leak_t[0, 3] = 100.0
    masked_out = credit.credit_rewards(leak_t, clean_c, clean_s, mask=mask)
    assert torch.equal(masked_out[0, :3], unmasked[0, :3])
    assert masked_out[0, 3] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    teacher, contrast, student = _random_inputs(dtype=dtype)
    assert credit.sd_rewards(teacher, student).dtype == dtype
    assert credit.credit_rewards(teacher, contrast, student).dtype == dtype
    assert credit.decompose(teacher, contrast, student, mask=torch.ones(3, 5)).specific.dtype == dtype


def test_sequence_sums_match_token_sums_and_contrastive_identity():
    teacher, contrast, student = _random_inputs(b=2, k=3, t=6)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    sums = credit.sequence_sums(teacher, contrast, student, mask=mask, spec=credit.CreditSpec(lam=0.7, form="teacher"))
    for i, n in enumerate((6, 4)):
        sd = float((teacher[i, :n] - student[i, :n]).sum())
        seq_contrast = contrast[i, :, :n].sum(dim=1)  # log pi_T(y | x_j, f) for each j
        assert sums.sd[i].item() == pytest.approx(sd)
        assert sums.credit[i].item() == pytest.approx(sd - 0.7 * float(seq_contrast.mean()))
        assert sums.n_tokens[i].item() == n


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": torch.ones(3, 4)}, "mask"),
        ({"mask": torch.full((3, 5), 2.0)}, "mask"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    teacher, contrast, student = _random_inputs()
    with pytest.raises(ValueError, match=match):
        credit.credit_rewards(teacher, contrast, student, **kwargs)


def test_shape_dtype_and_nan_errors():
    teacher, contrast, student = _random_inputs()
    with pytest.raises(ValueError, match="student_lp"):
        credit.sd_rewards(teacher, student[:, :4])
    with pytest.raises(ValueError, match="student_lp"):
        credit.sd_rewards(teacher, student.float())
    with pytest.raises(ValueError, match="contrast_lp"):
        credit.decompose(teacher, contrast[:, :, :4], student)
    with pytest.raises(ValueError, match="contrast_lp"):
        credit.decompose(teacher, contrast[:, :0], student)
    bad = teacher.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_lp: NaN or inf at unmasked index \[1, 2\]"):
        credit.sd_rewards(bad, student)
    with pytest.raises(ValueError, match="torch.Tensor"):
        credit.sd_rewards(teacher.tolist(), student)


def test_draw_contrasts_exclude_own_prompt_no_duplicates_and_sample_uniformly():
    group_ids = ["a", "a", "b", "b", "c", "c"]
    gen = torch.Generator().manual_seed(0)
    counts = {key: 0 for key in "bc"}
    for _ in range(300):
        picks = credit.draw_contrasts(group_ids, 1, gen)
        assert all(len(row) == 1 and row[0] != own for own, row in zip(group_ids, picks, strict=True))
        counts[picks[0][0]] += 1
        picks = credit.draw_contrasts(group_ids, 2, gen)
        for own, row in zip(group_ids, picks, strict=True):
            assert sorted(row) == sorted(set("abc") - {own})  # both others, never twice
    assert 100 < counts["b"] < 200  # each of the 2 other prompts about half the time


def test_draw_contrasts_use_fewer_when_fewer_exist_then_earlier_keys_and_reproducible():
    a = credit.draw_contrasts([0, 1, 2, 3], 2, torch.Generator().manual_seed(3))
    assert a == credit.draw_contrasts([0, 1, 2, 3], 2, torch.Generator().manual_seed(3))
    assert credit.draw_contrasts(["p", "p", "q"], 50, torch.Generator()) == [["q"], ["q"], ["p"]]
    assert credit.draw_contrasts(["p", "p"], 3, torch.Generator()) == [[], []]
    picks = credit.draw_contrasts(["p", "q"], 3, torch.Generator(), earlier=["z", "p"])
    assert [sorted(row) for row in picks] == [["q", "z"], ["p", "z"]]
    assert credit.draw_contrasts(["p", "q"], 1, torch.Generator(), earlier=["z"]) == [["q"], ["p"]]
    with pytest.raises(ValueError, match="k"):
        credit.draw_contrasts(["p", "q"], -1, torch.Generator())


def test_credit_target_logprobs_renormalises_and_lam_zero_is_identity():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.log_softmax(torch.randn(2, 3, 7, generator=gen, dtype=torch.float64), -1)
    contrast = torch.log_softmax(torch.randn(2, 4, 3, 7, generator=gen, dtype=torch.float64), -1)
    assert credit.credit_target_logprobs(teacher, contrast, spec=credit.CreditSpec(lam=0.0, form="teacher")) is teacher
    target = credit.credit_target_logprobs(teacher, contrast, spec=credit.CreditSpec(lam=0.5, form="teacher"))
    torch.testing.assert_close(target.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))
    unnormalised = (teacher - 0.5 * contrast.mean(1)).exp()
    torch.testing.assert_close(target.exp(), unnormalised / unnormalised.sum(-1, keepdim=True))


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 4),
    k=st.integers(1, 3),
    t=st.integers(1, 6),
    lam=st.floats(0, 1),
    seed=st.integers(0, 10_000),
    pool=st.sampled_from(list(credit.POOLS)),
    form=st.sampled_from(list(credit.FORMS)),
)
def test_identities_hold_for_random_inputs(b, k, t, lam, seed, pool, form):
    teacher, contrast, student = _random_inputs(b, k, t, seed=seed)
    mask = (torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) > 0.3).long()
    parts = credit.decompose(teacher, contrast, student, mask=mask, spec=credit.CreditSpec(pool=pool))
    keep = mask.bool()
    torch.testing.assert_close((parts.specific + parts.baseline)[keep], teacher[keep], rtol=0, atol=1e-12)
    torch.testing.assert_close(parts.specific + parts.shortcut, parts.sd, rtol=0, atol=1e-12)
    reward = credit.credit_rewards(teacher, contrast, student, mask=mask, spec=credit.CreditSpec(lam=lam, pool=pool, form=form))
    pooled_with_input = torch.logaddexp(teacher, math.log(k) + parts.baseline) - math.log(k + 1)
    expected = {  # the identities of docs/CREDIT-MATH.md section 4, written with the decomposition's parts
        "teacher": parts.sd - lam * parts.baseline,
        "shortcut": parts.specific + (1 - lam) * parts.shortcut,
        "contrastive": (1 - lam) * parts.sd + lam * (teacher - pooled_with_input),
    }[form]
    torch.testing.assert_close(reward[keep], expected[keep], rtol=0, atol=1e-12)
    assert (reward[~keep] == 0).all()


def test_contrast_baseline_matches_reference_and_masks():
    teacher, contrast, student = _random_inputs(k=3)
    ref = _loop_reference(teacher, contrast, student, 0.5, "logmeanexp")
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 4] = False
    baseline = credit.contrast_baseline(contrast, mask, spec=credit.CreditSpec(pool="logmeanexp"))
    torch.testing.assert_close(baseline[mask], ref["baseline"][mask])
    assert baseline[2, 4] == 0
    with pytest.raises(ValueError, match="mask"):
        credit.contrast_baseline(contrast, torch.ones(3, 4))


def _form_reference(teacher, contrast, student, lam, pool, form):
    """The three forms of section 4 of the math page, written out per element with numpy scalars."""
    b, k, t = contrast.shape
    out = np.zeros((b, t))
    for i in range(b):
        for s in range(t):
            tl, sl = float(teacher[i, s]), float(student[i, s])
            values = np.array([float(contrast[i, j, s]) for j in range(k)])
            base = values.mean() if pool == "mean" else np.log(np.exp(values).mean())
            if form == "teacher":
                out[i, s] = tl - sl - lam * base
            elif form == "shortcut":
                out[i, s] = tl - sl - lam * (base - sl)
            else:  # the true input's probability pooled with K copies of the pooled contrast probability
                pooled = np.log((np.exp(tl) + k * np.exp(base)) / (k + 1))
                out[i, s] = (1 - lam) * (tl - sl) + lam * (tl - pooled)
    return torch.tensor(out)


@pytest.mark.parametrize("form", credit.FORMS)
@pytest.mark.parametrize("pool", credit.POOLS)
def test_every_form_matches_reference_and_lam_zero_is_sd(form, pool):
    teacher, contrast, student = _random_inputs(b=3, k=3, t=4, seed=5)
    reward = credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=0.4, pool=pool, form=form))
    torch.testing.assert_close(reward, _form_reference(teacher, contrast, student, 0.4, pool, form))
    sd = credit.sd_rewards(teacher, student)
    assert torch.equal(credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=0.0, pool=pool, form=form)), sd)


def test_forms_on_a_token_equally_likely_under_every_input():
    """B_t = log pi_T: teacher gives a bonus -lam*B > 0, shortcut scales SD by 1-lam, contrastive too,
    and at lam = 1 shortcut and contrastive give exactly 0."""
    teacher = torch.tensor([[-3.0]], dtype=torch.float64)
    contrast = torch.full((1, 2, 1), -3.0, dtype=torch.float64)
    student = torch.tensor([[-1.0]], dtype=torch.float64)
    get = lambda form, lam: credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=lam, form=form)).item()  # noqa: E731
    assert get("teacher", 0.5) == pytest.approx(-2.0 + 1.5)
    assert get("shortcut", 0.5) == pytest.approx(-1.0)
    assert get("contrastive", 0.5) == pytest.approx(-1.0)
    assert get("shortcut", 1.0) == 0.0 and get("contrastive", 1.0) == pytest.approx(0.0, abs=1e-15)


def test_contrastive_form_is_bounded_by_log_k_plus_one():
    """At lam = 1 the contrastive reward is log pi_T - L_t <= log(K+1), approached when contrasts vanish."""
    teacher = torch.tensor([[-0.5, -0.5]], dtype=torch.float64)
    contrast = torch.tensor([[[-60.0, -0.5], [-60.0, -0.5], [-60.0, -0.5]]], dtype=torch.float64)
    student = torch.tensor([[-9.0, -9.0]], dtype=torch.float64)
    reward = credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=1.0, form="contrastive"))
    assert reward[0, 0].item() == pytest.approx(math.log(4), abs=1e-12)
    assert reward[0, 1].item() == pytest.approx(0.0, abs=1e-12)
    teacher_form = credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=1.0, form="teacher"))
    assert teacher_form[0, 0].item() == pytest.approx(68.5)  # unbounded: grows with -B_t


@pytest.mark.parametrize("form", credit.FORMS)
def test_forms_keep_masked_positions_zero_and_ignore_nan_padding(form):
    teacher, contrast, student = _random_inputs(b=2, t=4)
    clean = credit.credit_rewards(teacher, contrast, student, spec=credit.CreditSpec(lam=0.5, form=form))
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    teacher[0, 3] = float("nan")
    contrast[1, :, 1] = float("-inf")
    reward = credit.credit_rewards(teacher, contrast, student, mask=mask, spec=credit.CreditSpec(lam=0.5, form=form))
    keep = mask.bool()
    assert torch.equal(reward[keep], clean[keep]) and (reward[~keep] == 0).all()


def _target_reference(teacher, contrast, student, lam, pool, form):
    """numpy: log_softmax over the last axis of the form's per-entry score."""
    t, c = teacher.numpy(), contrast.numpy()
    k = c.shape[1]
    base = c.mean(1) if pool == "mean" else np.log(np.exp(c).mean(1))
    if form == "teacher":
        score = t - lam * base
    else:
        s = student.numpy()
        if form == "contrastive":
            base = np.log((np.exp(t) + k * np.exp(base)) / (k + 1))
        score = t - lam * (base - s)
    score = score - score.max(-1, keepdims=True)
    return torch.tensor(score - np.log(np.exp(score).sum(-1, keepdims=True)))


@pytest.mark.parametrize("form", credit.FORMS)
@pytest.mark.parametrize("pool", credit.POOLS)
def test_target_logprobs_match_reference_and_sampled_reward(form, pool):
    gen = torch.Generator().manual_seed(2)
    teacher = torch.log_softmax(torch.randn(2, 3, 6, generator=gen, dtype=torch.float64), -1)
    contrast = torch.log_softmax(torch.randn(2, 3, 3, 6, generator=gen, dtype=torch.float64), -1)
    student = torch.log_softmax(torch.randn(2, 3, 6, generator=gen, dtype=torch.float64), -1)
    target = credit.credit_target_logprobs(teacher, contrast, credit.CreditSpec(lam=0.3, pool=pool, form=form), student_logprobs=student)
    torch.testing.assert_close(target, _target_reference(teacher, contrast, student, 0.3, pool, form))
    assert credit.credit_target_logprobs(teacher, contrast, credit.CreditSpec(lam=0.0, pool=pool, form=form), student_logprobs=student) is teacher
    # log target(v) - log pi_S(v) is the sampled-token reward of token v, up to one constant per position
    for v in range(6):
        rewards = credit.credit_rewards(
            teacher[..., v], contrast[..., v], student[..., v], spec=credit.CreditSpec(lam=0.3, pool=pool, form=form))
        token_gap = target[..., v] - student[..., v] - rewards
        if v == 0:
            first = token_gap
        torch.testing.assert_close(token_gap, first)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"teacher_logprobs": np.zeros((1, 2, 3))}, "teacher_logprobs"),
        ({"teacher_logprobs": torch.zeros(1, 2, 3, dtype=torch.long)}, "teacher_logprobs"),
        ({"teacher_logprobs": torch.full((1, 2, 3), float("nan"))}, "teacher_logprobs"),
        ({"contrast_logprobs": torch.zeros(1, 1, 2, 3, dtype=torch.int32)}, "contrast_logprobs"),
        ({"contrast_logprobs": np.zeros((1, 1, 2, 3))}, "contrast_logprobs"),
        ({"contrast_logprobs": torch.zeros(1, 0, 2, 3)}, "contrast_logprobs"),
        ({"spec": "shortcut"}, "student_logprobs"),
        ({"spec": "contrastive", "student_logprobs": torch.full((1, 2, 3), float("nan"))}, "student_logprobs"),
        ({"spec": "shortcut", "student_logprobs": torch.zeros(1, 2, 4)}, "student_logprobs"),
    ],
)
def test_target_logprobs_bad_input_names_the_argument(kwargs, match):
    args = {"teacher_logprobs": torch.zeros(1, 2, 3), "contrast_logprobs": torch.zeros(1, 1, 2, 3)}
    args.update(kwargs)
    if "spec" in args:
        args["spec"] = credit.CreditSpec(form=args["spec"])
    with pytest.raises(ValueError, match=match):
        credit.credit_target_logprobs(**args)


def test_credit_spec_is_validated_once_and_frozen():
    assert credit.DEFAULT_FORM in credit.FORMS and credit.CreditSpec().form == credit.DEFAULT_FORM
    for kwargs, match in [
        ({"form": "bogus"}, r"form: must be one of \('teacher', 'shortcut', 'contrastive'\)"),
        ({"lam": 1.5}, r"lam: must be a number in \[0, 1\]"),
        ({"lam": True}, "lam"),
        ({"pool": "max"}, "pool: must be one of"),
        ({"axis": "output"}, "contrast_axis: must be one of"),
        ({"n_contrast": -1}, "n_contrast: must be an int >= 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            credit.CreditSpec(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        credit.CreditSpec().lam = 0.1
    with pytest.raises(ValueError, match="K >= 1"):
        credit.pool_contrast(torch.zeros(2, 0, 3))


def test_a_new_form_is_one_registered_function():
    @credit.reward_form("half-teacher", needs_student=False)
    def half(teacher_lp, baseline, student_lp, k):
        return 0.5 * baseline

    try:
        teacher, contrast, student = _random_inputs(b=2, k=3, t=4)
        spec = credit.CreditSpec(lam=0.4, form="half-teacher")
        expected = teacher - student - 0.4 * (0.5 * contrast.mean(1))
        torch.testing.assert_close(credit.credit_rewards(teacher, contrast, student, spec=spec), expected)
    finally:
        del credit.FORMS["half-teacher"]


@pytest.mark.parametrize("form", credit.FORMS)
def test_sequence_sums_credit_is_the_token_sum_of_the_form(form):
    teacher, contrast, student = _random_inputs(b=2, k=3, t=6)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    sums = credit.sequence_sums(teacher, contrast, student, mask=mask, spec=credit.CreditSpec(lam=0.7, form=form))
    reference = _form_reference(teacher, contrast, student, 0.7, "mean", form)
    for i, n in enumerate((6, 4)):
        assert sums.credit[i].item() == pytest.approx(float(reference[i, :n].sum()))
        assert sums.baseline[i].item() == pytest.approx(float(contrast[i, :, :n].mean(0).sum()))


def test_defaults_are_the_form_and_lam_docs_results_chose():
    """docs/results.md, section "Default", states the pre-registered choice; every entry point defaults to it."""
    section = (Path(__file__).parents[1] / "docs" / "results.md").read_text().split("\n## Default\n")[1]
    chosen = re.search(r"\*\*`(\w+)`, lam ([0-9.]+)\*\*", section.split("\n## ")[0])
    assert chosen, "docs/results.md: the Default section must state **`FORM`, lam VALUE**"
    form, lam = chosen.group(1), float(chosen.group(2))
    assert credit.DEFAULT_FORM == form
    assert (credit.CreditSpec().form, credit.CreditSpec().lam) == (form, lam)
    for function in (credit.credit_rewards, credit.sequence_sums, credit.credit_target_logprobs):
        assert inspect.signature(function).parameters["spec"].default == credit.CreditSpec(), function.__name__
    _, args = parse_config({}, "credit", "unused")
    assert (args.form, args.lam) == (form, lam)
