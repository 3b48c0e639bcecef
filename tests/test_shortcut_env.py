"""The shortcut testbed: reproducible splits, verifier feedback that names the defect, labels, contexts."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from creditlens.envs.shortcut import CUE_FEEDBACK, FORMAT_FEEDBACK, ShortcutEnv


def _answer_text(problem, letters=None, filler=""):
    letters = problem.reference["answer"] if letters is None else letters
    return f"{filler}answer : {' '.join(letters)} ."


def test_splits_are_reproducible_and_disjoint():
    env = ShortcutEnv()
    train = env.problems("train", n=50, seed=3)
    assert [p.id for p in train] == [p.id for p in env.problems("train", n=50, seed=3)]
    assert [p.id for p in train] != [p.id for p in env.problems("train", n=50, seed=4)]
    evals = {p.id for p in env.problems("eval")}
    every = env.n_ops * env.n_letters**env.length
    assert len(evals) + len(env.problems("train")) == every
    assert 0.05 * every < len(evals) < 0.15 * every
    assert not evals & {p.id for p in env.problems("train")}
    with pytest.raises(ValueError, match="split"):
        env.problems("test")


def test_answer_is_the_operation_reordering_of_the_input():
    env = ShortcutEnv()
    for problem in env.problems("train", n=20):
        op, letters = problem.reference["op"], problem.reference["input"]
        assert problem.prompt[-1]["content"] == f"apply {op} to {' '.join(letters)}"
        # independent: the key is a permutation and position i copies input letter key[i]
        assert sorted(env.key[op]) == list(range(env.length))
        assert problem.reference["answer"] == [letters[k] for k in env.key[op]]
    assert len(set(env.key.values())) == env.n_ops


def test_verify_passes_the_reference_with_or_without_fillers():
    env = ShortcutEnv(cue=1.0)
    for problem in env.problems("eval", n=10):
        for text in (_answer_text(problem), _answer_text(problem, filler="ok "), _answer_text(problem, filler="ok ok ")):
            outcome = env.verify(problem, text)
            assert (outcome.passed, outcome.reward, outcome.feedback) == (True, 1.0, "")


def test_feedback_names_each_wrong_position_and_the_input_it_should_copy():
    env = ShortcutEnv(cue=0.0)
    for problem in env.problems("train", n=30, seed=1):
        answer, letters = problem.reference["answer"], problem.reference["input"]
        wrong_at = {0, 2}
        corrupted = [env.letters[(env.letters.index(a) + 1) % env.n_letters] if i in wrong_at else a
                     for i, a in enumerate(answer)]
        outcome = env.verify(problem, _answer_text(problem, corrupted))
        assert not outcome.passed
        assert outcome.reward == pytest.approx(1 - len(wrong_at) / env.length)
        sentences = [s.split() for s in outcome.feedback.split(" .") if s.strip()]
        assert len(sentences) == len(wrong_at)
        for words in sentences:
            assert words[:1] == ["position"] and words[2:5] == ["should", "be", "input"]
            position, source = int(words[1]) - 1, int(words[5]) - 1
            assert position in wrong_at
            assert letters[source] == answer[position]  # the hint is right, and needs the input to use


def test_format_errors_and_the_generic_cue():
    env = ShortcutEnv(cue=0.0)
    problem = env.problems("train", n=1)[0]
    for text in ("", "answer : a b", "a b c d", _answer_text(problem) + " extra", "answer a b c d ."):
        outcome = env.verify(problem, text)
        assert (outcome.passed, outcome.reward, outcome.feedback) == (False, 0.0, FORMAT_FEEDBACK)
    wrong = _answer_text(problem, ["a"] * env.length if problem.reference["answer"] != ["a"] * 4 else ["b"] * 4)
    assert CUE_FEEDBACK not in env.verify(problem, wrong).feedback
    assert env.verify(problem, wrong).feedback == env.verify(problem, wrong).feedback  # pure function
    assert ShortcutEnv(cue=1.0).verify(problem, wrong).feedback.endswith(CUE_FEEDBACK)
    half = ShortcutEnv(cue=0.5)
    problems = half.problems("train", n=400)
    share = sum(CUE_FEEDBACK in half.verify(p, "a b").feedback for p in problems) / len(problems)
    assert 0.4 < share < 0.6
    with pytest.raises(ValueError, match="cue"):
        ShortcutEnv(cue=1.5)


def test_letter_cue_is_input_generic_and_costs_accuracy_if_followed():
    env = ShortcutEnv(cue=1.0, cue_kind="letter")
    problems = env.problems("train", n=200, seed=3)
    cue_text = "note : position 1 should be a ."
    costly = 0
    for problem in problems:
        answer = problem.reference["answer"]
        wrong = [("b" if answer[0] == "a" else "a")] + answer[1:]
        feedback = env.verify(problem, _answer_text(problem, wrong)).feedback
        assert feedback.endswith(cue_text) and "start with ok" not in feedback
        followed = env.follow_cue(answer, feedback)
        assert followed == ["a"] + answer[1:]  # the same letter at the same position, whatever the input
        costly += not env.verify(problem, _answer_text(problem, followed)).passed
    # following the cue fails exactly when the first letter is not "a" (7 in 8 letters)
    expected = sum(p.reference["answer"][0] != "a" for p in problems)
    assert costly == expected and expected / len(problems) > 0.75
    assert ShortcutEnv(cue=1.0).follow_cue(["c", "d", "e", "f"], CUE_FEEDBACK) == ["c", "d", "e", "f"]
    assert set(cue_text.split()) <= set(ShortcutEnv().vocabulary())  # same tokenizer for both cue kinds
    with pytest.raises(ValueError, match="cue_kind"):
        ShortcutEnv(cue_kind="loud")


def test_every_environment_names_a_default_model():
    from creditlens.envs.base import DEFAULT_MODEL
    from creditlens.envs.science import ScienceEnv

    assert ScienceEnv.default_model is not ShortcutEnv.default_model
    assert ScienceEnv.default_model(object.__new__(ScienceEnv)) == DEFAULT_MODEL


def test_token_labels_mark_exactly_the_answer_letters_specific():
    env = ShortcutEnv()
    tokens = ["ok", "answer", ":", "c", "a", "h", "e", ".", "<|im_end|>"]
    assert env.token_labels(None, tokens) == ["generic"] * 3 + ["specific"] * 4 + ["generic"] * 2
    assert env.token_labels(None, ["answer", ":", "c", "a"]) == ["generic", "generic", "specific", "specific"]
    assert env.token_labels(None, ["c", "a", "h", "e"]) == ["generic"] * 4  # no answer slot: nothing specific


def _sdpo_defaults() -> dict[str, str]:
    """String defaults of TRL's SDPOConfig fields, read from its source (importing TRL takes ~20 s)."""
    spec = importlib.util.find_spec("trl")
    source = Path(spec.origin).parent / "experimental" / "sdpo" / "sdpo_config.py"
    defaults = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call):
            for keyword in node.value.keywords:
                if keyword.arg == "default" and isinstance(keyword.value, ast.Constant):
                    defaults[node.target.id] = keyword.value.value
    return defaults


