"""Helpers of the trainer tests: a small deterministic environment with input-specific feedback."""

from __future__ import annotations

import random

from creditlens.envs.base import SPLITS, Environment, Outcome, Problem

WORDS = ("cab", "bed", "ace", "dab", "fed", "bad", "cafe", "face", "bead", "deaf", "dace", "fade")


class EchoEnv(Environment):
    """Repeat a word: reward 1 when the response starts with it; feedback names the expected word."""

    name = "echo"

    def problems(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Problem]:
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
        words = list(WORDS[:8] if split == "train" else WORDS[8:])
        random.Random(seed).shuffle(words)
        return [
            Problem(id=f"{split}-{w}", prompt=[{"role": "user", "content": f"repeat {w}"}], reference={"word": w})
            for w in words[:n]
        ]

    def verify(self, problem: Problem, response: str) -> Outcome:
        word = problem.reference["word"]
        if response.strip().startswith(word):
            return Outcome(reward=1.0, passed=True, feedback="")
        return Outcome(reward=0.0, passed=False, feedback=f"expected {word}, got {response.strip()[:8]!r}")
