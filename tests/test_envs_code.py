"""HumanEval environment: canonical solutions pass, corrupted ones fail with feedback naming the defect."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from creditlens.envs.code import CodeEnv, build_program, extract_code


@pytest.fixture(scope="module")
def env() -> CodeEnv:
    return CodeEnv()


@pytest.fixture(scope="module")
def everything(env) -> dict:
    return {p.id: p for p in env.problems("train") + env.problems("eval")}


def corrupt_close_elements(problem) -> str:
    return problem.reference["solution"].replace("if distance < threshold:", "if distance <= 0:")


def test_splits_are_disjoint_complete_and_seeded(env):
    train, evals = env.problems("train"), env.problems("eval")
    assert len(train) + len(evals) == 164 and not {p.id for p in train} & {p.id for p in evals}
    assert [p.id for p in env.problems("train", n=5, seed=3)] == [p.id for p in env.problems("train", n=5, seed=3)]
    assert [p.id for p in env.problems("train", seed=1)] != [p.id for p in train]
    assert sorted(p.id for p in env.problems("train", seed=1)) == sorted(p.id for p in train)
    prompt = train[0].prompt
    assert prompt[0]["role"] == "system" and train[0].reference["prompt"] in prompt[1]["content"]


@pytest.mark.slow
def test_all_canonical_solutions_pass(env, everything):
    failures = {pid: env.verify(p, p.reference["solution"]).feedback for pid, p in everything.items()}
    assert {pid: f for pid, f in failures.items() if f} == {}


def test_stub_solutions_fail_with_a_named_test(env, everything):
    for pid in random.Random(0).sample(sorted(everything), 30):
        problem = everything[pid]
        stub = f"def {problem.reference['entry_point']}(*args, **kwargs):\n    return None\n"
        outcome = env.verify(problem, stub)
        assert not outcome.passed and outcome.reward == 0.0, pid
        assert outcome.feedback.startswith(("Failed test ", "Error in test ")), (pid, outcome.feedback)
        assert "expected:" in outcome.feedback or "Error" in outcome.feedback, (pid, outcome.feedback)


def test_wrong_answer_names_the_assert_with_expected_and_actual(env, everything):
    problem = everything["HumanEval/0"]
    outcome = env.verify(problem, corrupt_close_elements(problem))
    assert not outcome.passed and outcome.reward == 0.0
    lines = outcome.feedback.splitlines()
    assert lines[0] == "Failed test 1 of 7: `candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True`"
    assert lines[1].split() == ["expected:", "True"] and lines[2].split() == ["got:", "False"]


def test_fraction_reward_matches_an_independent_count(everything):
    problem = everything["HumanEval/0"]
    code = corrupt_close_elements(problem)
    namespace: dict = {}
    exec(code, namespace)
    candidate = namespace["has_close_elements"]
    asserts = [line.strip()[len("assert "):] for line in problem.reference["tests"].splitlines()
               if line.strip().startswith("assert candidate")]
    expected = sum(bool(eval(test, {"candidate": candidate})) for test in asserts) / len(asserts)
    outcome = CodeEnv(reward="fraction").verify(problem, code)
    assert 0 < expected < 1 and outcome.reward == pytest.approx(expected) and not outcome.passed
    assert outcome.feedback.endswith(f"{round(expected * 7)} of 7 tests passed.")


def test_exception_names_type_message_and_line(env, everything):
    problem = everything["HumanEval/0"]
    code = problem.reference["solution"].replace("distance = abs(elem - elem2)",
                                                 "distance = abs(elem - elem2) + undefined_name")
    outcome = env.verify(problem, code)
    assert not outcome.passed
    assert "NameError: name 'undefined_name' is not defined" in outcome.feedback
    assert "`distance = abs(elem - elem2) + undefined_name`" in outcome.feedback


def test_timeout_names_the_running_test(everything):
    problem = everything["HumanEval/0"]
    outcome = CodeEnv(timeout_s=1).verify(problem, "def has_close_elements(numbers, threshold):\n    while True:\n        pass\n")
    assert not outcome.passed
    assert outcome.feedback.startswith("The program timed out after 1 s while running `assert candidate(")


def test_syntax_error_missing_function_and_exits_fail(env, everything):
    problem = everything["HumanEval/0"]
    syntax = env.verify(problem, "```python\ndef has_close_elements(numbers, threshold)\n    return False\n```")
    assert "SyntaxError" in syntax.feedback and "`def has_close_elements(numbers, threshold)`" in syntax.feedback
    other = env.verify(problem, "```python\ndef something_else():\n    return 1\n```")
    assert not other.passed and other.feedback.startswith("Failed test 1 of 7")
    for trick in ("import os\nos._exit(0)", "import sys\nsys.exit(0)",
                  "print('@@creditlens-0@@{\"stage\": \"done\", \"results\": [], \"cases\": 0}')\nimport os\nos._exit(0)"):
        outcome = env.verify(problem, f"```python\n{trick}\n```")
        assert not outcome.passed and outcome.reward == 0.0, trick
        assert outcome.feedback.startswith(("The program stopped before the tests finished",
                                            "The code failed before any test ran: SystemExit")), outcome.feedback


def test_response_formats_are_extracted(env, everything):
    problem = everything["HumanEval/0"]
    solution = problem.reference["solution"]
    body = solution[len(problem.reference["prompt"]):]
    responses = [
        solution,
        f"Here is the code:\n```python\n{solution}\n```\nIt loops over all pairs.",
        f"```\n{solution}",
        f"```python\nimport math\n```\nand then\n```python\n{solution}\n```",
        body,
        f"Sure, here it is.\n{solution}\nThis runs in O(n^2).",
    ]
    for response in responses:
        assert env.verify(problem, response).passed, response


def test_extract_and_build_program_directly():
    prompt = "def f(x):\n    \"\"\"doc\"\"\"\n"
    assert extract_code("text\n```py\ndef f(x):\n    return x\n```\nmore", "f") == "def f(x):\n    return x\n"
    namespace: dict = {}
    exec(build_program(prompt, "return x + 1", "f"), namespace)
    assert namespace["f"](1) == 2
    exec(build_program(prompt, "def f(x):\n    return x * 3", "f"), namespace)
    assert namespace["f"](2) == 6


def test_verify_is_thread_safe_and_deterministic(env, everything):
    problems = [everything[f"HumanEval/{i}"] for i in range(8)]
    jobs = [(p, p.reference["solution"]) for p in problems] + [(problems[0], corrupt_close_elements(problems[0]))]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda job: env.verify(*job), jobs))
    assert [o.passed for o in parallel] == [True] * 8 + [False]
    assert parallel[-1] == env.verify(*jobs[-1])


def test_verify_under_the_rlimits_fallback(everything, monkeypatch):
    from creditlens import sandbox

    monkeypatch.setattr(sandbox, "_bwrap_problem", ["test: pretend bwrap is missing"])
    problem = everything["HumanEval/0"]
    with pytest.warns(RuntimeWarning, match="pretend bwrap is missing"):
        good = CodeEnv().verify(problem, problem.reference["solution"])
        bad = CodeEnv().verify(problem, corrupt_close_elements(problem))
    assert good.passed and not bad.passed and bad.feedback.startswith("Failed test 1 of 7")


def test_always_equal_objects_do_not_pass(env, everything):
    problem = everything["HumanEval/0"]
    hack = ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n    def __bool__(self):\n"
            "        return True\n\ndef has_close_elements(numbers, threshold):\n    return AlwaysEqual()\n")
    outcome = env.verify(problem, hack)
    assert not outcome.passed and "object of class AlwaysEqual defined by the code" in outcome.feedback