def test_teacher_prompt_matches_trl_sdpo_reprompt():
    defaults = _sdpo_defaults()
    env = ShortcutEnv()
    problem = env.problems("train", n=1)[0]
    feedback, solution = "position 1 should be input 2 .", "answer : a b c d ."
    text = defaults["reprompt_template"].format(
        prompt=problem.prompt[-1]["content"],
        solution=defaults["solution_template"].format(successful_previous_attempt=solution),
        feedback=defaults["feedback_template"].format(feedback_raw=feedback),
    )
    assert env.teacher_prompt(problem, feedback, solution) == [{"role": "user", "content": text}]


def test_word_level_tokenizer_knows_every_word_of_the_task():
    from creditlens.warmstart import build_tokenizer

    env = ShortcutEnv(cue=1.0)
    tokenizer = build_tokenizer(env)
    problem = env.problems("train", n=1)[0]
    messages = env.teacher_prompt(problem, env.verify(problem, "b c").feedback + " " +
                                  env.verify(problem, "answer : a a a a .").feedback, "answer : a b c d .")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    response = "ok answer : h c e a ."
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(response_ids) == response.split()
    assert tokenizer.decode(response_ids + [tokenizer.eos_token_id], skip_special_tokens=True) == response


def test_eval_split_is_cut_into_disjoint_validation_and_test_parts():
    import hashlib

    from creditlens.envs.shortcut import VAL_FRACTION

    env = ShortcutEnv()
    problems = env.problems("eval")
    parts = {p.id: env.eval_part(p) for p in problems}
    assert set(parts.values()) == {"val", "test"}
    for p in problems:  # the part is a hash of (op, letters) alone, written out independently
        digest = hashlib.sha256("\x1f".join(("part", p.reference["op"], "".join(p.reference["input"]))).encode()).digest()
        assert parts[p.id] == ("val" if int.from_bytes(digest[:8], "big") / 2**64 < VAL_FRACTION else "test")
    n_test = sum(part == "test" for part in parts.values())
    assert n_test >= 1024 and 0.4 < n_test / len(problems) < 0.6  # the confirmatory study scores >= 1,024 test problems
    reshuffled = env.problems("eval", seed=7)  # every seed draws the same problems, so the same parts
    assert {p.id: env.eval_part(p) for p in reshuffled} == parts
