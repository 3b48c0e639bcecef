"""Run directories: atomic writes, tolerant reads of killed runs, clear errors."""

import json

import pytest
import torch

from creditlens import runs, schema


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
