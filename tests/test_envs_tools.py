"""BFCL simple_python environment: reference calls pass in both syntaxes, corrupted calls name the defect."""

from __future__ import annotations

import json

import pytest

from creditlens.envs.tools import ToolsEnv, parse_call


@pytest.fixture(scope="module")
def env() -> ToolsEnv:
    return ToolsEnv()


@pytest.fixture(scope="module")
def problems(env) -> list:
    return env.problems("train") + env.problems("eval")


def first_option(option):
    """A concrete value from a possible-answer entry (dicts hold lists of options per key)."""
    if isinstance(option, dict):
        return {k: first_option(v[0] if isinstance(v, list) else v) for k, v in option.items()}
    if isinstance(option, list):
        return [first_option(v) for v in option]
    return option


def reference_args(problem) -> dict:
    """Required arguments, and optional ones the answer insists on, with their first possible value."""
    function = problem.reference["function"]
    required = function["parameters"].get("required", [])
    args = {}
    for key, options in problem.reference["answer"][function["name"]].items():
        concrete = [o for o in options if o != ""]
        if concrete and (key in required or "" not in options):
            args[key] = first_option(concrete[0])
    return args


def python_call(name: str, args: dict) -> str:
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def test_400_questions_in_disjoint_seeded_splits(env):
    train, evals = env.problems("train"), env.problems("eval")
    assert len(train) + len(evals) == 400 and not {p.id for p in train} & {p.id for p in evals}
    assert [p.id for p in env.problems("eval", n=4, seed=2)] == [p.id for p in env.problems("eval", n=4, seed=2)]
    system = train[0].prompt[0]["content"]
    assert train[0].reference["function"]["name"] in system and train[0].prompt[-1]["role"] == "user"


def test_reference_calls_pass_as_python_and_json(env, problems):
    for problem in problems:
        name, args = problem.reference["function"]["name"], reference_args(problem)
        for response in (python_call(name, args), json.dumps({"name": name, "arguments": args}),
                         f"Sure!\n```python\n{python_call(name, args)}\n```"):
            outcome = env.verify(problem, response)
            assert outcome.passed and outcome.reward == 1.0 and outcome.feedback == "", (problem.id, response, outcome)


def test_dropping_a_required_argument_names_it(env, problems):
    for problem in problems:
        function = problem.reference["function"]
        required = function["parameters"].get("required", [])
        args = reference_args(problem)
        if not required or required[0] not in args:
            continue
        missing = required[0]
        del args[missing]
        outcome = env.verify(problem, python_call(function["name"], args))
        assert not outcome.passed and outcome.reward == 0.0
        assert outcome.feedback.startswith(f"Missing argument `{missing}` ("), (problem.id, outcome.feedback)


def test_wrong_values_name_the_argument_and_what_was_expected(env, problems):
    wrong = {int: 987654, float: -12345.5, str: "zz-not-this-zz", bool: None, list: ["zz-not-this"], dict: {"zz": 1}}
    checked = 0
    for problem in problems:
        function = problem.reference["function"]
        args = reference_args(problem)
        key = next((k for k, v in args.items() if type(v) in wrong and type(v) is not bool), None)
        if key is None:
            continue
        expected = args[key]
        args[key] = wrong[type(expected)]
        outcome = env.verify(problem, python_call(function["name"], args))
        assert not outcome.passed, problem.id
        assert outcome.feedback.startswith(f"Argument `{key}` has the wrong value {args[key]!r}; expected "), \
            (problem.id, outcome.feedback)
        others = [json.dumps(v) for k, v in args.items() if k != key and isinstance(v, str) and len(v) > 3]
        assert not any(other.strip('"') in outcome.feedback for other in others), outcome.feedback
        checked += 1
    assert checked > 300


def test_type_name_unknown_argument_and_format_defects(env, problems):
    problem = next(p for p in problems if p.id == "simple_python_0")
    good = "calculate_triangle_area(base=10, height=5)"
    assert env.verify(problem, good).passed
    assert env.verify(problem, "calculate_triangle_area(10, 5)").passed
    typed = env.verify(problem, "calculate_triangle_area(base='10', height=5)")
    assert typed.feedback == "Argument `base` should be an integer, got str '10'."
    named = env.verify(problem, "triangle_area(base=10, height=5)")
    assert named.feedback.startswith("Wrong function: called `triangle_area`")
    extra = env.verify(problem, "calculate_triangle_area(base=10, height=5, color='red')")
    assert extra.feedback.startswith("Unexpected argument `color`")
    both = env.verify(problem, "calculate_triangle_area(base=11)")
    assert both.feedback.startswith("Missing argument `height`") and "1 more problem after this one" in both.feedback
    garbage = env.verify(problem, "The area is 25.")
    assert garbage.feedback.startswith("Format: no function call found")
    expression = env.verify(problem, "calculate_triangle_area(base=2*5, height=5)")
    assert expression.feedback.startswith("Format: argument `base` must be a literal value")


def test_dotted_names_may_use_underscores(env, problems):
    problem = next(p for p in problems if p.id == "simple_python_1")
    assert env.verify(problem, "math.factorial(number=5)").passed
    assert env.verify(problem, "math_factorial(number=5)").passed
    assert env.verify(problem, '{"math.factorial": {"number": 5}}').passed


def test_parse_call_forms():
    assert parse_call("f(a=1, b='x')", ["a", "b"]) == ("f", {"a": 1, "b": "x"})
    assert parse_call("[f(1, b=[1, 2])]", ["a", "b"]) == ("f", {"a": 1, "b": [1, 2]})
    assert parse_call('{"name": "f", "arguments": "{\\"a\\": 2}"}', ["a"]) == ("f", {"a": 2})
    with pytest.raises(ValueError, match="positional"):
        parse_call("f(1, 2, 3)", ["a"])
