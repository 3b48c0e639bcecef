"""Contrast inputs of CREDIT: which other prompts a sample is scored under, and the contexts built from them.

The rule (docs/training.md, "Contrast inputs"):

1. A prompt's identity is its ``prompt_id`` column when the dataset has one, else the prompt itself
   (a string as is, chat messages as canonical JSON) — :func:`prompt_key`.
2. The candidates of sample i are the other distinct prompts of its generation batch (gathered over all
   processes); only when there are fewer than K of them, the prompts of a bounded bank of earlier
   generation batches (:class:`PromptBank`, most recent first) join them. Never sample i's own prompt.
3. ``creditlens.credit.draw_contrasts``, the scorer's rule too, draws ``min(K, candidates)`` of them uniformly
   without replacement (every sample has as many candidates): fewer than K = ``n_contrast`` where fewer exist,
   and the reward formula and the run log use the K drawn; with no candidate at all a sample keeps the SD reward.
4. Draws use a ``torch.Generator`` seeded from the run seed and the trainer's step, so every process
   draws the same contrasts and a rerun, or a resumed run, draws them again.

On the feedback axis (``CreditConfig.contrast_axis="feedback"``, docs/CREDIT-MATH.md section 8) a sample keeps
its prompt and solution and gets K other feedback texts instead (:func:`draw_feedback_contrasts`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import torch
from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder

from creditlens.contexts import Prompt, Templates, teacher_prompt


def prompt_key(example: dict[str, Any]) -> str:
    """Identity of an example's prompt: its ``prompt_id`` when present, else the prompt's own text."""
    if example.get("prompt_id") is not None:
        return f"id:{example['prompt_id']}"
    prompt = example["prompt"]
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


class PromptBank:
    """The last ``size`` distinct prompts of earlier generation batches, keyed by :func:`prompt_key`."""

    def __init__(self, size: int):
        self.size = size
        self.prompts: OrderedDict[str, Prompt] = OrderedDict()

    def add(self, keys: list[str], prompts: list[Prompt]) -> None:
        """Remember a generation batch's prompts (most recent last); the oldest beyond ``size`` drop out."""
        for key, prompt in zip(keys, prompts, strict=True):
            self.prompts.pop(key, None)
            self.prompts[key] = prompt
        while len(self.prompts) > self.size:
            self.prompts.popitem(last=False)


def draw_feedback_contrasts(
    feedbacks: list[str], wrong: list[str | None], k: int, generator: torch.Generator
) -> list[list[str]]:
    """Contrast feedback texts for each sample of the global batch (B entries each): ``feedbacks[i]`` is the
    formatted feedback text of sample i's teacher context ("" for none), ``wrong[i]`` a wrong hint for it or None.

    Candidates of sample i: its wrong hint first (when offered), then the batch's other distinct feedback texts
    (never its own, no duplicates). Every sample with candidates gets the same number, ``min(k, fewest
    candidates)``: the hint, then others drawn uniformly without replacement. A sample without feedback or
    candidates gets [] (no contrast: it keeps the SD reward).
    """
    distinct = [text for text in dict.fromkeys(feedbacks) if text]
    candidates = []
    for own, hint in zip(feedbacks, wrong, strict=True):
        first = [hint] if own and hint and hint != own else []
        candidates.append((first, [text for text in distinct if own and text != own and text not in first]))
    used = min([k] + [len(first) + len(others) for first, others in candidates if first or others])
    picks = []
    for first, others in candidates:
        if not (first or others) or not used:
            picks.append([])
            continue
        order = torch.randperm(len(others), generator=generator)[: used - len(first[:used])].tolist()
        picks.append((first + [others[j] for j in order])[:used])
    return picks


class ContextRecorder(SuccessfulRolloutTeacherContextBuilder):
    """TRL's teacher-context builder that remembers, per local sample, the solution and feedback it used.

    After :meth:`build`, ``used[i]`` is the (solution text, feedback text) put into local sample i's
    teacher reprompt, or None when the sample got no reprompt. Every reprompt, the sample's own and the
    contrasts' (:meth:`contrast_prompt`, :meth:`feedback_contrast_prompt`), is written by
    :func:`creditlens.contexts.teacher_prompt` with the templates of the trainer's args: the scorer's builder.
    """

    def __init__(self, trainer: Any):
        super().__init__(trainer)
        self.used: list[tuple[str, str] | None] = []
        self._calls: list[tuple[str, str]] = []

    def build(self, output: dict, prompts: list, rewards: Any, feedbacks: list | None = None) -> dict:
        self._calls = []
        result = super().build(output, prompts, rewards, feedbacks=feedbacks)
        rows = result["self_distillation_mask"].nonzero().flatten().tolist()
        self.used = [None] * len(prompts)
        for row, parts in zip(rows, self._calls, strict=True):
            self.used[row] = parts
        return result

    def _build_reprompt_text(self, prompt_text: str, solution_text: str, feedback_text: str) -> str:
        self._calls.append((solution_text, feedback_text))
        return teacher_prompt(prompt_text, solution_text, feedback_text, Templates.of(self.trainer.args))

    def context_text(self, row: int) -> str:
        """The solution and feedback text of local sample ``row``'s teacher context ("" when none)."""
        parts = self.used[row]
        return "" if parts is None else parts[0] + parts[1]

    def contrast_prompt(self, row: int, other: Prompt) -> Prompt:
        """Teacher prompt of local sample ``row`` with its input replaced by ``other``: (x_j, f, .)."""
        parts = self.used[row]
        if parts is None:
            return other
        return teacher_prompt(other, *parts, Templates.of(self.trainer.args))

    def feedback_text(self, row: int) -> str:
        """The formatted feedback text of local sample ``row``'s teacher context ("" when it holds none)."""
        parts = self.used[row]
        return "" if parts is None else parts[1]

    def wrong_feedback_text(self, row: int) -> str | None:
        """A deliberately wrong feedback for local sample ``row``, formatted like its own, or None (this class
        offers none; :class:`~creditlens.training.feedback.FeedbackContextBuilder` offers the environment's)."""
        return None

    def feedback_contrast_prompt(self, row: int, prompt: Prompt, feedback_text: str) -> Prompt:
        """Teacher prompt of local sample ``row`` (its ``prompt``, its solution) with ``feedback_text`` in place of
        its feedback: the feedback-axis context (x, f_j, .)."""
        solution = "" if self.used[row] is None else self.used[row][0]
        return teacher_prompt(prompt, solution, feedback_text, Templates.of(self.trainer.args))
