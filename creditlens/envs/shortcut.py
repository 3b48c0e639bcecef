"""The shortcut testbed: a synthetic cipher task whose feedback mixes input-specific hints with a
tunable input-generic cue, and whose every response token has a ground-truth label.

A problem is an operation word and ``length`` letters, e.g. ``apply red to c a h e``. Each operation
is a secret reordering of the positions (fixed by ``key_seed``); the answer reorders the letters:
``answer : e a c h .`` (red takes input letters 4 2 1 3). The verifier's feedback names every
wrong position with the input position it should copy (``position 2 should be input 3 .``): useful
only together with the input letters, so it is input-specific. With probability ``cue`` the feedback
also carries an input-generic cue that the warm-started teacher obeys whatever the input:

- ``cue_kind="filler"`` (harmless): ``note : start with ok .``; the verifier ignores leading ``ok``
  fillers, so learning it costs nothing and gains nothing;
- ``cue_kind="letter"`` (harmful): ``note : position 1 should be a .``; it raises one fixed letter at
  one answer position whatever the input, so a student that learns it is wrong there 7 times in 8.

Held-out problems: the eval split (a hashed ``eval_fraction`` of all pairs) is cut by another hash into
a validation part and a test part (:meth:`ShortcutEnv.eval_part`, :data:`VAL_FRACTION`): a study picks a
checkpoint on the validation part and reports the test part (docs/results.md, confirmatory study).

Token labels: the ``length`` letters after ``answer :`` are "specific" (their correct value depends
on the input); every other token (fillers, ``answer``, ``:``, ``.``, end of turn) is "generic".
See ``docs/shortcut.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from pathlib import Path

from creditlens.envs.base import SPLITS, Environment, Outcome, Problem

LETTERS = tuple("abcdefghijklmnop")
OPS = ("red", "blue", "green", "gold", "pink", "gray", "teal", "plum", "rust", "jade", "navy", "sand")
FILLER = "ok"
EVAL_PARTS = ("val", "test")  # the two disjoint parts of the eval split (ShortcutEnv.eval_part)
VAL_FRACTION = 0.5  # share of the eval split in its validation part
SPECIFIC, GENERIC = "specific", "generic"
FORMAT_FEEDBACK = "format : write answer : then the letters then ."
CUE_FEEDBACK = "note : start with ok ."  # the harmless filler cue
CUE_LETTER, CUE_POSITION = "a", 0  # the harmful cue's letter and (0-based) answer position
LETTER_CUE_FEEDBACK = f"note : position {CUE_POSITION + 1} should be {CUE_LETTER} ."
CUES = {"filler": CUE_FEEDBACK, "letter": LETTER_CUE_FEEDBACK}  # cue_kind -> the cue sentence
# the words of TRL SDPOTrainer's default reprompt templates (creditlens.contexts.Templates), for the vocabulary
TEMPLATE_WORDS = (
    "The following is feedback from your unsuccessful earlier attempt Correctly solve the original "
    "question Correct solution"
).split()


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings (so ``verify`` is a pure function)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ShortcutEnv(Environment):
    """Cipher task with input-specific hints and an input-generic cue of strength ``cue`` in [0, 1].

    ``n_letters`` letters (<= 16), ``length`` letters per problem, ``n_ops`` operations (<= 12), secret
    reorderings drawn from ``key_seed``; ``eval_fraction`` of all (op, letters) pairs form the eval split.
    ``cue_kind`` is ``"filler"`` (harmless) or ``"letter"`` (harmful), see :data:`CUES`.
    """

    name = "shortcut"
    filler, cue_letter, cue_position = FILLER, CUE_LETTER, CUE_POSITION

    def __init__(
        self,
        n_letters: int = 8,
        length: int = 4,
        n_ops: int = 6,
        cue: float = 0.5,
        key_seed: int = 0,
        eval_fraction: float = 0.1,
        cue_kind: str = "filler",
    ) -> None:
        if not 2 <= n_letters <= len(LETTERS):
            raise ValueError(f"n_letters: must be in [2, {len(LETTERS)}], got {n_letters}")
        if not 1 <= n_ops <= len(OPS):
            raise ValueError(f"n_ops: must be in [1, {len(OPS)}], got {n_ops}")
        if not 1 <= length <= 9:
            raise ValueError(f"length: must be in [1, 9], got {length}")
        if not 0.0 <= cue <= 1.0:
            raise ValueError(f"cue: must be in [0, 1], got {cue}")
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction: must be in (0, 1), got {eval_fraction}")
        if cue_kind not in CUES:
            raise ValueError(f"cue_kind: must be one of {tuple(CUES)}, got {cue_kind!r}")
        self.n_letters, self.length, self.n_ops = n_letters, length, n_ops
        self.cue, self.key_seed, self.eval_fraction = cue, key_seed, eval_fraction
        self.cue_kind, self.cue_feedback = cue_kind, CUES[cue_kind]
        self.letters = LETTERS[:n_letters]
        self.ops = OPS[:n_ops]
        rng = random.Random(key_seed)
        orders = [tuple(rng.sample(range(length), length)) for _ in range(64 * n_ops)]
        distinct = list(dict.fromkeys(orders))
        self.key = {op: distinct[i % len(distinct)] for i, op in enumerate(self.ops)}

    def task_config(self) -> dict[str, int]:
        """The fields that define the task (and so the warm-started model); ``cue``/``cue_kind`` are not."""
        return {"n_letters": self.n_letters, "length": self.length, "n_ops": self.n_ops, "key_seed": self.key_seed}

    def follow_cue(self, answer: Sequence[str], feedback: str) -> list[str]:
        """The response letters of a teacher that obeys every cue ``feedback`` holds: ``answer`` with the
        cue letter at the cue position when it holds the letter cue (the filler cue adds ``ok``, not a letter)."""
        letters = list(answer)
        if LETTER_CUE_FEEDBACK in feedback:
            letters[CUE_POSITION] = CUE_LETTER
        return letters

    # ----- problems -----
    def answer(self, op: str, letters: Sequence[str]) -> list[str]:
        """The correct letters for ``op`` applied to ``letters``: ``letters[key[op][i]]`` at position i."""
        return [letters[k] for k in self.key[op]]

    def make_problem(self, op: str, letters: Sequence[str]) -> Problem:
        """The problem for one (op, letters) pair; its id is ``op-letters``."""
        letters = list(letters)
        return Problem(
            id=f"{op}-{''.join(letters)}",
            prompt=[{"role": "user", "content": f"apply {op} to {' '.join(letters)}"}],
            reference={"op": op, "input": letters, "answer": self.answer(op, letters), "source": list(self.key[op])},
        )

    def split_of(self, op: str, letters: Sequence[str]) -> str:
        """``"eval"`` for a fixed hashed ``eval_fraction`` of all pairs, else ``"train"``."""
        return "eval" if _unit("split", op, "".join(letters)) < self.eval_fraction else "train"

    def eval_part(self, problem: Problem) -> str:
        """``"val"`` for a fixed hashed :data:`VAL_FRACTION` of the eval split's problems, else ``"test"``:
        disjoint parts, the same for every seed and independent of the train/eval hash."""
        reference = problem.reference
        return "val" if _unit("part", reference["op"], "".join(reference["input"])) < VAL_FRACTION else "test"

    def problems(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``n`` problems of ``split`` in an order shuffled by ``seed`` (all when ``n`` is None)."""
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
        pairs = [
            (op, letters)
            for op in self.ops
            for letters in itertools.product(self.letters, repeat=self.length)
            if self.split_of(op, letters) == split
        ]
        random.Random(seed).shuffle(pairs)
        return [self.make_problem(op, letters) for op, letters in pairs[:n]]

    # ----- verification -----
    def parse(self, response: str) -> list[str] | None:
        """The answer letters of a response, or None when it breaks the format."""
        words = response.split()
        while words and words[0] == FILLER:
            words = words[1:]
        if len(words) != self.length + 3 or words[:2] != ["answer", ":"] or words[-1] != ".":
            return None
        return words[2:-1]

    def verify(self, problem: Problem, response: str) -> Outcome:
        """Reward = fraction of correct letters (0 on a format error); feedback names each wrong position."""
        letters = self.parse(response)
        if letters is None:
            feedback = FORMAT_FEEDBACK
            reward = 0.0
        else:
            answer = problem.reference["answer"]
            source = problem.reference["source"]
            wrong = [i for i, (got, want) in enumerate(zip(letters, answer, strict=True)) if got != want]
            reward = 1.0 - len(wrong) / self.length
            if not wrong:
                return Outcome(reward=1.0, passed=True, feedback="")
            feedback = " ".join(f"position {i + 1} should be input {source[i] + 1} ." for i in wrong)
        if _unit("cue", problem.id, response) < self.cue:
            feedback = f"{feedback} {self.cue_feedback}"
        return Outcome(reward=reward, passed=False, feedback=feedback)

    def wrong_feedback(self, problem: Problem, response: str) -> str | None:
        """``verify``'s feedback with every hint pointing at the input of another position: the hint for wrong
        position i names the source of position i + 1 (cyclically), so it is the hint for another position and
        never the right one; the cue, when ``verify`` adds one, is kept, so only the input-specific hints differ.
        None for a passed or unparseable response (no hint to falsify)."""
        outcome = self.verify(problem, response)
        letters = self.parse(response)
        if outcome.passed or letters is None:
            return None
        source = problem.reference["source"]
        wrong = [i for i, (got, want) in enumerate(zip(letters, problem.reference["answer"], strict=True)) if got != want]
        hints = " ".join(f"position {i + 1} should be input {source[(i + 1) % self.length] + 1} ." for i in wrong)
        return f"{hints} {self.cue_feedback}" if outcome.feedback.endswith(self.cue_feedback) else hints

    # ----- labels and contexts -----
    def token_labels(self, problem: Problem | None, tokens: Sequence[str]) -> list[str]:
        """Ground-truth label of each response token (word-level tokens, e.g. a token table's ``token``).

        The ``length`` tokens right after the first ``answer :`` are "specific"; all others "generic".
        Labels depend on the response alone, so ``problem`` may be None.
        """
        words = [t.strip() for t in tokens]
        labels = [GENERIC] * len(words)
        for i in range(len(words) - 1):
            if words[i] == "answer" and words[i + 1] == ":":
                for j in range(i + 2, min(i + 2 + self.length, len(words))):
                    labels[j] = SPECIFIC
                break
        return labels

    def teacher_prompt(self, problem: Problem, feedback: str = "", solution: str = "") -> list[dict[str, str]]:
        """The teacher's chat messages: :func:`creditlens.contexts.teacher_prompt`, the trainer's builder, with
        TRL SDPO's default templates."""
        from creditlens.contexts import Templates, teacher_prompt  # heavy (transformers, trl)

        templates = Templates()
        return teacher_prompt(problem.prompt, templates.solution_text(solution), templates.feedback_text(feedback),
                              templates)

    def vocabulary(self) -> list[str]:
        """Every word any prompt, feedback, teacher context or valid response of this task uses."""
        words = ["apply", "to", "answer", ":", ".", FILLER, "position", "should", "be", "input"]
        words += FORMAT_FEEDBACK.split() + CUE_FEEDBACK.split() + TEMPLATE_WORDS + ["user", "assistant", "system"]
        words += LETTER_CUE_FEEDBACK.split()
        words += list(self.letters) + list(self.ops) + [str(i) for i in range(1, self.length + 1)]
        return list(dict.fromkeys(words))

    def default_model(self) -> Path:
        """The warm-started tiny model for this task (built into the cache on first use, ~2-4 min on CPU)."""
        from creditlens import warmstart  # heavy (transformers); warmstart never imports this module

        return warmstart.shortcut_model_dir(self)
