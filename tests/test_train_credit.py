"""The CREDIT trainer against independent computations: lam=0 is SDPO bit for bit, and the advantage
and logit-mode losses match plain forwards on contrast contexts rebuilt here from the problems' text."""

from __future__ import annotations

import pytest
import torch
from train_support import EchoEnv
from transformers import TrainerCallback
from trl.experimental.sdpo import SDPOTrainer, sdpo_trainer

from creditlens import models
from creditlens.training import response_logits
from creditlens.training.config import parse_config
from creditlens.training.feedback import EnvReward, build_dataset
from creditlens.training.run import build_trainer

BASE = dict(num_prompts=3, num_generations=2, max_completion_length=6, n_eval_problems=2, log_kl=False)


class Capture(TrainerCallback):
    """Keeps the trainer's events: rollouts by id and the last micro-batch's token values."""

    def __init__(self):
        self.rollouts, self.tokens = {}, None

    def on_rollouts_scored(self, rollouts, **_):
        self.rollouts.update(rollouts)

    def on_tokens_scored(self, **payload):
        self.tokens = payload


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tokenizer = models.load("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def make(algo, model_dir, tmp_path, **fields):
    trainer = build_trainer(algo, EchoEnv(), model_dir, *parse_config({**BASE, **fields}, algo, tmp_path / algo))
    trainer.current_gradient_accumulation_steps = 1
    trainer.capture = Capture()
    trainer.add_callback(trainer.capture)
    return trainer


def rollout_batch(trainer):
    trainer.model.train()
    torch.manual_seed(0)
    generation_batch = next(iter(trainer.get_train_dataloader()))
    return trainer._prepare_inputs(generation_batch)


def loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]


def logprobs(model, prompt_ids, prompt_mask, batch):
    """log p(. | context, y_<t) over the vocabulary for the batch's completions after ``prompt_ids``: ``[B, T, V]``."""
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
    plain = SDPOTrainer(
        model=model_dir,
        reward_funcs=[EnvReward(EchoEnv(), EchoEnv().problems())],
        args=parse_config({**BASE, **mode}, "sd", tmp_path / "plain")[1],
        train_dataset=build_dataset(EchoEnv().problems(), trainer.processing_class),
        processing_class=trainer.processing_class,
    )
    plain.current_gradient_accumulation_steps = 1
    loss_credit, grads_credit = loss_and_grads(trainer, batch)
    loss_sd, grads_sd = loss_and_grads(plain, batch)
    assert torch.equal(loss_credit, loss_sd)
    assert all(torch.equal(a, b) for a, b in zip(grads_credit, grads_sd, strict=True))
    lam_half = make("credit", model_dir, tmp_path / "half", lam=0.5, n_contrast=2, **mode)
    batch_half = rollout_batch(lam_half)
    loss_half, _ = loss_and_grads(lam_half, batch_half)
    loss_sd_half, _ = loss_and_grads(plain, batch_half)
    assert not torch.equal(loss_half, loss_sd_half)


def form_score(form, teacher, contrast_mean, student, lam, k):
    """``log pi_T - lam * penalty`` of ``form`` (docs/CREDIT-MATH.md section 4) on matching shapes."""
    penalty = {
        "teacher": contrast_mean,
        "shortcut": contrast_mean - student,
        "contrastive": torch.log((teacher.exp() + k * contrast_mean.exp()) / (k + 1)) - student,
    }[form]
    return teacher - lam * penalty


