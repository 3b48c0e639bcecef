"""The feedback axis (docs/CREDIT-MATH.md section 8): identities on the exact model against brute-force
enumeration, and the scorer's feedback contrasts against plain forwards on contexts rebuilt here."""

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_support import WORDS, EchoEnv
from transformers import TrainerCallback

from creditlens import cli, compare, credit, errors, models, schema, stats, theory
from creditlens.contexts import Templates, teacher_prompt
from creditlens.credit import CreditSpec
from creditlens.envs.base import Environment, Outcome
from creditlens.envs.shortcut import ShortcutEnv
from creditlens.scoring import Scorer

TOL = 1e-4  # float32 scorer vs float64 plain forward


class Enumerated:
    """Every quantity of the exact model by summing the joint q(y, f | x) over all full responses."""

    def __init__(self, model: theory.ExactModel):
        self.model = model
        self.seqs = list(itertools.product(range(model.vocab_size), repeat=model.length))

    def _index(self, seq) -> int:
        out = 0
        for token in seq:
            out = out * self.model.vocab_size + int(token)
        return out

    def seq_prob(self, x: int, seq) -> float:
        prob = 1.0
        for t in range(self.model.length):
            prob *= self.model.policy[t][x, self._index(seq[:t]), seq[t]]
        return prob

    def joint(self, x: int, f: int, prefix) -> float:
        """P(y_<=len(prefix) = prefix, f | x)."""
        prefix = list(prefix)
        return sum(
            self.seq_prob(x, s) * self.model.feedback[x, self._index(s), f]
            for s in self.seqs
            if list(s[: len(prefix)]) == prefix
        )

    def teacher(self, x: int, f: int, y) -> np.ndarray:
        return np.array([math.log(self.joint(x, f, y[: t + 1])) - math.log(self.joint(x, f, y[:t]))
                         for t in range(self.model.length)])

    def student(self, x: int, y) -> np.ndarray:
        return np.array([math.log(self.model.policy[t][x, self._index(y[:t]), y[t]]) for t in range(self.model.length)])

    def pmi(self, x: int, f: int, y) -> float:
        return math.log(self.model.feedback[x, self._index(y), f]) - math.log(self.joint(x, f, []))

    def seq_given_feedback(self, x: int, f: int, y) -> float:
        """log pi(y | x, f) = log q(y, f | x) - log p(f | x)."""
        return math.log(self.seq_prob(x, y) * self.model.feedback[x, self._index(y), f]) - math.log(self.joint(x, f, []))


@settings(max_examples=30, deadline=None)
@given(
    n_inputs=st.integers(1, 3),
    vocab=st.integers(2, 3),
    length=st.integers(1, 3),
    n_feedback=st.integers(2, 5),
    k=st.integers(1, 4),
    lam=st.floats(0, 1),
    seed=st.integers(0, 10_000),
    concentration=st.sampled_from([0.3, 1.0, 5.0]),
)
def test_feedback_identities_below_1e9(n_inputs, vocab, length, n_feedback, k, lam, seed, concentration):
    k = min(k, n_feedback - 1)
    model = theory.ExactModel.random(n_inputs, vocab, length, n_feedback, seed, concentration)
    batch = theory.sample_feedback_batch(model, batch_size=4, k=k, seed=seed)
    errors = theory.verify_feedback_identities(batch, lam=lam)
    assert errors.max() < 1e-9, errors
    assert (batch.contrast_feedback != batch.feedback.unsqueeze(1)).all()
    for row in batch.contrast_feedback.tolist():
        assert len(set(row)) == k


