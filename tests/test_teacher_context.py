"""One teacher context: for the same (prompt, feedback, solution, response) the scorer's teacher, student and
contrast ids are the ids CreditTrainer feeds its teacher and student, in chat and plain mode, with and without
a successful sibling, under the TRL templates of the trainer's config (a user's own included)."""

from __future__ import annotations

import pytest
import torch
from train_support import EchoEnv

from creditlens import models
from creditlens.contexts import ContextConfig, Example, Templates
from creditlens.scoring import Scorer, ScorerConfig
from creditlens.training.config import parse_config
from creditlens.training.contrasts import ContextRecorder
from creditlens.training.run import build_trainer

TEMPLATES = {"reprompt_template": "Task: {prompt}{solution}{feedback}\nTry again.",
             "solution_template": "\nThis worked: {successful_previous_attempt}\n",
             "feedback_template": "\nGrader says: {feedback_raw}\n"}


@pytest.fixture(scope="module", params=["chat", "plain"])
def setup(request, tmp_path_factory):
    model, tokenizer = models.load("tiny")
    assert tokenizer.chat_template
    if request.param == "plain":
        tokenizer.chat_template = None
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return request.param, str(path), model


@pytest.mark.parametrize("trl", [{}, TEMPLATES], ids=["trl-defaults", "user-templates"])
def test_scorer_teacher_ids_are_the_trainers(setup, tmp_path, trl):
    mode, path, model = setup
    config = dict(num_prompts=2, num_generations=2, max_completion_length=4, n_eval_problems=2, log_kl=False,
                  n_contrast=1, **trl)
    trainer = build_trainer("credit", EchoEnv(), path, *parse_config(config, "credit", tmp_path / "out"))
    tokenizer = trainer.processing_class
    assert (mode == "chat") == bool(tokenizer.chat_template)
    prompts = [row["prompt"] for row in trainer.train_dataset][:2]
    prompts = [prompts[0], prompts[0], prompts[1], prompts[1]]  # two groups of num_generations = 2
    assert isinstance(prompts[0], list) == (mode == "chat")
    completions = torch.tensor([[40, 41, 42, 43], [44, 45, 46, 47], [48, 49, 50, 51], [52, 53, 54, 55]])
    feedbacks = ["", "expected cab, got 'x'", "expected bed, got 'y'", "expected bed, got 'z'"]
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])  # sample 1 has a successful sibling (sample 0), 2 and 3 none
    builder = trainer.teacher_context_builder
    trainer.model.train()
    built = ContextRecorder.build(builder, {"completion_ids": completions, "completion_mask": torch.ones_like(completions)},
                                  prompts, rewards, feedbacks=feedbacks)
    scorer = Scorer(model, tokenizer, ScorerConfig(context=ContextConfig(templates=Templates.of(trainer.args))))
    sibling = tokenizer.decode(completions[0], skip_special_tokens=True)
    for row, solution in ((1, sibling), (2, None), (3, None)):
        assert built["self_distillation_mask"][row] == 1
        fed = built["teacher_input_ids"][row][built["teacher_attention_mask"][row].bool()].tolist()
        example = Example(prompt=prompts[row], feedback=feedbacks[row], response=completions[row].tolist(),
                          prompt_id=str(row), example_id=str(row), solution=solution)
        other = Example(prompt=prompts[2 if row == 1 else 0], feedback="unused", response=[1], example_id="o")
        ids = scorer.build(example, contrast_with=[other])
        assert ids.teacher_ids == fed, (mode, row)
        assert ids.student == trainer._tokenize_prompts([prompts[row]])[0]
        contrast = builder._tokenize_teacher_messages([builder.contrast_prompt(row, other.prompt)])
        assert ids.contrast[0] == contrast["prompt_ids"][0][contrast["prompt_mask"][0].bool()].tolist()
    if trl:  # the user's template reached both
        assert "Grader says" in tokenizer.decode(ids.teacher)
