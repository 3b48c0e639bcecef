"""Whole runs of the trainer: the run directory, per-token logs checked against creditlens.credit,
a resume after a real SIGKILL, and a 2-process torchrun launch."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_support import EchoEnv, tiny_fields

from creditlens import cli, runs
from creditlens.envs.shortcut import ShortcutEnv
from creditlens.training.config import load_config, parse_config
from creditlens.training.run import train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("train_support.py")
METRIC_KEYS = {
    "step",
    "reward",
    "pass_rate",
    "response_length",
    "entropy",
    "kl",
    "time_generation",
    "time_scoring",
    "time_contrast",
    "time_backward",
    "time_step",
}


def env_vars() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def check_run(run_dir: Path, algo: str, steps: int) -> None:
    """Every step logged once, token tables valid, rewards recomputed from the logged log-probs."""
    run = runs.load_run(run_dir)
    assert run.algo == algo and run.manifest["config"]["max_steps"] == steps
    metrics = run.metrics()
    assert list(metrics["step"]) == list(range(1, steps + 1))
    assert METRIC_KEYS <= set(metrics.columns)
    assert list(run.evals()["step"]) == sorted({0, steps, *range(2, steps + 1, 2)})
    assert run.token_steps() == list(range(1, steps + 1))
    table = run.tokens()
    counted = table[table["mask"]]
    assert len(counted) > 0
    for _, rows in table.groupby(["step", "sample"]):
        rows = rows.sort_values("position")
        assert list(rows["position"]) == list(range(len(rows)))
    spec = run.manifest["credit"]  # what the trainer ran with: lam 0 for sd, nothing for grpo
    assert (spec is None) == (algo == "grpo") and (algo != "sd" or spec["lam"] == 0.0)
    if spec is not None:
        assert (table["lam"] == spec["lam"]).all() and (table["form"] == spec["form"]).all()
    else:
        assert not {"lam", "form", "pool", "n_contrast"} & set(table.columns)
    if algo == "credit":  # the run's form and lam, mean pooling, docs/CREDIT-MATH.md section 4 written out
        form, lam = spec["form"], spec["lam"]
        contrast = np.stack(counted["contrast_logprobs"].to_list())
        teacher, student = counted["teacher_logprob"].to_numpy(), counted["student_logprob"].to_numpy()
        baseline, k = contrast.mean(axis=1), contrast.shape[1]
        penalty = {
            "teacher": baseline,
            "shortcut": baseline - student,
            "contrastive": np.log((np.exp(teacher) + k * np.exp(baseline)) / (k + 1)) - student,
        }[form]
        np.testing.assert_allclose(counted["credit_reward"], teacher - student - lam * penalty, atol=2e-6)
        np.testing.assert_array_equal(counted["advantage"], counted["credit_reward"])  # the trainer's own tensor
    if algo == "sd":
        np.testing.assert_allclose(counted["advantage"], counted["sd_reward"], atol=1e-5)
    if algo == "grpo":
        samples = (
            table.groupby(["step", "sample"])
            .agg(
                adv=("advantage", "first"),
                adv_max=("advantage", "max"),
                adv_min=("advantage", "min"),
                reward=("outcome_reward", "first"),
                prompt=("prompt_id", "first"),
            )
            .reset_index()
        )
        assert (samples["adv_max"] == samples["adv_min"]).all()
        grouped = samples.groupby(["step", "prompt"])["reward"]
        expected = (samples["reward"] - grouped.transform("mean")) / (grouped.transform("std") + 1e-4)
        np.testing.assert_allclose(samples["adv"], expected, atol=1e-5)


def test_config_rejects_unknown_key_naming_it_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_steps: 3\nlamda: 0.5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'lamda'"):
        load_config(path)
    with pytest.raises(ValueError, match=r"lam: must be a number in \[0, 1\]"):
        parse_config({"lam": 2.0}, "credit", "unused")
    path.write_text("form: other\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: CreditConfig form: must be one of"):
        load_config(path)


def test_old_keys_name_their_trl_names_and_managed_keys_are_refused(tmp_path):
    path = tmp_path / "old.yaml"
    for text, message in [("teacher: ema\n", r"old\.yaml: key 'teacher' was renamed: write teacher_model_kind"),
                          ("save_every: 3\n", "key 'save_every' was renamed: write save_steps"),
                          ("tensorboard: true\n", r"write report_to: \[tensorboard\]"),
                          ("trl: {beta: 0.1}\n", "key 'trl' was renamed: write its keys .* at the top level"),
                          ("output_dir: x\n", r"output_dir is set by creditlens \(from --out\)")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(path)


def test_each_key_goes_to_the_config_that_declares_it():
    values = {"num_prompts": 3, "lam": 0.25, "beta": 0.1, "distillation_mode": "full_logits", "delta": 2.0}
    run, grpo = parse_config(values, "grpo", "unused")
    _, credit = parse_config(values, "credit", "unused")
    _, sd = parse_config(values, "sd", "unused")
    assert run.num_prompts == 3 and grpo.beta == credit.beta == 0.1 and grpo.delta == 2.0
    assert not hasattr(grpo, "lam") and (credit.lam, sd.lam) == (0.25, 0.0)
    assert credit.distillation_mode == "full_logits" and credit.per_device_train_batch_size == 3 * 2
    assert credit.seed == credit.data_seed == 0 and credit.lr_scheduler_type == "constant"


def test_config_types_are_checked_and_yaml_exponent_floats_accepted(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("learning_rate: 5e-4\nmax_steps: 3\n")
    config = load_config(path)
    assert config["learning_rate"] == 0.0005 and isinstance(config["learning_rate"], float)
    path.write_text("learning_rate: fast\n")
    with pytest.raises(ValueError, match=r"lr\.yaml: config key 'learning_rate' expects float, got 'fast'"):
        load_config(path)
    path.write_text("max_steps: 2.5\n")
    with pytest.raises(ValueError, match="'max_steps' expects int"):
        load_config(path)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"lam": "abc"}, "'lam' expects float, got 'abc'"),
        ({"max_steps": None}, "'max_steps' expects int, got None"),
        ({"learning_rate": -1e-3}, "learning_rate must be >= 0"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"temperature": -0.5}, "temperature must be > 0"),
        ({"form": "other"}, "form: must be one of"),
        ({"eval_every": -1}, "eval_every must be >= 0"),
        ({"report_to": 3}, "'report_to' expects None | str | list[str], got 3"),
    ],
)
def test_config_fields_are_checked_in_python_too(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_config(fields, "credit", "unused")


def test_example_configs_load():
    # headroom configs hold creditlens.headroom.HeadroomConfig fields (tests/test_headroom.py loads them)
    files = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "headroom" not in p.name)
    assert len(files) >= 4
    for path in files:
        load_config(path)


@pytest.mark.parametrize("algo", ["grpo", "sd", "credit"])
def test_run_directory_is_complete_and_consistent(algo, tmp_path):
    out = tmp_path / algo
    train(algo, "echo", "tiny", {**tiny_fields(2), "log_contrasts": algo == "sd"}, out, env=EchoEnv())
    check_run(out, algo, 2)
    table = runs.load_run(out).tokens()
    logged = "contrast_logprobs" in table and table["contrast_logprobs"].map(lambda v: len(v) == 1).all()
    assert logged == (algo != "grpo")  # sd with log_contrasts logs them too, for the generic share
    with pytest.raises(ValueError, match="already exists"):
        train(algo, "echo", "tiny", tiny_fields(2), out, env=EchoEnv())


@pytest.mark.parametrize("algo", ["grpo", "sd", "credit"])
def test_every_token_is_labelled_with_its_own_rollout_when_steps_span_generation_batches(algo, tmp_path):
    """GA=3 micro-batches per step, 2 per generation batch, each generation batch trained twice."""
    fields = {**tiny_fields(2), "num_prompts": 3, "gradient_accumulation_steps": 3, "eval_every": 0}
    fields.update(steps_per_generation=2, num_iterations=2)  # TRL arguments, at the top level like every key
    out = tmp_path / algo
    train(algo, "echo", "tiny", fields, out, env=EchoEnv())
    run = runs.load_run(out)
    assert run.token_steps() == [1, 2]
    words = {p.id: p.reference["word"] for p in EchoEnv().problems()}
    for step in (1, 2):
        table = run.tokens(step)
        assert sorted(table["sample"].unique()) == list(range(6))  # 3 micro-batches x 2 rows, numbered once
        for _, rows in table.groupby("sample"):
            rows = rows.sort_values("position")
            assert list(rows["position"]) == list(range(len(rows)))
            first = rows.iloc[0]
            response = first["response"]
            word = words[first["prompt_id"]]
            assert f"repeat {word}" in first["prompt"]
            assert first["outcome_reward"] == float(response.strip().startswith(word))
            if first["outcome_reward"] == 0.0:  # the verifier's feedback names this very response
                assert f"expected {word}, got {response.strip()[:8]!r}" in first["feedback"]


def test_refused_starts_change_no_file(tmp_path):
    """--resume with nothing to resume from, and bad inputs, are one-line errors that write nothing."""
    logs_only = tmp_path / "logs-only"
    logs_only.mkdir()
    (logs_only / runs.METRICS).write_text('{"step": 1}\n')
    (logs_only / runs.MANIFEST).write_text("{}")
    before = {p.name: p.read_bytes() for p in logs_only.iterdir()}
    with pytest.raises(ValueError, match=r"no complete checkpoint.*metrics\.jsonl"):
        train("credit", "echo", "tiny", tiny_fields(2), logs_only, resume=True, env=EchoEnv())
    assert {p.name: p.read_bytes() for p in logs_only.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        train("credit", "echo", "tiny", tiny_fields(2), empty, resume=True, env=EchoEnv())
    with pytest.raises(ValueError, match="no such run directory"):
        train("sd", "echo", "tiny", tiny_fields(2), tmp_path / "none", resume=True, env=EchoEnv())
    bad = [
        ("tiny", dict(n_contrast=8), "n_contrast=8 needs 9 distinct train prompts"),
        (str(tmp_path / "missing-model"), {}, "no such directory"),
        (str(empty), {}, "empty directory"),
    ]
    if importlib.util.find_spec("tensorboard") is None:
        bad.append(("tiny", {"report_to": ["tensorboard"]}, r"report_to: \[tensorboard\] needs the tensorboard package"))
    for model, fields, message in bad:
        out = tmp_path / "fresh"
        with pytest.raises(ValueError, match=message):
            train("credit", "echo", model, {**tiny_fields(2), **fields}, out, env=EchoEnv())
        assert not out.exists()
    assert not any(empty.iterdir())


@pytest.mark.slow
def test_resume_after_sigkill_continues_without_gaps_or_duplicates(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, str(SCRIPT), "credit", str(out), "5"]
    process = subprocess.Popen(command, env=env_vars(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if len(runs.read_jsonl(out / runs.METRICS)) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert runs.load_run(out).token_steps()
    subprocess.run(command + ["--resume"], env=env_vars(), check=True, capture_output=True, timeout=180)
    check_run(out, "credit", 5)
    reference = tmp_path / "straight"
    subprocess.run(
        command[:3] + [str(reference), "5"], env=env_vars(), check=True, capture_output=True, timeout=180
    )
    resumed, straight = runs.load_run(out).metrics(), runs.load_run(reference).metrics()
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-4)


@pytest.mark.slow
def free_port() -> int:
    """A port nothing listens on now: a fixed rendezvous port fails while an earlier run's lingers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_torchrun_two_processes_write_one_token_log_per_step(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(SCRIPT),
        "credit",
        str(out),
        "2",
    ]
    result = subprocess.run(command, env=env_vars(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs.load_run(out)
    assert run.manifest["world_size"] == 2
    check_run(out, "credit", 2)
    assert sorted(p.name for p in (out / runs.TOKENS_DIR).iterdir()) == [
        "step_000001.parquet",
        "step_000002.parquet",
    ]
    for step in (1, 2):
        assert sorted(run.tokens(step)["sample"].unique()) == [0, 1, 2, 3]


def test_cli_trains_the_shortcut_env_and_refuses_a_changed_resume(tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = [
        "train",
        "--algo",
        "credit",
        "--env",
        "shortcut",
        "--model",
        "tiny",
        "--max-steps",
        "2",
        "--out",
        out,
    ]
    argv += ["--set", "num_prompts=2", "--set", "max_completion_length=6", "--set", "n_train_problems=16"]
    argv += ["--set", "n_eval_problems=6", "--set", "eval_batch_size=4", "--set", "eval_every=2", "--set", "env_args={cue: 1.0}"]
    assert cli.main(argv) == 0
    check_run(Path(out), "credit", 2)
    env = ShortcutEnv(cue=1.0)  # each eval also scores the validation and test parts of its problems
    n_val = sum(env.eval_part(p) == "val" for p in env.problems("eval", 6, seed=0))
    for record in runs.read_jsonl(Path(out) / runs.EVAL):
        sizes = {part: record.get(f"n_{part}", 0) for part in ("val", "test")}
        assert record["n"] == 6 and sizes == {"val": n_val, "test": 6 - n_val}
        both = sum(record[f"score_{part}"] * n for part, n in sizes.items() if n)
        assert both == pytest.approx(record["score"] * 6)
    assert runs.load_run(out).manifest["config"]["env_args"] == {"cue": 1.0}
    assert cli.main(argv + ["--resume"]) == 0
    check_run(Path(out), "credit", 2)
    assert cli.main(argv + ["--resume", "--set", "lam=0.25"]) == 2
    assert "config differs" in capsys.readouterr().err
    assert cli.main(["train", "--algo", "sd", "--env", "shortcut", "--set", "lamda=1", "--out", out]) == 2
    assert "unknown config key 'lamda'" in capsys.readouterr().err
