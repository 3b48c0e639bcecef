"""Student, teacher and contrast contexts at the token-id level (sections 1 and 3 of CREDIT-MATH.md).

- student  ``(x, y)``: the prompt, rendered with the tokenizer's chat template when it has one;
- teacher  ``(x, f, y)``: the prompt rewritten with SDPO's reprompt template around the feedback;
- contrast ``(x_j, f, y)``: the same template with another example's prompt and *this* feedback;
- feedback contrast ``(x, f_j, y)``: the teacher context with another example's feedback (the feedback
  axis, docs/CREDIT-MATH.md section 8).

Every context is a list of token ids, and the response ids are appended to it unchanged: the
response is tokenised once (or given as ids) and never re-tokenised inside a context. A context is
rendered as text with a marker where the feedback goes, cut at the marker, and each piece is
tokenised on its own, so the feedback can be truncated at the token level to fit the model window.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from creditlens.errors import ConfigError, InputError

SDPO_TEMPLATE = (
    "{prompt}\n\n{solution}The following is feedback from your unsuccessful earlier attempt:\n\n"
    "{feedback}\n\nCorrectly solve the original question."
)
SOLUTION_TEMPLATE = "Correct solution:\n\n{solution}\n\n"
PLAIN_FEEDBACK_TURN = "\n\nFeedback:\n{feedback}"
_MARK = "\x1fCREDITLENS_FEEDBACK\x1f"
PIECES_KEPT = 4096  # rendered teacher prompts a ContextBuilder keeps (cleared when full)


@dataclass
class Example:
    """One (prompt, feedback, response) triple to score."""

    prompt: str | list[dict[str, str]]  # text, or chat messages (the last user message gets the feedback)
    feedback: str  # environment feedback f on the response
    response: str | list[int]  # response text (tokenised once) or its token ids
    prompt_id: str | None = None  # examples sharing it are never each other's contrast (default: hash of prompt)
    example_id: str | None = None  # unique id (default: position in the list)
    solution: str | None = None  # optional successful attempt from the same group (SDPO's "Correct solution:")


@dataclass
class ContextConfig:
    """How contexts are written."""

    template: str = SDPO_TEMPLATE  # teacher prompt; needs {prompt} and {feedback}, may use {solution}
    solution_template: str = SOLUTION_TEMPLATE  # fills {solution} when an example has one, else ""
    chat: bool | None = None  # use the chat template; None: when the tokenizer has one
    system: str | None = None  # system message added in chat mode (None: the chat template's default)
    add_bos: bool | None = None  # plain-text mode: prepend the BOS token; None: when the tokenizer has one
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


def _text(value: object, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {name!r} must be a non-empty string, got {value!r:.60}")
    return value


def as_example(obj: Example | Mapping | object, index: int) -> Example:
    """Check and convert a dataclass or dict with prompt / feedback / response into an :class:`Example`."""
    where = f"example {index}"
    data = asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else obj
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a dict or dataclass, got {type(obj).__name__}")
    for name in ("prompt", "feedback", "response"):
        if data.get(name) is None:
            raise InputError(f"{where}: missing field {name!r} (every example needs prompt, feedback, response)")
    prompt = data["prompt"]
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(m, Mapping) and {"role", "content"} <= set(m) for m in prompt):
            raise InputError(f"{where}: field 'prompt' as a list must hold chat messages with role and content")
        if not any(m["role"] == "user" for m in prompt):
            raise InputError(f"{where}: field 'prompt' has no user message to attach the feedback to")
        prompt_key = "\n".join(f"{m['role']}:{m['content']}" for m in prompt)
    else:
        prompt_key = _text(prompt, "prompt", where)
    response = data["response"]
    if isinstance(response, str):
        _text(response, "response", where)
    elif not isinstance(response, Sequence) or not response or not all(isinstance(t, int) for t in response):
        raise InputError(f"{where}: field 'response' must be non-empty text or a non-empty list of token ids")
    example_id = data.get("example_id")
    prompt_id = data.get("prompt_id")
    return Example(
        prompt=prompt,
        feedback=_text(data["feedback"], "feedback", where),
        response=response if isinstance(response, str) else [int(t) for t in response],
        prompt_id=str(prompt_id) if prompt_id is not None else hashlib.sha1(prompt_key.encode()).hexdigest()[:12],
        example_id=str(example_id) if example_id is not None else str(index),
        solution=data.get("solution") or None,
    )


class ContextBuilder:
    """Renders and tokenises contexts for one tokenizer; ``max_length`` is the model window in tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ContextConfig, max_length: int):
        if config.feedback_truncation not in ("right", "left"):
            raise ConfigError(f"feedback_truncation: must be 'right' or 'left', got {config.feedback_truncation!r}")
        if "{prompt}" not in config.template or "{feedback}" not in config.template:
            raise ConfigError("template: must contain both {prompt} and {feedback}")
        self.tokenizer, self.config, self.max_length = tokenizer, config, max_length
        self.chat = bool(tokenizer.chat_template) if config.chat is None else config.chat
        if self.chat and not tokenizer.chat_template:
            raise ConfigError("chat=True but the tokenizer has no chat template; set chat=False for plain text")
        add_bos = tokenizer.bos_token_id is not None if config.add_bos is None else config.add_bos
        self.bos = [tokenizer.bos_token_id] if add_bos and not self.chat else []
        self._pieces: dict[str, tuple[list[int], list[int]]] = {}  # see _teacher_pieces

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

    def _messages(self, prompt: str | list[dict[str, str]], user_text: str | None = None) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if self.config.system is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.config.system})
        if user_text is not None:
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last]["content"] = user_text
        return messages

    def _last_user(self, prompt: str | list[dict[str, str]]) -> str:
        if isinstance(prompt, str):
            return prompt
        return [m for m in prompt if m["role"] == "user"][-1]["content"]

    def _render(self, prompt: str | list[dict[str, str]], user_text: str | None) -> str:
        """The context text for ``prompt`` whose last user message is replaced by ``user_text``."""
        if self.chat:
            return self.tokenizer.apply_chat_template(
                self._messages(prompt, user_text), add_generation_prompt=True, tokenize=False
            )
        if isinstance(prompt, str):
            return prompt if user_text is None else user_text
        messages = self._messages(prompt, user_text)
        return "\n\n".join(m["content"] for m in messages)

    def student(self, example: Example) -> list[int]:
        """Student context ids: the prompt alone."""
        return self.bos + self.encode(self._render(example.prompt, None))

    def _teacher_pieces(self, prompt: str | list[dict[str, str]], example: Example) -> tuple[list[int], list[int]]:
        """Ids before and after the feedback in the teacher context of ``prompt``, rendered once per
        (prompt, solution): with K contrasts every prompt is needed K + 1 times."""
        key = json.dumps([prompt, example.solution])
        if key not in self._pieces:
            solution = self.config.solution_template.format(solution=example.solution) if example.solution else ""
            user = self.config.template.format(prompt=self._last_user(prompt), feedback=_MARK, solution=solution)
            text = self._render(prompt, user)
            if text.count(_MARK) != 1:
                raise InputError(f"example {example.example_id}: the rendered teacher context must hold the feedback once")
            before, after = text.split(_MARK)
            if len(self._pieces) >= PIECES_KEPT:
                self._pieces.clear()
            self._pieces[key] = (self.bos + self.encode(before), self.encode(after))
        before, after = self._pieces[key]
        return list(before), list(after)

    def teacher(
        self, example: Example, contrast_prompts: Sequence[str | list] = (), n_response: int = 0
    ) -> tuple[list[int], list[list[int]], int]:
        """Teacher context ids and contrast context ids (``contrast_prompts`` with this feedback).

        Returns ``(teacher [L], [contrast_k [L_k]], feedback_dropped)``; the feedback is truncated to the
        same number of tokens in every context so that the response plus each context fits ``max_length``.
        """
        pieces = [self._teacher_pieces(example.prompt, example)]
        pieces += [self._teacher_pieces(p, example) for p in contrast_prompts]
        feedback = self.encode(example.feedback)
        room = self.max_length - n_response - max(len(a) + len(b) for a, b in pieces)
        if room < 1:
            raise InputError(
                f"example {example.example_id}: prompt, template and response need "
                f"{self.max_length - room + 1} tokens without any feedback, over the model window of "
                f"{self.max_length}; the response is never truncated (shorten the prompt or response)"
            )
        dropped = max(0, len(feedback) - room)
        if dropped:
            feedback = feedback[:room] if self.config.feedback_truncation == "right" else feedback[-room:]
            warnings.warn(
                f"example {example.example_id}: feedback truncated by {dropped} of {len(feedback) + dropped} "
                f"tokens ({self.config.feedback_truncation} side) to fit the model window of {self.max_length}",
                stacklevel=3,
            )
        contexts = [before + feedback + after for before, after in pieces]
        return contexts[0], contexts[1:], dropped

    def feedback_contrasts(self, example: Example, feedbacks: Sequence[str], n_response: int = 0) -> list[list[int]]:
        """Teacher context ids of ``example`` with each of ``feedbacks`` in place of its own: ``[[L_j]]``.

        Same prompt, solution and template as :meth:`teacher`; each feedback is truncated on its own (with a
        warning naming the example) so that it plus the response fits ``max_length``.
        """
        before, after = self._teacher_pieces(example.prompt, example)
        room = self.max_length - n_response - len(before) - len(after)
        if room < 1:
            raise InputError(f"example {example.example_id}: prompt, template and response leave no room for any "
                             f"feedback in the model window of {self.max_length}")
        contexts = []
        for feedback_text in feedbacks:
            feedback = self.encode(feedback_text)
            dropped = max(0, len(feedback) - room)
            if dropped:
                feedback = feedback[:room] if self.config.feedback_truncation == "right" else feedback[-room:]
                warnings.warn(
                    f"example {example.example_id}: contrast feedback truncated by {dropped} of "
                    f"{len(feedback) + dropped} tokens ({self.config.feedback_truncation} side) to fit the model "
                    f"window of {self.max_length}",
                    stacklevel=3,
                )
            contexts.append(before + feedback + after)
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


def read_examples(path: str | Path) -> list[dict]:
    """Read a JSONL file of examples (one JSON object per line); errors name the file and line."""
    from creditlens.runs import read_jsonl_lines  # the one JSONL reader: bad lines name file:line

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'a directory' if path.is_dir() else 'no such file'}; give a JSONL file of examples")
    rows = []
    for lineno, row in read_jsonl_lines(path, partial_last_line=False, error=InputError):
        try:
            as_example(row, len(rows))
        except ValueError as error:
            raise InputError(f"{path}:{lineno}: {error}") from error
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: holds no examples")
    return rows
