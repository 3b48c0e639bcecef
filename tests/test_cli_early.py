"""Every refusal a command can make from its arguments and input files comes before torch is imported (and so
long before a model loads): each case runs in one subprocess whose import system refuses torch, transformers
and trl, and must end in creditlens' one-line error (exit code 2), not in that ImportError."""

from __future__ import annotations

import json
import subprocess
import sys
import time

PROBE = """
import contextlib, io, json, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "trl"):
            raise ImportError("imported " + name + " before refusing")
sys.meta_path.insert(0, Refuse())
from creditlens import cli
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except BaseException as error:
            code = repr(error)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_refusals_come_before_torch_is_imported(tmp_path):
    examples = tmp_path / "ex.jsonl"
    examples.write_text("".join(json.dumps({"prompt": f"p{i}", "feedback": f"f{i % 2}", "response": "r"}) + "\n"
                                for i in range(3)))
    (tmp_path / "bad.yaml").write_text("lam: [0.5\n")
    (tmp_path / "no-response.jsonl").write_text('{"prompt": "p", "feedback": "f", "response": "r"}\n'
                                                '{"prompt": "q", "feedback": "f"}\n')
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "out")
    cases = {  # argv -> the one-line message
        ("score", str(tmp_path / "missing.jsonl"), "--out", out): "missing.jsonl: no such file",
        ("score", str(examples), "--contrast", "9", "--out", out): "--contrast: n_contrast=9 needs 10 distinct prompt ids",
        ("score", str(tmp_path / "no-response.jsonl"), "--out", out): "no-response.jsonl:2: example 1: missing field 'response'",
        ("score", str(examples), "--feedback-contrast", "2", "--out", out): "n_contrast=2 needs 3 distinct feedback texts",
        ("score", str(examples), "--device", "gpu", "--out", out): "device 'gpu': not a device name",
        ("score", str(examples), "--out", str(tmp_path / "file")): "an existing file, not a directory",
        ("score", str(examples), "--model", str(tmp_path / "no-model"), "--out", out): "no-model': no such directory",
        ("train", "--algo", "sd", "--env", "shortcut", "--config", str(tmp_path / "nope.yaml"), "--out", out):
            "nope.yaml: no such file",
        ("train", "--algo", "sd", "--env", "shortcut", "--config", str(tmp_path / "bad.yaml"), "--out", out):
            "bad.yaml",
        ("train", "--algo", "sd", "--env", "shortcut", "--model", str(tmp_path / "no-model"), "--out", out):
            "no-model': no such directory",
        ("headroom", "--env", "shortcut", "--model", str(tmp_path / "no-model")): "no-model': no such directory",
        ("headroom", "--env", "shortcut", "--device", "tpu"): "device 'tpu': not a device name",
        ("compare", str(tmp_path / "no-runs"), "--out", out): "no-runs",
        ("app", str(tmp_path / "no-runs")): "does not exist",
        ("study", "--out", str(tmp_path / "file")): "an existing file, not a directory",
        ("study", "--preset", "nope", "--out", out): "invalid choice: 'nope'",
        ("envs", "sample", "nope"): "invalid choice: 'nope'",
        ("envs", "sample", "shortcut", "--n", "0"): "must be >= 1, got 0",
        ("demo", "--gap-samples", "0", "--out", out, "--no-app"): "--gap-samples must be >= 1",
        ("demo", "--model", str(tmp_path / "no-model"), "--out", out, "--no-app"): "no-model': no such directory",
        ("demo", "--out", str(tmp_path / "file"), "--no-app"): "an existing file, not a directory",
    }
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([list(argv) for argv in cases])],
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    for (argv, expected), (code, err) in zip(cases.items(), json.loads(done.stdout), strict=True):
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (argv, code, err)
    assert not (tmp_path / "out").exists()
    assert seconds < 60, f"{len(cases)} refusals took {seconds:.0f} s"
