"""The two forward engines of ``creditlens.logprobs`` against one plain unpadded forward per sequence."""

from __future__ import annotations

import random

import pytest
import torch

from creditlens import logprobs, models


@pytest.fixture(scope="module")
def tiny_model():
    return models.load("tiny")[0]


@pytest.fixture(scope="module")
def sequences():
    """Sequences sharing prefixes of many lengths, a duplicate, and one that is a prefix of another."""
    rng = random.Random(0)
    base = [rng.randrange(512) for _ in range(40)]
    out = []
    for _ in range(12):
        ids = base[: rng.randrange(0, 40)] + [rng.randrange(512) for _ in range(rng.randrange(2, 30))]
        out.append((ids, rng.randrange(1, len(ids))))
    out.append((list(out[0][0]), out[0][1]))
    out.append((out[1][0][:5], 2))
    return out


def plain(model, ids: list[int], n: int) -> torch.Tensor:
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    return lp[torch.arange(len(ids) - n - 1, len(ids) - 1), torch.tensor(ids[len(ids) - n :])]


@pytest.mark.parametrize(("min_shared_tokens", "chunk_tokens"), [(1, 512), (16, 512), (4, 3), (100, 1)])
def test_shared_prefixes_match_plain_forwards(tiny_model, sequences, min_shared_tokens, chunk_tokens):
    done = []
    out = logprobs.shared_prefix_logprobs(tiny_model, sequences, min_shared_tokens, chunk_tokens, on_done=done.append)
    assert sum(done) == len(sequences)
    for (ids, n), lp in zip(sequences, out, strict=True):
        assert lp.shape == (n,) and lp.dtype == torch.float32
        torch.testing.assert_close(lp.double(), plain(tiny_model, ids, n), atol=1e-5, rtol=0)


def test_prefix_tree_runs_each_shared_prefix_once(sequences):
    tree = logprobs.prefix_tree([ids for ids, _ in sequences])
    ran = []

    def walk(node, done):
        ran.append(node.end - done)
        for child in node.children:
            walk(child, node.end)

    walk(tree, 0)
    distinct = {tuple(ids[: t + 1]) for ids, _ in sequences for t in range(len(ids))}
    assert sum(ran) == len(distinct)  # every distinct prefix is one token run exactly once


def test_padded_batches_match_plain_forwards(tiny_model, sequences):
    from creditlens.scoring import Scorer

    scorer = Scorer(tiny_model, models.load("tiny")[1], share_prefixes=False, batch_size=4, progress=False)
    batches, done = scorer.padded_batches(sequences), []
    out = logprobs.padded_batch_logprobs(tiny_model, sequences, batches, on_done=done.append)
    assert done == [len(batch) for batch, _ in batches] and len(done) > 1  # one tick per forward pass
    for (ids, n), lp in zip(sequences, out, strict=True):
        torch.testing.assert_close(lp.double(), plain(tiny_model, ids, n), atol=1e-5, rtol=0)


@pytest.mark.parametrize("share_prefixes", [True, False])
def test_scoring_bar_ticks_as_sequences_finish(tiny_model, sequences, share_prefixes, monkeypatch):
    from creditlens import scoring

    ticks = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total = total

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, k):
            ticks.append(k)

    monkeypatch.setattr(scoring, "tqdm", Bar)
    scorer = scoring.Scorer(tiny_model, models.load("tiny")[1], share_prefixes=share_prefixes, batch_size=4)
    scorer.logprobs(sequences)
    assert sum(ticks) == len(sequences) and len(ticks) >= len(sequences) // 4  # not one jump at the end


def test_bad_sequences_are_refused(tiny_model):
    with pytest.raises(ValueError, match="sequence 1: need 1 <= n < len"):
        logprobs.shared_prefix_logprobs(tiny_model, [([1, 2, 3], 1), ([1, 2], 2)])
