"""The run log records what the trainer computed: every logged reward column is the trainer's own tensor bit
for bit, and every row's CREDIT labels are the trainer's args (sd: lam 0; grpo: none), for sd, credit (each
form, each contrast axis) and grpo, one short step each with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from train_support import EchoEnv
from transformers import TrainerCallback

from creditlens import models, runs, schema
from creditlens.training.config import parse_config, recorded
from creditlens.training.run import build_trainer, manifest_for
from creditlens.training.runlog import RunContext, attach_run_log

BASE = dict(num_prompts=3, num_generations=2, max_completion_length=5, n_eval_problems=0, max_steps=1,
            log_kl=False, learning_rate=1e-3)
RUNS = {  # name: (algo, config fields)
    "sd": ("sd", dict(log_contrasts=True, n_contrast=2)),
    "credit-teacher-input": ("credit", dict(form="teacher", n_contrast=2)),
    "credit-shortcut-feedback": ("credit", dict(form="shortcut", contrast_axis="feedback", lam=1.0, n_contrast=2)),
    "credit-contrastive-input": ("credit", dict(form="contrastive", n_contrast=5)),  # K asked > distinct prompts
    "credit-contrastive-feedback-topk": ("credit", dict(form="contrastive", contrast_axis="feedback", n_contrast=2,
                                                        distillation_mode="topk_logits", distillation_topk=5)),
    "grpo": ("grpo", {}),
}


class Capture(TrainerCallback):
    def __init__(self):
        self.payloads = []

    def on_tokens_scored(self, **payload):
        self.payloads.append({k: v for k, v in payload.items() if k not in ("inputs", "student_logits")})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tokenizer = models.load("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _tensor_columns(payload: dict, axis: str) -> dict:
    """Table column -> the trainer's ``[B, T]`` tensor, samples without contrast NaN (as the log writes them)."""
    out = {"advantage": payload["advantage"], "student_logprob": payload["student_lp"],
           "teacher_logprob": payload["teacher_lp"]}
    if payload.get("sd_reward") is not None:
        out["sd_reward"] = payload["sd_reward"]
    parts = payload.get("decomposition")
    if parts is not None:
        names = schema.CONTRAST_COLUMNS if axis == "input" else schema.FEEDBACK_COLUMNS
        keep = payload["has_contrast"][:, None]
        values = (parts.baseline, parts.specific, parts.shortcut, payload["credit_reward"])
        out.update({name: value.where(keep, float("nan")) for name, value in zip(names, values, strict=True)})
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_logged_rewards_and_labels_are_the_trainers(model_dir, tmp_path, name):
    algo, fields = RUNS[name]
    values = {**BASE, **fields}
    config, args = parse_config(values, algo, tmp_path / "checkpoints")
    trainer = build_trainer(algo, EchoEnv(), model_dir, config, args)
    manifest = manifest_for(name, algo, "echo", "tiny", model_dir, recorded(values, config, args), trainer.args)
    runs.write_manifest(tmp_path, manifest)
    capture = Capture()
    attach_run_log(trainer, RunContext(tmp_path, name, algo, EchoEnv(), [], config))
    trainer.add_callback(capture)
    trainer.train()
    table = runs.load_run(tmp_path).tokens()
    assert len(capture.payloads) == 1
    payload = capture.payloads[0]
    spec = getattr(trainer.args, "spec", None)
    assert manifest["credit"] == (None if spec is None else spec.labels())
    if algo == "grpo":
        assert spec is None and not {"lam", "pool", "form", "n_contrast"} & set(table.columns)
    else:
        assert spec == payload["spec"] and (algo != "sd" or spec.lam == 0.0)
        assert (table["lam"] == spec.lam).all() and (table["form"] == spec.form).all()
        assert (table["pool"] == spec.pool).all()
    axis = spec.axis if spec is not None else "input"
    table = table.sort_values(["sample", "position"])
    columns = _tensor_columns(payload, axis)
    split = schema.CONTRAST_COLUMNS if axis == "input" else schema.FEEDBACK_COLUMNS
    assert algo == "grpo" or {"sd_reward", *split} <= set(columns)  # every reward column is compared
    for sample, rows in table.groupby("sample"):
        t = rows["position"].to_numpy()
        for column, tensor in columns.items():
            np.testing.assert_array_equal(rows[column].to_numpy(), tensor[sample, t].double().numpy(),
                                          err_msg=f"{name}: {column}")
        if payload.get("contrast_lp") is not None:
            used = payload["contrast_lp"].shape[1] if bool(payload["has_contrast"][sample]) else 0
            k_column = "n_contrast" if axis == "input" else "n_feedback_contrast"
            assert k_column not in rows or (rows[k_column] == used).all(), name
    if name == "credit-contrastive-input":  # 5 asked, 2 other distinct prompts in the batch: K = 2 used, logged
        assert payload["contrast_lp"].shape[1] == 2 and (table["n_contrast"] == 2).all()
