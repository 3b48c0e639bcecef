"""TRL glue for creditlens environments: datasets, the reward function, and per-rollout feedback.

TRL's SDPO reads ``privileged_context`` as a static dataset column. Environment feedback depends on the
rollout, so :class:`EnvReward` keeps the :class:`~creditlens.envs.base.Outcome` of every rollout it
grades, and :class:`FeedbackContextBuilder` hands those feedbacks to SDPO's reprompt builder in place of
the column (remembering, like every :class:`~creditlens.training.contrasts.ContextRecorder`, the
solution and feedback text of each teacher context, so CREDIT can rebuild it around another prompt).
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from creditlens.contexts import Templates, messages_to_text
from creditlens.envs.base import Environment, Outcome, Problem
from creditlens.training.contrasts import ContextRecorder

Prompt = str | list[dict[str, str]]


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one string (for logs)."""
    return prompt if isinstance(prompt, str) else messages_to_text(prompt)


def model_prompt(problem: Problem, tokenizer: Any) -> Prompt:
    """What the trainer feeds the model: chat messages when the tokenizer has a chat template, else text."""
    return problem.prompt if getattr(tokenizer, "chat_template", None) else messages_to_text(problem.prompt)


def completion_text(completion: Any) -> str:
    """The response text of a TRL completion (a string, or a one-message assistant list)."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def build_dataset(problems: list[Problem], tokenizer: Any) -> Dataset:
    """Columns ``prompt``, ``prompt_id`` (the problem id) and ``problem_index`` (into ``problems``)."""
    if not problems:
        raise ValueError("environment returned no problems for the train split")
    return Dataset.from_list(
        [
            {"prompt": model_prompt(p, tokenizer), "prompt_id": str(p.id), "problem_index": i}
            for i, p in enumerate(problems)
        ]
    )


class EnvReward:
    """A TRL reward function: ``Environment.verify`` on every rollout; ``last`` holds their outcomes and
    ``last_wrong`` the environment's wrong hint for each (``Environment.wrong_feedback``, None where it has none)."""

    __name__ = "env_reward"

    def __init__(self, env: Environment, problems: list[Problem]):
        self.env = env
        self.problems = problems
        self.last: list[Outcome] = []
        self.last_wrong: list[str | None] = []

    def __call__(self, prompts: list, completions: list, problem_index: list[int], **_: Any) -> list[float]:
        graded = [(self.problems[int(i)], completion_text(c)) for i, c in zip(problem_index, completions, strict=True)]
        self.last = [self.env.verify(problem, text) for problem, text in graded]
        self.last_wrong = [self.env.wrong_feedback(problem, text) for problem, text in graded]
        return [float(o.reward) for o in self.last]


class FeedbackContextBuilder(ContextRecorder):
    """SDPO's reprompt builder fed with per-rollout environment feedback (the outcomes ``reward`` just
    graded) in place of the static ``privileged_context`` column; records what it used like its base."""

    def __init__(self, trainer: Any, reward: EnvReward):
        super().__init__(trainer)
        self.reward = reward

    def build(self, output: dict, prompts: list, rewards: Any, feedbacks: list | None = None) -> dict:
        return super().build(output, prompts, rewards, feedbacks=[o.feedback for o in self.reward.last])

    def wrong_feedback_text(self, row: int) -> str | None:
        """The environment's wrong hint for local sample ``row``, in the feedback template, when the sample's
        teacher context holds feedback and the environment offers one (the shortcut testbed does); else None."""
        hint = self.reward.last_wrong[row]
        if hint is None or not self.feedback_text(row):
            return None
        return Templates.of(self.trainer.args).feedback_text(hint)
