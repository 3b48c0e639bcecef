"""The CREDIT trainer against independent computations: lam=0 is SDPO bit for bit, and the advantage
and logit-mode loss match plain forwards on contexts rebuilt here from the text."""

from __future__ import annotations

import pytest
import torch
from train_support import EchoEnv
from trl.experimental.sdpo import SDPOTrainer

from creditlens import models
from creditlens.training.config import TrainConfig, trl_args
from creditlens.training.feedback import EnvReward, build_dataset
from creditlens.training.run import build_trainer

BASE = dict(num_prompts=3, num_generations=2, max_completion_length=6, n_eval_problems=2, log_kl=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tokenizer = models.load("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def make(algo, model_dir, tmp_path, **fields):
    config = TrainConfig(**{**BASE, **fields})
    args = trl_args(config, algo, tmp_path / algo / "checkpoints")
    trainer = build_trainer(algo, EchoEnv(), model_dir, config, args, tmp_path / algo)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def rollout_batch(trainer):
    torch.manual_seed(0)
    generation_batch = next(iter(trainer.get_train_dataloader()))
    return trainer._prepare_inputs(generation_batch)


def loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]


def logprobs(model, prompt_ids, prompt_mask, batch):
    """log p(y_t | context, y_<t) of the batch's completions after ``prompt_ids``: ``[B, T]``."""
    ids = torch.cat([prompt_ids, batch["completion_ids"]], dim=1)
    mask = torch.cat([prompt_mask, batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    t = batch["completion_ids"].shape[1]
    return torch.log_softmax(logits[:, -t:].float(), -1)


@pytest.mark.parametrize("mode", [{}, {"distillation_mode": "full_logits", "distillation_alpha": 0.5}])
def test_lam_zero_reproduces_sdpo_loss_and_gradients_exactly(model_dir, tmp_path, mode):
    trainer = make("credit", model_dir, tmp_path, lam=0.0, n_contrast=2, **mode)
    batch = rollout_batch(trainer)
    assert batch["self_distillation_mask"].sum() > 0
    config = TrainConfig(**BASE, **mode)
    plain = SDPOTrainer(
        model=model_dir,
        reward_funcs=[EnvReward(EchoEnv(), EchoEnv().problems())],
        args=trl_args(config, "sd", tmp_path / "plain"),
        train_dataset=build_dataset(EchoEnv().problems(), trainer.processing_class),
        processing_class=trainer.processing_class,
    )
    plain.current_gradient_accumulation_steps = 1
    loss_credit, grads_credit = loss_and_grads(trainer, batch)
    loss_sd, grads_sd = loss_and_grads(plain, batch)
    assert torch.equal(loss_credit, loss_sd)
    assert all(torch.equal(a, b) for a, b in zip(grads_credit, grads_sd, strict=True))
    lam_half = make("credit", model_dir, tmp_path / "half", lam=0.5, n_contrast=2, **mode)
    loss_half, _ = loss_and_grads(lam_half, batch)
    assert not torch.equal(loss_half, loss_sd)


def contrast_lp(trainer, batch, env, lam_contexts=True):
    """Teacher log-probs ``[B, K, T, V]`` on contexts (x_j, f_i, y_i) rebuilt from text here."""
    tokenizer = trainer.processing_class
    problems = {p.id: p for p in env.problems()}
    prompts = [r["prompt_id"] for r in trainer._rollouts.values()]
    out = []
    completion_text = tokenizer.batch_decode(batch["completion_ids"], skip_special_tokens=True)
    for i in range(batch["completion_ids"].shape[0]):
        problem = problems[prompts[i]]
        outcome = env.verify(problem, completion_text[i])
        feedback = trainer.args.feedback_template.format(feedback_raw=outcome.feedback)
        rows = []
        for j in batch["contrast_index"][i].tolist():
            other = problems[prompts[j]]
            assert other.id != problem.id
            text = trainer.args.reprompt_template.format(
                prompt=other.prompt[-1]["content"], solution="", feedback=feedback
            )
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True
            )
            ids = torch.tensor([ids if isinstance(ids, list) else ids["input_ids"]])
            one = {k: batch[k][i : i + 1] for k in ("completion_ids", "completion_mask")}
            rows.append(logprobs(trainer.teacher_model, ids, torch.ones_like(ids), one)[0])
        out.append(torch.stack(rows))
    return torch.stack(out)


def test_sampled_token_advantage_matches_plain_forwards(model_dir, tmp_path):
    lam = 0.7
    trainer = make("credit", model_dir, tmp_path, lam=lam, n_contrast=2, use_successful_as_teacher=False)
    batch = rollout_batch(trainer)
    trainer.compute_loss(trainer.model, batch)
    record = trainer._records[-1]
    ids = batch["completion_ids"].unsqueeze(-1)
    student = logprobs(trainer.model, batch["prompt_ids"], batch["prompt_mask"], batch).gather(-1, ids)[
        ..., 0
    ]
    split = batch["teacher_input_ids"].shape[1] - ids.shape[1]
    teacher = logprobs(
        trainer.teacher_model,
        batch["teacher_input_ids"][:, :split],
        batch["teacher_attention_mask"][:, :split],
        batch,
    ).gather(-1, ids)[..., 0]
    contrast = contrast_lp(trainer, batch, EchoEnv())
    contrast = contrast.gather(-1, ids.unsqueeze(1).expand(-1, contrast.shape[1], -1, -1))[..., 0]
    expected = teacher - lam * contrast.mean(dim=1) - student
    mask = record["mask"]
    assert mask.any()
    torch.testing.assert_close(record["advantage"][mask], expected[mask], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(record["contrast_lp"], contrast, atol=2e-5, rtol=1e-5)


def test_full_logits_loss_is_divergence_to_credit_target(model_dir, tmp_path):
    lam = 0.5
    trainer = make(
        "credit",
        model_dir,
        tmp_path,
        lam=lam,
        n_contrast=2,
        distillation_mode="full_logits",
        distillation_alpha=0.0,
        use_successful_as_teacher=False,
    )
    batch = rollout_batch(trainer)
    loss = trainer.compute_loss(trainer.model, batch).detach()
    student = logprobs(trainer.model, batch["prompt_ids"], batch["prompt_mask"], batch)
    split = batch["teacher_input_ids"].shape[1] - batch["completion_ids"].shape[1]
    teacher = logprobs(
        trainer.teacher_model,
        batch["teacher_input_ids"][:, :split],
        batch["teacher_attention_mask"][:, :split],
        batch,
    )
    target = torch.log_softmax(teacher - lam * contrast_lp(trainer, batch, EchoEnv()).mean(dim=1), -1)
    per_token = (target.exp() * (target - student)).sum(-1)  # forward KL(target || student), alpha = 0
    mask = batch["completion_mask"] * batch["self_distillation_mask"].unsqueeze(1)
    expected = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
