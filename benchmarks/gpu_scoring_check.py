"""GPU check of the scorer: CUDA tables against CPU tables, throughput, and the fraction of bf16 matmul peak.

Usage (one short run, about 5 minutes on an H100/H200; no GPU was lent when it was written, see
docs/scoring.md):

    python benchmarks/gpu_scoring_check.py                  # accuracy (tiny) + throughput (both shapes)
    python benchmarks/gpu_scoring_check.py --smoke          # CPU, 2 layers, vocabulary 4096: checks the script runs

1. Accuracy: for each ``--model`` it scores the bundled triples (K=2) on the CPU in float32 and on CUDA
   in float32 and bfloat16 and prints the largest difference of every column against the CPU table.
2. Throughput: for random-weight models of SmolLM2-135M's and Qwen2.5-0.5B's shapes it scores
   ``--copies`` copies of the bundled triples (K=3, tiny tokenizer, so ids are valid for any vocabulary)
   in bfloat16 and float32 with both engines (padded batches; shared prefixes), and prints response
   tokens/s, forwarded tokens/s and model FLOP/s as a fraction of the bf16 matmul peak measured in the
   same run (an 8192^3 bf16 matmul). FLOPs counted: 2 x non-embedding parameters per real token,
   the causal attention products, and the vocabulary projection of the scored positions.
3. The exact-model identities of ``creditlens.theory`` on CUDA float64 tensors.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from creditlens import models, theory
from creditlens.contexts import read_examples
from creditlens.credit import CreditSpec
from creditlens.scoring import Scorer

COLUMNS = ("student_logprob", "teacher_logprob", "contrast_baseline", "sd_reward", "credit_reward")
SHAPES = {
    "smollm2-135m": (LlamaForCausalLM, LlamaConfig, dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000.0)),
    "qwen2.5-0.5b": (Qwen2ForCausalLM, Qwen2Config, dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0)),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_score(scorer: Scorer, examples: list[dict], device: str, contrast: int):
    """Score ``examples[:6]`` to warm up, then all of them timed; returns (table, seconds)."""
    scorer.score(examples[:6], spec=CreditSpec(n_contrast=contrast))
    sync(device)
    start = time.perf_counter()
    table = scorer.score(examples, spec=CreditSpec(n_contrast=contrast))
    sync(device)
    return table, time.perf_counter() - start


def check_model(name: str, examples: list[dict]) -> None:
    """CUDA float32 / bfloat16 tables against the CPU float32 table of the same model."""
    model, tokenizer = models.load(name, device="cpu", dtype=torch.float32)
    reference, cpu_seconds = timed_score(Scorer(model, tokenizer, progress=False), examples, "cpu", 2)
    tokens = len(reference)
    print(f"\n== {name}: {tokens} response tokens, CPU float32 {tokens / cpu_seconds:,.0f} tokens/s")
    if not torch.cuda.is_available():
        return
    for dtype in (torch.float32, torch.bfloat16):
        model, tokenizer = models.load(name, device="cuda", dtype=dtype)
        table, seconds = timed_score(Scorer(model, tokenizer, progress=False), examples, "cuda", 2)
        diffs = {c: float((table[c] - reference[c]).abs().max()) for c in COLUMNS}
        print(f"CUDA {str(dtype).removeprefix('torch.')}: {tokens / seconds:,.0f} tokens/s (x{cpu_seconds / seconds:.1f} "
              f"over CPU); max |diff| vs CPU float32: " + ", ".join(f"{c} {d:.2e}" for c, d in diffs.items()))


def matmul_peak(device: str, dtype: torch.dtype, size: int) -> float:
    """Measured FLOP/s of a ``size``^3 matmul (median of 10 after warm-up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(13):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / sorted(times[3:])[len(times[3:]) // 2]


def throughput(shape: str, examples: list[dict], device: str, dtype: torch.dtype, share: bool, peak: float,
               smoke: bool, batch_size: int, max_batch_tokens: int) -> None:
    """Score the workload with a random-weight model of ``shape``; print tokens/s and the fraction of peak."""
    model_class, config_class, fields = SHAPES[shape]
    config = config_class(**{**fields, **(dict(num_hidden_layers=2, vocab_size=4096) if smoke else {})})
    torch.manual_seed(0)
    model = model_class(config).to(device=device, dtype=dtype).eval()
    _, tokenizer = models.load(models.TINY_MODEL)
    scorer = Scorer(model, tokenizer, share_prefixes=share, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                    progress=False)
    counts = {"tokens": 0, "attention": 0, "scored": 0}

    def count(_module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        ids = kwargs["input_ids"]
        past = kwargs.get("cache") or kwargs.get("past_key_values")
        done = past.get_seq_length() if past is not None else 0
        lengths = mask.sum(-1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0]
        counts["tokens"] += sum(lengths)
        counts["attention"] += sum((done + n) ** 2 - done**2 for n in lengths) // 2
        keep = kwargs.get("logits_to_keep")
        counts["scored"] += int(keep.sum()) if isinstance(keep, torch.Tensor) else 0

    scorer.score(examples[:6], spec=CreditSpec(n_contrast=3))  # warm-up
    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        sync(device)
        start = time.perf_counter()
        table = scorer.score(examples, spec=CreditSpec(n_contrast=3))
        sync(device)
        seconds = time.perf_counter() - start
    finally:
        hook.remove()
    embedding = config.vocab_size * config.hidden_size
    body = sum(p.numel() for p in model.parameters()) - embedding * (1 if config.tie_word_embeddings else 2)
    flops = (2 * body * counts["tokens"]
                     + 4 * config.num_hidden_layers * config.hidden_size * counts["attention"]
                     + 2 * embedding * counts["scored"])
    print(f"{shape:>13} {str(dtype).removeprefix('torch.'):>8} {'shared prefixes' if share else 'padded batches':>15}: "
          f"{len(table) / seconds:9,.0f} response tokens/s, {counts['tokens'] / seconds:9,.0f} forwarded tokens/s, "
          f"{flops / seconds / 1e12:7.2f} TFLOP/s = {flops / seconds / peak:6.1%} of the bf16 matmul peak")


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
    parser.add_argument("--model", action="append", help="accuracy check: model name or directory (default tiny)")
    parser.add_argument("--examples", default="data/examples.jsonl")
    parser.add_argument("--copies", type=int, default=16, help="throughput workload: copies of the bundled triples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=65536)
    parser.add_argument("--smoke", action="store_true", help="CPU, 2 layers, vocabulary 4096, first 4 triples: check that the script runs")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    examples = read_examples(args.examples)
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, torch {torch.__version__}, device: "
          f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    if not args.smoke:
        for name in args.model or [models.TINY_MODEL]:
            check_model(name, examples)
    copies, examples = (1, examples[:4]) if args.smoke else (args.copies, examples)
    workload = [dict(e, example_id=f"{e['example_id']}#{c}") for c in range(copies) for e in examples]
    peak = matmul_peak(device, torch.bfloat16, 1024 if args.smoke else 8192)
    print(f"\nthroughput, K=3, {len(workload)} triples; measured bf16 matmul peak {peak / 1e12:.3g} TFLOP/s")
    for shape in SHAPES:
        for dtype in (torch.bfloat16, torch.float32):
            for share in (False, True):
                throughput(shape, workload, device, dtype, share, peak, args.smoke, args.batch_size,
                           args.max_batch_tokens)
    check_identities_on_cuda()


if __name__ == "__main__":
    main()
