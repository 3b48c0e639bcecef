"""Student, teacher and contrast contexts at the token-id level (sections 1 and 3 of CREDIT-MATH.md).

- student  ``(x, y)``: the prompt, tokenized as TRL's trainers tokenize it (the chat template with a
  generation prompt for chat messages, the tokenizer's own special tokens for text);
- teacher  ``(x, f, y)``: TRL SDPO's teacher prompt (:func:`teacher_prompt`, with the :class:`Templates` of
  an ``SDPOConfig``: ``reprompt_template``, ``solution_template``, ``feedback_template``);
- contrast ``(x_j, f, y)``: the same teacher prompt with another example's prompt and *this* feedback;
- feedback contrast ``(x, f_j, y)``: the teacher prompt with another example's feedback (the feedback
  axis, docs/CREDIT-MATH.md section 8).

:func:`teacher_prompt` is the one teacher-context builder: the scorer, the Live page, the demo, ``headroom``
and ``CreditTrainer`` (its ``ContextRecorder``) all call it, so the scorer's teacher ids are the ids the
trainer feeds its teacher (tested). The response ids are appended to every context unchanged: the response
is tokenised once (or given as ids). Only when a teacher context does not fit the model window is it
rendered with a marker where the feedback goes, so the feedback can be truncated at the token level.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase
from trl.import_utils import TRLExperimentalWarning

from creditlens.errors import ConfigError, InputError
from creditlens.examples import Example, Prompt, read_examples  # noqa: F401  read_examples: benchmarks/ import it here

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TRLExperimentalWarning)
    from trl.experimental.sdpo import SDPOConfig

PLAIN_FEEDBACK_TURN = "\n\nFeedback:\n{feedback}"
_MARK = "\x1fCREDITLENS_FEEDBACK\x1f"
_TRL = {f.name: f.default for f in dataclasses.fields(SDPOConfig)}


@dataclass(frozen=True)
class Templates:
    """TRL SDPO's teacher templates; the defaults are ``SDPOConfig``'s, :meth:`of` reads a config's."""

    reprompt: str = _TRL["reprompt_template"]  # {prompt}, {solution}, {feedback}
    solution: str = _TRL["solution_template"]  # {successful_previous_attempt}
    feedback: str = _TRL["feedback_template"]  # {feedback_raw}

    @classmethod
    def of(cls, config: Any) -> Templates:
        """The templates of an ``SDPOConfig`` (``CreditConfig``), or of a mapping holding some of its
        ``*_template`` keys (a training config's ``trl`` section); missing ones keep TRL's defaults."""
        get = config.get if isinstance(config, Mapping) else lambda key, default: getattr(config, key, default)
        values = {name: get(f"{name}_template", getattr(cls, name)) for name in ("reprompt", "solution", "feedback")}
        for name, value in values.items():
            if not isinstance(value, str):
                raise ConfigError(f"{name}_template: must be a string, got {type(value).__name__}")
        return cls(**values)

    def solution_text(self, solution: str | None) -> str:
        """The solution block of a successful sibling attempt ("" without one)."""
        return self.solution.format(successful_previous_attempt=solution) if solution else ""

    def feedback_text(self, feedback: str | None) -> str:
        """The feedback block of raw environment feedback ("" without any)."""
        return self.feedback.format(feedback_raw=feedback) if feedback else ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of a chat prompt's last message, which must be the user's (TRL SDPO's rule)."""
    last = messages[-1]
    if last.get("role") != "user":
        raise InputError(f"prompt: the teacher context rewrites the last message, which must be a user turn, "
                         f"got role {last.get('role')!r}")
    content = last.get("content", "")
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text") if isinstance(content, list) else content


def teacher_prompt(prompt: Prompt, solution_text: str, feedback_text: str, templates: Templates) -> Prompt:
    """TRL SDPO's teacher prompt: ``reprompt`` around the prompt's (last user) text with the solution and
    feedback blocks (:meth:`Templates.solution_text`, :meth:`Templates.feedback_text`); chat messages keep
    every message but the last, which becomes the user's reprompt."""
    if isinstance(prompt, list):
        text = templates.reprompt.format(prompt=last_user_text(prompt), solution=solution_text, feedback=feedback_text)
        return prompt[:-1] + [{"role": "user", "content": text}]
    return templates.reprompt.format(prompt=prompt, solution=solution_text, feedback=feedback_text)


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """Plain-text prompt for tokenizers without a chat template: the message contents, one per line."""
    return "".join(f"{m['content']}\n" for m in messages)


@dataclass
class ContextConfig:
    """How contexts are written."""

    templates: Templates = field(default_factory=Templates)  # TRL SDPO's teacher templates (Templates.of(args))
    chat: bool | None = None  # chat messages through the chat template; None: when the tokenizer has one
    system: str | None = None  # system message added in chat mode (None: the chat template's default)
    chat_template_kwargs: dict[str, Any] | None = None  # extra apply_chat_template arguments (TRL's field)
    feedback_truncation: str = "right"  # over the window: "right" drops the end of f, "left" its start
    plain_feedback_turn: str = PLAIN_FEEDBACK_TURN  # plain text: what precedes {feedback} after (x, y) in log p(f | x, y)


@dataclass(frozen=True)
class ContextIds:
    """The exact token ids of one example's contexts and response; every ``*_ids`` property is context + response.

    The response's log-probs in a context are those of its last ``len(response)`` tokens, each
    predicted from the position before it by a plain forward pass over the whole sequence.
    """

    example_id: str
    prompt_id: str
    response: list[int]
    student: list[int]  # student context, response excluded
    teacher: list[int]  # teacher context, response excluded
    contrast: list[list[int]] = field(default_factory=list)  # K contrast contexts, response excluded
    contrast_example_ids: list[str] = field(default_factory=list)  # whose prompt each contrast uses
    feedback_dropped: int = 0  # feedback tokens cut to fit the window
    feedback_contrast: list[list[int]] = field(default_factory=list)  # K_f teacher contexts with other feedback
    feedback_contrast_example_ids: list[str] = field(default_factory=list)  # whose feedback each one uses

    @property
    def student_ids(self) -> list[int]:
        return self.student + self.response

    @property
    def teacher_ids(self) -> list[int]:
        return self.teacher + self.response

    @property
    def contrast_ids(self) -> list[list[int]]:
        return [context + self.response for context in self.contrast]

    @property
    def feedback_contrast_ids(self) -> list[list[int]]:
        return [context + self.response for context in self.feedback_contrast]


class ContextBuilder:
    """Renders and tokenises contexts for one tokenizer; ``max_length`` is the model window in tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ContextConfig, max_length: int):
        if config.feedback_truncation not in ("right", "left"):
            raise ConfigError(f"feedback_truncation: must be 'right' or 'left', got {config.feedback_truncation!r}")
        if not isinstance(config.templates, Templates):
            raise ConfigError(f"templates: must be a creditlens.contexts.Templates, got {type(config.templates).__name__}")
        if "{feedback}" not in config.templates.reprompt or "{feedback_raw}" not in config.templates.feedback:
            raise ConfigError("templates: reprompt must contain {feedback} and feedback {feedback_raw}")
        self.tokenizer, self.config, self.max_length = tokenizer, config, max_length
        self.chat = bool(tokenizer.chat_template) if config.chat is None else config.chat
        if self.chat and not tokenizer.chat_template:
            raise ConfigError("chat=True but the tokenizer has no chat template; set chat=False for plain text")
        self.specials = [] if self.chat else list(tokenizer("", add_special_tokens=True)["input_ids"])
        self._warned_plain = config.chat is not None  # an explicit chat=False is the caller's choice

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: no special tokens are added, special-token strings are kept as such."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def response_ids(self, example: Example) -> list[int]:
        """The response's token ids ``[T]``, tokenised once when given as text."""
        ids = self.encode(example.response) if isinstance(example.response, str) else list(example.response)
        vocab = len(self.tokenizer)
        bad = [t for t in ids if not 0 <= t < vocab]
        if not ids or bad:
            raise InputError(f"example {example.example_id}: response has no tokens or ids out of range {bad[:3]}")
        return ids

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if self.config.system is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.config.system})
        return messages

    def model_prompt(self, prompt: Prompt) -> Prompt:
        """What the trainer feeds the model for ``prompt``: chat messages in chat mode, else one text."""
        if self.chat:
            return self._messages(prompt)
        if not isinstance(prompt, str) and not self._warned_plain:
            self._warned_plain = True
            warnings.warn("creditlens: the tokenizer has no chat template, so chat-message prompts are scored as plain "
                          "'role: content' text; use a chat model, or give the prompts as text", UserWarning, stacklevel=2)
        return prompt if isinstance(prompt, str) else messages_to_text(prompt)

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Ids of a model prompt exactly as TRL's trainers tokenize it: ``apply_chat_template`` with a generation
        prompt (and ``chat_template_kwargs``) for messages, the tokenizer with its special tokens for text."""
        if isinstance(prompt, list):
            out = self.tokenizer.apply_chat_template(
                conversation=prompt, add_generation_prompt=True, tokenize=True, return_dict=True,
                **(self.config.chat_template_kwargs or {}),
            )
            return list(out["input_ids"])
        return list(self.tokenizer(text=prompt)["input_ids"])

    def _text(self, prompt: Prompt) -> str:
        if isinstance(prompt, list):
            return self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=False, **(self.config.chat_template_kwargs or {})
            )
        return prompt

    def student(self, example: Example) -> list[int]:
        """Student context ids: the prompt alone."""
        return self.tokenize(self.model_prompt(example.prompt))

    def teacher_context(self, prompt: Prompt, example: Example, feedback: str) -> list[int]:
        """Ids of the teacher prompt of ``prompt`` with ``example``'s solution and the raw ``feedback``
        (:func:`teacher_prompt`, the trainer's builder)."""
        templates = self.config.templates
        return self.tokenize(teacher_prompt(self.model_prompt(prompt), templates.solution_text(example.solution),
                                            templates.feedback_text(feedback), templates))

    def _pieces(self, prompt: Prompt, example: Example) -> tuple[list[int], list[int]]:
        """Ids before and after the raw feedback in the teacher context of ``prompt`` (rendered with a marker):
        the token-level split used only to truncate a feedback that does not fit the window."""
        templates = self.config.templates
        marked = teacher_prompt(self.model_prompt(prompt), templates.solution_text(example.solution),
                                templates.feedback.format(feedback_raw=_MARK), templates)
        text = self._text(marked)
        if text.count(_MARK) != 1:
            raise InputError(f"example {example.example_id}: the rendered teacher context must hold the feedback once")
        before, after = text.split(_MARK)
        return self.specials + self.encode(before), self.encode(after)

    def _cut(self, example: Example, feedback: str, room: int, what: str) -> list[int]:
        """The ids of ``feedback`` cut to ``room`` tokens (``feedback_truncation`` side), with a warning."""
        if room < 1:
            raise InputError(
                f"example {example.example_id}: prompt, templates and response leave no room for any {what} in the "
                f"model window of {self.max_length}; the response is never truncated (shorten the prompt or response)"
            )
        ids = self.encode(feedback)
        dropped = max(0, len(ids) - room)
        if dropped:
            ids = ids[:room] if self.config.feedback_truncation == "right" else ids[-room:]
            warnings.warn(
                f"example {example.example_id}: {what} truncated by {dropped} of {len(ids) + dropped} tokens "
                f"({self.config.feedback_truncation} side) to fit the model window of {self.max_length}",
                stacklevel=4,
            )
        return ids

    def teacher(
        self, example: Example, contrast_prompts: Sequence[Prompt] = (), n_response: int = 0
    ) -> tuple[list[int], list[list[int]], int]:
        """Teacher context ids and contrast context ids (``contrast_prompts`` with this feedback).

        Returns ``(teacher [L], [contrast_k [L_k]], feedback_dropped)``. When a context plus the response
        exceeds ``max_length``, the feedback is truncated to the same number of tokens in every context.
        """
        prompts = [example.prompt, *contrast_prompts]
        contexts = [self.teacher_context(p, example, example.feedback) for p in prompts]
        if max(len(c) for c in contexts) + n_response <= self.max_length:
            return contexts[0], contexts[1:], 0
        pieces = [self._pieces(p, example) for p in prompts]
        room = self.max_length - n_response - max(len(a) + len(b) for a, b in pieces)
        feedback = self._cut(example, example.feedback, room, "feedback")
        contexts = [before + feedback + after for before, after in pieces]
        return contexts[0], contexts[1:], len(self.encode(example.feedback)) - len(feedback)

    def feedback_contrasts(self, example: Example, feedbacks: Sequence[str], n_response: int = 0) -> list[list[int]]:
        """Teacher context ids of ``example`` with each of ``feedbacks`` in place of its own: ``[[L_j]]``.

        Same prompt, solution and templates as :meth:`teacher`; a feedback over the window is truncated on its
        own (with a warning naming the example) so that it plus the response fits ``max_length``.
        """
        contexts = []
        for feedback in feedbacks:
            ids = self.teacher_context(example.prompt, example, feedback)
            if len(ids) + n_response > self.max_length:
                before, after = self._pieces(example.prompt, example)
                room = self.max_length - n_response - len(before) - len(after)
                ids = before + self._cut(example, feedback, room, "contrast feedback") + after
            contexts.append(ids)
        return contexts

    def feedback_turn(self, example: Example, response: list[int]) -> tuple[list[int], list[int]]:
        """Pieces to score log p(f | x, y): ``(bridge, feedback)`` to append after student context + response.

        Chat mode: f opens the next user message, and the bridge's first token is dropped when the
        response already ends with it (a sampled response keeps its end-of-turn token). Plain text:
        the part of ``plain_feedback_turn`` before ``{feedback}``.
        """
        if self.chat:
            messages = self._messages(example.prompt) + [
                {"role": "assistant", "content": _MARK + "R"},
                {"role": "user", "content": _MARK + "F"},
            ]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
            bridge = self.encode(text.split(_MARK + "R")[1].split(_MARK + "F")[0])
            if bridge and response and response[-1] == bridge[0]:
                bridge = bridge[1:]
        else:
            bridge = self.encode(self.config.plain_feedback_turn.split("{feedback}")[0])
        return bridge, self.encode(example.feedback)

    def check_window(self, example: Example, ids: list[int]) -> None:
        if len(ids) > self.max_length:
            raise InputError(
                f"example {example.example_id}: student context + response is {len(ids)} tokens, over the "
                f"model window of {self.max_length}; the response and prompt are never truncated"
            )