def contrast_lp(trainer, batch, env):
    """Teacher log-probs ``[B, K, T, V]`` on the contrast contexts (x_j, f_i, y_i), rebuilt from text here.

    Each contrast prompt the trainer tokenized must be the reprompt of another problem with sample i's own
    feedback; the forward runs on the ids rebuilt here.
    """
    tokenizer = trainer.processing_class
    problems = {p.id: p for p in env.problems()}
    own = [trainer.capture.rollouts[i].prompt_id for i in batch["rollout_id"].tolist()]
    texts = tokenizer.batch_decode(batch["completion_ids"], skip_special_tokens=True)
    out = []
    for i in range(batch["completion_ids"].shape[0]):
        feedback = env.verify(problems[own[i]], texts[i]).feedback
        feedback = trainer.args.feedback_template.format(feedback_raw=feedback)
        candidates = {}
        for other in problems.values():
            text = trainer.args.reprompt_template.format(
                prompt=other.prompt[-1]["content"], solution="", feedback=feedback
            )
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True
            )
            candidates[other.id] = ids if isinstance(ids, list) else ids["input_ids"]
        rows = []
        for k in range(batch["contrast_prompt_ids"].shape[1]):
            got = batch["contrast_prompt_ids"][i, k][batch["contrast_prompt_mask"][i, k].bool()].tolist()
            match = [pid for pid, ids in candidates.items() if ids == got]
            assert match and match[0] != own[i], "a contrast context is not another problem's reprompt"
            ids = torch.tensor([candidates[match[0]]])
            one = {key: batch[key][i : i + 1] for key in ("completion_ids", "completion_mask")}
            rows.append(logprobs(trainer.teacher_model, ids, torch.ones_like(ids), one)[0])
        out.append(torch.stack(rows))
    return torch.stack(out)


