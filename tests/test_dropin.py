"""CreditTrainer used the way TRL's own SDPOTrainer tests use theirs (tests/experimental/test_sdpo_trainer.py in
huggingface/trl), with ``SDPOTrainer, SDPOConfig`` swapped for ``CreditTrainer, CreditConfig``: plain and
conversational prompts without ids, one-row datasets, one prompt per generation batch, eval datasets,
feedback-only reprompting, curly braces, steps_per_generation != gradient_accumulation_steps, the flat-reward
warning and a local model directory, at lam 0 and 0.5 — and every import the docs show."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

from creditlens import models
from creditlens.training import CreditConfig, CreditTrainer
from creditlens.training.credit_trainer import CREDIT_METRICS

ROOT = Path(__file__).resolve().parents[1]
LAMS = [0.0, 0.5]


class Capture(TrainerCallback):
    """TRL's SelfDistillationCaptureCallback: teacher texts, masks and old log-probs of the first batch."""

    def __init__(self):
        self.teacher_texts, self.mask, self.old_logps = [], None, None

    def on_teacher_context_built(
        self, processing_class=None, teacher_input_ids=None, self_distillation_mask=None, **_
    ):
        self.teacher_texts += [
            processing_class.decode(ids, skip_special_tokens=True) for ids in teacher_input_ids
        ]
        if self.mask is None:
            self.mask = self_distillation_mask.detach().cpu()

    def on_self_distillation_batch_prepared(self, old_per_token_logps=None, **_):
        if self.old_logps is None and old_per_token_logps is not None:
            self.old_logps = old_per_token_logps.detach().cpu()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = models.load("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def config(tmp_path, lam, **fields):
    values = dict(
        output_dir=str(tmp_path / "out"),
        learning_rate=0.1,
        per_device_train_batch_size=1,
        generation_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        report_to=[],
        lam=lam,
    )
    return CreditConfig(**{**values, **fields})


def first_only(**kwargs):
    """Only the first rollout of a group succeeds."""
    return [1.0, 0.0][: len(kwargs["prompts"])] + [0.0] * max(0, len(kwargs["prompts"]) - 2)


def zero_reward(**kwargs):
    return [0.0] * len(kwargs["prompts"])


def train_and_check(trainer, changes=True):
    """Train; losses finite; parameters changed (when a reprompt gives a distillation signal)."""
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
    if changes:
        changed = [not torch.equal(p, trainer.model.get_parameter(n)) for n, p in before.items()]
        assert all(changed), "some parameters did not change"
    return trainer


@pytest.mark.parametrize("lam", LAMS)
def test_positional_config_plain_prompts_without_ids(model_dir, tmp_path, lam):
    dataset = Dataset.from_dict({"prompt": ["Solve 2+2.", "Solve 3+3.", "Name a colour."]})
    args = config(
        tmp_path, lam, generation_batch_size=6, per_device_train_batch_size=6, success_reward_threshold=0.5
    )
    trainer = CreditTrainer(model_dir, first_only, args, dataset)
    train_and_check(trainer)
    assert isinstance(trainer.args, CreditConfig) and trainer.args.lam == lam


@pytest.mark.parametrize("lam", LAMS)
def test_one_row_conversational_dataset_keeps_the_system_prompt(model_dir, tmp_path, lam, caplog):
    prompt = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "Solve 2+2."},
    ]
    capture = Capture()
    # step 1 trains on the successful rollout (no reprompt: dont_reprompt_on_self_success), step 2 on its sibling
    args = config(tmp_path, lam, max_steps=2, success_reward_threshold=0.5, distillation_is_clip=None)
    trainer = CreditTrainer(
        model=model_dir,
        reward_funcs=first_only,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [prompt]}),
        callbacks=[capture],
    )
    with caplog.at_level(logging.WARNING):
        train_and_check(trainer)
    assert any("careful assistant" in t and "Solve 2+2" in t for t in capture.teacher_texts)
    if (
        lam > 0
    ):  # one distinct prompt: no other input to contrast with, SDPO's target is kept (docs/training.md)
        assert "no other prompt to contrast with" in caplog.text
        contrast = [
            e["credit/contrast_fraction"]
            for e in trainer.state.log_history
            if "credit/contrast_fraction" in e
        ]
        assert contrast == [0.0]  # one generation batch, spread over the two steps


