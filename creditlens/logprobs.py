"""Log-probs of the last ``n`` tokens of many token sequences, at the cost of the forward passes alone.

A sequence is ``(ids, n)``: token ``ids[t]`` of its last ``n`` tokens is scored from position ``t - 1``
of one causal forward pass over ``ids``. Two engines give the same numbers (within 1e-5 in float32):

- :func:`shared_prefix_logprobs` (``Scorer(share_prefixes=True)``): the sequences are sorted into a prefix
  tree, every prefix shared by several sequences (the chat header, a prompt that appears in a student,
  a teacher and contrast contexts) runs once, and its key/value cache serves each sequence that
  continues it. One sequence runs at a time, so there is no padding at all.
- :func:`padded_batch_logprobs` (``Scorer(share_prefixes=False)``): sequences sorted by length into
  buckets, each padded to its own longest row: fewer, larger forward calls, against fewer tokens for
  the shared-prefix engine. ``Scorer``'s default picks one per workload (``Scorer.engine``).

Both project only the positions that predict scored tokens onto the vocabulary, and the shared-prefix
engine at most ``chunk_tokens`` of them at a time, so no ``[T, V]`` tensor is built for the context.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

ScoredSequence = tuple[list[int], int]  # (token ids, n): score the last n tokens


def check_sequences(sequences: Sequence[ScoredSequence]) -> None:
    """Raise ``ValueError`` unless every ``(ids, n)`` has ``1 <= n < len(ids)``."""
    for index, (ids, n) in enumerate(sequences):
        if not 1 <= n < len(ids):
            raise ValueError(f"sequence {index}: need 1 <= n < len(ids), got n={n} for {len(ids)} tokens")


LSE_ROWS = 1024  # rows of logits converted to float32 at a time for the log-softmax


def _logsumexp(logits: Tensor) -> Tensor:
    """float32 ``logsumexp`` over the vocabulary of ``[N, V]`` logits (N >= 1), ``LSE_ROWS`` rows at a time."""
    return torch.cat([torch.logsumexp(part.float(), dim=-1) for part in logits.split(LSE_ROWS)])


def _gather(logits: Tensor, rows: Tensor, targets: Tensor, lse: Tensor) -> Tensor:
    """``log_softmax(logits)[rows, targets]`` as float32 ``[len(rows)]`` from ``lse = logsumexp(logits)``."""
    return (logits[rows, targets].float() - lse[rows]).cpu()


@dataclass
class _Node:
    """A run of tokens shared by ``members`` (sequence indices): positions ``[.., end)`` of each."""

    end: int
    members: list[int]
    children: list[_Node] = field(default_factory=list)


def prefix_tree(sequences: Sequence[list[int]]) -> _Node:
    """The compressed prefix tree of ``sequences``; the root holds their longest common prefix."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    common = [len(os.path.commonprefix([sequences[a], sequences[b]])) for a, b in itertools.pairwise(order)]

    def build(lo: int, hi: int) -> _Node:
        end = min(common[lo : hi - 1]) if hi - lo > 1 else len(sequences[order[lo]])
        node = _Node(end, order[lo:hi])
        first = lo
        while first < hi and len(sequences[order[first]]) == end:  # sequences that end here sort first
            first += 1
        for i in range(first, hi):
            if i == hi - 1 or common[i] == end:
                node.children.append(build(first, i + 1))
                first = i + 1
        return node

    return build(0, len(order))


