"""Benchmark the scorer: response tokens/s, raw forward throughput on the same padded batches, and K costs.

For K in (0, 1, 3) on the same examples, one run measures:
- scoring throughput: response tokens in the table / wall time of ``Scorer.score`` (all contexts);
- raw forward: a plain ``model(input_ids, attention_mask)`` with full logits over the very padded
  batches the scorer builds for K = 0, in tokens/s of padded input, next to the scorer's own
  forward passes on those batches (``Scorer.logprobs``, response logits only);
- useful / raw: response tokens scored / padded tokens pushed through the model (K = 0);
- cost ratio: time of scoring with K contrasts / time with K = 0.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scoring.py --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from creditlens import models
from creditlens.contexts import read_examples
from creditlens.scoring import Scorer

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls of ``fn`` and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


@torch.no_grad()
def raw_forward(scorer: Scorer, batches: list) -> None:
    for _, tensors in batches:
        scorer.model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"], use_cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--examples", type=Path, default=ROOT / "data" / "examples.jsonl")
    parser.add_argument("--n", type=int, default=None, help="use the first n examples (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timed runs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    rows = read_examples(args.examples)[: args.n]
    model, tok = models.load(args.model, device=args.device)
    scorer = Scorer(model, tok, batch_size=args.batch_size, progress=False)
    scorer.score(rows[:4], contrast=1)  # warm-up
    print(f"model {args.model} on {args.device} ({torch.get_num_threads()} threads), {len(rows)} examples, "
          f"batch size {args.batch_size}, best of {args.repeats}")

    times = {}
    for k in (0, 1, 3):
        seconds, table = timed(lambda k=k: scorer.score(rows, contrast=k), args.repeats)
        times[k] = seconds
        print(f"K={k}: {len(table)} response tokens in {seconds:.2f} s = {len(table) / seconds:,.0f} response tokens/s")

    sequences = []
    for b in scorer.plan(rows, contrast=0):
        sequences += [(b.student_ids, len(b.response)), (b.teacher_ids, len(b.response))]
    batches = scorer.padded_batches(sequences)
    padded = sum(t["input_ids"].numel() for _, t in batches)
    real = sum(len(ids) for ids, _ in sequences)
    useful = sum(n for _, n in sequences)
    seconds, _ = timed(lambda: raw_forward(scorer, batches), args.repeats)
    kept, _ = timed(lambda: scorer.logprobs(sequences), args.repeats)
    print(f"raw forward (full logits) on the K=0 padded batches: {padded:,} tokens in {seconds:.2f} s = "
          f"{padded / seconds:,.0f} tokens/s; the scorer's forward passes alone (response logits only) "
          f"{kept:.2f} s = {kept / seconds:.2f}x; the whole K=0 scoring (contexts, table) {times[0] / seconds:.2f}x")
    print(f"useful / raw tokens (K=0): {useful:,} response tokens scored / {padded:,} padded forward tokens = "
          f"{useful / padded:.3f} (padding overhead {padded / real - 1:.1%})")
    print(f"cost ratio vs K=0: K=1 {times[1] / times[0]:.2f}x, K=3 {times[3] / times[0]:.2f}x "
          f"(forward passes per example: 2, 3, 5)")


if __name__ == "__main__":
    main()
