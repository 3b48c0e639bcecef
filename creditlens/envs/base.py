"""The environment interface: seeded problems, and a verifier that says why an attempt failed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"  # creditlens.models' embedded model (no download)

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Problem:
    """One task instance. ``prompt`` is a list of chat messages; ``reference`` stays hidden from the model."""

    id: str
    prompt: list[dict[str, str]]
    reference: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The verdict on one response: ``reward`` in [0, 1], ``feedback`` empty when ``passed``."""

    reward: float
    passed: bool
    feedback: str


class Environment(ABC):
    """A task suite: ``problems(split)`` is reproducible for a given seed; ``verify`` grades a response."""

    name: str

    @abstractmethod
    def problems(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``n`` problems (all when None) of a seeded, reproducible ``split``."""

    @abstractmethod
    def verify(self, problem: Problem, response: str) -> Outcome:
        """Grade ``response`` (the model's text) against ``problem``."""

    def wrong_feedback(self, problem: Problem, response: str) -> str | None:
        """A deliberately wrong feedback on ``response``, worded like ``verify``'s (the feedback-axis contrast
        (x, f_wrong, y) of docs/CREDIT-MATH.md section 8), or None when the environment cannot make one
        (the default) or the response needs no feedback."""
        return None

    def default_model(self) -> str | Path:
        """The start model ``creditlens train`` uses without ``--model``: a model name of
        ``creditlens.models`` or a local directory. Default: the embedded SmolLM2-135M-Instruct."""
        return DEFAULT_MODEL
