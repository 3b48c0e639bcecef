"""TRL glue for creditlens environments: datasets, the reward function, and per-rollout feedback.

TRL's SDPO reads ``privileged_context`` as a static dataset column. Environment feedback depends on the
rollout, so :class:`EnvReward` keeps the :class:`~creditlens.envs.base.Outcome` of every rollout it
grades, and :class:`FeedbackContextBuilder` hands those feedbacks to SDPO's reprompt builder in place of
the column. The builder also remembers, for each sample, the solution and feedback text it put in the
teacher's context, so CREDIT can rebuild the same context around another prompt.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder, _extract_last_user_text

from creditlens.envs.base import Environment, Outcome, Problem

Prompt = str | list[dict[str, str]]


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """Plain-text prompt for tokenizers without a chat template: the message contents, one per line."""
    return "".join(f"{m['content']}\n" for m in messages)


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
    """A TRL reward function: ``Environment.verify`` on every rollout; ``last`` holds their outcomes."""

    __name__ = "env_reward"

    def __init__(self, env: Environment, problems: list[Problem]):
        self.env = env
        self.problems = problems
        self.last: list[Outcome] = []

    def __call__(self, prompts: list, completions: list, problem_index: list[int], **_: Any) -> list[float]:
        self.last = [
            self.env.verify(self.problems[int(i)], completion_text(c))
            for i, c in zip(problem_index, completions, strict=True)
        ]
        return [float(o.reward) for o in self.last]


class FeedbackContextBuilder(SuccessfulRolloutTeacherContextBuilder):
    """SDPO's reprompt builder fed with per-rollout environment feedback.

    After :meth:`build`, ``used[i]`` is the (solution, feedback) text placed in local sample i's teacher
    context (None when the sample got no reprompt and so no distillation signal).
    """

    def __init__(self, trainer: Any, reward: EnvReward):
        super().__init__(trainer)
        self.reward = reward
        self.used: list[tuple[str, str] | None] = []
        self._calls: list[tuple[str, str]] = []

    def build(self, output: dict, prompts: list, rewards: Any, feedbacks: list | None = None) -> dict:
        self._calls = []
        feedbacks = [o.feedback for o in self.reward.last]
        result = super().build(output, prompts, rewards, feedbacks=feedbacks)
        rows = result["self_distillation_mask"].nonzero().flatten().tolist()
        self.used = [None] * len(prompts)
        for row, parts in zip(rows, self._calls, strict=True):
            self.used[row] = parts
        return result

    def _build_reprompt_text(self, prompt_text: str, solution_text: str, feedback_text: str) -> str:
        self._calls.append((solution_text, feedback_text))
        return super()._build_reprompt_text(prompt_text, solution_text, feedback_text)

    def context_text(self, row: int) -> str:
        """The solution and feedback text of local sample ``row``'s teacher context ("" when none)."""
        parts = self.used[row]
        return "" if parts is None else parts[0] + parts[1]

    def contrast_prompt(self, row: int, other: Prompt) -> Prompt:
        """Teacher prompt of local sample ``row`` with its input replaced by ``other``: (x_j, f, .)."""
        parts = self.used[row]
        if parts is None:
            return other
        template = self.trainer.args.reprompt_template
        if isinstance(other, list):
            text = template.format(
                prompt=_extract_last_user_text(other), solution=parts[0], feedback=parts[1]
            )
            return other[:-1] + [{"role": "user", "content": text}]
        return template.format(prompt=other, solution=parts[0], feedback=parts[1])