@pytest.mark.parametrize("form", ["teacher", "shortcut", "contrastive"])
def test_sampled_token_advantage_matches_plain_forwards(model_dir, tmp_path, form):
    lam = 0.7
    trainer = make(
        "credit", model_dir, tmp_path, lam=lam, n_contrast=2, form=form, use_successful_as_teacher=False
    )
    batch = rollout_batch(trainer)
    trainer.compute_loss(trainer.model, batch)
    tokens = trainer.capture.tokens
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
    expected = form_score(form, teacher, contrast.mean(dim=1), student, lam, 2) - student
    mask = tokens["loss_mask"].bool()
    assert mask.any() and bool(tokens["has_contrast"].all())
    torch.testing.assert_close(tokens["advantage"][mask], expected[mask], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(tokens["contrast_lp"], contrast, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("alpha", "form"), [(0.0, "teacher"), (0.5, "contrastive"), (0.0, "shortcut")])
def test_full_logits_loss_is_divergence_to_credit_target(model_dir, tmp_path, alpha, form):
    lam = 0.5
    trainer = make(
        "credit",
        model_dir,
        tmp_path,
        lam=lam,
        n_contrast=2,
        form=form,
        distillation_mode="full_logits",
        distillation_alpha=alpha,
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
    contrast_mean = contrast_lp(trainer, batch, EchoEnv()).mean(dim=1)
    target = torch.log_softmax(form_score(form, teacher, contrast_mean, student, lam, 2), -1)
    if alpha == 0.0:  # forward KL(target || student)
        per_token = (target.exp() * (target - student)).sum(-1)
    else:  # generalized JSD with the mixture m = (p_S + p_target) / 2
        mixture = torch.log((student.exp() + target.exp()) / 2)
        per_token = 0.5 * (target.exp() * (target - mixture)).sum(-1) + 0.5 * (
            student.exp() * (student - mixture)
        ).sum(-1)
    mask = batch["completion_mask"] * batch["self_distillation_mask"].unsqueeze(1)
    expected = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("tail", "form"), [(False, "teacher"), (True, "contrastive"), (False, "shortcut")])
def test_topk_loss_uses_credit_target_on_the_student_support(model_dir, tmp_path, tail, form):
    lam, k = 0.5, 4
    trainer = make(
        "credit",
        model_dir,
        tmp_path,
        lam=lam,
        n_contrast=2,
        form=form,
        distillation_mode="topk_logits",
        distillation_topk=k,
        distillation_add_tail=tail,
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
    contrast = contrast_lp(trainer, batch, EchoEnv())
    support = student.topk(k, dim=-1).indices

    def on(lp):  # [..., V] -> [..., k]: the student's top-k ids
        return lp.gather(
            -1, support if lp.dim() == 3 else support.unsqueeze(1).expand(-1, lp.shape[1], -1, -1)
        )

    def bucket(lp):  # one more entry: log(1 - mass of the support)
        return torch.cat([lp, torch.log1p(-lp.exp().sum(-1, keepdim=True))], -1)

    s, t, c = on(student), on(teacher), on(contrast)
    if tail:
        s, t, c = bucket(s), bucket(t), bucket(c)
    target = torch.log_softmax(form_score(form, t, c.mean(dim=1), s, lam, 2), -1)
    s = s if tail else s - s.logsumexp(-1, keepdim=True)
    per_token = (target.exp() * (target - s)).sum(-1)
    mask = batch["completion_mask"] * batch["self_distillation_mask"].unsqueeze(1)
    expected = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_contrast_rows_without_loss_tokens_are_not_forwarded_and_change_nothing(model_dir, tmp_path):
    trainer = make("credit", model_dir, tmp_path, lam=0.5, n_contrast=2, use_successful_as_teacher=False)
    batch = rollout_batch(trainer)
    batch["self_distillation_mask"][0] = 0.0  # sample 0 has contrasts but no loss token
    assert bool(batch["has_contrast"].all())
    rows = []
    hook = trainer.teacher_model.get_decoder().register_forward_pre_hook(  # teacher and contrast forwards
        lambda _, args, kw: rows.append(kw["input_ids"].size(0)), with_kwargs=True
    )
    listened = trainer.compute_loss(trainer.model, batch).detach()
    forwarded_listening, rows[:] = sum(rows), []
    trainer.remove_callback(trainer.capture)
    quiet = trainer.compute_loss(trainer.model, batch).detach()
    hook.remove()
    b, k = batch["contrast_prompt_ids"].shape[:2]
    assert forwarded_listening == b + b * k  # the teacher forward, then every contrast row for the listener
    assert sum(rows) == b + (b - 1) * k  # without a listener, sample 0's contrasts are skipped
    assert torch.equal(listened, quiet)


def test_rowwise_sd_loss_equals_trls_within_1e_6(model_dir, tmp_path, monkeypatch):
    topk = dict(lam=0.0, distillation_mode="topk_logits", distillation_topk=4, distillation_alpha=0.5)
    trl_path = make("credit", model_dir, tmp_path, **topk, distillation_add_tail=True)
    batch = rollout_batch(trl_path)
    assert batch["self_distillation_mask"].sum() > 0
    for tail in (True, False):
        trl_path.args.distillation_add_tail = tail
        rowwise = make("credit", model_dir, tmp_path / f"rowwise{tail}", **topk, distillation_add_tail=tail)
        rowwise.args.sd_loss = "rowwise"
        loss_trl, grads_trl = loss_and_grads(trl_path, batch)
        with monkeypatch.context() as patch:  # the row-wise path never calls TRL's top-k loss
            patch.setattr(sdpo_trainer, "compute_topk_self_distillation_loss", None)
            loss_rowwise, grads_rowwise = loss_and_grads(rowwise, batch)
        torch.testing.assert_close(loss_rowwise, loss_trl, atol=1e-6, rtol=0)
        for a, b in zip(grads_rowwise, grads_trl, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "mode",
    [{}, {"distillation_mode": "topk_logits", "distillation_topk": 4}, {"distillation_mode": "full_logits", "pool": "logmeanexp"}],
)
def test_contrast_logprobs_agree_batched_in_row_chunks_and_by_plain_forwards(model_dir, tmp_path, monkeypatch, mode):
    trainer = make("credit", model_dir, tmp_path, lam=0.5, n_contrast=2, use_successful_as_teacher=False, **mode)
    batch = rollout_batch(trainer)
    batch["completion_mask"][0, -2:] = 0  # a shorter response: its padding positions are not projected
    names = ("contrast_token_lp", "contrast_support_lp", "pooled_contrast_lp")

    def contrasts(chunk_rows):
        trainer.args.contrast_chunk_rows = chunk_rows
        logits = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, batch)
        return {name: getattr(logits, name) for name in names if getattr(logits, name) is not None}

    assert response_logits.split_causal_lm(trainer, trainer.teacher_model) is not None
    batched = contrasts(None)
    runs = {"batched, one row projected at a time": contrasts(1)}
    monkeypatch.setattr(response_logits, "PROJECTED", frozenset())
    assert response_logits.split_causal_lm(trainer, trainer.teacher_model) is None
    runs |= {"plain forwards of one row": contrasts(1), "plain forwards of the micro-batch": contrasts(None)}
    kept = batch["completion_mask"].bool()
    assert len(batched) == (1 if not mode else 2) and not bool(batched["contrast_token_lp"][0][:, ~kept[0]].any())
    for label, run in runs.items():
        for name, value in batched.items():
            torch.testing.assert_close(run[name], value, atol=1e-5, rtol=1e-5, msg=f"{label}: {name}")
