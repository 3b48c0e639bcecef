"""Run directories: atomic writes, tolerant reads of killed runs, clear errors."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from creditlens import atomic, runs, schema
from creditlens.errors import InputError, RunError


def _tokens(step: int):
    teacher = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    student = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    return schema.build_token_table(
        ["e"],
        ["p"],
        torch.tensor([[5, 6]]),
        [["a", "b"]],
        teacher,
        student,
        example_columns={"run": ["r"], "algo": ["sd"], "step": [step], "sample": [0]},
    )


def test_round_trip(tmp_path):
    run_dir = tmp_path / "r1"
    runs.write_manifest(run_dir, {"name": "r1", "algo": "credit", "env": "shortcut", "seed": 3})
    for step in (1, 2, 3):
        runs.append_jsonl(run_dir / runs.METRICS, {"step": step, "reward": step / 10})
        runs.write_step_tokens(run_dir, step, _tokens(step))
    runs.append_jsonl(run_dir / runs.EVAL, {"step": 2, "score": 0.4})
    runs.append_jsonl(run_dir / runs.EVAL, {"step": 3, "score": 0.3})
    run = runs.load_run(run_dir)
    assert (run.name, run.algo, run.env, run.seed) == ("r1", "credit", "shortcut", 3)
    assert run.metrics()["reward"].tolist() == [0.1, 0.2, 0.3]
    assert run.token_steps() == [1, 2, 3]
    assert run.tokens(2)["step"].unique().tolist() == [2]
    assert len(run.tokens()) == 6
    assert run.best_score() == 0.4 and run.final_score() == 0.3
    assert [r.name for r in runs.list_runs(tmp_path)] == ["r1"]
    assert run.model == "?"
    runs.write_manifest(run_dir, {"model": None, "model_path": "/cache/shortcut-abc"})
    assert runs.load_run(run_dir).model == "shortcut-abc"
    runs.write_manifest(run_dir, {"model": "tiny", "model_path": "/runs/r1/start_model"})
    assert runs.load_run(run_dir).model == "tiny"


def test_partial_last_line_is_dropped_but_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "m.jsonl"
    runs.append_jsonl(path, {"step": 1})
    with open(path, "a") as file:
        file.write('{"step": 2, "rew')
    assert runs.read_jsonl(path) == [{"step": 1}]
    with open(path, "a") as file:
        file.write('\n{"step": 3}\n')
    with pytest.raises(runs.RunError, match=r"m.jsonl:2: not valid JSON"):
        runs.read_jsonl(path)


def test_rewrite_drops_records(tmp_path):
    path = tmp_path / "m.jsonl"
    for step in range(5):
        runs.append_jsonl(path, {"step": step})
    runs.rewrite_jsonl(path, [r for r in runs.read_jsonl(path) if r["step"] <= 2])
    assert [r["step"] for r in runs.read_jsonl(path)] == [0, 1, 2]


def test_errors_name_the_path(tmp_path):
    with pytest.raises(runs.RunError, match="not a run directory"):
        runs.load_run(tmp_path)
    (tmp_path / runs.MANIFEST).write_text("{broken")
    with pytest.raises(runs.RunError, match="manifest.json: not valid JSON"):
        runs.load_run(tmp_path)
    with pytest.raises(runs.RunError, match="no such directory"):
        runs.list_runs(tmp_path / "nope")
    (tmp_path / runs.MANIFEST).write_text(json.dumps({"name": "x"}))
    with pytest.raises(runs.RunError, match="no per-token tables"):
        runs.load_run(tmp_path).tokens()


def test_non_finite_numbers_are_written_as_null_and_read_as_nan(tmp_path):
    run_dir = tmp_path / "r"
    runs.write_manifest(run_dir, {"name": "r"})
    runs.append_jsonl(run_dir / runs.METRICS, {"step": 0, "loss": float("nan"), "kl": [float("inf"), 1.5],
                                               "reward": np.float32(0.25), "n": np.int64(3)})
    line = (run_dir / runs.METRICS).read_text()
    assert json.loads(line) == {"step": 0, "loss": None, "kl": [None, 1.5], "reward": 0.25, "n": 3}
    assert "NaN" not in line and "Infinity" not in line
    metrics = runs.load_run(run_dir).metrics()
    assert np.isnan(metrics.loc[0, "loss"]) and metrics.loc[0, "reward"] == 0.25


def test_atomic_write_keeps_the_old_file_on_failure_and_uses_normal_permissions(tmp_path):
    path = tmp_path / "out.txt"
    atomic.atomic_write_text(path, "old")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    def fail_halfway(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(path, fail_halfway)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def _run_dir(tmp_path, manifest=None):
    run_dir = tmp_path / "run"
    runs.write_manifest(run_dir, manifest or {"name": "run", "algo": "sd", "config": {"lam": 0.5}})
    runs.append_jsonl(run_dir / runs.EVAL, {"step": 0, "score": 0.5})
    runs.append_jsonl(run_dir / runs.METRICS, {"step": 0, "loss": 1.0})
    runs.write_step_tokens(run_dir, 0, _tokens(0))
    return run_dir


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: runs.append_jsonl(d / runs.EVAL, {"score": 0.7}), r"eval.jsonl:2: the record has no 'step'"),
        (lambda d: runs.append_jsonl(d / runs.EVAL, {"step": 1, "score": "high"}),
         r"eval.jsonl:2: 'score' must be a number, got 'high'"),
        (lambda d: runs.append_jsonl(d / runs.EVAL, {"step": -1, "score": 0.1}), r"eval.jsonl:2: .*'step': -1"),
        (lambda d: runs.append_jsonl(d / runs.METRICS, {"loss": 0.3}), r"metrics.jsonl:2: the record has no 'step'"),
        (lambda d: runs.write_manifest(d, {"name": "run", "config": None}), r"manifest.json: 'config' must be an object, got null"),
        (lambda d: runs.write_manifest(d, {"seed": "zero"}), r"manifest.json: 'seed' must be int or null"),
        (lambda d: (d / runs.MANIFEST).write_text("[1, 2]"), r"manifest.json: expected a JSON object"),
        (lambda d: (d / runs.MANIFEST).write_bytes(b'{"name": "\xff"}'), r"manifest.json: not UTF-8"),
        (lambda d: (d / runs.MANIFEST).write_text("[" * 100_000 + "]" * 100_000), r"manifest.json: JSON nested too deeply"),
        (lambda d: (d / runs.TOKENS_DIR / "step_000000.parquet").rename(d / runs.TOKENS_DIR / "step_final.parquet"),
         r"tokens/step_final.parquet: not a per-token table name"),
        (lambda d: (d / runs.EVAL).write_bytes(b'{"step": 0, "score": 0.5}\n{"step": 1, "note": "\xe9"}\n'),
         r"eval.jsonl:2: not UTF-8 text \(byte 0xe9 at column 22\)"),
        (lambda d: (d / runs.EVAL).write_text('{"step": 0, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
         r"eval.jsonl:1: JSON nested too deeply"),
        (lambda d: (d / runs.EVAL).write_text('[1]\n{"step": 1}\n'), r"eval.jsonl:1: expected a JSON object, got list"),
    ],
)
def test_load_run_rejects_damaged_run_directories_naming_the_file(tmp_path, damage, match):
    run_dir = _run_dir(tmp_path)
    assert runs.load_run(run_dir).final_score() == 0.5
    damage(run_dir)
    with pytest.raises(runs.RunError, match=match) as error:
        runs.load_run(run_dir)
    assert "\n" not in str(error.value)


def test_check_out_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    assert runs.check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created
    with pytest.raises(InputError, match=r"--out .*file: an existing file, not a directory"):
        runs.check_out_dir(tmp_path / "file")
    with pytest.raises(InputError, match=r"--report .*file/sub: .*file is a file"):
        runs.check_out_dir(tmp_path / "file" / "sub", "--report")


def test_check_out_dir_refuses_a_read_only_directory(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write into a 0555 directory: let os.access answer as for a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    with pytest.raises(InputError, match=r"--out .*locked/out: .*locked is not writable; choose another --out"):
        runs.check_out_dir(locked / "out")
    assert list(locked.iterdir()) == []


def test_token_path_needs_a_whole_step(tmp_path):
    assert runs.token_path(tmp_path, 12).name == "step_000012.parquet"
    for bad in (-1, 2.5):
        with pytest.raises(runs.RunError, match=f"step {bad!r} must be a whole number >= 0"):
            runs.token_path(tmp_path, bad)


def test_jsonl_reader_takes_a_gzip_copy_and_names_a_broken_one(tmp_path):
    import gzip

    (tmp_path / "eval.jsonl.gz").write_bytes(gzip.compress(b'{"step": 0, "score": 0.5}\n'))
    assert runs.read_jsonl(tmp_path / "eval.jsonl") == [{"step": 0, "score": 0.5}]
    (tmp_path / "eval.jsonl").write_text('{"step": 1}\n')  # the plain file wins where both exist
    assert runs.read_jsonl(tmp_path / "eval.jsonl") == [{"step": 1}]
    (tmp_path / "metrics.jsonl.gz").write_bytes(gzip.compress(b'{"step": 1}\n')[:-6])  # cut short
    with pytest.raises(RunError, match=r"metrics.jsonl.gz: not a readable gzip file"):
        runs.read_jsonl(tmp_path / "metrics.jsonl")