@pytest.mark.parametrize("lam", LAMS)
def test_one_prompt_per_generation_batch_contrasts_with_earlier_prompts(model_dir, tmp_path, lam):
    dataset = Dataset.from_dict({"prompt": ["Solve 2+2.", "Solve 3+3.", "Name a colour."]})
    args = config(
        tmp_path,
        lam,
        max_steps=3,
        per_device_train_batch_size=2,
        success_reward_threshold=0.5,
        shuffle_dataset=False,
    )
    trainer = train_and_check(CreditTrainer(model_dir, first_only, args, dataset))
    contrast = [
        e["credit/contrast_fraction"] for e in trainer.state.log_history if "credit/contrast_fraction" in e
    ]
    if lam > 0:  # step 1 has seen one prompt only; steps 2 and 3 draw from the bank of earlier prompts
        assert contrast == [0.0, 1.0, 1.0]
        assert list(trainer.contrast_bank.prompts) == ["Solve 2+2.", "Solve 3+3.", "Name a colour."]
    else:
        assert contrast == []


@pytest.mark.parametrize("lam", LAMS)
def test_feedback_only_reprompting_from_privileged_context(model_dir, tmp_path, lam):
    dataset = Dataset.from_dict(
        {
            "prompt": [
                [
                    {"role": "system", "content": "You are a careful assistant."},
                    {"role": "user", "content": "Try the puzzle again."},
                ],
                [{"role": "user", "content": "Spell a word."}],
            ],
            "privileged_context": ["Your earlier answer violated the format requirements.", "Too long."],
        }
    )
    capture = Capture()
    args = config(
        tmp_path,
        lam,
        max_steps=2,
        include_environment_feedback=True,
        distillation_is_clip=None,
        shuffle_dataset=False,
    )
    trainer = CreditTrainer(model_dir, zero_reward, args, dataset, callbacks=[capture])
    train_and_check(trainer)
    assert any("format requirements" in t for t in capture.teacher_texts)
    assert capture.mask[0].item() == 1.0


@pytest.mark.parametrize("lam", LAMS)
def test_curly_braces_in_solution_and_feedback(model_dir, tmp_path, lam):
    dataset = Dataset.from_dict(
        {
            "prompt": ["Solve f(x) = {x^2}.", "Give {a: 1}."],
            "privileged_context": ['Feedback: use {"x": 2} as a check.', "Braces {} {{ }} stay."],
        }
    )
    capture = Capture()
    args = config(
        tmp_path,
        lam,
        generation_batch_size=4,
        per_device_train_batch_size=4,
        include_environment_feedback=True,
        success_reward_threshold=0.5,
        dont_reprompt_on_self_success=False,
    )
    trainer = CreditTrainer(model_dir, first_only, args, dataset, callbacks=[capture])
    train_and_check(trainer)
    assert capture.teacher_texts and all("{{" not in t for t in capture.teacher_texts if "{x^2}" in t)
    assert any('{"x": 2}' in t for t in capture.teacher_texts)


@pytest.mark.parametrize("lam", LAMS)
def test_steps_per_generation_differs_from_gradient_accumulation(model_dir, tmp_path, lam):
    dataset = Dataset.from_dict(
        {"prompt": ["Solve 2+2.", "Solve 3+3."], "privileged_context": ["wrong", "late"]}
    )
    capture = Capture()
    args = config(
        tmp_path,
        lam,
        generation_batch_size=None,
        gradient_accumulation_steps=3,
        steps_per_generation=2,
        include_environment_feedback=True,
    )
    trainer = CreditTrainer(model_dir, zero_reward, args, dataset, callbacks=[capture])
    train_and_check(trainer)
    assert capture.old_logps is not None


@pytest.mark.parametrize("lam", LAMS)
def test_flat_rewards_warn(model_dir, tmp_path, lam, caplog):
    dataset = Dataset.from_dict({"prompt": ["Solve 2+2.", "Solve 3+3.", "Solve 4+4."]})
    args = config(
        tmp_path,
        lam,
        per_device_train_batch_size=3,
        generation_batch_size=3,
        num_generations=3,
        diagnostics_warning_interval=2,
        max_steps=2,
    )
    trainer = CreditTrainer(model_dir, zero_reward, args, dataset)
    with caplog.at_level(logging.WARNING):
        train_and_check(trainer, changes=False)
    assert "Observed flat SDPO rewards across all sampled generations" in caplog.text
    assert "SDPO self-distillation is inactive because no reprompted samples were constructed" in caplog.text


