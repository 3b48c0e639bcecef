"""The per-token table: building from tensors, validation, Parquet round trip, per-example sums."""

import numpy as np
import pandas as pd
import pytest
import torch

from creditlens import credit, schema, theory
from creditlens.credit import CreditSpec


def _table(lengths=(4, 2, 3), k=2, mask=None, seed=0):
    model = theory.ExactModel.random(n_inputs=4, vocab_size=5, length=4, seed=seed)
    batch = model.sample_batch(3, k, seed=seed)
    tokens = [[f"<{t}>" for t in row] for row in batch.responses.tolist()]
    table = schema.build_token_table(
        example_ids=["e0", "e1", "e2"],
        prompt_ids=[f"x{int(x)}" for x in batch.inputs],
        token_ids=batch.responses,
        tokens=tokens,
        teacher_lp=batch.teacher_lp,
        student_lp=batch.student_lp,
        contrast_lp=batch.contrast_lp,
        mask=mask,
        lengths=list(lengths),
        example_columns={"feedback": ["f0", "f1", "f2"], "outcome_reward": [1.0, 0.0, 0.5]}, spec=CreditSpec(lam=0.25)
    )
    return table, batch


def _form_reward(form, teacher, student, baseline, k, lam):
    """One token's reward of ``form``, docs/CREDIT-MATH.md section 4, from plain floats."""
    pooled_with_input = np.log((np.exp(teacher) + k * np.exp(baseline)) / (k + 1))
    penalty = {"teacher": baseline, "shortcut": baseline - student, "contrastive": pooled_with_input - student}[form]
    return teacher - student - lam * penalty


def test_rows_align_positions_ids_and_logprobs():
    table, batch = _table()
    assert len(table) == 4 + 2 + 3
    for row in table.itertuples():
        b = int(row.example_id[1:])
        t = row.position
        assert row.token_id == batch.responses[b, t].item()
        assert row.token == f"<{batch.responses[b, t].item()}>"
        assert row.teacher_logprob == batch.teacher_lp[b, t].item()
        assert row.student_logprob == batch.student_lp[b, t].item()
        assert row.contrast_logprobs.tolist() == batch.contrast_lp[b, :, t].tolist()
        baseline = batch.contrast_lp[b, :, t].mean().item()
        assert row.contrast_baseline == pytest.approx(baseline, abs=1e-12)
        sd = batch.teacher_lp[b, t].item() - batch.student_lp[b, t].item()
        assert row.sd_reward == pytest.approx(sd, abs=1e-12)
        assert row.credit_reward == pytest.approx(
            _form_reward(row.form, batch.teacher_lp[b, t].item(), batch.student_lp[b, t].item(), baseline, 2, 0.25),
            abs=1e-12,
        )
        assert row.specific == pytest.approx(batch.teacher_lp[b, t].item() - baseline, abs=1e-12)
        assert row.shortcut == pytest.approx(baseline - batch.student_lp[b, t].item(), abs=1e-12)
        assert row.form == credit.DEFAULT_FORM
        assert row.feedback == f"f{b}"
    assert set(schema.TOKEN_COLUMNS) <= set(table.columns) and "generic" not in table.columns


def test_mask_false_rows_have_zero_rewards():
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    table, _ = _table(mask=mask)
    dropped = table[~table["mask"]]
    assert len(dropped) == 1 + 3
    for name in schema.REWARD_COLUMNS:
        assert (dropped[name] == 0).all()
    assert (table.loc[table["mask"], "sd_reward"] != 0).all()


def test_no_contrast_gives_nan_contrast_columns():
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=2, seed=0)
    batch = model.sample_batch(2, 1, seed=0)
    table = schema.build_token_table(
        ["a", "b"], ["p", "q"], batch.responses, [["x", "y"]] * 2, batch.teacher_lp, batch.student_lp,
        spec=CreditSpec(n_contrast=0),
    )
    assert table["credit_reward"].isna().all() and table["n_contrast"].eq(0).all()
    unlabelled = schema.build_token_table(  # no spec (a GRPO run): no CREDIT labels at all
        ["a", "b"], ["p", "q"], batch.responses, [["x", "y"]] * 2, batch.teacher_lp, batch.student_lp
    )
    assert not {"lam", "pool", "form", "n_contrast"} & set(unlabelled.columns)
    summary = schema.example_summary(table)
    assert summary["credit_sum"].isna().all()
    assert summary["sd_sum"].tolist() == pytest.approx(
        (batch.teacher_lp - batch.student_lp).sum(1).tolist(), abs=1e-12
    )


