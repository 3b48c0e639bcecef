"""The study grid and its configs (the runs themselves go through the trainer, tested with it)."""

from __future__ import annotations

from creditlens import study
from creditlens.training.config import load_config


def test_full_grid_has_every_method_and_three_seeds():
    grid = study.PRESETS["full"].grid()
    methods = {(r.algo, r.lam) for r in grid}
    assert {("grpo", None), ("sd", None)} <= methods
    assert len({lam for algo, lam in methods if algo == "credit"}) >= 3
    for method in methods:
        assert sorted(r.seed for r in grid if (r.algo, r.lam) == method) == [0, 1, 2]
    assert len({r.name for r in grid}) == len(grid)


def test_train_commands_and_configs(tmp_path):
    run = study.StudyRun("credit", 2, 0.25)
    command = study.train_command(run, study.PRESETS["full"].config, tmp_path)
    assert command[command.index("--algo") + 1] == "credit" and "lam=0.25" in command
    assert command[command.index("--out") + 1] == str(tmp_path / "credit-lam0.25-s2")
    assert "--set" not in study.train_command(study.StudyRun("sd", 0), study.PRESETS["full"].config, tmp_path)
    full, bundled = (load_config(study.PRESETS[p].config) for p in ("full", "bundled"))
    assert full.env_args == bundled.env_args == {"cue": 0.5}
    assert not full.use_successful_as_teacher and full.distillation_mode == bundled.distillation_mode
    assert bundled.max_steps < full.max_steps and bundled.log_tokens_every > 1


def test_prune_drops_only_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-3" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "eval.jsonl").write_text('{"step": 0, "score": 0.5}\n')
    study.prune(tmp_path)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "eval.jsonl").exists()
    assert study._finished(tmp_path, 0) and not study._finished(tmp_path, 10)