@pytest.mark.parametrize("n_feedback,k", [(3, 2), (5, 3), (4, 1)])
def test_feedback_split_and_forms_against_enumeration(n_feedback, k):
    """F_t, the split and every form's sequence objective, recomputed here by enumeration, not by the batch."""
    model = theory.ExactModel.random(n_inputs=2, vocab_size=3, length=3, n_feedback=n_feedback, seed=n_feedback)
    batch = theory.sample_feedback_batch(model, batch_size=4, k=k, seed=k)
    brute = Enumerated(model)
    lam = 0.43
    rewards = {form: credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=lam, form=form))
               for form in credit.FORMS}
    parts = credit.decompose(batch.teacher_lp, batch.contrast_lp, batch.student_lp)
    for i in range(4):
        x, f = int(batch.inputs[i]), int(batch.feedback[i])
        fs, y = batch.contrast_feedback[i].tolist(), batch.responses[i].tolist()
        teacher, student = brute.teacher(x, f, y), brute.student(x, y)
        contrast = np.stack([brute.teacher(x, fj, y) for fj in fs])
        baseline = contrast.mean(axis=0)  # F_t, mean pooling
        np.testing.assert_allclose(parts.baseline[i].numpy(), baseline, rtol=0, atol=1e-12)
        np.testing.assert_allclose(parts.specific[i].numpy(), teacher - baseline, rtol=0, atol=1e-12)
        np.testing.assert_allclose(parts.shortcut[i].numpy(), baseline - student, rtol=0, atol=1e-12)
        pmi = brute.pmi(x, f, y)
        mean_contrast_pmi = np.mean([brute.pmi(x, fj, y) for fj in fs])
        # what this feedback explains + what any reprompt raises, summed over the response
        assert parts.specific[i].sum().item() == pytest.approx(pmi - mean_contrast_pmi, abs=1e-9)
        assert parts.shortcut[i].sum().item() == pytest.approx(mean_contrast_pmi, abs=1e-9)
        mixture = sum(
            math.log((math.exp(teacher[t]) + k * math.exp(baseline[t])) / (k + 1)) for t in range(model.length)
        )
        expected = {
            "teacher": pmi - lam * np.mean([brute.seq_given_feedback(x, fj, y) for fj in fs]),
            "shortcut": pmi - lam * mean_contrast_pmi,
            "contrastive": (1 - lam) * pmi + lam * (brute.seq_given_feedback(x, f, y) - mixture),
        }
        for form, value in expected.items():
            assert rewards[form][i].sum().item() == pytest.approx(value, abs=1e-9), form


def test_rlcsd_reward_is_the_shortcut_form_at_lam_1_with_a_wrong_hint():
    """log pi_T(y_t | x, f) - log pi_T(y_t | x, f_wrong): the student term cancels, the sum is the log-odds
    of f over f_wrong that y adds: [log p(f|x,y) - log p(f_wrong|x,y)] - [log p(f|x) - log p(f_wrong|x)]."""
    model = theory.ExactModel.random(n_inputs=2, vocab_size=3, length=3, n_feedback=4, seed=9)
    brute = Enumerated(model)
    rng = np.random.default_rng(0)
    for x, f, wrong in [(0, 1, 3), (1, 0, 2), (1, 3, 1)]:
        y = model.sample_response(x, rng)
        batch = theory.feedback_batch(model, [x], [f], [y], [[wrong]])
        rlcsd = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp, spec=credit.CreditSpec(lam=1.0, form="shortcut"))
        np.testing.assert_allclose(rlcsd[0].numpy(), brute.teacher(x, f, y) - brute.teacher(x, wrong, y),
                                   rtol=0, atol=1e-12)
        other_student = credit.credit_rewards(batch.teacher_lp, batch.contrast_lp, batch.student_lp - 0.7, spec=credit.CreditSpec(lam=1.0, form="shortcut"))
        np.testing.assert_allclose(other_student.numpy(), rlcsd.numpy(), rtol=0, atol=1e-12)
        index = brute._index(y)
        log_odds_given_y = math.log(model.feedback[x, index, f]) - math.log(model.feedback[x, index, wrong])
        log_odds_prior = math.log(brute.joint(x, f, [])) - math.log(brute.joint(x, wrong, []))
        assert rlcsd.sum().item() == pytest.approx(log_odds_given_y - log_odds_prior, abs=1e-9)


