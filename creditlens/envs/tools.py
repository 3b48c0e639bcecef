"""Tool use: BFCL v4 ``simple_python`` (400 questions, one function each, with possible answers).

The model answers with one call, either Python syntax ``name(arg=value, ...)`` or JSON
``{"name": ..., "arguments": {...}}``. Checking follows BFCL's AST checker: the function name
(dots may be written as underscores), every required argument present, no unknown argument, each
value of the schema's type (an int is a float) and among the possible answers (strings compared
without case, spaces and punctuation ``,./-_*^``), an optional argument left out only when the
answers allow it. Feedback names the first defect (the argument and its expected type or value), and
how many more there are, never the whole answer. Reward 1/0.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from creditlens.envs.base import Environment, Outcome, Problem
from creditlens.envs.data import BFCL, fetch, select_split

SYSTEM = ("You can call the function described below. Answer the user's request with exactly one call, "
          "written in Python syntax such as `name(arg=value)` or as JSON "
          "{\"name\": ..., \"arguments\": {...}}, and nothing else.\n\nFunction:\n")

TYPES = {"integer": (int,), "float": (int, float), "number": (int, float), "string": (str,),
         "boolean": (bool,), "array": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}
ARTICLE = {"integer": "an integer", "float": "a float", "number": "a number", "string": "a string",
           "boolean": "a boolean", "array": "a list", "tuple": "a tuple", "dict": "a dict"}


@dataclass
class ToolsEnv(Environment):
    """BFCL v4 simple_python questions; ``reference`` holds the function schema and possible answers."""

    eval_fraction: float = 0.25  # share of questions (by id hash) in the eval split
    name: str = "tools"

    @cached_property
    def rows(self) -> list[tuple[dict, dict]]:
        """(question, possible answer) pairs from the bfcl-eval wheel, matched by id."""
        folder = fetch(BFCL)
        questions = [json.loads(line) for line in open(folder / "questions.jsonl", encoding="utf-8") if line.strip()]
        answers = {row["id"]: row for row in (json.loads(line) for line in
                   open(folder / "possible_answers.jsonl", encoding="utf-8") if line.strip())}
        return [(q, answers[q["id"]]) for q in questions]

    def problems(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Problem]:
        """The questions of ``split``; the prompt carries the function schema as JSON."""
        problems = []
        for question, answer in self.rows:
            function = question["function"][0]
            messages = [{"role": "system", "content": SYSTEM + json.dumps(function, indent=1)}]
            messages += question["question"][0]
            problems.append(Problem(id=question["id"], prompt=messages,
                                    reference={"function": function, "answer": answer["ground_truth"][0]}))
        return select_split(problems, [p.id for p in problems], split, n, seed, self.eval_fraction)

    def verify(self, problem: Problem, response: str) -> Outcome:
        """Parse one call from ``response`` and check it against the schema and possible answers."""
        function, answer = problem.reference["function"], problem.reference["answer"]
        try:
            name, args = parse_call(response, list(function["parameters"]["properties"]))
        except ValueError as error:
            return Outcome(0.0, False, f"Format: {error} Write exactly one call, e.g. "
                                       f"`{function['name']}(arg=value)`.")
        problems = check_call(name, args, function, answer)
        if not problems:
            return Outcome(1.0, True, "")
        more = f" ({len(problems) - 1} more problem{'s' * (len(problems) > 2)} after this one.)" if len(problems) > 1 else ""
        return Outcome(0.0, False, problems[0] + more)


def parse_call(response: str, parameter_order: list[str]) -> tuple[str, dict[str, Any]]:
    """(function name, arguments) from JSON or Python call syntax; positional args take schema order."""
    text = re.sub(r"```[a-zA-Z]*", "", response).strip()
    call = _parse_json_call(text)
    if call is not None:
        return call
    candidates = [text] + [line.strip() for line in text.splitlines() if "(" in line]
    for candidate in candidates:
        candidate = candidate.strip().strip("`").strip()
        if candidate.startswith("[") and candidate.endswith("]"):
            candidate = candidate[1:-1]
        try:
            node = ast.parse(candidate, mode="eval").body
        except SyntaxError:
            continue
        if isinstance(node, ast.Call):
            return _from_ast(node, parameter_order)
    raise ValueError("no function call found in the response (neither Python call syntax nor JSON).")


def _parse_json_call(text: str) -> tuple[str, dict[str, Any]] | None:
    start = text.find("{")
    if start < 0 or (text.find("(") >= 0 and text.find("(") < start):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and "name" in value:
        args = value.get("arguments", value.get("parameters", {}))
        if isinstance(args, str):
            args = json.loads(args)
        return str(value["name"]), dict(args)
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), dict):
        name, args = next(iter(value.items()))
        return name, dict(args)
    return None


def _from_ast(node: ast.Call, parameter_order: list[str]) -> tuple[str, dict[str, Any]]:
    name = ast.unparse(node.func)
    if len(node.args) > len(parameter_order):
        raise ValueError(f"`{name}` was given {len(node.args)} positional arguments; it takes at most "
                         f"{len(parameter_order)}.")
    pairs = list(zip(parameter_order[: len(node.args)], node.args, strict=True)) + [(k.arg, k.value) for k in node.keywords if k.arg]
    args = {}
    for key, value in pairs:
        try:
            args[key] = ast.literal_eval(value)
        except ValueError:
            raise ValueError(f"argument `{key}` must be a literal value, not the expression "
                             f"`{ast.unparse(value)}`.") from None
    return name, args


def check_call(name: str, args: dict[str, Any], function: dict, answer: dict) -> list[str]:
    """Every defect of the call, most basic first (empty when it matches a possible answer)."""
    expected = function["name"]
    if name not in (expected, expected.replace(".", "_")):
        return [f"Wrong function: called `{name}`, but the task needs `{expected}`."]
    properties = function["parameters"]["properties"]
    required = function["parameters"].get("required", [])
    options = next(iter(answer.values()))
    missing, unexpected, wrong = [], [], []
    for key in args:
        if key not in properties:
            unexpected.append(f"Unexpected argument `{key}`: `{expected}` has no such parameter "
                              f"(it takes {', '.join(properties)}).")
    for key, spec in properties.items():
        kind = spec.get("type", "any")
        allowed = options.get(key, [""])
        if key not in args:
            if key in required or "" not in allowed:
                missing.append(f"Missing argument `{key}` ({ARTICLE.get(kind, kind)}: "
                               f"{spec.get('description', '').strip()}).")
            continue
        value = args[key]
        if kind in TYPES and not (isinstance(value, TYPES[kind]) and not (kind != "boolean" and isinstance(value, bool))):
            wrong.append(f"Argument `{key}` should be {ARTICLE[kind]}, got {type(value).__name__} {value!r}.")
        elif not any(_same(value, option) for option in allowed if option != ""):
            if allowed == [""]:
                wrong.append(f"Argument `{key}` should be left out for this request.")
            else:
                first = next(option for option in allowed if option != "")
                wrong.append(f"Argument `{key}` has the wrong value {value!r}; expected {first!r}.")
    problems = missing + unexpected + wrong
    return problems


def _same(value: Any, option: Any) -> bool:
    """BFCL's comparison: numbers by value, strings normalised, lists element-wise, dicts key-wise."""
    if isinstance(option, str) and isinstance(value, str):
        return _normalise(value) == _normalise(option)
    if isinstance(option, bool) or isinstance(value, bool):
        return value is option
    if isinstance(option, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(option)
    if isinstance(option, (list, tuple)) and isinstance(value, (list, tuple)):
        return len(value) == len(option) and all(_same(v, o) for v, o in zip(value, option, strict=True))
    if isinstance(option, dict) and isinstance(value, dict):
        if set(value) - set(option):
            return False
        for key, choices in option.items():
            choices = choices if isinstance(choices, list) else [choices]
            if key not in value:
                if "" not in choices:
                    return False
            elif not any(_same(value[key], c) for c in choices if c != ""):
                return False
        return True
    return value == option


def _normalise(text: str) -> str:
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')
