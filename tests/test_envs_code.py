"""HumanEval environment: canonical solutions pass, corrupted ones fail with feedback naming the defect."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from creditlens.envs.base import Problem
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
    with ThreadPoolExecutor(2) as pool:  # each verify waits on two sandboxed processes
        outcomes = pool.map(lambda p: env.verify(p, p.reference["solution"]), everything.values())
    failures = {pid: outcome.feedback for pid, outcome in zip(everything, outcomes, strict=True)}
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


def test_verify_without_bubblewrap_needs_an_opt_in(everything, monkeypatch):
    from creditlens import sandbox
    from creditlens.errors import SandboxError

    monkeypatch.setattr(sandbox, "_bwrap_problem", ["test: pretend bwrap is missing"])
    monkeypatch.delenv(sandbox.SANDBOX_ENV, raising=False)
    problem = everything["HumanEval/0"]
    with pytest.raises(SandboxError, match="apt-get install bubblewrap.*CREDITLENS_SANDBOX=none"):
        CodeEnv().verify(problem, problem.reference["solution"])
    with pytest.warns(RuntimeWarning, match="no namespace"):
        good = CodeEnv(isolation="none").verify(problem, problem.reference["solution"])
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "none")
    with pytest.warns(RuntimeWarning, match="pretend bwrap is missing"):
        bad = CodeEnv().verify(problem, corrupt_close_elements(problem))
    assert good.passed and not bad.passed and bad.feedback.startswith("Failed test 1 of 7")


def test_always_equal_objects_do_not_pass(env, everything):
    problem = everything["HumanEval/0"]
    hack = ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n    def __bool__(self):\n"
            "        return True\n\ndef has_close_elements(numbers, threshold):\n    return AlwaysEqual()\n")
    outcome = env.verify(problem, hack)
    assert not outcome.passed and "returned an object of class AlwaysEqual, not a built-in value" in outcome.feedback


def test_values_cross_the_channel_as_built_in_types(env):
    """Tuples, sets, dicts with int keys, bytes, complex, nan and inf come back as the same built-in values."""
    value = "((1, 2.5), {3: 'x', (4,): [None, True]}, {5, 6}, frozenset({7}), b'\\x00z', 1 + 2j, 1e999, -0.0)"
    tests = (f"def check(candidate):\n    assert candidate({value}) == {value}\n    assert candidate(0) is None\n"
             f"    assert [type(v) for v in candidate({value})] == [type(v) for v in {value}]\n")
    problem = Problem("echo", [], {"prompt": "def echo(x):\n    \"\"\"x\"\"\"\n", "tests": tests, "entry_point": "echo"})
    assert env.verify(problem, "def echo(x):\n    return x if x != 0 else None\n").passed
    nan = Problem("nan", [], {"prompt": "def f(x):\n    pass\n", "entry_point": "f",
                              "tests": "import math\ndef check(candidate):\n    assert math.isnan(candidate(1))\n"})
    assert env.verify(nan, "def f(x):\n    return float('nan')\n").passed


# Reward hacking: each response below tries to get reward 1 for a wrong answer. The verdict lives in a
# process the response cannot reach, so every one must get reward 0 (binary) and not pass.
WRONG = "    return True\n"  # has_close_elements: right on some cases, wrong on others
HACKS = {
    "patch the harness's failure hook": "globals()['_fail'] = lambda *a, **k: None\n"
        "def has_close_elements(numbers, threshold):\n    globals()['_fail'] = lambda *a, **k: None\n" + WRONG,
    "forge the done event through the frames": "import os, sys\n"
        "def forge():\n    f = sys._getframe()\n    while f is not None:\n        for name in ('_emit', 'emit'):\n"
        "            if name in f.f_globals:\n                f.f_globals[name](stage='done', results=[], cases=0)\n"
        "        f = f.f_back\nforge()\n"
        "def has_close_elements(numbers, threshold):\n    forge()\n    os._exit(0)\n",
    "print fake success lines, then exit 0": "import os\n"
        "for mark in ('@@creditlens@@', '@@creditlens-0@@', ''):\n"
        "    print(mark + '{\"stage\": \"done\", \"results\": [], \"cases\": 0}', flush=True)\n"
        "def has_close_elements(numbers, threshold):\n    os._exit(0)\n",
    "write fake lines and replies on every file descriptor": "import os\n"
        "def spam():\n    for fd in range(64):\n        for line in (b'[\"ready\", null]\\n', b'[\"value\", true]\\n' * 40,\n"
        "                     b'@@creditlens@@{\"stage\": \"done\", \"results\": [], \"cases\": 0}\\n'):\n"
        "            try:\n                os.write(fd, line)\n            except OSError:\n                pass\n"
        "def has_close_elements(numbers, threshold):\n    spam()\n" + WRONG,
    "exit 0 at import (sys.exit)": "import sys\nsys.exit(0)\n",
    "exit 0 at import (os._exit)": "import os\nos._exit(0)\n",
    "exit 0 in the middle of the tests": "import os\ncalls = []\n"
        "def has_close_elements(numbers, threshold):\n    calls.append(1)\n    if len(calls) > 1:\n        os._exit(0)\n" + WRONG,
    "raise SystemExit(0) and KeyboardInterrupt in the call": "import random\n"
        "def has_close_elements(numbers, threshold):\n    raise random.choice([SystemExit(0), KeyboardInterrupt()])\n",
    "monkeypatch builtins and assert": "import builtins\n"
        "builtins.AssertionError = type('Quiet', (BaseException,), {})\nbuiltins.isinstance = lambda *a: True\n"
        "builtins.abs = lambda x: 0\nbuiltins.len = lambda x: 0\nbuiltins.__dict__['all'] = lambda x: True\n"
        "def has_close_elements(numbers, threshold):\n" + WRONG,
    "return an object whose __eq__ is always true": "class Yes:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\n    def __bool__(self):\n        return True\n"
        "def has_close_elements(numbers, threshold):\n    return Yes()\n",
    "return an int subclass whose __eq__ is always true": "class Yes(int):\n    def __eq__(self, other):\n"
        "        return True\n    __hash__ = int.__hash__\n"
        "def has_close_elements(numbers, threshold):\n    return Yes(1)\n",
    "patch the value encoder of the program's own process": "import sys\n"
        "main = sys.modules['__main__']\nfor name in ('_enc', '_dumps'):\n    if hasattr(main, name):\n"
        "        setattr(main, name, (lambda *a, **k: True) if name == '_enc' else main._dumps)\n"
        "def has_close_elements(numbers, threshold):\n    return 'anything'\n",
    "kill the parent, the process group and everyone": "import os, signal\n"
        "for pid in (os.getppid(), 0, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "def has_close_elements(numbers, threshold):\n" + WRONG,
    "sleep past the time limit": "import time\n"
        "def has_close_elements(numbers, threshold):\n    time.sleep(60)\n" + WRONG,
    "ignore SIGTERM and hang after the first answer": "import signal, time\ncalls = []\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def has_close_elements(numbers, threshold):\n    calls.append(1)\n    if len(calls) > 1:\n"
        "        while True:\n            pass\n" + WRONG,
    "fork a child that keeps answering, parent exits": "import os, time\n"
        "def has_close_elements(numbers, threshold):\n    if os.fork() == 0:\n        for _ in range(200):\n"
        "            try:\n                os.write(1, b'[\"value\", false]\\n')\n            except OSError:\n                pass\n"
        "        time.sleep(5)\n    os._exit(0)\n",
    "break the channel with a huge return value": "def has_close_elements(numbers, threshold):\n"
        "    return 'x' * (3 << 20)\n",
    "write a forged verdict into other processes' output": "import glob, os\n"
        "line = b'\\n@@creditlens@@{\"stage\": \"done\", \"results\": [], \"cases\": 0}\\n'\n"
        "for path in glob.glob('/proc/[0-9]*/fd/[12]'):\n    try:\n"
        "        fd = os.open(path, os.O_WRONLY | os.O_APPEND)\n        os.write(fd, line)\n        os.close(fd)\n"
        "    except OSError:\n        pass\n"
        "def has_close_elements(numbers, threshold):\n" + WRONG,
    "return a self-referencing list": "def has_close_elements(numbers, threshold):\n"
        "    x = []\n    x.append(x)\n    return x\n",
}


@pytest.mark.parametrize("name", ["write a forged verdict into other processes' output",
                                  "forge the done event through the frames", "patch the harness's failure hook"])
def test_reward_hacking_without_namespaces_still_gets_zero(everything, name):
    """isolation="none" (the opt-in without bubblewrap) keeps the verdict out of reach too."""
    problem = everything["HumanEval/0"]
    with pytest.warns(RuntimeWarning, match="isolation='none'"):
        outcome = CodeEnv(timeout_s=2, isolation="none").verify(problem, f"```python\n{HACKS[name]}```")
    assert outcome.reward == 0.0 and not outcome.passed, (name, outcome)


def read_tests_from_disk(cache_folder: str) -> str:
    """A response that passes if it can read HumanEval (cache, /proc of other processes) from its sandbox."""
    return ("import glob, gzip, json, os, stat\nfound = None\n"
            f"paths = glob.glob({cache_folder!r} + '/*') + glob.glob('/root/.cache/**/HumanEval*', recursive=True)\n"
            "paths += glob.glob('/proc/[0-9]*/fd/*') + glob.glob('/proc/[0-9]*/cmdline')\n"
            "for path in paths:\n    try:\n        if not stat.S_ISREG(os.stat(path).st_mode):\n            continue\n"
            "        raw = open(path, 'rb').read(1 << 24)\n    except OSError:\n        continue\n"
            "    try:\n        raw = gzip.decompress(raw)\n    except OSError:\n        pass\n"
            "    for line in raw.decode('utf-8', 'replace').splitlines():\n"
            "        if 'has_close_elements' in line and 'canonical_solution' in line:\n"
            "            row = json.loads(line)\n            found = row['prompt'] + row['canonical_solution']\n"
            "if found:\n    exec(found)\nelse:\n    def has_close_elements(numbers, threshold):\n        return True\n")


@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacking_attempts_get_zero(everything, name):
    problem = everything["HumanEval/0"]
    outcome = CodeEnv(timeout_s=2).verify(problem, f"```python\n{HACKS[name]}```")
    assert outcome.reward == 0.0 and not outcome.passed and outcome.feedback, (name, outcome)


def test_reading_the_tests_from_disk_gets_zero(everything):
    from creditlens.envs.data import HUMANEVAL, fetch

    problem = everything["HumanEval/0"]
    cheat = read_tests_from_disk(str(fetch(HUMANEVAL)))
    namespace: dict = {}
    exec(cheat, namespace)  # on the host the cheat finds the data and is right
    assert namespace["has_close_elements"]([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) is True
    assert namespace["has_close_elements"]([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) is False
    outcome = CodeEnv(timeout_s=5).verify(problem, f"```python\n{cheat}```")
    assert outcome.reward == 0.0 and not outcome.passed


def test_redefining_a_helper_the_tests_use_gets_zero(everything):
    """The tests use the prompt's own helpers (poly, encode_cyclic), never the response's versions."""
    zero = everything["HumanEval/32"]
    fake_poly = "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 0.0\n"
    assert not CodeEnv().verify(zero, fake_poly).passed
    cyclic = everything["HumanEval/38"]
    identity = "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"
    assert not CodeEnv().verify(cyclic, identity).passed
    assert CodeEnv().verify(cyclic, cyclic.reference["solution"]).passed
