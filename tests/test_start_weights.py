"""Runs record the digest of their start weights; compare and study never put runs of other weights together.

A warm start rebuilt on another machine (or by other code) keeps its cache path and name but not its weights;
these tests check that the digest follows the bytes, not the path, and that every consumer keys on it.
"""

from __future__ import annotations

import hashlib
import types

import pytest
import torch
from safetensors.torch import save_file

from creditlens import compare, models, runs, study
from creditlens.errors import ModelError, RunError
from creditlens.training.run import manifest_for


def _model_dir(path, value: float):
    path.mkdir(parents=True)
    save_file({"w": torch.full((3, 2), value)}, str(path / "model.safetensors"))
    (path / "config.json").write_text("{}")
    return path


def test_digest_follows_the_bytes_not_the_path(tmp_path):
    one = _model_dir(tmp_path / "a", 1.0)
    expected = hashlib.sha256(b"model.safetensors\0" + (one / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert models.weights_digest(one) == expected
    same = _model_dir(tmp_path / "b", 1.0)
    assert models.weights_digest(same) == expected
    other = _model_dir(tmp_path / "c", 2.0)
    assert models.weights_digest(other) != expected
    with pytest.raises(ModelError, match="no weights"):
        models.weights_digest(tmp_path)


def test_manifest_records_the_digest_of_the_start_model(tmp_path):
    folder = _model_dir(tmp_path / "m", 1.0)
    config, args = {"lam": 0.5}, types.SimpleNamespace(seed=3)
    manifest = manifest_for("r", "sd", "shortcut", None, str(folder), config, args)
    assert manifest["model_digest"] == models.weights_digest(folder)
    tiny = manifest_for("r", "sd", "shortcut", "tiny", str(tmp_path / "not-yet"), config, args)
    assert tiny["model_digest"] is None


def _run(root, name, seed, digest, score=0.5):
    manifest = {"name": name, "algo": "sd", "env": "shortcut", "model": None, "model_path": "/cache/shortcut-x",
                "seed": seed, "config": {"lam": 0.0, "n_contrast": 2, "max_steps": 10}}
    if digest is not ...:
        manifest["model_digest"] = digest
    runs.write_manifest(root / name, manifest)
    for step in (0, 10):
        runs.append_jsonl(root / name / runs.EVAL, {"step": step, "score": score, "n": 20})
    return root / name


def test_compare_never_groups_runs_of_other_start_weights(tmp_path):
    _run(tmp_path, "sd-s0", 0, "aaaa")
    _run(tmp_path, "sd-s1", 1, "aaaa")
    _run(tmp_path, "sd-s2", 2, "bbbb")
    _run(tmp_path, "sd-s3", 3, ...)  # written before digests were recorded: unknown weights, a group of its own
    table = compare.compare_runs([tmp_path]).table
    assert sorted(table["n_runs"]) == [1, 1, 2]
    assert table.set_index("weights").loc["aaaa", "seeds"] == 2
    assert table["group"].is_unique and all("weights=" in g for g in table["group"])
    alone = compare.compare_runs([tmp_path / "sd-s0", tmp_path / "sd-s1"]).table
    assert alone["group"].tolist() == ["sd"]  # the digest is named only where it varies


def test_study_refuses_to_extend_a_grid_from_other_start_weights(tmp_path):
    start = _model_dir(tmp_path / "warm", 1.0)
    now = models.weights_digest(start)
    same = _run(tmp_path / "grid", "sd-s0", 0, now)
    study.check_start_weights([same], start)
    other = _run(tmp_path / "grid", "sd-s1", 1, "0123456789abcdef")
    with pytest.raises(RunError, match=r"sd-s1: its manifest has model_digest 0123456789abcdef.*new --out"):
        study.check_start_weights([same, other], start)
    legacy = _run(tmp_path / "grid", "sd-s2", 2, ...)
    with pytest.raises(RunError, match="no model_digest"):
        study.check_start_weights([legacy], start)