def test_parquet_round_trip(tmp_path):
    table, _ = _table()
    path = schema.write_token_table(table, tmp_path / "sub" / "tokens.parquet")
    back = schema.read_token_table(path)
    pd.testing.assert_frame_equal(
        back.drop(columns="contrast_logprobs"), table.drop(columns="contrast_logprobs"), check_dtype=False
    )
    assert [list(v) for v in back["contrast_logprobs"]] == [list(v) for v in table["contrast_logprobs"]]
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]
    assert len(schema.read_token_table(tmp_path)) == len(table)


def test_example_summary_gives_pmi_and_contrastive_pmi():
    model = theory.ExactModel.random(n_inputs=4, vocab_size=3, length=3, seed=5)
    batch = model.sample_batch(4, 2, seed=5)
    table = schema.build_token_table(
        [f"e{i}" for i in range(4)],
        [str(int(x)) for x in batch.inputs],
        batch.responses,
        [["t"] * 3] * 4,
        batch.teacher_lp,
        batch.student_lp,
        batch.contrast_lp, spec=CreditSpec(lam=0.5, form="teacher")
    )
    summary = schema.example_summary(table).set_index("example_id")
    for i in range(4):
        assert summary.loc[f"e{i}", "sd_sum"] == pytest.approx(batch.pmi[i].item(), abs=1e-9)
        expected = batch.pmi[i].item() - 0.5 * batch.contrast_seq_lp[i].mean().item()
        assert summary.loc[f"e{i}", "credit_sum"] == pytest.approx(expected, abs=1e-9)
        assert summary.loc[f"e{i}", "n_tokens"] == 3
        assert summary.loc[f"e{i}", "specific_sum"] + summary.loc[f"e{i}", "shortcut_sum"] == pytest.approx(
            batch.pmi[i].item(), abs=1e-9)
    assert "generic_sum" not in summary.columns


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda t: t.drop(columns="teacher_logprob"), r"missing required column\(s\) \['teacher_logprob'\]"),
        (
            lambda t: t.assign(position=t["position"].astype(float)),
            "'position' has dtype float64, expected int",
        ),
        (lambda t: t.assign(mask=t["mask"].astype(int)), "'mask' has dtype int64, expected bool"),
        (lambda t: t.assign(token_id=t["token_id"].astype(str)), "'token_id'"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "duplicate row"),
        (lambda t: t.assign(sd_reward=np.nan), "'sd_reward' has NaN"),
        (lambda t: t.assign(position=-t["position"] - 1), "negative"),
    ],
)
def test_validation_names_the_column(mutate, match):
    table, _ = _table()
    with pytest.raises(schema.SchemaError, match=match):
        schema.validate_token_table(mutate(table), "some.parquet")


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(schema.SchemaError, match="bad.parquet: not a readable Parquet"):
        schema.read_token_table(bad)
    with pytest.raises(schema.SchemaError, match="no such file"):
        schema.read_token_table(tmp_path / "absent.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(schema.SchemaError, match="no .parquet files"):
        schema.read_token_table(tmp_path / "empty")
    table, _ = _table()
    table.drop(columns="shortcut").to_parquet(tmp_path / "old.parquet")
    with pytest.raises(schema.SchemaError, match=r"old.parquet: missing required column\(s\) \['shortcut'\]"):
        schema.read_token_table(tmp_path / "old.parquet")


def test_legacy_generic_column_is_read_and_checked(tmp_path):
    table, _ = _table()
    legacy = table.assign(generic=table["contrast_baseline"])
    legacy.to_parquet(tmp_path / "legacy.parquet")
    back = schema.read_token_table(tmp_path / "legacy.parquet")
    assert back["generic"].tolist() == table["contrast_baseline"].tolist()
    with pytest.raises(schema.SchemaError, match="legacy.parquet: column 'generic' has dtype .*, expected float"):
        schema.validate_token_table(table.assign(generic="x"), "legacy.parquet")


def test_build_rejects_mismatched_lengths():
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=2, seed=0)
    batch = model.sample_batch(2, 1, seed=0)
    with pytest.raises(schema.SchemaError, match="one entry per row"):
        schema.build_token_table(
            ["a"], ["p", "q"], batch.responses, [["x"]] * 2, batch.teacher_lp, batch.student_lp
        )
    with pytest.raises(ValueError, match="lam"):
        schema.build_token_table(
            ["a", "b"],
            ["p", "q"],
            batch.responses,
            [["x", "y"]] * 2,
            batch.teacher_lp,
            batch.student_lp,
            batch.contrast_lp, spec=CreditSpec(lam=2.0)
        )


