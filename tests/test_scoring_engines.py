"""Which forward engine the scorer runs, the padded engine's token budget, and exactness of the choice."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from creditlens import logprobs, models
from creditlens.errors import ConfigError
from creditlens.scoring import CPU_CALL_TOKENS, Scorer


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny")


def branching(prefix: int, branches: int, suffix: int) -> list[tuple[list[int], int]]:
    """``branches`` sequences of one shared ``prefix``-token prefix and a distinct ``suffix``-token tail each."""
    rng = random.Random(prefix * 100 + branches)
    head = [rng.randrange(1, 512) for _ in range(prefix)]
    return [(head + [b + 1] + [rng.randrange(1, 512) for _ in range(suffix - 1)], suffix) for b in range(branches)]


def plain(model, ids: list[int], n: int) -> torch.Tensor:
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    return lp[torch.arange(len(ids) - n - 1, len(ids) - 1), torch.tensor(ids[len(ids) - n :])]


@pytest.mark.parametrize(("call_tokens", "expected"), [(1, "shared"), (33, "shared"), (34, "padded"), (10**6, "padded")])
def test_choice_counts_tokens_and_calls(tiny, call_tokens, expected):
    # 6 sequences of 45 tokens sharing 40: shared runs 40 + 6 * 5 = 70 tokens in 7 calls, padded 270 in 1 call;
    # shared is cheaper iff 70 + 7c < 270 + c, i.e. c <= 33.
    sequences = branching(40, 6, 5)
    scorer = Scorer(*tiny, min_shared_tokens=1, call_tokens=call_tokens, batch_size=8, progress=False)
    assert scorer.engine(sequences) == expected


def test_forced_engines_and_other_devices(tiny):
    sequences = branching(40, 6, 5)
    assert Scorer(*tiny, share_prefixes=True, call_tokens=10**6, progress=False).engine(sequences) == "shared"
    assert Scorer(*tiny, share_prefixes=False, call_tokens=1, progress=False).engine(sequences) == "padded"
    on_meta = models.load("tiny")[0].to("meta")
    assert Scorer(on_meta, tiny[1], call_tokens=1, progress=False).engine(sequences) == "padded"
    assert Scorer(on_meta, tiny[1], share_prefixes=True, progress=False).engine(sequences) == "shared"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert Scorer(*tiny).call_tokens == 3 * CPU_CALL_TOKENS  # a call's cost in tokens grows with the threads
    finally:
        torch.set_num_threads(threads)
    assert Scorer(on_meta, tiny[1], max_batch_tokens=999).call_tokens == 999  # off the CPU: only the caps bound buckets
    for bad in (0, True, 2.5):
        with pytest.raises(ConfigError, match="call_tokens"):
            Scorer(*tiny, call_tokens=bad)


@pytest.mark.parametrize("call_tokens", [1, 10**6])
def test_chosen_engine_matches_plain_forwards(tiny, call_tokens):
    model, tok = tiny
    rng = random.Random(call_tokens)
    sequences = branching(30, 5, 12) + branching(3, 4, 20)
    sequences += [([rng.randrange(1, 512) for _ in range(length)], length - 1) for length in (2, 9, 33)]
    scorer = Scorer(model, tok, min_shared_tokens=1, call_tokens=call_tokens, batch_size=3, progress=False)
    assert scorer.engine(sequences) == ("shared" if call_tokens == 1 else "padded")
    for (ids, n), lp in zip(sequences, scorer.logprobs(sequences), strict=True):
        assert lp.shape == (n,)
        torch.testing.assert_close(lp.double(), plain(model, ids, n), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("batch_size", "max_batch_tokens", "max_padding"), [(16, 64, 0.1), (4, 200, 1.0), (3, 10**6, 0.0)])
def test_padded_batches_keep_every_budget(tiny, batch_size, max_batch_tokens, max_padding):
    rng = random.Random(max_batch_tokens)
    sequences = [([1] * length, 1) for length in [rng.randrange(2, 90) for _ in range(60)] + [70, 70, 70]]
    scorer = Scorer(*tiny, batch_size=batch_size, max_batch_tokens=max_batch_tokens, max_padding=max_padding,
                    progress=False)
    batches = scorer.padded_batches(sequences)
    assert sorted(i for batch, _ in batches for i in batch) == list(range(len(sequences)))
    for batch, tensors in batches:
        rows, width = tensors["input_ids"].shape
        real = sum(len(sequences[i][0]) for i in batch)
        assert rows == len(batch) <= batch_size and width == max(len(sequences[i][0]) for i in batch)
        assert rows == 1 or (rows * width <= max_batch_tokens and rows * width <= (1 + max_padding) * real)


def test_schedule_runs_each_distinct_prefix_once_and_finishes_every_sequence():
    rng = random.Random(3)
    sequences = [ids for ids, _ in branching(20, 3, 6) + branching(20, 2, 40)] + [[rng.randrange(512) for _ in range(7)]]
    sequences.append(list(sequences[0]))
    runs = logprobs.prefix_schedule(sequences, min_shared_tokens=1)
    distinct = {tuple(ids[: t + 1]) for ids in sequences for t in range(len(ids))}
    assert sum(run.stop - run.start for run in runs) == len(distinct)
    assert sum(run.finished for run in runs) == len(sequences)
    chunks = [-(-(run.stop - run.start) // 8) for run in runs]
    assert logprobs.forward_calls(runs, chunk_tokens=8) == sum(chunks) > len(runs)


@pytest.mark.parametrize(("call_tokens", "batch_size", "max_batch_tokens", "max_padding"),
                         [(50, 16, 16384, 0.1), (5, 4, 150, 0.3), (400, 6, 400, 1.0), (10**5, 16, 16384, 0.0)])
def test_padded_buckets_are_the_cheapest_split(tiny, call_tokens, batch_size, max_batch_tokens, max_padding):
    rng = random.Random(call_tokens)
    lengths = [rng.randrange(2, 80) for _ in range(10)] + [40, 40]
    scorer = Scorer(*tiny, call_tokens=call_tokens, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                    max_padding=max_padding, progress=False)
    ordered = sorted(lengths, reverse=True)

    def allowed(group: list[int]) -> bool:
        padded = len(group) * group[0]
        return len(group) == 1 or (len(group) <= batch_size and padded <= max_batch_tokens
                                   and padded <= (1 + max_padding) * sum(group))

    best = float("inf")
    for mask in range(2 ** (len(ordered) - 1)):  # every split of the sorted lengths into runs
        cuts = [0] + [i + 1 for i in range(len(ordered) - 1) if mask >> i & 1] + [len(ordered)]
        groups = [ordered[a:b] for a, b in itertools.pairwise(cuts)]
        if all(map(allowed, groups)):
            best = min(best, sum(len(g) * g[0] + call_tokens for g in groups))
    batches = scorer._batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(allowed([lengths[i] for i in b]) for b in batches)
    assert sum(len(b) * lengths[b[0]] + call_tokens for b in batches) == best
