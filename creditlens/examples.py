"""The (prompt, feedback, response) triples creditlens scores: :class:`Example`, checked by :func:`as_example`
and read from JSONL by :func:`read_examples`. Torch-free, so ``creditlens score`` checks every line of its
examples file before torch is imported (the contexts built from them: :mod:`creditlens.contexts`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from creditlens.errors import InputError
from creditlens.runs import read_jsonl_lines

Prompt = str | list[dict[str, str]]


@dataclass
class Example:
    """One (prompt, feedback, response) triple to score."""

    prompt: str | list[dict[str, str]]  # text, or chat messages (the last user message gets the feedback)
    feedback: str  # environment feedback f on the response
    response: str | list[int]  # response text (tokenised once) or its token ids
    prompt_id: str | None = None  # examples sharing it are never each other's contrast (default: hash of prompt)
    example_id: str | None = None  # unique id (default: position in the list)
    solution: str | None = None  # optional successful attempt from the same group (SDPO's "Correct solution:")


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
    elif not isinstance(response, Sequence) or not response:
        raise InputError(f"{where}: field 'response' must be non-empty text or a non-empty list of token ids")
    else:
        bad = next(((i, t) for i, t in enumerate(response) if isinstance(t, bool) or not isinstance(t, int) or t < 0), None)
        if bad is not None:
            raise InputError(f"{where}: field 'response' item {bad[0]} is {bad[1]!r}, not a token id (a whole number "
                             ">= 0); give the response as text or as the ids the tokenizer produced")
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


def read_examples(path: str | Path) -> list[dict]:
    """Read a JSONL file of examples (one JSON object per line); errors name the file and line."""
    path = Path(path)
    if path.is_dir() or not path.exists():  # a pipe (process substitution, /dev/stdin) is read like a file
        raise InputError(f"{path}: {'a directory' if path.is_dir() else 'no such file'}; give a JSONL file of examples")
    rows = []
    for lineno, row in read_jsonl_lines(path, partial_last_line=False, error=InputError, progress="reading examples"):
        try:
            as_example(row, len(rows))
        except ValueError as error:
            raise InputError(f"{path}:{lineno}: {error}") from error
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: holds no examples")
    return rows