def test_table_rewards_agree_with_credit_module_in_float32():
    table, batch = _table()
    for name in ("teacher_lp", "student_lp", "contrast_lp"):
        assert getattr(batch, name).dtype == torch.float64
    reference = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=0.25))
    for row in table.itertuples():
        assert row.credit_reward == pytest.approx(
            reference[int(row.example_id[1:]), row.position].item(), abs=1e-12
        )


def test_build_names_the_argument_that_does_not_fit():
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=2, seed=0)
    batch = model.sample_batch(2, 1, seed=0)
    args = (["a", "b"], ["p", "q"], batch.responses, [["x", "y"]] * 2, batch.teacher_lp, batch.student_lp)
    with pytest.raises(schema.SchemaError, match=r"token_ids: expected a \[B, T\] tensor, got list"):
        schema.build_token_table(*args[:2], batch.responses.tolist(), *args[3:])
    with pytest.raises(schema.SchemaError, match=r"teacher_lp: shape \(2, 1\) differs from token_ids \(2, 2\)"):
        schema.build_token_table(*args[:4], batch.teacher_lp[:, :1], batch.student_lp)
    with pytest.raises(schema.SchemaError, match=r"lengths\[1\] = 3: must be in \[0, 2\]"):
        schema.build_token_table(*args, lengths=[2, 3])
    with pytest.raises(schema.SchemaError, match=r"lengths\[0\] = 2: .*tokens\[0\] \(got 1\)"):
        schema.build_token_table(*args[:3], [["x"], ["x", "y"]], *args[4:])
    with pytest.raises(ValueError, match="form"):
        schema.build_token_table(*args, spec=CreditSpec(form="nope"))


@pytest.mark.parametrize("axis", ["input", "feedback"])
def test_a_sample_without_contrasts_gets_nan_credit_columns_and_the_others_are_unchanged(axis):
    """The run log marks a sample that had no contrast with an all-NaN ``[K, T]`` (a feedback-axis sample whose
    teacher context holds no feedback): its split columns are NaN, every other sample's equal the table built
    without it."""
    model = theory.ExactModel.random(n_inputs=4, vocab_size=5, length=3, seed=3)
    batch = model.sample_batch(4, 2, seed=3)
    contrast = batch.contrast_lp.clone()
    contrast[1] = float("nan")
    key = "contrast_lp" if axis == "input" else "feedback_contrast_lp"
    columns = list(schema.CONTRAST_COLUMNS if axis == "input" else schema.FEEDBACK_COLUMNS)

    def build(rows):
        return schema.build_token_table(
            [f"e{i}" for i in rows], [str(int(batch.inputs[i])) for i in rows], batch.responses[rows],
            [["t"] * 3] * len(rows), batch.teacher_lp[rows], batch.student_lp[rows],
            **{key: contrast[rows]}, spec=CreditSpec(lam=0.5, form="contrastive")
        ).set_index(["example_id", "position"])

    table, without = build([0, 1, 2, 3]), build([0, 2, 3])
    assert table.loc["e1", columns].isna().all().all()
    assert table.loc["e1", "sd_reward"].notna().all()
    np.testing.assert_allclose(table.drop(index="e1")[columns].to_numpy(), without[columns].to_numpy(), atol=1e-12)
    assert table.drop(index="e1")[columns].notna().all().all()
