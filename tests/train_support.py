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
            Problem(
                id=f"{split}-{w}", prompt=[{"role": "user", "content": f"repeat {w}"}], reference={"word": w}
            )
            for w in words[:n]
        ]

    def verify(self, problem: Problem, response: str) -> Outcome:
        word = problem.reference["word"]
        if response.strip().startswith(word):
            return Outcome(reward=1.0, passed=True, feedback="")
        return Outcome(reward=0.0, passed=False, feedback=f"expected {word}, got {response.strip()[:8]!r}")


def main(argv: list[str]) -> None:
    """``python tests/train_support.py ALGO OUT MAX_STEPS [--resume]``: a tiny run on :class:`EchoEnv`."""
    from creditlens.training.run import train

    algo, out, max_steps = argv[0], argv[1], int(argv[2])
    train(algo, "echo", "tiny", tiny_fields(max_steps), out, resume="--resume" in argv, env=EchoEnv())


def tiny_fields(max_steps: int) -> dict:
    """Config keys of the tiny runs: 2 prompts x 2 rollouts of at most 6 tokens."""
    return dict(
        max_steps=max_steps,
        num_prompts=2,
        num_generations=2,
        max_completion_length=6,
        n_eval_problems=2,
        eval_every=2,
        learning_rate=1e-3,
        use_successful_as_teacher=False,
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
