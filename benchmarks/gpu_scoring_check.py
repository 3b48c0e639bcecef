"""GPU check of the scorer and the credit math: CUDA tables against CPU tables, and throughput ratios.

Usage: python benchmarks/gpu_scoring_check.py [--model tiny|DIR ...] [--examples data/examples.jsonl]

For each model it scores the bundled triples (K=2 contrasts) on the CPU in float32 and on CUDA in
float32 and bfloat16, prints the largest absolute difference of every log-prob and reward column
against the CPU table, and the throughput ratio CUDA / CPU measured in the same run. It also runs the
exact-model identities of ``creditlens.theory`` on CUDA float64 tensors. Without CUDA it prints the
CPU figures only.
"""

from __future__ import annotations

import argparse
import time

import torch

from creditlens import models, theory
from creditlens.contexts import read_examples
from creditlens.scoring import Scorer

COLUMNS = ("student_logprob", "teacher_logprob", "contrast_baseline", "sd_reward", "credit_reward")


def timed_score(name: str, examples: list[dict], device: str, dtype: torch.dtype):
    """Score ``examples`` once to warm up, then again timed; returns (table, seconds)."""
    model, tokenizer = models.load(name, device=device, dtype=dtype)
    scorer = Scorer(model, tokenizer, batch_size=16)
    scorer.score(examples[:6], contrast=2)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    table = scorer.score(examples, contrast=2)
    if device == "cuda":
        torch.cuda.synchronize()
    return table, time.perf_counter() - start


def check_model(name: str, examples: list[dict]) -> None:
    reference, cpu_seconds = timed_score(name, examples, "cpu", torch.float32)
    tokens = len(reference)
    print(f"\n== {name}: {tokens} response tokens, CPU float32 {tokens / cpu_seconds:,.0f} tokens/s")
    if not torch.cuda.is_available():
        return
    for dtype in (torch.float32, torch.bfloat16):
        table, seconds = timed_score(name, examples, "cuda", dtype)
        diffs = {c: float((table[c] - reference[c]).abs().max()) for c in COLUMNS}
        print(
            f"CUDA {str(dtype).removeprefix('torch.')}: {tokens / seconds:,.0f} tokens/s "
            f"(x{cpu_seconds / seconds:.1f} over CPU); max |diff| vs CPU float32: "
            + ", ".join(f"{c} {d:.2e}" for c, d in diffs.items())
        )


def check_identities_on_cuda() -> None:
    if not torch.cuda.is_available():
        return
    model = theory.ExactModel.random(n_inputs=6, vocab_size=4, length=4, seed=0)
    batch = model.sample_batch(8, 3, seed=0)
    on_cuda = theory.ExactBatch(**{k: v.cuda() for k, v in batch.__dict__.items()})
    errors = theory.verify_identities(on_cuda, lam=0.5)
    print(f"\nexact-model identities on CUDA float64: max error {errors.max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name or directory (repeatable; default tiny)")
    parser.add_argument("--examples", default="data/examples.jsonl")
    args = parser.parse_args()
    examples = read_examples(args.examples)
    print(f"torch {torch.__version__}, CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    for name in args.model or ["tiny"]:
        check_model(name, examples)
    check_identities_on_cuda()


if __name__ == "__main__":
    main()