@pytest.mark.parametrize("mode", ["topk_logits", "full_logits"])
def test_logit_modes_train(model_dir, tmp_path, mode):
    dataset = Dataset.from_dict(
        {"prompt": ["Solve 2+2.", "Solve 3+3."], "privileged_context": ["wrong", "late"]}
    )
    extra = {"distillation_topk": 5, "distillation_add_tail": True} if mode == "topk_logits" else {}
    args = config(
        tmp_path,
        0.5,
        generation_batch_size=4,
        per_device_train_batch_size=4,
        include_environment_feedback=True,
        distillation_mode=mode,
        distillation_alpha=0.5,
        n_contrast=2,
        pool="logmeanexp",
        **extra,
    )
    train_and_check(CreditTrainer(model_dir, zero_reward, args, dataset))


@pytest.mark.parametrize("eval_form", ["dataset", "dict"])
def test_accepted_eval_dataset_forms(model_dir, tmp_path, eval_form):
    eval_dataset = Dataset.from_dict(
        {"prompt": ["Alpha prompt", "Beta prompt", "Gamma prompt", "Delta prompt"]}
    )
    eval_dataset = (
        {"one": eval_dataset, "two": eval_dataset.select(range(2))} if eval_form == "dict" else eval_dataset
    )
    args = config(
        tmp_path,
        0.5,
        per_device_eval_batch_size=4,
        generation_batch_size=3,
        num_generations=3,
        num_generations_eval=2,
        success_reward_threshold=0.5,
        dont_reprompt_on_self_success=False,
    )
    rewards = lambda **kw: [1.0 if i % 2 == 0 else 0.0 for i in range(len(kw["prompts"]))]  # noqa: E731
    trainer = CreditTrainer(
        model_dir, rewards, args, Dataset.from_dict({"prompt": ["Alpha prompt"]}), eval_dataset=eval_dataset
    )
    metrics = trainer.evaluate()
    losses = [v for k, v in metrics.items() if k.endswith("_loss")]
    assert losses and all(math.isfinite(v) for v in losses)


def test_local_model_instance_args_none_and_plain_sdpo_config(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, tokenizer = models.load(model_dir)
    dataset = Dataset.from_dict({"prompt": ["Solve 2+2."]})
    trainer = CreditTrainer(model, first_only, train_dataset=dataset, processing_class=tokenizer)
    assert isinstance(trainer.args, CreditConfig) and trainer.args.lam == 0.5
    assert Path(trainer.args.output_dir).name.endswith("-CREDIT")
    plain = SDPOConfig(
        output_dir=str(tmp_path / "plain"),
        use_cpu=True,
        bf16=False,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=8,
        max_steps=1,
        learning_rate=0.1,
        success_reward_threshold=0.5,
        logging_steps=1,
        report_to=[],
    )
    trainer = CreditTrainer(model_dir, first_only, plain, dataset)
    assert isinstance(trainer.args, CreditConfig) and trainer.args.lam == 0.5 and trainer.args.max_steps == 1
    train_and_check(trainer)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"lam": 1.5}, "lam"),
        ({"lam": "abc"}, "lam"),
        ({"n_contrast": 0}, "n_contrast"),
        ({"pool": "max"}, "pool"),
        ({"form": "nope"}, "form"),
        ({"contrast_bank_size": -1}, "contrast_bank_size"),
        ({"contrast_chunk_rows": 0}, "contrast_chunk_rows"),
        ({"sd_loss": "fast"}, "sd_loss"),
        ({"use_teacher_server": True}, "use_teacher_server"),
        ({"distillation_weight": 0.0}, "distillation_weight"),
        ({"distillation_mode": "topk_logits", "distillation_alpha": 0.5}, "distillation_topk"),
    ],
)
def test_config_refuses_what_credit_cannot_honour(tmp_path, fields, named):
    with pytest.raises(ValueError, match=rf"CreditConfig {named}: must"):  # named before any model loads
        CreditConfig(output_dir=str(tmp_path), report_to=[], **fields)


def test_every_import_shown_in_readme_and_docs_works():
    statements = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.splitlines():
                if re.match(r"\s*(from \S+ import [^(]+$|import \S+)", line):
                    statements.add(line.strip())
    assert "from creditlens.training import CreditConfig, CreditTrainer" in statements
    for statement in sorted(statements):
        exec(statement, {})