def shares_prefixes(model: PreTrainedModel) -> bool:
    """Whether the model's key/value cache can be cut back to a prefix (no sliding-window layers)."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


@dataclass
class PrefixRun:
    """One step of the shared-prefix engine: positions ``[start, stop)`` of sequence ``source``.

    The key/value cache is cut back to its first ``start`` tokens (the run's shared ancestors) first;
    the run scores every member's positions inside it; ``finished`` members end at ``stop``.
    """

    source: int
    start: int
    stop: int
    members: list[int]
    finished: int


def prefix_schedule(sequences: Sequence[list[int]], min_shared_tokens: int = 16) -> list[PrefixRun]:
    """The runs of :func:`shared_prefix_logprobs` in order: every distinct prefix of at least
    ``min_shared_tokens`` tokens (or ending a sequence) once, a shorter one recomputed per branch."""
    runs: list[PrefixRun] = []

    def visit(node: _Node, done: int) -> None:
        """Schedule ``node``'s subtree; its ancestors' runs cover the first ``done`` tokens."""
        ends_here = len(sequences[node.members[0]]) == node.end
        start = done
        if ends_here or not node.children or node.end - done >= min_shared_tokens:
            finished = sum(len(sequences[s]) == node.end for s in node.members)
            runs.append(PrefixRun(node.members[0], done, node.end, node.members, finished))
            start = node.end
        for child in node.children:
            visit(child, start)

    if sequences:
        visit(prefix_tree(sequences), 0)
    return runs


def forward_calls(runs: Sequence[PrefixRun], chunk_tokens: int) -> int:
    """Forward passes the shared-prefix engine makes for ``runs``, at most ``chunk_tokens`` tokens each."""
    return sum(-(-(run.stop - run.start) // chunk_tokens) for run in runs)


@torch.no_grad()
def shared_prefix_logprobs(
    model: PreTrainedModel,
    sequences: Sequence[ScoredSequence],
    min_shared_tokens: int = 16,
    chunk_tokens: int = 512,
    on_done: Callable[[int], None] | None = None,
) -> list[Tensor]:
    """Log-probs ``[n]`` (float32, CPU) of the last ``n`` tokens of each ``(ids, n)``, shared prefixes run once.

    Runs :func:`prefix_schedule`: a prefix shorter than ``min_shared_tokens`` is recomputed in every
    branch instead (a separate forward pass costs more than that many tokens); a forward pass takes
    at most ``chunk_tokens`` tokens. ``on_done(k)`` is called each time k more sequences are finished.
    """
    check_sequences(sequences)
    device = next(model.parameters()).device
    ids = [list(s) for s, _ in sequences]
    first = [len(s) - n - 1 for s, n in sequences]  # first position that predicts a scored token
    out = [torch.empty(n) for _, n in sequences]
    cache = DynamicCache(config=model.config)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    for run in prefix_schedule(ids, min_shared_tokens):
        cache.crop(run.start - cache.get_seq_length())
        tokens = ids[run.source]
        for lo in range(run.start, run.stop, chunk_tokens):
            hi = min(run.stop, lo + chunk_tokens)
            keep = torch.zeros(hi - lo, dtype=torch.bool)
            spans = []
            for s in run.members:
                a, b = max(first[s], lo), min(len(ids[s]) - 1, hi)
                if a < b:
                    keep[a - lo : b - lo] = True
                    spans.append((s, a, b))
            inputs = torch.tensor([tokens[lo:hi]], device=device)
            logits = model(input_ids=inputs, use_cache=True, logits_to_keep=keep[None].to(device),
                           **{cache_arg: cache}).logits
            if not spans:
                continue
            row = (keep.cumsum(0) - 1).to(device)
            lse = _logsumexp(logits)
            for s, a, b in spans:
                targets = torch.tensor(ids[s][a + 1 : b + 1], device=device)
                out[s][a - first[s] : b - first[s]] = _gather(logits, row[a - lo : b - lo], targets, lse)
        if on_done is not None and run.finished:
            on_done(run.finished)
    return out


@torch.no_grad()
def padded_batch_logprobs(
    model: PreTrainedModel,
    sequences: Sequence[ScoredSequence],
    batches: Sequence[tuple[list[int], dict[str, Tensor]]],
    on_done: Callable[[int], None] | None = None,
) -> list[Tensor]:
    """Log-probs ``[n]`` (float32, CPU) of each ``(ids, n)`` from padded ``batches``.

    ``batches``: ``(indices, tensors)`` per forward pass, ``tensors`` holding ``input_ids``,
    ``attention_mask``, ``position_ids`` and ``keep`` ``[B, L]`` (True where a scored token is predicted).
    ``on_done(k)`` is called after each forward pass with its k sequences.
    """
    device = next(model.parameters()).device
    out: list[Tensor] = [torch.empty(0)] * len(sequences)
    for batch, tensors in batches:
        keep = tensors["keep"].to(device)
        targets = tensors["input_ids"][:, 1:].to(device)[keep[:, :-1]]
        inputs = {k: v.to(device) for k, v in tensors.items() if k != "keep"}
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
        lse = _logsumexp(logits)
        lp = _gather(logits, torch.arange(len(targets), device=device), targets, lse)
        offset = 0
        for i in batch:
            n = sequences[i][1]
            out[i] = lp[offset : offset + n]
            offset += n
        if on_done is not None:
            on_done(len(batch))
    return out