def test_both_axes_split_the_same_sd_reward():
    """One response, two decompositions: input axis (x_j, f, y) and feedback axis (x, f_j, y)."""
    model = theory.ExactModel.random(n_inputs=3, vocab_size=3, length=3, n_feedback=3, seed=4)
    rng = np.random.default_rng(1)
    x, f, y = 0, 2, model.sample_response(0, rng)
    by_input = model.batch([x], [f], [y], [[1, 2]])
    by_feedback = theory.feedback_batch(model, [x], [f], [y], [[0, 1]])
    torch_input = credit.decompose(by_input.teacher_lp, by_input.contrast_lp, by_input.student_lp)
    torch_feedback = credit.decompose(by_feedback.teacher_lp, by_feedback.contrast_lp, by_feedback.student_lp)
    np.testing.assert_allclose(torch_input.sd.numpy(), torch_feedback.sd.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose((torch_feedback.specific + torch_feedback.shortcut).numpy(), torch_input.sd.numpy(),
                               rtol=0, atol=1e-12)
    assert not np.allclose(torch_input.specific.numpy(), torch_feedback.specific.numpy())


def test_verify_feedback_identities_detects_a_wrong_objective_and_bad_k():
    model = theory.ExactModel.random(n_inputs=2, vocab_size=3, length=3, n_feedback=3, seed=2)
    batch = theory.sample_feedback_batch(model, 4, 2, seed=0)
    broken = theory.FeedbackBatch(**{**batch.__dict__, "contrast_pmi": batch.contrast_pmi + 0.5})
    errors = theory.verify_feedback_identities(broken, lam=0.5)
    assert errors.shortcut_form > 0.2 and errors.shortcut_sum > 0.4 and errors.teacher_form < 1e-9
    with pytest.raises(ValueError, match="k=3"):
        theory.sample_feedback_batch(model, 4, 3)


# ---- scorer and table: feedback contrasts (x, f_j, y) on a tiny LM ----



@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny")


@pytest.fixture(scope="module")
def examples():
    return [
        {
            "example_id": f"p{p}-s{s}",
            "prompt_id": f"p{p}",
            "prompt": f"Problem {p}: write add{p}(a, b) returning a + b + {p}.",
            "feedback": f"assert add{p}(1, 2) == {3 + p} failed: got {s}",
            "response": f"def add{p}(a, b):\n    return a - b{' + 1' * s}",
        }
        for p in range(3)
        for s in range(2)
    ]


def plain_logprobs(model, ids: list[int], n: int) -> torch.Tensor:
    """Log-probs of the last n tokens of ids with one unpadded forward pass, full logits."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)
    return lp[torch.arange(len(ids) - n - 1, len(ids) - 1), torch.tensor(ids[len(ids) - n :])]


@pytest.mark.parametrize("share_prefixes", [False, True])
def test_feedback_contrast_matches_plain_forwards_on_rebuilt_contexts(tiny, examples, share_prefixes):
    model, tok = tiny
    scorer = Scorer(model, tok, batch_size=3, share_prefixes=share_prefixes, chunk_tokens=9, progress=False)
    templates = Templates()  # TRL SDPO's defaults
    table = scorer.score(examples, feedback_contrast=2, seed=3, spec=CreditSpec(n_contrast=1, lam=1.0, form="shortcut"))
    by_id = {e["example_id"]: e for e in examples}
    for example_id, rows in table.groupby("example_id"):
        own = by_id[example_id]
        sources = json.loads(rows["feedback_contrast_examples"].iloc[0])
        assert len(set(sources)) == 2 and all(by_id[s]["feedback"] != own["feedback"] for s in sources)
        response = rows["token_id"].tolist()
        n = len(response)
        teacher = plain_logprobs(model, scorer.build({**own, "response": response}).teacher_ids, n)
        contrast = []
        for source in sources:
            # rebuilt here: this prompt and response, the other example's feedback, through the plain teacher path
            rebuilt = scorer.build({**own, "response": response, "feedback": by_id[source]["feedback"]})
            chat = [{"role": "user", "content": teacher_prompt(own["prompt"], "", templates.feedback_text(
                by_id[source]["feedback"]), templates)}]
            assert tok.decode(rebuilt.teacher) == tok.apply_chat_template(chat, add_generation_prompt=True,
                                                                          tokenize=False)
            contrast.append(plain_logprobs(model, rebuilt.teacher_ids, n))
        contrast = torch.stack(contrast)
        student = torch.tensor(rows["student_logprob"].to_numpy())
        np.testing.assert_allclose(np.stack(rows["feedback_contrast_logprobs"].to_list()), contrast.T, atol=TOL)
        np.testing.assert_allclose(rows["feedback_baseline"], contrast.mean(0), atol=TOL)
        np.testing.assert_allclose(rows["feedback_specific"], teacher - contrast.mean(0), atol=TOL)
        np.testing.assert_allclose(rows["feedback_shortcut"], contrast.mean(0) - student, atol=TOL)
        # RLCSD: the shortcut form at lam = 1 on feedback contrasts, the student term cancels
        np.testing.assert_allclose(rows["feedback_credit_reward"], teacher - contrast.mean(0), atol=TOL)
    # the contrast feedback changes the teacher, so the comparisons above can fail
    assert (table["feedback_baseline"] - table["teacher_logprob"]).abs().mean() > 1e-3
    assert (table["n_feedback_contrast"] == 2).all()


def test_feedback_contrast_leaves_the_input_axis_alone_and_ignores_order(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    plain = scorer.score(examples, seed=1, spec=CreditSpec(n_contrast=2))
    both = scorer.score(examples, seed=1, feedback_contrast=3, spec=CreditSpec(n_contrast=2))
    reversed_both = scorer.score(examples[::-1], seed=1, feedback_contrast=3, spec=CreditSpec(n_contrast=2))
    assert not set(schema.FEEDBACK_COLUMNS) & set(plain.columns)
    for name in ("teacher_logprob", "specific", "shortcut", "credit_reward"):
        np.testing.assert_allclose(both[name], plain[name], atol=TOL)
    assert both["feedback_contrast_examples"].tolist() == reversed_both["feedback_contrast_examples"].tolist()
    np.testing.assert_allclose(both["feedback_specific"], reversed_both["feedback_specific"], atol=TOL)


def test_summary_and_both_generic_shares(tiny, examples, tmp_path):
    model, tok = tiny
    table = Scorer(model, tok, progress=False).score(examples, feedback_contrast=2, spec=CreditSpec(n_contrast=2))
    path = schema.write_token_table(table, tmp_path / "tokens.parquet")
    table = schema.read_token_table(path)
    summary = schema.example_summary(table)
    np.testing.assert_allclose(summary["feedback_specific_sum"] + summary["feedback_shortcut_sum"],
                               summary["sd_sum"], atol=1e-4)
    counted = table[table["mask"]]
    moved = counted[counted["sd_reward"] >= stats.MOVED]
    for axis, prefix in (("input", ""), ("feedback", "feedback_")):
        generic = np.minimum(moved[f"{prefix}shortcut"].clip(lower=0), moved["sd_reward"]).sum()
        assert stats.generic_share(table, axis=axis) == pytest.approx(generic / moved["sd_reward"].sum(), rel=1e-12)
    assert stats.generic_share(table, "input") != pytest.approx(stats.generic_share(table, "feedback"))
    with pytest.raises(ValueError, match="--feedback-contrast"):
        stats.generic_share(table.drop(columns=list(schema.FEEDBACK_COLUMNS)), axis="feedback")


def test_tampered_feedback_columns_are_refused_on_read(tiny, examples, tmp_path):
    model, tok = tiny
    table = Scorer(model, tok, progress=False).score(examples, feedback_contrast=1, spec=CreditSpec(n_contrast=0))
    broken = table.assign(feedback_shortcut=table["feedback_shortcut"] + 0.5)
    broken.to_parquet(tmp_path / "broken.parquet", index=False)
    with pytest.raises(errors.SchemaError, match=r"broken.parquet: row 0: feedback_specific \+ feedback_shortcut"):
        schema.read_token_table(tmp_path / "broken.parquet")
    table.drop(columns=["feedback_baseline"]).to_parquet(tmp_path / "partial.parquet", index=False)
    with pytest.raises(errors.SchemaError, match=r"partial.parquet: .* not \['feedback_baseline'\]"):
        schema.read_token_table(tmp_path / "partial.parquet")


def test_bad_feedback_contrast_input(tiny, examples):
    model, tok = tiny
    scorer = Scorer(model, tok, progress=False)
    same = [{**e, "feedback": "wrong"} if i < 4 else e for i, e in enumerate(examples)]  # 3 distinct texts
    for rows, asked, used in ((examples, 6, 5), (same, 3, 2)):  # fewer distinct texts than asked: all of them
        table = scorer.score(rows, feedback_contrast=asked, spec=CreditSpec(n_contrast=0))
        assert (table["n_feedback_contrast"] == used).all()
        feedback = {str(r.get("example_id", i)): r["feedback"] for i, r in enumerate(rows)}
        for row in table.drop_duplicates("example_id").itertuples():
            texts = [feedback[e] for e in json.loads(row.feedback_contrast_examples)]
            assert len(set(texts)) == used and row.feedback not in texts
    with pytest.raises(errors.InputError, match="feedback_contrast: must be an integer >= 0"):
        scorer.score(examples, feedback_contrast=-1)
    empty = [{**e, "feedback": "  "} if i == 2 else e for i, e in enumerate(examples)]
    with pytest.raises(errors.InputError, match="example 2: field 'feedback' must be a non-empty string"):
        scorer.score(empty, feedback_contrast=1, spec=CreditSpec(n_contrast=0))


def test_cli_feedback_contrast_writes_both_generic_shares(examples, tmp_path, capsys):
    path = tmp_path / "ex.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    out = tmp_path / "out"
    argv = ["score", str(path), "--model", "tiny", "--contrast", "1", "--feedback-contrast", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    table = schema.read_token_table(out / "tokens.parquet")
    summary = pd.read_parquet(out / "summary.parquet").set_index("example_id")
    for axis, column in (("input", "generic_share"), ("feedback", "feedback_generic_share")):
        expected = stats.generic_share_by_example(table, axis)
        np.testing.assert_allclose(summary.loc[expected.index, column], expected, rtol=1e-12)
    assert (summary["n_feedback_contrast"] == 2).all()
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert cli.main(argv[:-1] + [str(refused)] + ["--feedback-contrast", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--feedback-contrast: n_contrast=7 needs 8 distinct feedback texts" in err
    assert "holds 6" in err
    assert not refused.exists()


# ---- dashboard: the decomposition and token pages read the feedback axis ----

APP_PAGES = Path(__file__).resolve().parents[1] / "app" / "pages"


@pytest.fixture(scope="module")
def scored_both_axes(tiny, examples, tmp_path_factory) -> Path:
    model, tok = tiny
    root = tmp_path_factory.mktemp("scored")
    table = Scorer(model, tok, progress=False).score(examples, feedback_contrast=2, seed=2, spec=CreditSpec(n_contrast=1))
    schema.write_token_table(table, root / "both" / "tokens.parquet")
    return root


def test_decomposition_page_switches_axis(scored_both_axes, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CREDITLENS_RUNS_DIR", str(scored_both_axes))
    at = AppTest.from_file(str(APP_PAGES / "2_Decomposition.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    table = pd.read_parquet(scored_both_axes / "both" / "tokens.parquet")
    counted = table[table["mask"]]
    teacher, student = counted["teacher_logprob"], counted["student_logprob"]
    by_axis = {  # baselines recomputed from the stored contrast log-probs (mean pooling)
        "input": np.array([np.mean(v) for v in counted["contrast_logprobs"]]),
        "feedback": np.array([np.mean(v) for v in counted["feedback_contrast_logprobs"]]),
    }
    assert at.sidebar.radio(key="axis").options == ["input", "feedback"]
    for axis in ("input", "feedback"):
        at.sidebar.radio(key="axis").set_value(axis).run()
        assert not at.exception, [e.value for e in at.exception]
        specific, shortcut = teacher - by_axis[axis], by_axis[axis] - student
        sd = teacher - student
        share = np.minimum(np.maximum(shortcut, 0), sd)[sd >= stats.MOVED].sum() / sd[sd >= stats.MOVED].sum()
        assert at.metric[0].value == f"{share:.1%}" and axis in at.metric[0].label
        assert at.metric[1].value == f"{specific.mean():+.3f}"
        assert f"{axis} axis" in at.caption[0].value
    assert at.metric[0].value != f"{stats.generic_share(table, 'input'):.1%}"


def test_token_page_offers_feedback_components(scored_both_axes, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CREDITLENS_RUNS_DIR", str(scored_both_axes))
    at = AppTest.from_file(str(APP_PAGES / "1_Token_credit.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    options = at.sidebar.selectbox(key="component").options
    assert {"specific", "feedback_specific", "feedback_shortcut"} <= set(options)
    at.sidebar.selectbox(key="component").set_value("specific").run()
    at.sidebar.selectbox(key="second").set_value("feedback_specific").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.html) == 2 and "what this feedback explains" in at.html[1].proto.body
    table = pd.read_parquet(scored_both_axes / "both" / "tokens.parquet")
    shown = table[table["example_id"] == at.caption[0].value.split("example `")[1].split("`")[0]]
    counted = shown[shown["mask"]]
    baseline = np.array([np.mean(v) for v in counted["feedback_contrast_logprobs"]])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Σ feedback_specific"] == f"{(counted['teacher_logprob'] - baseline).sum():+.3f}"
    assert metrics["Σ feedback_shortcut"] == f"{(baseline - counted['student_logprob']).sum():+.3f}"


# ---- environments: a deliberately wrong hint for the feedback axis ----


@pytest.mark.parametrize("cue,cue_kind", [(0.0, "filler"), (1.0, "filler"), (1.0, "letter")])
def test_shortcut_wrong_hint_points_every_wrong_position_at_another_input(cue, cue_kind):
    env = ShortcutEnv(cue=cue, cue_kind=cue_kind)
    rng = np.random.default_rng(0)
    for problem in env.problems("train", n=12, seed=1):
        answer = problem.reference["answer"]
        letters = [a if rng.random() < 0.5 else env.letters[(env.letters.index(a) + 1) % len(env.letters)]
                   for a in answer]
        response = f"answer : {' '.join(letters)} ."
        right, wrong = env.verify(problem, response), env.wrong_feedback(problem, response)
        if right.passed:
            assert wrong is None
            continue
        right_hints = re.findall(r"position (\d+) should be input (\d+) \.", right.feedback)
        wrong_hints = re.findall(r"position (\d+) should be input (\d+) \.", wrong)
        assert [p for p, _ in wrong_hints] == [p for p, _ in right_hints]  # the same wrong positions
        source = problem.reference["source"]
        for (position, shown), (_, true) in zip(wrong_hints, right_hints, strict=True):
            assert shown != true and int(shown) == source[int(position) % env.length] + 1
        assert wrong.endswith(env.cue_feedback) == right.feedback.endswith(env.cue_feedback) == (cue == 1.0)
    problem = env.problems("train", n=1)[0]
    assert env.wrong_feedback(problem, "not an answer") is None


def test_environments_without_a_wrong_hint_offer_none():
    class Echo(Environment):
        name = "echo"

        def problems(self, split="train", n=None, seed=0):
            return []

        def verify(self, problem, response):
            return Outcome(0.0, False, "no")

    assert Echo().wrong_feedback(None, "anything") is None


# ---- trainer: CreditConfig.contrast_axis = "feedback" (RLCSD = shortcut form at lam 1) ----


class WrongHintEchoEnv(EchoEnv):
    """EchoEnv that offers a wrong hint: the expected word of the next problem."""

    def wrong_feedback(self, problem, response):
        outcome = self.verify(problem, response)
        if outcome.passed:
            return None
        word = problem.reference["word"]
        other = WORDS[(WORDS.index(word) + 1) % len(WORDS)]
        return outcome.feedback.replace(f"expected {word},", f"expected {other},", 1)


def test_trainer_feedback_axis_contexts_and_rlcsd_advantage(tmp_path):
    from creditlens.training.config import parse_config
    from creditlens.training.run import build_trainer

    model, tokenizer = models.load("tiny")
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    env = WrongHintEchoEnv()
    config = dict(num_prompts=3, num_generations=2, max_completion_length=6, n_eval_problems=2, log_kl=False,
                  lam=1.0, form="shortcut", contrast_axis="feedback", n_contrast=2, use_successful_as_teacher=False)
    trainer = build_trainer("credit", env, str(model_dir), *parse_config(config, "credit", tmp_path / "out"))
    assert trainer.args.contrast_axis == "feedback"
    trainer.current_gradient_accumulation_steps = 1
    captured = {}

    class Capture(TrainerCallback):
        def on_rollouts_scored(self, rollouts, **_):
            captured.setdefault("rollouts", {}).update(rollouts)

        def on_tokens_scored(self, **payload):
            captured["tokens"] = payload

    trainer.add_callback(Capture())
    trainer.model.train()
    torch.manual_seed(0)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.compute_loss(trainer.model, batch)
    tokens = captured["tokens"]

    problems = {p.id: p for p in env.problems()}
    own = [problems[captured["rollouts"][i].prompt_id] for i in batch["rollout_id"].tolist()]
    texts = tokenizer.batch_decode(batch["completion_ids"], skip_special_tokens=True)
    feedbacks = [env.verify(p, t).feedback for p, t in zip(own, texts, strict=True)]
    template = trainer.args.feedback_template

    def context_ids(problem, raw_feedback):
        text = trainer.args.reprompt_template.format(prompt=problem.prompt[-1]["content"], solution="",
                                                     feedback=template.format(feedback_raw=raw_feedback))
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return ids if isinstance(ids, list) else ids["input_ids"]

    ids = batch["completion_ids"].unsqueeze(-1)
    expected_contrast = torch.zeros(ids.shape[0], 2, ids.shape[1])
    for i, problem in enumerate(own):
        assert feedbacks[i], "the tiny model should fail the echo task here"
        got = [batch["contrast_prompt_ids"][i, k][batch["contrast_prompt_mask"][i, k].bool()].tolist() for k in (0, 1)]
        assert got[0] == context_ids(problem, env.wrong_feedback(problem, texts[i]))  # the wrong hint comes first
        others = {tuple(context_ids(problem, f)) for f in feedbacks if f != feedbacks[i]}
        assert tuple(got[1]) in others  # this prompt, another sample's feedback
        for k in (0, 1):
            context = torch.tensor([got[k]])
            one = {key: batch[key][i : i + 1] for key in ("completion_ids", "completion_mask")}
            full = torch.cat([context, one["completion_ids"]], dim=1)
            with torch.no_grad():
                logits = trainer.teacher_model(input_ids=full).logits[:, :-1]
            lp = torch.log_softmax(logits[:, -ids.shape[1]:].float(), -1)[0]
            expected_contrast[i, k] = lp.gather(-1, ids[i])[..., 0]
    split = batch["teacher_input_ids"].shape[1] - ids.shape[1]
    full = batch["teacher_input_ids"]
    with torch.no_grad():
        logits = trainer.teacher_model(input_ids=full, attention_mask=batch["teacher_attention_mask"]).logits[:, :-1]
    teacher = torch.log_softmax(logits[:, split - 1:].float(), -1).gather(-1, ids)[..., 0]
    mask = tokens["loss_mask"].bool()
    assert mask.any() and bool(tokens["has_contrast"].all())
    # RLCSD: log pi_T(x, f) - mean_j log pi_T(x, f_j); the student term cancels
    torch.testing.assert_close(tokens["advantage"][mask], (teacher - expected_contrast.mean(1))[mask],
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("axis", ["input", "feedback"])
def test_run_log_table_puts_contrasts_on_their_axis(tiny, axis):
    from creditlens.training.token_log import Rollout, make_record, records_table

    _, tok = tiny
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (2, 4), generator=g)
    student, teacher = -torch.rand(2, 4, generator=g) * 3, -torch.rand(2, 4, generator=g) * 3
    contrast = -torch.rand(2, 2, 4, generator=g) * 3
    ones = torch.ones(2, 4)
    rollouts = [Rollout(f"p{i}", f"p{i}", 0.0, False, f"f{i}") for i in range(2)]
    spec = credit.CreditSpec(lam=1.0, form="shortcut", axis=axis, n_contrast=2)
    record = make_record(rollouts, ids, ones, student, teacher, teacher - student, ones, ones * 0, ones * 0, contrast,
                         spec)
    table = records_table([record], tok, 3, 0, {"run": "r", "algo": "credit"})
    schema.validate_token_table(table)
    prefix, other = ("", "feedback_") if axis == "input" else ("feedback_", "")
    expected = (teacher - contrast.mean(1)).flatten().numpy()
    np.testing.assert_allclose(table[f"{prefix}specific"], expected, atol=1e-6)
    np.testing.assert_allclose(table[f"{prefix}credit_reward"], expected, atol=1e-6)  # shortcut form at lam 1
    assert f"{other}specific" not in table or table[f"{other}specific"].isna().all()


def test_train_run_on_the_feedback_axis_logs_the_reward_it_used(tmp_path):
    """creditlens' train(): contrast_axis=feedback reaches the trainer, and the logged advantage is the table's
    feedback_credit_reward (shortcut at lam 1: RLCSD), the input-axis columns staying NaN."""
    from train_support import tiny_fields

    from creditlens.training.run import train

    config = dict(**tiny_fields(1), contrast_axis="feedback", lam=1.0, form="shortcut", n_contrast=2)
    train("credit", "echo", "tiny", config, tmp_path / "run", env=WrongHintEchoEnv())
    table = schema.read_token_table(tmp_path / "run" / "tokens")
    counted = table[table["mask"]]
    assert len(counted) and (table["n_feedback_contrast"] == 2).all() and table["specific"].isna().all()
    np.testing.assert_allclose(counted["advantage"], counted["feedback_credit_reward"], atol=1e-5)
    np.testing.assert_allclose(counted["feedback_credit_reward"], counted["feedback_specific"], atol=1e-5)
    assert 0 < stats.generic_share(table, "feedback") < 1
    per_run = compare.compare_runs([tmp_path / "run"]).per_run.iloc[0]
    assert per_run["group"] == "credit feedback shortcut lam=1" and math.isnan(per_run["generic_share"])
    moved = counted[counted["sd_reward"] >= stats.MOVED]
    generic = np.minimum(moved["feedback_shortcut"].clip(lower=0), moved["sd_reward"]).sum()
    assert per_run["feedback_generic_share"] == pytest.approx(generic / moved["sd_reward"].sum(), rel=1e-9)