def logged_names(trainer) -> set[str]:
    return {name for entry in trainer.state.log_history for name in entry}


def test_metric_names_at_lam_zero_are_sdpo_trainers(model_dir, tmp_path):
    dataset = Dataset.from_dict(
        {"prompt": ["Solve 2+2.", "Solve 3+3."], "privileged_context": ["wrong", "late"]}
    )
    fields = dict(generation_batch_size=4, per_device_train_batch_size=4, include_environment_feedback=True)
    common = dict(learning_rate=0.1, num_generations=2, max_completion_length=8, max_steps=1, logging_steps=1)
    plain_args = SDPOConfig(
        output_dir=str(tmp_path / "sdpo"), report_to=[], use_cpu=True, bf16=False, **common, **fields
    )
    plain = SDPOTrainer(model_dir, zero_reward, plain_args, dataset)
    plain.train()
    sdpo_names = logged_names(plain)
    assert "sdpo/distillation_loss" in sdpo_names
    credit_zero = CreditTrainer(model_dir, zero_reward, config(tmp_path, 0.0, **fields), dataset)
    credit_zero.train()
    assert logged_names(credit_zero) == sdpo_names
    tokens = TokenCapture()
    credit_half = CreditTrainer(
        model_dir, zero_reward, config(tmp_path, 0.5, **fields), dataset, callbacks=[tokens]
    )
    credit_half.train()
    assert sdpo_names <= logged_names(credit_half)
    assert logged_names(credit_half) - sdpo_names == {f"credit/{name}" for name in CREDIT_METRICS}
    # the credit/* values are those of the step's own tensors (one micro-batch: logged as they are)
    logged = next(e for e in credit_half.state.log_history if "credit/baseline_mean" in e)
    student, teacher = tokens.payload["student_lp"], tokens.payload["teacher_lp"]
    used = tokens.payload["loss_mask"].bool() & tokens.payload["has_contrast"][:, None]
    baseline = tokens.payload["contrast_lp"].mean(dim=1)
    assert used.any()
    assert logged["credit/baseline_mean"] == pytest.approx(baseline[used].mean().item(), rel=1e-5)
    sd, shortcut = (teacher - student)[used], (baseline - student)[used]
    positive = sd > 0
    generic = torch.minimum(shortcut.clamp(min=0), sd)[positive].sum() / sd[positive].sum()
    assert logged["credit/generic_share"] == pytest.approx(generic.item(), rel=1e-5)
    assert logged["credit/contrasts_per_sample"] == 1.0


class TokenCapture(TrainerCallback):
    def __init__(self):
        self.payload = None

    def on_tokens_scored(self, **payload):
        self.payload = payload


@dataclasses.dataclass
class MyConfig(SDPOConfig):
    """A user's own SDPOConfig subclass with one field of its own."""

    curriculum: str = dataclasses.field(default="easy-first", metadata={"help": "a user's field"})


def test_an_sdpo_config_subclass_keeps_its_class_and_fields(model_dir, tmp_path):
    args = MyConfig(
        output_dir=str(tmp_path / "mine"),
        use_cpu=True,
        bf16=False,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=8,
        max_steps=1,
        report_to=[],
        curriculum="hard-first",
    )
    trainer = CreditTrainer(model_dir, first_only, args, Dataset.from_dict({"prompt": ["Solve 2+2."]}))
    assert isinstance(trainer.args, MyConfig) and isinstance(trainer.args, CreditConfig)
    assert trainer.args.curriculum == "hard-first" and trainer.args.lam == 0.5 and trainer.args.max_steps == 1
    assert trainer.args.to_dict()["curriculum"] == "hard-first"
    saved = pickle.loads(pickle.dumps(trainer.args))  # what Trainer writes to training_args.bin
    assert isinstance(saved, MyConfig) and saved.curriculum == "hard-first" and saved.lam == 0.5


def test_importing_creditlens_training_changes_no_environment_variable():
    code = (
        "import os, sys; before = dict(os.environ); import creditlens.training; "
        "from creditlens.training import CreditConfig, CreditTrainer; "
        "sys.exit(0 if dict(os.environ) == before else 1)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRL_EXPERIMENTAL_SILENCE"}
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
