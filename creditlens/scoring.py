"""Score (prompt, feedback, response) triples with a causal LM into the per-token table.

For each example the scorer runs up to four kinds of no-grad forward passes over token ids built by
:mod:`creditlens.contexts`: the student context (prompt + response), the teacher context (reprompt
with feedback + response), K contrast contexts (another prompt + this feedback + response) and, on
request, K_f feedback contrasts (this prompt + another example's feedback + response: the feedback
axis of docs/CREDIT-MATH.md section 8). :mod:`creditlens.logprobs` runs them in length-sorted
padded batches (at most ``max_padding`` padding each), or with ``share_prefixes=True`` one sequence
at a time with every token prefix that several contexts share (chat header, prompt) run once from a
key/value cache; by default (``share_prefixes=None``) the one that costs fewer tokens on a CPU,
counting each forward call as ``call_tokens`` tokens, and padded batches on other devices. Only the positions that predict response tokens are projected to the vocabulary. All reward
math goes through :mod:`creditlens.credit` via :func:`creditlens.schema.build_token_table`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from creditlens import credit, logprobs, schema
from creditlens.contexts import ContextBuilder, ContextConfig, ContextIds
from creditlens.credit import DEFAULT_SPEC, CreditSpec
from creditlens.errors import ConfigError, InputError
from creditlens.examples import Example, as_example

CPU_CALL_TOKENS = 50  # per torch thread: a forward call of SmolLM2-135M on 1 CPU thread costs ~50 tokens (docs/scoring.md)
PLAN_BAR_MIN = 1000  # examples from which plan() shows a progress bar (building contexts takes ~6 ms each)


@dataclass
class ScorerConfig:
    """Batching and window options of :class:`Scorer`."""

    batch_size: int = 16  # most sequences per padded forward pass
    max_batch_tokens: int = 16384  # most padded tokens (rows x longest row) per padded forward pass
    max_padding: float = 0.1  # most padding per padded forward pass, as a fraction of its real tokens
    padding_side: str = "right"  # "right" or "left"; results do not depend on it
    max_length: int | None = None  # model window in tokens; None: model.config.max_position_embeddings
    share_prefixes: bool | None = None  # True: shared-prefix engine; False: padded batches; None: choose (call_tokens)
    call_tokens: int | None = None  # cost of one forward call in tokens (sizes padded buckets, picks the engine);
    # None: CPU_CALL_TOKENS x torch threads on a CPU, max_batch_tokens elsewhere (buckets as large as the caps allow)
    min_shared_tokens: int = 16  # a shared prefix shorter than this is recomputed per branch instead
    chunk_tokens: int = 512  # most tokens per shared-prefix forward pass (bounds the [tokens, vocab] logits)
    progress: bool = True  # tqdm bar over the sequences when there is more than one forward pass
    context: ContextConfig = field(default_factory=ContextConfig)


_POSITIVE_INTS = ("batch_size", "max_batch_tokens", "min_shared_tokens", "chunk_tokens")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: ScorerConfig) -> None:
    """Raise :class:`ConfigError` naming the first field of ``config`` that cannot be used."""
    for name in _POSITIVE_INTS:
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
    if config.call_tokens is not None and (not _is_int(config.call_tokens) or config.call_tokens < 1):
        raise ConfigError(f"call_tokens: must be a positive integer or None (by device), got {config.call_tokens!r}")
    if config.max_length is not None and (not _is_int(config.max_length) or config.max_length < 2):
        raise ConfigError(f"max_length: must be an integer >= 2 (tokens) or None for the model's window, "
                          f"got {config.max_length!r}")
    if isinstance(config.max_padding, bool) or not isinstance(config.max_padding, (int, float)) or not (
            0 <= config.max_padding < float("inf")):
        raise ConfigError(f"max_padding: must be a number >= 0 (0.1 allows 10% padding), got {config.max_padding!r}")
    if config.padding_side not in ("right", "left"):
        raise ConfigError(f"padding_side: must be 'right' or 'left', got {config.padding_side!r}")
    if config.share_prefixes is not None and not isinstance(config.share_prefixes, bool):
        raise ConfigError(f"share_prefixes: must be True, False or None (choose), got {config.share_prefixes!r}")
    if not isinstance(config.progress, bool):
        raise ConfigError(f"progress: must be True or False, got {config.progress!r}")
    if not isinstance(config.context, ContextConfig):
        raise ConfigError(f"context: must be a ContextConfig, got {type(config.context).__name__}")


class Scorer:
    """Per-token SD / CREDIT scores of a causal LM; teacher = student = ``model`` (no EMA here)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: ScorerConfig | None = None,
        **overrides: object,
    ):
        config = config or ScorerConfig()
        for name, value in overrides.items():
            if not hasattr(config, name):
                raise ConfigError(f"Scorer: unknown option {name!r}; options are {list(vars(config))}")
            setattr(config, name, value)
        check_config(config)
        window = config.max_length or getattr(model.config, "max_position_embeddings", None)
        if not window:
            raise ConfigError("max_length: the model config has no max_position_embeddings; set max_length")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.contexts = ContextBuilder(tokenizer, config.context, int(window))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.can_share_prefixes = config.share_prefixes is not False and logprobs.shares_prefixes(model)
        self.on_cpu = next(model.parameters()).device.type == "cpu"
        cpu_call_tokens = CPU_CALL_TOKENS * torch.get_num_threads()
        self.call_tokens = config.call_tokens or (cpu_call_tokens if self.on_cpu else config.max_batch_tokens)

    def examples(self, examples: Sequence[Example | dict]) -> list[Example]:
        """Check and normalise a non-empty list of examples; example ids must be unique."""
        if isinstance(examples, (str, bytes, Mapping, Example)) or not isinstance(examples, Sequence):
            hint = " (wrap a single example in a list)" if isinstance(examples, (Mapping, Example)) else ""
            raise InputError(f"examples: expected a list of examples (dicts or Example), got "
                             f"{type(examples).__name__}{hint}")
        if not examples:
            raise InputError("examples: the list is empty; give at least one (prompt, feedback, response) example")
        out = [as_example(e, i) for i, e in enumerate(examples)]
        seen: dict[str, int] = {}
        for i, example in enumerate(out):
            if example.example_id in seen:
                raise InputError(f"example {i}: example_id {example.example_id!r} repeats example {seen[example.example_id]}")
            seen[example.example_id] = i
        return out

    def build(
        self,
        example: Example | dict,
        contrast_with: Sequence[Example | dict] = (),
        feedback_with: Sequence[Example | dict] = (),
    ) -> ContextIds:
        """The exact token ids of the student, teacher and contrast contexts and of the response.

        ``contrast_with``: the examples whose prompts make the contrast contexts (their feedback and
        responses are not used). ``feedback_with``: the examples whose feedback makes the feedback contrasts
        (their prompts and responses are not used). Recompute any log-prob with a plain forward pass over
        ``ContextIds.*_ids``.
        """
        example = example if isinstance(example, Example) and example.example_id else as_example(example, 0)
        others = [o if isinstance(o, Example) else as_example(o, i) for i, o in enumerate(contrast_with)]
        response = self.contexts.response_ids(example)
        student = self.contexts.student(example)
        self.contexts.check_window(example, student + response)
        teacher, contrast, dropped = self.contexts.teacher(example, [o.prompt for o in others], len(response))
        feedback_sources = [o if isinstance(o, Example) else as_example(o, i) for i, o in enumerate(feedback_with)]
        feedback_contrast = self.contexts.feedback_contrasts(
            example, [o.feedback for o in feedback_sources], len(response)
        )
        return ContextIds(
            example_id=example.example_id,
            prompt_id=example.prompt_id,
            response=response,
            student=student,
            teacher=teacher,
            contrast=contrast,
            contrast_example_ids=[o.example_id for o in others],
            feedback_dropped=dropped,
            feedback_contrast=feedback_contrast,
            feedback_contrast_example_ids=[o.example_id for o in feedback_sources],
        )

    def plan(
        self, examples: Sequence[Example | dict], spec: CreditSpec = DEFAULT_SPEC, seed: int = 0,
        feedback_contrast: int = 0,
    ) -> list[ContextIds]:
        """Contexts of every example with the contrasts of ``spec`` (``n_contrast`` other prompts on the input
        axis, other examples' feedback on the feedback axis) and ``feedback_contrast`` other-feedback contexts
        more (input axis only), chosen by ``seed``.

        Both are drawn by ``credit.draw_contrasts``, the trainer's rule: never the example's own prompt (feedback),
        no duplicates, and fewer than asked where fewer distinct ones exist. The draw is made on the examples
        sorted by ``example_id``, so it does not depend on the order of ``examples``.
        """
        examples = self.examples(examples)
        if not _is_int(feedback_contrast) or feedback_contrast < 0:
            raise InputError(f"feedback_contrast: must be an integer >= 0, got {feedback_contrast!r}")
        if spec.axis == "feedback" and feedback_contrast:
            raise InputError("feedback_contrast: the spec's contrasts are on the feedback axis already; give 0")
        if not _is_int(seed):
            raise InputError(f"seed: must be an integer, got {seed!r}")
        k_input, k_feedback = (spec.n_contrast, feedback_contrast) if spec.axis == "input" else (0, spec.n_contrast)
        order = sorted(examples, key=lambda e: _id_key(e.example_id))
        by_prompt = {e.prompt_id: e for e in reversed(order)}  # a prompt's contexts come from its first example
        picks = credit.draw_contrasts([e.prompt_id for e in order], k_input, torch.Generator().manual_seed(seed))
        partners = {e.example_id: [by_prompt[p] for p in pick] for e, pick in zip(order, picks, strict=True)}
        by_feedback = {e.feedback: e for e in reversed(order)}
        picks = credit.draw_contrasts([e.feedback for e in order], k_feedback, torch.Generator().manual_seed(seed))
        feedbacks = {e.example_id: [by_feedback[f] for f in pick] for e, pick in zip(order, picks, strict=True)}
        bar = tqdm(examples, desc="contexts", unit="ex", leave=False,  # minutes for 100k examples, not silent
                   disable=not self.config.progress or len(examples) < PLAN_BAR_MIN)
        return [self.build(e, partners[e.example_id], feedbacks[e.example_id]) for e in bar]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Length-sorted buckets of sequence indices with the fewest padded tokens plus ``self.call_tokens`` each.

        Each bucket (a run of the longest-first order) holds at most ``batch_size`` rows and, unless it is
        a single row, at most ``max_batch_tokens`` padded tokens and ``max_padding`` padding; among those
        splits the cheapest is found exactly (dynamic programming over the sorted lengths).
        """
        config = self.config
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        real = [0]
        for i in order:
            real.append(real[-1] + lengths[i])
        cost = [0.0] + [float("inf")] * len(order)  # cost[j]: cheapest split of order[:j]
        cut = [0] * (len(order) + 1)  # cut[j]: where the last bucket of that split starts
        for j in range(1, len(order) + 1):
            for i in range(j - 1, max(0, j - config.batch_size) - 1, -1):
                rows, padded = j - i, (j - i) * lengths[order[i]]
                if rows > 1 and padded > config.max_batch_tokens:
                    break
                if rows > 1 and padded > (1 + config.max_padding) * (real[j] - real[i]):
                    continue
                if cost[i] + padded + self.call_tokens < cost[j]:
                    cost[j], cut[j] = cost[i] + padded + self.call_tokens, i
        batches: list[list[int]] = []
        j = len(order)
        while j:
            batches.append(order[cut[j] : j])
            j = cut[j]
        return batches[::-1]

    def padded_batches(self, sequences: Sequence[tuple[list[int], int]]) -> list[tuple[list[int], dict[str, Tensor]]]:
        """Length-sorted padded batches of ``(ids, n)`` sequences: ``(indices, tensors)`` per forward pass.

        ``tensors``: ``input_ids``, ``attention_mask``, ``position_ids`` ``[B, L]`` and ``keep`` ``[B, L]``,
        True at the positions that predict the last ``n`` tokens of each sequence. Each batch is padded
        to its own longest row only.
        """
        logprobs.check_sequences(sequences)
        out = []
        for batch in self._batches([len(ids) for ids, _ in sequences]):
            width = len(sequences[batch[0]][0])
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            keep = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                ids, n = sequences[i]
                start = 0 if self.config.padding_side == "right" else width - len(ids)
                input_ids[row, start : start + len(ids)] = torch.tensor(ids)
                attention[row, start : start + len(ids)] = 1
                keep[row, start + len(ids) - n - 1 : start + len(ids) - 1] = True
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            out.append((batch, dict(input_ids=input_ids, attention_mask=attention, position_ids=positions, keep=keep)))
        return out

    def engine(self, sequences: Sequence[tuple[list[int], int]]) -> str:
        """``"shared"`` or ``"padded"``: the engine :meth:`logprobs` runs ``sequences`` with.

        ``share_prefixes`` True or False decides (True falls back to padded batches for a model whose
        cache cannot be cut back); None picks, on a CPU, the engine with the lower count of tokens run
        plus ``self.call_tokens`` per forward call, and padded batches on any other device.
        """
        config = self.config
        if not self.can_share_prefixes:
            return "padded"
        if config.share_prefixes is None and not self.on_cpu:
            return "padded"
        if config.share_prefixes:
            return "shared"
        ids = [list(s) for s, _ in sequences]
        runs = logprobs.prefix_schedule(ids, config.min_shared_tokens)
        shared = sum(r.stop - r.start for r in runs) + self.call_tokens * logprobs.forward_calls(runs, config.chunk_tokens)
        batches = self._batches([len(s) for s in ids])
        padded = sum(len(b) * len(ids[b[0]]) + self.call_tokens for b in batches)
        return "shared" if shared < padded else "padded"

    def logprobs(self, sequences: Sequence[tuple[list[int], int]]) -> list[Tensor]:
        """Log-probs of the last ``n`` tokens of each ``(ids, n)`` sequence: a list of float32 ``[n]``.

        Token ``ids[t]`` is scored from position ``t - 1``; ``len(ids) > n >= 1`` is required.
        """
        config = self.config
        bar = tqdm(total=len(sequences), desc="scoring", unit="seq", leave=False,
                   disable=not config.progress or len(sequences) < 2)
        with bar:
            if self.engine(sequences) == "shared":
                return logprobs.shared_prefix_logprobs(
                    self.model, sequences, config.min_shared_tokens, config.chunk_tokens, on_done=bar.update
                )
            return logprobs.padded_batch_logprobs(self.model, sequences, self.padded_batches(sequences),
                                                  on_done=bar.update)

    def score(
        self,
        examples: Sequence[Example | dict],
        spec: CreditSpec = DEFAULT_SPEC,
        seed: int = 0,
        feedback_contrast: int = 0,
    ) -> pd.DataFrame:
        """The per-token table (:mod:`creditlens.schema`) of a list of ``examples``.

        ``spec`` (:class:`creditlens.credit.CreditSpec`): K = ``n_contrast`` contexts per example on its ``axis``
        (other prompts, or other examples' feedback; 0: plain SD, contrast columns NaN; fewer where fewer distinct
        ones exist, recorded per row in ``n_contrast``), and the ``lam``, ``form`` and ``pool`` of the credit columns
        (recorded in the table). ``seed`` the contrast choice. ``feedback_contrast`` K_f other-feedback contexts per
        example more (input-axis spec only) add the feedback-axis columns (``schema.FEEDBACK_COLUMNS``).
        Rows come sorted by ``example_id`` (numeric ids by value) and position, so the table does not depend on
        the order of ``examples``.
        """
        normalised = self.examples(examples)
        built = self.plan(normalised, spec, seed, feedback_contrast)
        contrast, feedback_contrast = len(built[0].contrast), len(built[0].feedback_contrast)
        order = sorted(range(len(built)), key=lambda i: _id_key(built[i].example_id))
        normalised, built = [normalised[i] for i in order], [built[i] for i in order]
        sequences: list[tuple[list[int], int]] = []
        for b in built:
            n = len(b.response)
            sequences += [(b.student_ids, n), (b.teacher_ids, n)] + [(ids, n) for ids in b.contrast_ids]
            sequences += [(ids, n) for ids in b.feedback_contrast_ids]
        flat = iter(self.logprobs(sequences))
        width = max(len(b.response) for b in built)
        student = torch.zeros(len(built), width)
        teacher = torch.zeros(len(built), width)
        contrast_lp = torch.zeros(len(built), contrast, width)
        feedback_lp = torch.zeros(len(built), feedback_contrast, width)
        token_ids = torch.full((len(built), width), self.pad_id, dtype=torch.long)
        for row, b in enumerate(built):
            n = len(b.response)
            student[row, :n], teacher[row, :n] = next(flat), next(flat)
            for k in range(contrast):
                contrast_lp[row, k, :n] = next(flat)
            for k in range(feedback_contrast):
                feedback_lp[row, k, :n] = next(flat)
            token_ids[row, :n] = torch.tensor(b.response)
        pieces = self.tokenizer.batch_decode([[t] for b in built for t in b.response])
        tokens, offset = [], 0
        for b in built:
            tokens.append(pieces[offset : offset + len(b.response)])
            offset += len(b.response)
        texts = {
            "prompt": [e.prompt if isinstance(e.prompt, str) else json.dumps(e.prompt) for e in normalised],
            "feedback": [e.feedback for e in normalised],
            "response": [
                e.response if isinstance(e.response, str) else self.tokenizer.decode(e.response) for e in normalised
            ],
            "contrast_examples": [json.dumps(b.contrast_example_ids) for b in built],
            "feedback_dropped": [b.feedback_dropped for b in built],
        }
        if feedback_contrast:
            texts["feedback_contrast_examples"] = [json.dumps(b.feedback_contrast_example_ids) for b in built]
        return schema.build_token_table(
            example_ids=[b.example_id for b in built],
            prompt_ids=[b.prompt_id for b in built],
            token_ids=token_ids,
            tokens=tokens,
            teacher_lp=teacher,
            student_lp=student,
            contrast_lp=contrast_lp if contrast else None,
            lengths=[len(b.response) for b in built],
            spec=spec,
            example_columns=texts,
            feedback_contrast_lp=feedback_lp if feedback_contrast else None,
        )


def _id_key(example_id: str) -> tuple[int, int, str]:
    """Sort key of example ids: numeric ids by value first, then the others as text."""
    return (0, int(example_id), "") if example_id.isdigit() else (1, 0, example_id)
